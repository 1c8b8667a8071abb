//! Typed configuration from the environment (each variable also has a command-line flag).
//!
//! Every duration is in milliseconds and every rate in requests per minute, so operators never
//! have to guess a unit. A rate of `0` switches that limit off.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use clap::ArgAction;
use clap::builder::BoolishValueParser;
use common::auth::JwtConfig;
use common::config::ConfigError;
use http::HeaderValue;
use http::uri::{Authority, PathAndQuery, Scheme, Uri};

/// The gateway's configuration.
#[derive(clap::Parser, Clone, Debug)]
#[command(
    name = "gateway",
    version,
    about = "The public edge in front of calls-api and signaling",
    // A flag given twice takes its last value, so wrappers can append overrides.
    args_override_self = true
)]
pub struct Config {
    /// Address of the public listener.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// Address of the admin listener: `/metrics` (which names internal instances, so it is not
    /// on the public port), plus `/healthz` and `/readyz`. Loopback by default; in Kubernetes,
    /// `0.0.0.0:9090` with a NetworkPolicy that admits only Prometheus.
    #[arg(
        long = "admin-listen",
        env = "GATEWAY_ADMIN_LISTEN",
        default_value = "127.0.0.1:9090"
    )]
    pub admin_listen: SocketAddr,

    /// calls-api instances, comma-separated base URLs (`http://10.0.0.1:8081,http://10.0.0.2:8081`).
    #[arg(long = "calls-api-upstreams", env = "CALLS_API_UPSTREAMS", value_delimiter = ',', required = true, value_parser = UpstreamUrl::parse)]
    pub calls_api_upstreams: Vec<UpstreamUrl>,

    /// signaling instances, comma-separated base URLs.
    #[arg(long = "signaling-upstreams", env = "SIGNALING_UPSTREAMS", value_delimiter = ',', required = true, value_parser = UpstreamUrl::parse)]
    pub signaling_upstreams: Vec<UpstreamUrl>,

    /// notifier instances (the device registry, `/api/v1/devices`), comma-separated base URLs;
    /// unset: device registration answers 503 and the API document has no device endpoints.
    #[arg(long = "notifier-upstreams", env = "NOTIFIER_UPSTREAMS", value_delimiter = ',', value_parser = UpstreamUrl::parse)]
    pub notifier_upstreams: Vec<UpstreamUrl>,

    /// Access-token verification (`JWT_SECRET` | `JWT_PUBLIC_KEY_FILE`, `JWT_ISSUER`, `JWT_AUDIENCE`).
    #[command(flatten)]
    pub jwt: JwtConfig,

    /// Rate limits.
    #[command(flatten)]
    pub rate_limits: RateLimitConfig,

    /// Size caps, timeouts and client-facing protections.
    #[command(flatten)]
    pub limits: LimitConfig,

    /// Upstream pools: health checks, ejection, retries.
    #[command(flatten)]
    pub pools: PoolConfig,

    /// Origins allowed by CORS, comma-separated (`https://app.example.com`), or `*` for any;
    /// preflights are then answered before the token check. Unset: no CORS headers and no
    /// preflights (native apps need none; `make run` and `make cluster` default to `*`).
    #[arg(
        long = "cors-allowed-origins",
        env = "CORS_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_allowed_origins: Vec<String>,

    /// Trust an incoming `X-Forwarded-For` (and `-Proto`, `-Host`): set it only when the gateway
    /// sits behind a load balancer that appends the client address. The client IP (for per-IP
    /// limits and logs) is then the last address in the header.
    #[arg(long = "trust-forwarded-for", env = "GATEWAY_TRUST_FORWARDED_FOR", default_value = "false", action = ArgAction::Set, value_parser = BoolishValueParser::new())]
    pub trust_forwarded_for: bool,

    /// Tokio worker threads (default: one per core; 1 selects the single-threaded scheduler).
    /// Read by the binary only.
    #[arg(long = "worker-threads", env = "GATEWAY_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
}

