//! Typed configuration from the environment (every field also has a command-line flag).

use std::net::SocketAddr;
use std::time::Duration;

use common::auth::JwtConfig;
use common::config::Secret;

/// Who may call whom (CONTRACT section 2).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MembershipMode {
    /// Any authenticated user may initiate and be invited; a call's room members are its
    /// initiator and invitees. The development default.
    Open,
    /// Room members come from the chat backend through the internal API; only members may
    /// initiate, be invited, or see and join the room's group calls.
    Table,
}

#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// HTTP listen address.
    #[arg(long, env = "CALLS_API_LISTEN", default_value = "0.0.0.0:8081")]
    pub listen: SocketAddr,
    /// `postgres://…` or `sqlite://path?mode=rwc`.
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// NATS server URL; for a cluster, every server's URL separated by commas
    /// (`nats://n1:4222,nats://n2:4222,nats://n3:4222`): the client moves to another when its
    /// server goes.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// On how many NATS servers the JetStream event stream is stored: 1 for a single server, 3
    /// on a cluster of three or more (every event survives the loss of one server). Applied at
    /// start-up, also to an existing stream.
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_stream_replicas: u8,
    /// Prefix of every NATS subject (lets several deployments or tests share one NATS).
    #[arg(long, env = "NATS_SUBJECT_PREFIX", default_value = "calls.v1")]
    pub nats_subject_prefix: String,
    #[command(flatten)]
    pub jwt: JwtConfig,
    /// Who may call whom: `open` (any authenticated user; a call's room members are its
    /// initiator and invitees) or `table` (room members written by the chat backend through the
    /// internal API).
    #[arg(long, env = "MEMBERSHIP_MODE", value_enum, default_value_t = MembershipMode::Open)]
    pub membership_mode: MembershipMode,
    /// Bearer credential of the internal membership API; the API is off while unset.
    #[arg(long, env = "INTERNAL_API_TOKEN", hide_env_values = true)]
    pub internal_api_token: Option<Secret>,
    #[command(flatten)]
    pub calls: CallRules,
    /// media-token gRPC endpoint; media sessions answer 503 while unset.
    #[arg(long, env = "MEDIA_TOKEN_URL")]
    pub media_token_url: Option<String>,
    /// Credential presented to media-token.
    #[arg(long, env = "MEDIA_TOKEN_SERVICE_TOKEN", hide_env_values = true)]
    pub media_token_service_token: Option<Secret>,
    /// How long a media session waits for media-token before answering 503.
    #[arg(long, env = "MEDIA_TOKEN_TIMEOUT_MS", default_value_t = 2000)]
    pub media_token_timeout_ms: u64,
    /// Agora Notification Center secret (Agora console: Project → Notifications, the secret of
    /// the RTC channel events configuration). `POST /webhooks/agora` accepts a notice only when
    /// its `Agora-Signature-V2` is the HMAC-SHA256 of the body with it; while unset the endpoint
    /// answers 404 and `inMedia` stays `false`.
    #[arg(long, env = "AGORA_NCS_SECRET", hide_env_values = true)]
    pub agora_ncs_secret: Option<Secret>,
    #[command(flatten)]
    pub agora_rest: AgoraRestConfig,
    /// Largest accepted request body.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    /// Signaling nodes heartbeat this often; three missed beats mark a node dead.
    #[arg(long, env = "PRESENCE_HEARTBEAT_SECONDS", default_value_t = 5)]
    pub presence_heartbeat_seconds: u64,
    /// How often the outbox relay and the timer loop look for work when not woken earlier.
    #[arg(long, env = "WORKER_POLL_MS", default_value_t = 250)]
    pub worker_poll_ms: u64,
}

pub use calls_db::DatabaseConfig;

