//! notifier's metrics (documented in docs/operations.md; names checked against the dashboard
//! and alerts by `make test-deploy`).
//!
//! - `notifier_pushes_total{provider, kind, outcome}`: every push attempt's outcome
//!   (`delivered`, `invalid_token`, `retry`, `rejected`, `credentials_rejected`, `expired`,
//!   `skipped`).
//! - `notifier_push_latency_seconds{provider, kind}`: from the commit that caused a push (the
//!   event's creation) to its first request leaving for the provider.
//! - `notifier_devices_removed_total{provider, reason}`: devices removed because the provider
//!   called their token dead.
//! - `notifier_credentials_rejected_total{provider}`: attempts refused for our credentials.
//! - `notifier_events_total{outcome}`: consumed events (`applied`, `stale`, `skipped`,
//!   `invalid`).
//! - `notifier_deliveries_pending{lane}`, `notifier_delivery_oldest_seconds{lane}`: the due
//!   backlog.
//! - `notifier_device_registrations_total{platform}`.
//!
//! Webhooks (`endpoint` is the endpoint's id, never its URL):
//! - `notifier_webhook_deliveries_total{endpoint, outcome}`: how deliveries ended (`delivered`,
//!   `dead_lettered`, `gone`).
//! - `notifier_webhook_attempts_total{endpoint, result}`: every attempt (`2xx`, `3xx`, `4xx`,
//!   `410`, `5xx`, `timeout`, `connection`, `blocked`).
//! - `notifier_webhook_request_seconds{endpoint}`: how long attempts took.
//! - `notifier_webhook_latency_seconds{endpoint}`: from the event to its delivery.
//! - `notifier_webhook_pending{endpoint}`, `notifier_webhook_oldest_pending_seconds{endpoint}`:
//!   the backlog.
//! - `notifier_webhook_endpoints_disabled`: endpoints disabled now;
//!   `notifier_webhook_endpoint_disabled_total{endpoint, reason}` (`gone`, `failing`).
//! - `notifier_webhook_events_total{outcome}`: call events consumed for webhooks (`applied`,
//!   `waiting`, `stale`, `invalid`, `gap_skipped`, `orphaned`).

use crate::plan::Lane;

pub fn push(provider: &'static str, kind: &str, outcome: &'static str) {
    metrics::counter!("notifier_pushes_total", "provider" => provider, "kind" => kind.to_owned(), "outcome" => outcome)
        .increment(1);
}

pub fn latency(provider: &'static str, kind: &str, seconds: f64) {
    metrics::histogram!("notifier_push_latency_seconds", "provider" => provider, "kind" => kind.to_owned())
        .record(seconds);
}

pub fn devices_removed(provider: &'static str, reason: &str, n: u64) {
    metrics::counter!("notifier_devices_removed_total", "provider" => provider, "reason" => reason.to_owned())
        .increment(n);
}

pub fn credentials_rejected(provider: &'static str) {
    metrics::counter!("notifier_credentials_rejected_total", "provider" => provider).increment(1);
}

pub fn event(outcome: &'static str) {
    metrics::counter!("notifier_events_total", "outcome" => outcome).increment(1);
}

pub fn backlog(lane: Lane, pending: i64, oldest_ms: i64) {
    metrics::gauge!("notifier_deliveries_pending", "lane" => lane.as_str()).set(pending as f64);
    metrics::gauge!("notifier_delivery_oldest_seconds", "lane" => lane.as_str())
        .set(oldest_ms as f64 / 1000.0);
}

pub fn registration(platform: &'static str) {
    metrics::counter!("notifier_device_registrations_total", "platform" => platform).increment(1);
}

pub fn webhook_delivery(endpoint: &str, outcome: &'static str) {
    metrics::counter!("notifier_webhook_deliveries_total", "endpoint" => endpoint.to_owned(), "outcome" => outcome)
        .increment(1);
}

pub fn webhook_attempt(endpoint: &str, result: &'static str) {
    metrics::counter!("notifier_webhook_attempts_total", "endpoint" => endpoint.to_owned(), "result" => result)
        .increment(1);
}

pub fn webhook_request(endpoint: &str, seconds: f64) {
    metrics::histogram!("notifier_webhook_request_seconds", "endpoint" => endpoint.to_owned())
        .record(seconds);
}

pub fn webhook_latency(endpoint: &str, seconds: f64) {
    metrics::histogram!("notifier_webhook_latency_seconds", "endpoint" => endpoint.to_owned())
        .record(seconds);
}

pub fn webhook_backlog(endpoint: &str, pending: i64, oldest_ms: i64) {
    metrics::gauge!("notifier_webhook_pending", "endpoint" => endpoint.to_owned())
        .set(pending as f64);
    metrics::gauge!("notifier_webhook_oldest_pending_seconds", "endpoint" => endpoint.to_owned())
        .set(oldest_ms as f64 / 1000.0);
}

pub fn webhook_endpoints_disabled(n: i64) {
    metrics::gauge!("notifier_webhook_endpoints_disabled").set(n as f64);
}

pub fn webhook_endpoint_disabled(endpoint: &str, reason: &'static str) {
    metrics::counter!("notifier_webhook_endpoint_disabled_total", "endpoint" => endpoint.to_owned(), "reason" => reason)
        .increment(1);
}

pub fn webhook_events(outcome: &'static str, n: u64) {
    metrics::counter!("notifier_webhook_events_total", "outcome" => outcome).increment(n);
}