/// Token-bucket rate limits: a rate per minute and a burst (the bucket size).
#[derive(clap::Args, Clone, Debug)]
pub struct RateLimitConfig {
    /// Requests per minute per user (the token's `sub`) on authenticated `/api` routes; 0 = off.
    #[arg(
        long = "rate-limit-per-user-per-minute",
        env = "RATE_LIMIT_PER_USER_PER_MINUTE",
        default_value_t = 300
    )]
    pub per_user_per_minute: u32,
    /// Burst allowed per user.
    #[arg(long = "rate-limit-per-user-burst", env = "RATE_LIMIT_PER_USER_BURST", default_value_t = 60, value_parser = clap::value_parser!(u32).range(1..))]
    pub per_user_burst: u32,
    /// Requests per minute per client IP (IPv6 by /64) on every proxied request, Socket.IO
    /// handshakes included; 0 = off. Generous by default: many phones share one carrier NAT.
    #[arg(
        long = "rate-limit-per-ip-per-minute",
        env = "RATE_LIMIT_PER_IP_PER_MINUTE",
        default_value_t = 1200
    )]
    pub per_ip_per_minute: u32,
    /// Burst allowed per IP.
    #[arg(long = "rate-limit-per-ip-burst", env = "RATE_LIMIT_PER_IP_BURST", default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..))]
    pub per_ip_burst: u32,
    /// `POST /api/v1/calls/rooms/:id/initiate` and `POST /api/v1/calls/:id/invite` per minute
    /// per user (on top of the per-user limit): both ring other people's phones; 0 = off.
    #[arg(
        long = "rate-limit-initiate-per-user-per-minute",
        env = "RATE_LIMIT_INITIATE_PER_USER_PER_MINUTE",
        default_value_t = 10
    )]
    pub initiate_per_user_per_minute: u32,
    /// Burst of initiates and invitations allowed per user.
    #[arg(long = "rate-limit-initiate-burst", env = "RATE_LIMIT_INITIATE_BURST", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub initiate_burst: u32,
}

/// Size caps and the timeouts that keep slow or stalled clients from holding resources.
#[derive(clap::Args, Clone, Debug)]
pub struct LimitConfig {
    /// Largest request body; larger ones get 413 `PAYLOAD_TOO_LARGE` (checked on
    /// `Content-Length` and while reading chunked bodies).
    #[arg(long = "max-body-bytes", env = "GATEWAY_MAX_BODY_BYTES", default_value_t = common::error::DEFAULT_BODY_LIMIT, value_parser = clap::value_parser!(usize))]
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers); larger ones get 431 in the envelope.
    /// Heads over four times this are refused by the HTTP parser with a bare 431.
    #[arg(long = "max-header-bytes", env = "GATEWAY_MAX_HEADER_BYTES", default_value_t = 16 * 1024, value_parser = clap::value_parser!(usize))]
    pub max_header_bytes: usize,
    /// Time a client has to send a complete request head; also how long an idle keep-alive
    /// connection is kept.
    #[arg(
        long = "header-read-timeout-ms",
        env = "GATEWAY_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,
    /// Time a client has to send its whole request body (408 past it).
    #[arg(
        long = "body-read-timeout-ms",
        env = "GATEWAY_BODY_READ_TIMEOUT_MS",
        default_value_t = 15_000
    )]
    pub body_read_timeout_ms: u64,
    /// How long a write to a client may stay blocked (a client that stops reading) before the
    /// connection is dropped; applies to proxied WebSockets too.
    #[arg(
        long = "write-timeout-ms",
        env = "GATEWAY_WRITE_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub write_timeout_ms: u64,
    /// On shutdown, how long requests in flight may take to finish before their connections
    /// are closed.
    #[arg(
        long = "shutdown-grace-ms",
        env = "GATEWAY_SHUTDOWN_GRACE_MS",
        default_value_t = 20_000
    )]
    pub shutdown_grace_ms: u64,
}