/// Agora's RESTful API, for kicking someone out of a call's channel (CONTRACT section 11).
/// Kicks are sent once `AGORA_APP_ID`, `AGORA_CUSTOMER_ID` and `AGORA_CUSTOMER_SECRET` are all
/// set; they are decided from Agora's channel notices, so they also need `AGORA_NCS_SECRET`.
#[derive(clap::Args, Clone, Debug)]
pub struct AgoraRestConfig {
    /// The Agora App ID the calls' channels belong to (the same value media-token uses); the
    /// kicking rule names it.
    #[arg(long = "agora-app-id", env = "AGORA_APP_ID")]
    pub app_id: Option<String>,
    /// Customer ID of Agora's RESTful API (Agora console: Developer Toolkit → RESTful API),
    /// sent with the secret as HTTP Basic credentials.
    #[arg(long = "agora-customer-id", env = "AGORA_CUSTOMER_ID")]
    pub customer_id: Option<String>,
    /// Customer Secret of Agora's RESTful API. Never logged or returned.
    #[arg(
        long = "agora-customer-secret",
        env = "AGORA_CUSTOMER_SECRET",
        hide_env_values = true
    )]
    pub customer_secret: Option<Secret>,
    /// Base URL of Agora's RESTful API (`/dev/v1/kicking-rule` is appended).
    #[arg(
        long = "agora-rest-url",
        env = "AGORA_REST_URL",
        default_value = "https://api.sd-rtn.com"
    )]
    pub rest_url: String,
    /// How long a kicked user may not rejoin the channel, in seconds: 0 (the default) takes
    /// them out and lets them back at once (they can only get back with a token issued before,
    /// and a join notice kicks them again); Agora takes 10..=86430 otherwise.
    #[arg(long = "agora-kick-ban-seconds", env = "AGORA_KICK_BAN_SECONDS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=86_430))]
    pub ban_seconds: u32,
}

impl AgoraRestConfig {
    /// Whether kicks can be sent.
    pub fn enabled(&self) -> bool {
        self.app_id.is_some() && self.customer_id.is_some() && self.customer_secret.is_some()
    }

    fn validate(&self) -> Result<(), String> {
        if self.customer_id.is_some() != self.customer_secret.is_some() {
            return Err(
                "AGORA_CUSTOMER_ID and AGORA_CUSTOMER_SECRET go together: set both or neither"
                    .into(),
            );
        }
        if self.customer_id.is_some() && self.app_id.is_none() {
            return Err(
                "AGORA_CUSTOMER_ID is set but AGORA_APP_ID is not (kicks name the App ID)".into(),
            );
        }
        if !(self.rest_url.starts_with("https://") || self.rest_url.starts_with("http://")) {
            return Err("AGORA_REST_URL must be an http(s):// URL".into());
        }
        if (1..10).contains(&self.ban_seconds) {
            return Err("AGORA_KICK_BAN_SECONDS must be 0 or 10..=86430".into());
        }
        Ok(())
    }
}

/// The call rules of CONTRACT section 4 that operators tune.
#[derive(clap::Args, Clone, Debug)]
pub struct CallRules {
    /// Invitees still ringing after this become `missed`.
    #[arg(long, env = "CALL_RING_TIMEOUT_SECONDS", default_value_t = 45)]
    pub ring_timeout_seconds: u64,
    /// A joined participant with no socket for this long becomes `left` (`connection_lost`).
    #[arg(long, env = "CALL_DISCONNECT_GRACE_SECONDS", default_value_t = 30)]
    pub disconnect_grace_seconds: u64,
    /// Calls end `timeout` after this long; 0 = no limit.
    #[arg(long, env = "CALL_MAX_DURATION_SECONDS", default_value_t = 14_400)]
    pub max_duration_seconds: u64,
    /// Upper bound (and default) of a call's `maxParticipants`.
    #[arg(long, env = "CALL_MAX_PARTICIPANTS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(2..=1000))]
    pub max_participants: u32,
    /// How many people a group call may ring (at initiation and later invitations together,
    /// besides its initiator); `CALL_MAX_PARTICIPANTS` still caps those joined at once.
    #[arg(long, env = "CALL_MAX_INVITEES", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_invitees: u32,
    /// A group call whose last other participant left ends `completed` after this unless
    /// someone joins meanwhile; 0 = never.
    #[arg(long, env = "CALL_ALONE_TIMEOUT_SECONDS", default_value_t = 120)]
    pub alone_timeout_seconds: u64,
    /// A joined participant whom Agora reports out of the call's channel this long, with no
    /// socket either, becomes `left` (`connection_lost`); 0 = never. Needs `AGORA_NCS_SECRET`.
    #[arg(long, env = "CALL_MEDIA_GRACE_SECONDS", default_value_t = 30)]
    pub media_grace_seconds: u64,
}

