//! What every calls service shares.
//!
//! The gateway, calls-api, signaling and media-token services all depend on this crate (and on
//! nothing of each other), so everything that must behave identically across them lives here:
//! how a user is identified, how an error looks on the wire, how configuration is read and
//! secrets kept out of logs, how a process logs, exposes metrics, reports health and shuts down.
//!
//! Modules:
//!
//! - [`auth`]: JWT access-token verification (HS256 / RS256 / ES256 / EdDSA, algorithm fixed by
//!   the key), `Authorization: Bearer` parsing, an axum extractor, and token minting for
//!   development and tests.
//! - [`backoff`]: jittered exponential backoff for retry loops.
//! - [`config`]: [`config::Secret`], [`config::ConfigError`], and turning clap errors into
//!   start-up messages that name environment variables.
//! - [`error`]: the response envelope: [`error::ErrorCode`], [`error::ApiError`],
//!   [`error::Envelope`], the envelope-producing extractors ([`error::ValidJson`], ...), router
//!   fallbacks and the middleware that keeps framework plain-text errors out of responses.
//! - [`health`]: `/healthz`, `/readyz`, `/metrics` routes.
//! - [`ids`]: [`ids::UserId`], [`ids::ChatRoomId`], [`ids::CallId`], validated on parse.
//! - [`metrics`]: the process-wide Prometheus recorder and `/metrics` handler.
//! - [`process`]: a service binary's `main` in one call: config, telemetry, runtime, signals,
//!   flush on exit.
//! - [`ratelimit`]: the token bucket behind every rate limit.
//! - [`stack`]: the HTTP stack around a service's routes (envelope fallbacks, body limit,
//!   request ids).
//! - [`shutdown`]: SIGTERM / Ctrl-C, and the [`shutdown::CancellationToken`] that stops a
//!   service.
//! - [`telemetry`]: JSON logging set-up, idempotent for the all-in-one binary.

pub mod auth;
pub mod backoff;
pub mod config;
pub mod error;
pub mod health;
pub mod ids;
pub mod metrics;
pub mod process;
pub mod ratelimit;
pub mod shutdown;
pub mod stack;
pub mod telemetry;