/// Upstream pools.
#[derive(clap::Args, Clone, Debug)]
pub struct PoolConfig {
    /// TCP connect timeout to an upstream instance.
    #[arg(
        long = "connect-timeout-ms",
        env = "GATEWAY_CONNECT_TIMEOUT_MS",
        default_value_t = 2_000
    )]
    pub connect_timeout_ms: u64,
    /// Time an upstream has to answer (response headers) an `/api` request (504 past it).
    #[arg(
        long = "request-timeout-ms",
        env = "GATEWAY_REQUEST_TIMEOUT_MS",
        default_value_t = 30_000
    )]
    pub request_timeout_ms: u64,
    /// Time signaling has to answer a Socket.IO long-polling request: engine.io holds a poll
    /// open for up to its ping interval (25 s by default), so this must be longer.
    #[arg(
        long = "long-poll-timeout-ms",
        env = "GATEWAY_LONG_POLL_TIMEOUT_MS",
        default_value_t = 60_000
    )]
    pub long_poll_timeout_ms: u64,
    /// Interval of the active health checks (`GET /healthz` on every instance); each wait is
    /// drawn between half of it and all of it, so gateway replicas do not probe in step.
    #[arg(long = "health-check-interval-ms", env = "GATEWAY_HEALTH_CHECK_INTERVAL_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..))]
    pub health_check_interval_ms: u64,
    /// Timeout of one health check.
    #[arg(
        long = "health-check-timeout-ms",
        env = "GATEWAY_HEALTH_CHECK_TIMEOUT_MS",
        default_value_t = 2_000
    )]
    pub health_check_timeout_ms: u64,
    /// Consecutive failed health checks that take an instance out of rotation.
    #[arg(long = "health-check-failures", env = "GATEWAY_HEALTH_CHECK_FAILURES", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub health_check_failures: u32,
    /// Consecutive failed requests (connection failures, resets, timeouts) that eject an
    /// instance passively, without waiting for the next health check.
    #[arg(long = "eject-after-failures", env = "GATEWAY_EJECT_AFTER_FAILURES", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub eject_after_failures: u32,
    /// How long a passively ejected instance stays out, unless a health check sees it come back.
    #[arg(
        long = "eject-cooldown-ms",
        env = "GATEWAY_EJECT_COOLDOWN_MS",
        default_value_t = 30_000
    )]
    pub eject_cooldown_ms: u64,
    /// Most instances one request is tried on (retries go to a different instance each time).
    #[arg(long = "max-attempts", env = "GATEWAY_MAX_ATTEMPTS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_attempts: u32,
}

fn ms(value: u64) -> Duration {
    Duration::from_millis(value)
}

impl LimitConfig {
    /// See [`LimitConfig::header_read_timeout_ms`].
    pub fn header_read_timeout(&self) -> Duration {
        ms(self.header_read_timeout_ms)
    }
    /// See [`LimitConfig::body_read_timeout_ms`].
    pub fn body_read_timeout(&self) -> Duration {
        ms(self.body_read_timeout_ms)
    }
    /// See [`LimitConfig::write_timeout_ms`].
    pub fn write_timeout(&self) -> Duration {
        ms(self.write_timeout_ms)
    }
    /// See [`LimitConfig::shutdown_grace_ms`].
    pub fn shutdown_grace(&self) -> Duration {
        ms(self.shutdown_grace_ms)
    }
}

impl PoolConfig {
    /// See [`PoolConfig::connect_timeout_ms`].
    pub fn connect_timeout(&self) -> Duration {
        ms(self.connect_timeout_ms)
    }
    /// See [`PoolConfig::request_timeout_ms`].
    pub fn request_timeout(&self) -> Duration {
        ms(self.request_timeout_ms)
    }
    /// See [`PoolConfig::long_poll_timeout_ms`].
    pub fn long_poll_timeout(&self) -> Duration {
        ms(self.long_poll_timeout_ms)
    }
    /// See [`PoolConfig::health_check_interval_ms`].
    pub fn health_check_interval(&self) -> Duration {
        ms(self.health_check_interval_ms)
    }
    /// See [`PoolConfig::health_check_timeout_ms`].
    pub fn health_check_timeout(&self) -> Duration {
        ms(self.health_check_timeout_ms)
    }
    /// See [`PoolConfig::eject_cooldown_ms`].
    pub fn eject_cooldown(&self) -> Duration {
        ms(self.eject_cooldown_ms)
    }
}