impl CallRules {
    /// The durations the state machine needs.
    pub fn timing(&self) -> crate::domain::Timing {
        crate::domain::Timing {
            ring_timeout: Duration::from_secs(self.ring_timeout_seconds.max(1)),
            disconnect_grace: Duration::from_secs(self.disconnect_grace_seconds),
            max_duration: (self.max_duration_seconds > 0)
                .then(|| Duration::from_secs(self.max_duration_seconds)),
            alone_timeout: (self.alone_timeout_seconds > 0)
                .then(|| Duration::from_secs(self.alone_timeout_seconds)),
            media_grace: (self.media_grace_seconds > 0)
                .then(|| Duration::from_secs(self.media_grace_seconds)),
        }
    }
}

impl Config {
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs(self.presence_heartbeat_seconds.max(1))
    }

    /// Checks what clap cannot express; messages name the variables.
    pub fn validate(&self) -> Result<(), String> {
        let url = self.database.url.expose();
        if !(url.starts_with("postgres://")
            || url.starts_with("postgresql://")
            || url.starts_with("sqlite:"))
        {
            return Err("DATABASE_URL must start with postgres:// or sqlite:".into());
        }
        if self.membership_mode == MembershipMode::Table && self.internal_api_token.is_none() {
            return Err("MEMBERSHIP_MODE=table needs INTERNAL_API_TOKEN (the chat backend writes room members with it)".into());
        }
        if self.media_token_url.is_some() && self.media_token_service_token.is_none() {
            return Err("MEDIA_TOKEN_URL is set but MEDIA_TOKEN_SERVICE_TOKEN is not".into());
        }
        self.agora_rest.validate()?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut all = vec!["calls-api", "--database-url", "sqlite://x.db"];
        all.extend_from_slice(args);
        let cli = Cli::try_parse_from(all).map_err(|e| e.to_string())?;
        cli.config.validate()?;
        Ok(cli.config)
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn kicks_are_sent_only_with_the_app_id_and_both_halves_of_the_credentials() {
        let off = parse(&[]).unwrap();
        assert!(!off.agora_rest.enabled());
        assert_eq!(off.agora_rest.rest_url, "https://api.sd-rtn.com");
        let on = parse(&[
            "--agora-app-id",
            "970CA35de60c44645bbae8a215061b33",
            "--agora-customer-id",
            "id",
            "--agora-customer-secret",
            "secret",
        ])
        .unwrap();
        assert!(on.agora_rest.enabled());
        let half = parse(&["--agora-customer-id", "id"]).unwrap_err();
        assert!(half.contains("AGORA_CUSTOMER_SECRET"), "{half}");
        let no_app = parse(&["--agora-customer-id", "id", "--agora-customer-secret", "s"]);
        assert!(no_app.unwrap_err().contains("AGORA_APP_ID"));
        let ban = parse(&["--agora-kick-ban-seconds", "5"]).unwrap_err();
        assert!(ban.contains("10..=86430"), "{ban}");
        let url = parse(&["--agora-rest-url", "ftp://agora"]).unwrap_err();
        assert!(url.contains("AGORA_REST_URL"), "{url}");
    }
}
