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