impl Config {
    /// Checks what clap cannot: non-empty pools, usable CORS origins, sane sizes.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.calls_api_upstreams.is_empty() {
            return Err(ConfigError::Missing {
                var: "CALLS_API_UPSTREAMS",
            });
        }
        if self.signaling_upstreams.is_empty() {
            return Err(ConfigError::Missing {
                var: "SIGNALING_UPSTREAMS",
            });
        }
        if self.limits.max_body_bytes == 0 {
            return Err(ConfigError::Invalid {
                var: "GATEWAY_MAX_BODY_BYTES",
                reason: "must be at least 1".into(),
            });
        }
        if self.limits.max_header_bytes < 1024 {
            return Err(ConfigError::Invalid {
                var: "GATEWAY_MAX_HEADER_BYTES",
                reason: "must be at least 1024".into(),
            });
        }
        self.cors_origins()?;
        Ok(())
    }

    /// The CORS policy: `None` when CORS is off.
    pub fn cors_origins(&self) -> Result<Option<CorsOrigins>, ConfigError> {
        let origins: Vec<&str> = self
            .cors_allowed_origins
            .iter()
            .map(|o| o.trim())
            .filter(|o| !o.is_empty())
            .collect();
        if origins.is_empty() {
            return Ok(None);
        }
        if origins.contains(&"*") {
            if origins.len() > 1 {
                return Err(ConfigError::Invalid {
                    var: "CORS_ALLOWED_ORIGINS",
                    reason: "`*` cannot be combined with explicit origins".into(),
                });
            }
            return Ok(Some(CorsOrigins::Any));
        }
        let mut values = Vec::with_capacity(origins.len());
        for origin in origins {
            let uri: Uri = origin.parse().map_err(|_| ConfigError::Invalid {
                var: "CORS_ALLOWED_ORIGINS",
                reason: format!("`{origin}` is not an origin like https://app.example.com"),
            })?;
            let is_origin = uri.scheme().is_some()
                && uri.authority().is_some()
                && matches!(uri.path(), "" | "/")
                && uri.query().is_none();
            if !is_origin {
                return Err(ConfigError::Invalid {
                    var: "CORS_ALLOWED_ORIGINS",
                    reason: format!("`{origin}` is not an origin like https://app.example.com"),
                });
            }
            let value = HeaderValue::from_str(origin.trim_end_matches('/')).map_err(|_| {
                ConfigError::Invalid {
                    var: "CORS_ALLOWED_ORIGINS",
                    reason: format!("`{origin}` is not a valid header value"),
                }
            })?;
            values.push(value);
        }
        Ok(Some(CorsOrigins::List(values)))
    }
}

/// Which origins CORS lets in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`.
    Any,
    /// Exactly these.
    List(Vec<HeaderValue>),
}

/// The base URL of one upstream instance: `http://host:port` with an optional path prefix.
///
/// Only plain HTTP: upstreams run inside the cluster network, and TLS there would be a
/// service mesh's job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamUrl {
    authority: Authority,
    /// Path prefix without a trailing slash; empty for none.
    prefix: String,
}

