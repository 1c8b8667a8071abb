//! Webhooks to the host application (CONTRACT section 9): call events, signed per Standard
//! Webhooks, delivered at least once and in each call's order, retried for
//! `WEBHOOK_RETRY_HOURS`, then dead-lettered and replayable.
//!
//! - [`model`]: event types, endpoints' ids, URLs and secrets, the address policy (pure).
//! - [`stream`]: the bus messages webhooks are built from (pure).
//! - [`projection`]: each call rebuilt from its events, and the webhook events every step
//!   causes (pure).
//! - [`signing`]: `webhook-signature` and `webhook-id` (pure).
//! - [`consumer`]: the durable consumer `notifier-webhooks`.
//! - [`client`]: the outbound HTTP client (address checks at connect time, no redirects,
//!   bounded answers).
//! - [`worker`]: the delivery lane and its housekeeping.
//! - [`api`]: the internal API, `/internal/v1/webhooks…`.
//!
//! The store side (endpoints, projections, the delivery queue) is in [`crate::store`].

pub mod api;
pub mod client;
pub mod consumer;
pub mod model;
pub mod projection;
pub mod signing;
pub mod stream;
pub mod worker;
