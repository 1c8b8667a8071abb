//! Typed configuration from the environment (each variable also has a command-line flag).

use std::net::SocketAddr;
use std::time::Duration;

use calls_bus::Subjects;
use calls_bus::subjects::DEFAULT_PREFIX;
use common::auth::JwtConfig;

/// Everything signaling reads at start-up.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "signaling",
    version,
    about = "Socket.IO /calls namespace relayed through NATS"
)]
pub struct Config {
    /// Address of the HTTP listener (Socket.IO under `/socket.io/`, plus `/healthz`, `/readyz`,
    /// `/metrics`).
    #[arg(long, env = "SIGNALING_LISTEN", default_value = "0.0.0.0:8082")]
    pub listen: SocketAddr,
    /// NATS server URL(s), comma-separated.
    #[arg(
        long = "nats-url",
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub nats_url: String,
    /// Prefix of every bus subject; tests and side-by-side deployments change it to isolate
    /// themselves.
    #[arg(long = "nats-subject-prefix", env = "NATS_SUBJECT_PREFIX", default_value = DEFAULT_PREFIX, value_parser = parse_prefix)]
    pub subjects: Subjects,
    /// This node's id in presence messages; default: the host name plus a random suffix, so a
    /// restarted pod is a new node.
    #[arg(long = "node-id", env = "SIGNALING_NODE_ID", value_parser = parse_node_id)]
    pub node_id: Option<String>,
    /// Seconds between presence heartbeats; calls-api declares a node dead after three missed.
    #[arg(long = "presence-heartbeat-seconds", env = "PRESENCE_HEARTBEAT_SECONDS", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub heartbeat_seconds: u64,
    /// How long a socket command waits for calls-api before answering DEPENDENCY_UNAVAILABLE.
    #[arg(long = "command-timeout-ms", env = "SIGNALING_COMMAND_TIMEOUT_MS", default_value_t = 3000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub command_timeout_ms: u64,
    /// Largest client event payload answered normally; larger ones get PAYLOAD_TOO_LARGE.
    /// Frames over four times this (at least 64 KiB) close the connection.
    #[arg(long = "max-payload-bytes", env = "SIGNALING_MAX_PAYLOAD_BYTES", default_value_t = 16_384, value_parser = clap::value_parser!(u64).range(256..=1_048_576))]
    pub max_payload_bytes: u64,
    /// Sustained client events per second per socket; beyond it events get RATE_LIMITED.
    #[arg(long = "events-per-second", env = "SIGNALING_EVENTS_PER_SECOND", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub events_per_second: u32,
    /// Events a socket may send at once above the sustained rate.
    #[arg(long = "events-burst", env = "SIGNALING_EVENTS_BURST", default_value_t = 40, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub events_burst: u32,
    /// How long the relay holds a call event that arrives ahead of a missing `seq` before giving
    /// up on the gap.
    #[arg(long = "reorder-window-ms", env = "SIGNALING_REORDER_WINDOW_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(0..=5_000))]
    pub reorder_window_ms: u64,
    /// Initial read buffer of each WebSocket connection, in bytes; it grows for larger frames.
    /// Small by default because idle connections dominate memory.
    #[arg(long = "ws-read-buffer-bytes", env = "SIGNALING_WS_READ_BUFFER_BYTES", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(256..=1_048_576))]
    pub ws_read_buffer_bytes: u64,
    /// Packets queued per socket before emits to it fail (a stalled client loses events rather
    /// than growing memory).
    #[arg(long = "socket-buffer-packets", env = "SIGNALING_SOCKET_BUFFER_PACKETS", default_value_t = 128, value_parser = clap::value_parser!(u64).range(8..=65_536))]
    pub socket_buffer_packets: u64,
    /// How user events reach this node: `per-user` subscribes to each connected user's subject
    /// (NATS routes by interest); `shared` makes one `{prefix}.evt.user.*` subscription per node
    /// and filters locally, which saves about 7 KB per connected user but sends every user
    /// event to every node. Worth it for many idle connections on few nodes.
    #[arg(long = "user-subscriptions", env = "SIGNALING_USER_SUBSCRIPTIONS", value_enum, default_value_t = UserSubscriptions::PerUser)]
    pub user_subscriptions: UserSubscriptions,
    /// Access-token verification (`JWT_SECRET` or `JWT_PUBLIC_KEY_FILE`, `JWT_ISSUER`,
    /// `JWT_AUDIENCE`).
    #[command(flatten)]
    pub jwt: JwtConfig,
}

impl Config {
    /// The configured node id, or a fresh `hostname-xxxxxx`.
    pub fn resolved_node_id(&self) -> String {
        self.node_id.clone().unwrap_or_else(default_node_id)
    }

    /// [`Config::command_timeout_ms`] as a duration.
    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    /// The hard per-frame limit handed to the transport (see `max_payload_bytes`).
    pub fn transport_limit_bytes(&self) -> u64 {
        (self.max_payload_bytes * 4).max(64 * 1024)
    }
}

/// See [`Config::user_subscriptions`].
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserSubscriptions {
    /// One subscription per connected user.
    PerUser,
    /// One wildcard subscription per node.
    Shared,
}

fn parse_prefix(value: &str) -> Result<Subjects, String> {
    Subjects::validated(value).map_err(|e| e.to_string())
}

fn parse_node_id(value: &str) -> Result<String, String> {
    if value.is_empty() || value.len() > 255 || value.chars().any(char::is_control) {
        return Err("must be 1 to 255 bytes without control characters".to_owned());
    }
    Ok(value.to_owned())
}

fn default_node_id() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "signaling".to_owned());
    format!("{host}-{:06x}", rand::random::<u32>() & 0x00ff_ffff)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use clap::Parser;

    #[test]
    fn defaults_match_the_documentation() {
        let c = Config::try_parse_from(["signaling"]).unwrap();
        assert_eq!(c.listen.port(), 8082);
        assert_eq!(c.subjects.prefix(), "calls.v1");
        assert_eq!(c.heartbeat_seconds, 5);
        assert_eq!(c.command_timeout(), Duration::from_millis(3000));
        assert_eq!(c.max_payload_bytes, 16_384);
        assert_eq!((c.events_per_second, c.events_burst), (20, 40));
    }

    #[test]
    fn a_wildcard_subject_prefix_is_refused() {
        assert!(Config::try_parse_from(["signaling", "--nats-subject-prefix", "a.>"]).is_err());
    }

    #[test]
    fn default_node_ids_differ_between_processes() {
        let c = Config::try_parse_from(["signaling"]).unwrap();
        assert_ne!(c.resolved_node_id(), c.resolved_node_id());
    }
}