impl UpstreamUrl {
    /// Parses `http://host:port[/prefix]`. Errors name what is wrong, for the start-up message.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let uri: Uri = value
            .parse()
            .map_err(|_| format!("`{value}` is not a URL"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "`{value}`: https upstreams are not supported; the gateway speaks plain HTTP inside the cluster"
                ));
            }
            _ => return Err(format!("`{value}` must start with http://")),
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("`{value}` has no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "`{value}`: credentials in upstream URLs are not supported"
            ));
        }
        if uri.query().is_some() {
            return Err(format!("`{value}`: upstream URLs cannot have a query"));
        }
        let prefix = uri.path().trim_end_matches('/').to_owned();
        Ok(Self { authority, prefix })
    }

    /// `host:port`, the instance's label in logs and metrics.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The origin-form target (`/prefix/path?query`) for a client's path and query, as sent
    /// on a connection to the instance.
    pub fn origin_for(&self, path_and_query: &PathAndQuery) -> Result<Uri, http::Error> {
        if self.prefix.is_empty() {
            Ok(Uri::from(path_and_query.clone()))
        } else {
            Uri::builder()
                .path_and_query(format!("{}{}", self.prefix, path_and_query))
                .build()
        }
    }

    /// The upstream URI for a client's path and query.
    pub fn uri_for(&self, path_and_query: &PathAndQuery) -> Result<Uri, http::Error> {
        let builder = Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(self.authority.clone());
        if self.prefix.is_empty() {
            builder.path_and_query(path_and_query.clone()).build()
        } else {
            builder
                .path_and_query(format!("{}{}", self.prefix, path_and_query))
                .build()
        }
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, clap::Error> {
        let mut args = vec![
            "gateway",
            "--calls-api-upstreams",
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "--signaling-upstreams",
            "http://127.0.0.1:3",
            "--jwt-secret",
            "s",
        ];
        args.extend_from_slice(extra);
        Config::try_parse_from(args)
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.listen, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(config.admin_listen, "127.0.0.1:9090".parse().unwrap());
        assert_eq!(config.calls_api_upstreams.len(), 2);
        assert_eq!(config.limits.max_body_bytes, 65_536);
        assert_eq!(config.rate_limits.per_user_per_minute, 300);
        assert!(!config.trust_forwarded_for);
        assert_eq!(config.cors_origins().unwrap(), None);
        config.validate().unwrap();
    }

    #[test]
    fn upstream_urls_keep_a_path_prefix_and_refuse_https() {
        let url = UpstreamUrl::parse(" http://calls-api:8081/base/ ").unwrap();
        let pq: PathAndQuery = "/api/v1/calls?limit=2".parse().unwrap();
        assert_eq!(
            url.uri_for(&pq).unwrap(),
            "http://calls-api:8081/base/api/v1/calls?limit=2"
        );
        assert_eq!(url.to_string(), "http://calls-api:8081/base");
        assert_eq!(url.origin_for(&pq).unwrap(), "/base/api/v1/calls?limit=2");
        let bare = UpstreamUrl::parse("http://calls-api:8081").unwrap();
        assert_eq!(bare.origin_for(&pq).unwrap(), "/api/v1/calls?limit=2");
        assert!(
            UpstreamUrl::parse("https://x:1")
                .unwrap_err()
                .contains("https")
        );
        assert!(UpstreamUrl::parse("x:1").is_err());
        assert!(UpstreamUrl::parse("http://u:p@x:1").is_err());
    }

    #[test]
    fn trust_forwarded_for_accepts_boolish_values() {
        assert!(
            parse(&["--trust-forwarded-for", "true"])
                .unwrap()
                .trust_forwarded_for
        );
        assert!(
            parse(&["--trust-forwarded-for", "1"])
                .unwrap()
                .trust_forwarded_for
        );
        assert!(
            !parse(&["--trust-forwarded-for", "no"])
                .unwrap()
                .trust_forwarded_for
        );
    }

    #[test]
    fn cors_origins_are_validated() {
        let config = parse(&[
            "--cors-allowed-origins",
            "https://a.example,https://b.example/",
        ])
        .unwrap();
        let Some(CorsOrigins::List(list)) = config.cors_origins().unwrap() else {
            panic!()
        };
        assert_eq!(list, vec!["https://a.example", "https://b.example"]);
        let config = parse(&["--cors-allowed-origins", "*"]).unwrap();
        assert_eq!(config.cors_origins().unwrap(), Some(CorsOrigins::Any));
        assert!(
            parse(&["--cors-allowed-origins", "*,https://a.example"])
                .unwrap()
                .validate()
                .is_err()
        );
        assert!(
            parse(&["--cors-allowed-origins", "https://a.example/path"])
                .unwrap()
                .validate()
                .is_err()
        );
    }

    #[test]
    fn a_missing_pool_is_a_clap_error_naming_the_variable() {
        let err = Config::try_parse_from(["gateway", "--jwt-secret", "s"]).unwrap_err();
        let message = common::config::explain_clap_error::<Config>(&err);
        assert!(message.contains("CALLS_API_UPSTREAMS"), "{message}");
    }
}
