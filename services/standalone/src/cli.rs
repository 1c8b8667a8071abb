//! `calls-backend [serve]` runs everything; `calls-backend token <user>` mints a development
//! access token signed with `JWT_SECRET`, so a developer can call the API a minute after cloning;
//! `calls-backend openapi` prints the OpenAPI document the gateway serves, so the TypeScript
//! client (clients/js) generates its types without a running server.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use common::process::Runtime;

#[derive(Parser, Debug)]
#[command(
    name = "calls-backend",
    version,
    about = "The calls backend in one process (gateway, calls-api, signaling, media-token)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run every service in this process (the default).
    Serve {
        /// The public listener (the gateway).
        #[arg(long, env = "GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
    },
    /// Print an HS256 access token for USER, signed with JWT_SECRET (development only).
    Token {
        /// The user id (the token's `sub`).
        user: String,
        /// Lifetime in hours.
        #[arg(long, default_value_t = 24)]
        hours: u64,
        #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
        jwt_secret: common::config::Secret,
        #[arg(long, env = "JWT_ISSUER")]
        jwt_issuer: Option<String>,
        #[arg(long, env = "JWT_AUDIENCE")]
        jwt_audience: Option<String>,
    },
    /// Print the OpenAPI document served at /api/docs/openapi.json (JSON, pretty-printed).
    Openapi,
}

pub fn main() -> ExitCode {
    let cli: Cli = common::config::parse_or_exit();
    match cli.command {
        Some(Command::Token {
            user,
            hours,
            jwt_secret,
            jwt_issuer,
            jwt_audience,
        }) => {
            if common::ids::UserId::try_from(user.as_str()).is_err() {
                eprintln!(
                    "calls-backend token: the user id must be 1..=255 bytes without control characters"
                );
                return ExitCode::from(2);
            }
            let token = common::auth::mint_hs256_with(
                jwt_secret.expose(),
                &user,
                Duration::from_secs(hours.max(1) * 3600),
                jwt_issuer.as_deref(),
                jwt_audience.as_deref(),
            );
            println!("{token}");
            ExitCode::SUCCESS
        }
        Some(Command::Openapi) => match openapi_document() {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("calls-backend openapi: cannot encode the document: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Serve { listen }) => serve(listen),
        None => {
            let listen = std::env::var("GATEWAY_LISTEN")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 8080)));
            serve(listen)
        }
    }
}

fn serve(listen: SocketAddr) -> ExitCode {
    common::process::run("calls-backend", Runtime::default(), |shutdown| async move {
        let listener = common::process::bind(listen, "GATEWAY_LISTEN").await?;
        let running = crate::start(listener, shutdown).await?;
        print_banner(&running);
        running.wait().await?;
        Ok(())
    })
}

fn print_banner(running: &crate::Running) {
    let port = running.addr.port();
    let host = if running.addr.ip().is_unspecified() {
        "localhost".to_owned()
    } else {
        running.addr.ip().to_string()
    };
    let base = format!("http://{host}:{port}");
    let media = if running.media_enabled {
        "enabled (Agora credentials set)".to_owned()
    } else {
        "DISABLED until AGORA_APP_ID and AGORA_APP_CERTIFICATE are set (media/session answers 503)"
            .to_owned()
    };
    let pushes = match (running.apns_enabled, running.fcm_enabled) {
        (true, true) => "APNs and FCM (phones ring while the app sleeps)".to_owned(),
        (true, false) => "APNs only (set FCM_SERVICE_ACCOUNT_FILE for Android)".to_owned(),
        (false, true) => {
            "FCM only (set APNS_KEY_FILE, APNS_KEY_ID, APNS_TEAM_ID for iPhones)".to_owned()
        }
        (false, false) => {
            "off until APNs / FCM credentials are set (calls ring on live sockets only)".to_owned()
        }
    };
    let internal = running
        .internal_api
        .as_ref()
        .map(|url| format!("    Internal API {url}  (room members, Bearer INTERNAL_API_TOKEN; set CALLS_API_LISTEN to expose it)\n"))
        .unwrap_or_default();
    let mut webhooks = match &running.webhook_url {
        // Without the query, which may hold a credential of the receiver.
        Some(url) => format!(
            "    Webhooks     to {} (signed with WEBHOOK_SECRET)\n",
            url.split('?').next().unwrap_or_default()
        ),
        None => {
            "    Webhooks     off until WEBHOOK_URL and WEBHOOK_SECRET are set (docs/webhooks.md)\n"
                .to_owned()
        }
    };
    if let Some(url) = &running.webhooks_api {
        webhooks.push_str(&format!("    Webhook API  {url}  (endpoints, Bearer INTERNAL_API_TOKEN; set NOTIFIER_LISTEN to expose it)\n"));
    }
    eprintln!(
        "\n  calls backend is running\n\n    REST API     {base}/api/v1\n    Socket.IO    io('{base}/calls', {{ auth: {{ token }}, transports: ['websocket'] }})\n    Swagger UI   {base}/api/docs\n    Metrics      http://{}/metrics  (GATEWAY_ADMIN_LISTEN; not on the public port)\n    Data         {}\n    Media        {media}\n    Pushes       {pushes}\n{webhooks}{internal}\n  Mint a development token:  make token USER=alice   (or: calls-backend token alice)\n  Stop with Ctrl-C.\n",
        running.admin_addr, running.database
    );
}

/// The document the gateway serves at `/api/docs/openapi.json`: calls-api's, with notifier's
/// device registry and webhook API merged in the same way.
fn openapi_document() -> Result<String, serde_json::Error> {
    let calls = serde_json::to_value(calls_api::api::docs::document())?;
    let devices = serde_json::to_value(notifier::api::document())?;
    serde_json::to_string_pretty(&gateway::openapi::merge(calls, devices))
}
