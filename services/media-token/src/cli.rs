//! The `media-token` command line: `serve`, `sign` and `inspect`.
//!
//! `sign` and `inspect` exist for support engineers reproducing or checking a customer's token
//! without writing code; they print to stdout so their output can be piped.

use std::process::ExitCode;

use agora_token::RtcRole;
use clap::{Parser, Subcommand, ValueEnum};
use common::config::Secret;
use common::process::Runtime;

use crate::config::Config;
use crate::signer::unix_now;
use crate::validate;

#[derive(Parser, Debug)]
#[command(
    name = "media-token",
    version,
    about = "Agora AccessToken2 signing: gRPC service and support CLI"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gRPC service (configuration from the environment, see README).
    Serve(Box<Config>),
    /// Sign an RTC token and print it.
    Sign(SignArgs),
    /// Decode a token and print it as JSON; verifies the signature when a certificate is given.
    Inspect(InspectArgs),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum RoleArg {
    Publisher,
    Subscriber,
}

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("identity").required(true).args(["account", "uid"])))]
pub struct SignArgs {
    #[arg(long, env = "AGORA_APP_ID")]
    pub app_id: String,
    #[arg(long, env = "AGORA_APP_CERTIFICATE", hide_env_values = true)]
    pub app_certificate: Secret,
    #[arg(long)]
    pub channel: String,
    /// String user account.
    #[arg(long)]
    pub account: Option<String>,
    /// Numeric uid; 0 means "any uid" (empty account), as in Agora's builders.
    #[arg(long)]
    pub uid: Option<u32>,
    #[arg(long, value_enum, default_value_t = RoleArg::Publisher)]
    pub role: RoleArg,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub expire: u32,
    /// Privilege lifetime in seconds (defaults to --expire).
    #[arg(long)]
    pub privilege_expire: Option<u32>,
    /// Issue time, unix seconds (defaults to now).
    #[arg(long)]
    pub issue_ts: Option<u32>,
    /// Salt (defaults to a random value in 1..=99999999).
    #[arg(long)]
    pub salt: Option<u32>,
}

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    pub token: String,
    /// Verify the signature with this certificate (falls back to AGORA_APP_CERTIFICATE).
    #[arg(long, env = "AGORA_APP_CERTIFICATE", hide_env_values = true)]
    pub app_certificate: Option<Secret>,
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli: Cli = common::config::parse_or_exit();
    match cli.command {
        Command::Serve(config) => serve(*config),
        Command::Sign(args) => match sign(&args) {
            Ok(token) => {
                println!("{token}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("media-token sign: {message}");
                ExitCode::from(2)
            }
        },
        Command::Inspect(args) => match inspect(&args) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("media-token inspect: {message}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(config: Config) -> ExitCode {
    common::process::run("media-token", Runtime::default(), |shutdown| async move {
        let listener = common::process::bind(config.listen, "MEDIA_TOKEN_LISTEN").await?;
        crate::run(config, listener, shutdown.cancelled_owned()).await?;
        Ok(())
    })
}

/// Builds the token described by the arguments.
pub fn sign(args: &SignArgs) -> Result<String, String> {
    validate::channel_name(&args.channel)?;
    let account = match (&args.account, args.uid) {
        (Some(account), None) => {
            validate::account(account)?;
            account.clone()
        }
        (None, Some(uid)) => agora_token::account_for_uid(uid),
        _ => return Err("give exactly one of --account or --uid".into()),
    };
    let role = match args.role {
        RoleArg::Publisher => RtcRole::Publisher,
        RoleArg::Subscriber => RtcRole::Subscriber,
    };
    agora_token::build_rtc_token(&agora_token::RtcTokenRequest {
        app_id: &args.app_id,
        app_certificate: args.app_certificate.expose(),
        channel_name: &args.channel,
        account: &account,
        role,
        token_expire: args.expire,
        privilege_expire: args.privilege_expire.unwrap_or(args.expire),
        issue_ts: args.issue_ts.unwrap_or_else(unix_now),
        salt: args.salt.unwrap_or_else(agora_token::random_salt),
    })
    .map_err(|e| e.to_string())
}

/// Decodes (and with a certificate, verifies) a token and renders it as pretty JSON.
pub fn inspect(args: &InspectArgs) -> Result<String, String> {
    let decoded = agora_token::decode(args.token.trim())
        .map_err(|e| format!("not an AccessToken2 token: {e}"))?;
    let inspection = decoded.inspect(args.app_certificate.as_ref().map(Secret::expose));
    serde_json::to_string_pretty(&inspection).map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn sign_then_inspect_shows_a_valid_signature() {
        let cli = Cli::try_parse_from([
            "media-token",
            "sign",
            "--app-id",
            "970CA35de60c44645bbae8a215061b33",
            "--app-certificate",
            "5CFd2fd1755d40ecb72977518be15d3b",
            "--channel",
            "call_1",
            "--account",
            "alice",
            "--issue-ts",
            "1111111",
            "--salt",
            "1",
            "--expire",
            "600",
        ])
        .unwrap();
        let Command::Sign(args) = cli.command else {
            panic!("not sign")
        };
        let token = sign(&args).unwrap();
        let json = inspect(&InspectArgs {
            token,
            app_certificate: Some("5CFd2fd1755d40ecb72977518be15d3b".parse().unwrap()),
        })
        .unwrap();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["signatureValid"], true);
        assert_eq!(value["issueTs"], 1111111);
        assert_eq!(value["services"][0]["account"], "alice");
    }

    #[test]
    fn sign_refuses_both_account_and_uid() {
        let parsed = Cli::try_parse_from([
            "media-token",
            "sign",
            "--app-id",
            "970CA35de60c44645bbae8a215061b33",
            "--app-certificate",
            "5CFd2fd1755d40ecb72977518be15d3b",
            "--channel",
            "c",
            "--account",
            "a",
            "--uid",
            "1",
        ]);
        assert!(parsed.is_err());
    }
}
