//! Typed configuration from the environment (each variable also has a command-line flag).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use calls_bus::Subjects;
use calls_bus::subjects::DEFAULT_PREFIX;
use calls_db::DatabaseConfig;
use calls_push::apns::ApnsEnvironment;
use clap::ArgAction;
use clap::builder::BoolishValueParser;
use common::auth::JwtConfig;
use common::config::Secret;

/// Everything notifier reads at start-up.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "notifier",
    version,
    about = "Rings phones whose app is asleep: device registry, APNs VoIP and FCM pushes from the call events"
)]
pub struct Config {
    /// Address of the HTTP listener (`/api/v1/devices`, `/api/docs/openapi.json`, `/healthz`,
    /// `/readyz`, `/metrics`).
    #[arg(long, env = "NOTIFIER_LISTEN", default_value = "0.0.0.0:8083")]
    pub listen: SocketAddr,
    /// Where the device registry and the delivery queue live (`postgres://…` or `sqlite://…`);
    /// may be calls-api's database (the tables and the migration history are notifier's own).
    #[command(flatten)]
    pub database: DatabaseConfig,
    /// NATS server URL(s), comma-separated.
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Replicas of the JetStream event stream (the same as calls-api's: either service may
    /// create it, and creating it again with another value would change it). 3 on a NATS
    /// cluster.
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub nats_stream_replicas: u8,
    /// Prefix of every bus subject (the same as calls-api's).
    #[arg(long = "nats-subject-prefix", env = "NATS_SUBJECT_PREFIX", default_value = DEFAULT_PREFIX, value_parser = parse_prefix)]
    pub subjects: Subjects,
    #[command(flatten)]
    pub jwt: JwtConfig,
    #[command(flatten)]
    pub push: PushConfig,
    /// Devices kept per user; registering one more drops the least recently updated.
    #[arg(long, env = "DEVICES_PER_USER", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub devices_per_user: u32,
    /// Largest accepted request body.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 64 * 1024)]
    pub max_body_bytes: usize,
    #[command(flatten)]
    pub workers: WorkerConfig,
    #[command(flatten)]
    pub webhooks: WebhookConfig,
    /// Bearer token of the internal API (`/internal/v1/webhooks…`, never routed by the
    /// gateway); the internal API answers 404 while unset.
    #[arg(long, env = "INTERNAL_API_TOKEN", hide_env_values = true)]
    pub internal_api_token: Option<Secret>,
}

/// Webhooks to the host application (CONTRACT section 9).
#[derive(clap::Args, Clone, Debug)]
pub struct WebhookConfig {
    /// An endpoint that receives every call event (the one-line setup; more endpoints through
    /// the internal API). Kept as the endpoint with id `env`.
    #[arg(id = "webhook-url", long = "webhook-url", env = "WEBHOOK_URL")]
    pub url: Option<String>,
    /// The signing secret of `WEBHOOK_URL`: `whsec_<base64 of 24 to 64 random bytes>`; several,
    /// separated by spaces, while rotating (every delivery is signed with each).
    #[arg(
        long = "webhook-secret",
        env = "WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<Secret>,
    /// How long a delivery the endpoint does not accept is retried before it is dead-lettered,
    /// in hours (fractions allowed: 0.01 is 36 seconds).
    #[arg(id = "webhook-retry-hours", long = "webhook-retry-hours", env = "WEBHOOK_RETRY_HOURS", default_value_t = 24.0, value_parser = parse_hours)]
    pub retry_hours: f64,
    /// The first retry's delay bound, milliseconds; it doubles per attempt up to an hour, and
    /// each wait is drawn at random below it (full jitter).
    #[arg(id = "webhook-retry-base-ms", long = "webhook-retry-base-ms", env = "WEBHOOK_RETRY_BASE_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub retry_base_ms: u64,
    /// How long one delivery may take (connect, send, answer) before it counts as failed.
    #[arg(id = "webhook-timeout-ms", long = "webhook-timeout-ms", env = "WEBHOOK_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub timeout_ms: u64,
    /// Allow endpoints on loopback, private and link-local addresses (development: `make run`
    /// sets it). Otherwise such URLs are refused, and so is a name that resolves to one at
    /// connection time.
    #[arg(id = "webhook-allow-private", long = "webhook-allow-private", env = "WEBHOOK_ALLOW_PRIVATE", default_value = "false", action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub allow_private: bool,
    /// Deliveries this replica sends at once, over every endpoint.
    #[arg(id = "webhook-concurrency", long = "webhook-concurrency", env = "WEBHOOK_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub concurrency: u32,
    /// Deliveries in flight to one endpoint at once, so one slow endpoint cannot take every
    /// slot.
    #[arg(id = "webhook-endpoint-concurrency", long = "webhook-endpoint-concurrency", env = "WEBHOOK_ENDPOINT_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1_000))]
    pub endpoint_concurrency: u32,
}

impl WebhookConfig {
    /// The retry window.
    pub fn retry_window(&self) -> Duration {
        Duration::from_secs_f64(self.retry_hours * 3600.0)
    }

