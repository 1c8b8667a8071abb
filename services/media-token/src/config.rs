//! Typed configuration from the environment (each field also has a command-line flag).

use std::net::SocketAddr;

use common::config::Secret;

/// The Agora project credentials and token lifetime (CONTRACT section 7).
///
/// Unset credentials do not stop the service: it answers `FAILED_PRECONDITION`, which calls-api
/// turns into 503 `MEDIA_PROVIDER_NOT_CONFIGURED`, so a developer can run everything else first.
#[derive(clap::Args, Clone, Debug)]
pub struct AgoraConfig {
    /// Agora App ID (32 hex characters).
    #[arg(long = "agora-app-id", env = "AGORA_APP_ID", value_parser = parse_app_id)]
    pub app_id: Option<String>,
    /// Agora App Certificate (32 hex characters). Never logged or returned.
    #[arg(long = "agora-app-certificate", env = "AGORA_APP_CERTIFICATE", hide_env_values = true, value_parser = parse_certificate)]
    pub app_certificate: Option<Secret>,
    /// Default token lifetime in seconds (1..=86400).
    #[arg(
        long = "agora-token-ttl-seconds",
        env = "AGORA_TOKEN_TTL_SECONDS",
        default_value_t = 3600,
        value_parser = clap::value_parser!(u32).range(1..=86_400)
    )]
    pub token_ttl_seconds: u32,
}

impl AgoraConfig {
    /// Both credentials or neither: one without the other is a deployment mistake worth failing on.
    pub fn validate(&self) -> Result<(), String> {
        match (&self.app_id, &self.app_certificate) {
            (Some(_), None) => Err("AGORA_APP_ID is set but AGORA_APP_CERTIFICATE is not".into()),
            (None, Some(_)) => Err("AGORA_APP_CERTIFICATE is set but AGORA_APP_ID is not".into()),
            _ => Ok(()),
        }
    }
}

/// `media-token serve` configuration.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Address of the combined gRPC + HTTP (`/healthz`, `/metrics`) listener.
    #[arg(long, env = "MEDIA_TOKEN_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,
    /// Bearer credentials callers must present (comma-separated; several allow rotation).
    #[arg(
        long = "service-tokens",
        env = "MEDIA_TOKEN_SERVICE_TOKENS",
        hide_env_values = true,
        value_delimiter = ',',
        required = true
    )]
    pub service_tokens: Vec<Secret>,
    #[command(flatten)]
    pub agora: AgoraConfig,
}

fn is_hex32(value: &str) -> bool {
    value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

fn parse_app_id(value: &str) -> Result<String, String> {
    if is_hex32(value) {
        Ok(value.to_owned())
    } else {
        Err("must be 32 hexadecimal characters (the App ID from Agora's console)".into())
    }
}

fn parse_certificate(value: &str) -> Result<Secret, String> {
    // The error must not echo the value: it is a secret.
    if is_hex32(value) {
        value.parse().map_err(|_| "invalid certificate".to_owned())
    } else {
        Err(
            "must be 32 hexadecimal characters (the primary certificate from Agora's console)"
                .into(),
        )
    }
}
