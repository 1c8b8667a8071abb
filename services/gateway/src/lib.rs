//! gateway: the only public listener, in front of calls-api and signaling.
//!
//! It routes `/api/*` to calls-api and `/socket.io/*` to signaling (WebSocket upgrades passed
//! through, long-polling sessions pinned to the instance that owns them), and Agora's
//! `POST /webhooks/agora` to calls-api without an access token (the notice is signed), balances over healthy
//! replicas and survives one dying, checks access tokens before forwarding, and keeps abusive or
//! slow clients from hurting everyone else: rate limits per IP, per user and on call initiation,
//! body and header caps, timeouts. `/internal/*` is never reachable through it. It serves its own
//! `/healthz` and `/readyz`; `/metrics`, which names internal instances, only on the admin
//! listener (`GATEWAY_ADMIN_LISTEN`).
//!
//! Modules:
//!
//! - [`config`]: typed configuration from the environment (`GATEWAY_*`, `*_UPSTREAMS`, `JWT_*`,
//!   `RATE_LIMIT_*`, `CORS_ALLOWED_ORIGINS`).
//! - [`server`]: [`run`] / [`run_with_admin`], the accept loop, connection limits, the admin
//!   listener and graceful shutdown.
//! - `gateway`: one request from start to end: request id, route, protections, upstream.
//! - [`route`]: which route a method and path take; refuses `/internal` and dot segments.
//! - [`proxy`]: forwarding to a pool: bodies, retries, failures as 502/503/504 envelopes.
//! - [`pool`]: upstream instances, round-robin, active health checks, passive ejection.
//! - [`client`]: keep-alive HTTP/1.1 connections to one instance.
//! - [`sticky`]: pinning engine.io long-polling sessions to their signaling instance.
//! - [`websocket`]: splicing upgraded connections, closing them on shutdown.
//! - [`auth`]: access-token checks at the edge, with a cache of verified tokens.
//! - [`ratelimit`]: keyed token buckets.
//! - [`shards`]: the sharded map behind the token cache, the rate limiters and the session pins.
//! - [`headers`]: request ids, hop-by-hop headers, `X-Forwarded-*`, the client IP.
//! - [`io`]: the write timeout on client connections.
//! - [`metrics`]: the Prometheus metrics the gateway exports.

pub mod auth;
pub mod client;
pub mod config;
mod gateway;
pub mod headers;
pub mod io;
pub mod metrics;
pub mod openapi;
pub mod pool;
pub mod proxy;
pub mod ratelimit;
pub mod route;
pub mod server;
pub mod shards;
pub mod sticky;
pub mod websocket;

pub use config::Config;
pub use server::{run, run_with_admin};

/// Why the gateway could not start or keep serving.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is unusable; the message names the variable.
    #[error("invalid configuration: {0}")]
    Config(#[from] common::config::ConfigError),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The admin listener could not be bound.
    #[error("cannot listen on {addr} (GATEWAY_ADMIN_LISTEN): {source}")]
    AdminListen {
        /// The configured address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}