    /// The per-delivery timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

fn parse_hours(value: &str) -> Result<f64, String> {
    match value.trim().parse::<f64>() {
        Ok(h) if h.is_finite() && h > 0.0 && h <= 24.0 * 30.0 => Ok(h),
        _ => Err(format!(
            "`{value}`: expected hours, more than 0 and at most 720"
        )),
    }
}

/// The push providers. A provider whose credentials are unset is off: its pushes are counted
/// as skipped, and everything else works.
#[derive(clap::Args, Clone, Debug)]
pub struct PushConfig {
    /// The APNs auth key (`AuthKey_XXXXXXXXXX.p8`, a PKCS#8 EC key from the Apple developer
    /// account). APNs is off while unset.
    #[arg(long, env = "APNS_KEY_FILE")]
    pub apns_key_file: Option<PathBuf>,
    /// The key's id (10 characters, shown next to the key in the developer account).
    #[arg(long, env = "APNS_KEY_ID")]
    pub apns_key_id: Option<String>,
    /// The Apple developer team id (10 characters).
    #[arg(long, env = "APNS_TEAM_ID")]
    pub apns_team_id: Option<String>,
    /// The app's bundle id (e.g. `com.example.chat`), for devices that register without one.
    /// VoIP pushes go to topic `<bundleId>.voip`.
    #[arg(long, env = "APNS_BUNDLE_ID")]
    pub apns_bundle_id: Option<String>,
    /// `production` (TestFlight and App Store builds) or `sandbox` (builds run from Xcode).
    /// Apple answers `BadDeviceToken` to a token of the other environment.
    #[arg(long, env = "APNS_ENVIRONMENT", default_value = "production", value_parser = parse_environment)]
    pub apns_environment: ApnsEnvironment,
    /// Overrides the APNs base URL (an `http://` URL speaks cleartext HTTP/2; for test doubles).
    #[arg(long, env = "APNS_URL")]
    pub apns_url: Option<String>,
    /// A Google service-account JSON key with the Firebase Cloud Messaging API enabled: project
    /// id, client email, private key and token URI come from it. FCM is off while unset.
    #[arg(long, env = "FCM_SERVICE_ACCOUNT_FILE")]
    pub fcm_service_account_file: Option<PathBuf>,
    /// Overrides the FCM base URL (for test doubles).
    #[arg(long, env = "FCM_URL")]
    pub fcm_url: Option<String>,
    /// How long one push request may take before it is retried.
    #[arg(long, env = "PUSH_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub push_timeout_ms: u64,
}

/// The delivery workers.
#[derive(clap::Args, Clone, Debug)]
pub struct WorkerConfig {
    /// Ringing pushes (incoming call, ringing stopped) sent at once by this replica.
    #[arg(long, env = "NOTIFIER_RING_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub ring_concurrency: u32,
    /// Other pushes (missed-call alerts) sent at once by this replica.
    #[arg(long, env = "NOTIFIER_BULK_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub bulk_concurrency: u32,
    /// How often workers look for due deliveries when nothing woke them (deliveries written by
    /// this replica wake its workers at once).
    #[arg(long, env = "NOTIFIER_POLL_MS", default_value_t = 250, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub poll_ms: u64,
}

impl WorkerConfig {
    /// The idle poll interval.
    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }
}

impl Config {
    /// Checks what clap cannot express; messages name the variables.
    pub fn validate(&self) -> Result<(), String> {
        let apns = [
            ("APNS_KEY_FILE", self.push.apns_key_file.is_some()),
            ("APNS_KEY_ID", self.push.apns_key_id.is_some()),
            ("APNS_TEAM_ID", self.push.apns_team_id.is_some()),
        ];
        let set: Vec<&str> = apns.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
        if !set.is_empty() && set.len() != apns.len() {
            let missing: Vec<&str> = apns.iter().filter(|(_, s)| !*s).map(|(n, _)| *n).collect();
            return Err(format!(
                "APNs needs APNS_KEY_FILE, APNS_KEY_ID and APNS_TEAM_ID together: {} set, {} missing",
                set.join(", "),
                missing.join(", ")
            ));
        }
        match (&self.webhooks.url, &self.webhooks.secret) {
            (Some(url), Some(secret)) => {
                crate::webhooks::model::validate_url(url, self.webhooks.allow_private)
                    .map_err(|e| format!("WEBHOOK_URL {e}"))?;
                crate::webhooks::model::parse_secrets(env_secrets(secret))
                    .map_err(|e| format!("WEBHOOK_SECRET: {e}"))?;
            }
            (Some(_), None) => {
                return Err("WEBHOOK_URL needs WEBHOOK_SECRET (whsec_ and the base64 of 32 random bytes, e.g. `echo whsec_$(openssl rand -base64 32)`)".into());
            }
            (None, Some(_)) => return Err("WEBHOOK_SECRET is set but WEBHOOK_URL is not".into()),
            (None, None) => {}
        }
        Ok(())
    }
}

/// `WEBHOOK_SECRET` split into its secrets (spaces or commas between them).
pub fn env_secrets(secret: &Secret) -> impl Iterator<Item = &str> {
    secret
        .expose()
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

fn parse_prefix(value: &str) -> Result<Subjects, String> {
    Subjects::validated(value).map_err(|e| e.to_string())
}

fn parse_environment(value: &str) -> Result<ApnsEnvironment, String> {
    value
        .parse()
        .map_err(|_| format!("`{value}`: expected production or sandbox"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::{CommandFactory, Parser};

    use super::*;

    fn parse(args: &[&str]) -> Config {
        let mut all = vec!["notifier", "--database-url", "sqlite://x.db"];
        all.extend_from_slice(args);
        Config::try_parse_from(all).unwrap()
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Config::command().debug_assert();
    }

    #[test]
    fn webhook_settings_default_to_a_day_of_retries_and_no_private_addresses() {
        let c = parse(&[]);
        assert_eq!(c.webhooks.retry_window(), Duration::from_secs(24 * 3600));
        assert_eq!(c.webhooks.timeout(), Duration::from_secs(10));
        assert!(!c.webhooks.allow_private);
        let short = parse(&[
            "--webhook-retry-hours",
            "0.01",
            "--webhook-allow-private",
            "true",
        ]);
        assert_eq!(short.webhooks.retry_window(), Duration::from_secs(36));
        assert!(short.webhooks.allow_private);
        assert!(Config::try_parse_from(["notifier", "--webhook-retry-hours", "0"]).is_err());
    }

    #[test]
    fn a_webhook_url_needs_a_valid_secret_and_an_allowed_address() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        assert!(
            parse(&["--webhook-url", "https://chat.example.com/hooks"])
                .validate()
                .is_err()
        );
        let ok = parse(&[
            "--webhook-url",
            "https://chat.example.com/hooks",
            "--webhook-secret",
            secret,
        ]);
        assert!(ok.validate().is_ok());
        let private = parse(&[
            "--webhook-url",
            "http://127.0.0.1:9/hooks",
            "--webhook-secret",
            secret,
        ]);
        let why = private.validate().unwrap_err();
        assert!(
            why.contains("WEBHOOK_URL") && why.contains("WEBHOOK_ALLOW_PRIVATE"),
            "{why}"
        );
        let bad = parse(&[
            "--webhook-url",
            "https://chat.example.com/",
            "--webhook-secret",
            "hunter2",
        ]);
        let why = bad.validate().unwrap_err();
        assert!(
            why.starts_with("WEBHOOK_SECRET") && !why.contains("hunter2"),
            "{why}"
        );
        assert_eq!(
            env_secrets(&Secret::new(format!("{secret} , whsec_x"))).collect::<Vec<_>>(),
            vec![secret, "whsec_x"]
        );
    }
}
