//! Metric names and the few helpers that keep their labels bounded.
//!
//! - `signaling_sockets_connected` (gauge)
//! - `signaling_events_in_total{event}`: client events received (unknown names count as
//!   `other`, so a client cannot create label values)
//! - `signaling_events_out_total{event}`: events emitted to sockets
//! - `signaling_events_dropped_total{reason}`: relay events a socket could not take
//! - `signaling_relay_latency_seconds`: from an event's creation (`X-Created-At`) to its emit
//! - `signaling_event_duration_seconds{event, outcome}`: handling of one client event, from its
//!   turn in the socket's order to its answer (`outcome` is `ok` or the error code)
//! - `signaling_command_duration_seconds{command, outcome}`: calls-api round trips
//! - `signaling_errors_total{code}`: errors answered to clients
//! - `signaling_subscriptions` (gauge): bus subscriptions held for calls and users
//! - `signaling_presence_failures_total{type}`: presence reports given up after retries
//! - `signaling_subscriptions_ended_total`: sockets calls-api told to stop following a call
//!   (removed from the call's room or from the call)

use std::time::Duration;

/// Client events the namespace knows.
pub const CLIENT_EVENTS: [&str; 4] = [
    "join_call",
    "leave_call",
    "media_state_changed",
    "call_status_changed",
];

/// A bounded label for a client event name.
pub fn event_label(event: &str) -> &'static str {
    CLIENT_EVENTS
        .iter()
        .find(|e| **e == event)
        .copied()
        .unwrap_or("other")
}

pub(crate) fn subscription_ended() {
    metrics::counter!("signaling_subscriptions_ended_total").increment(1);
}

pub(crate) fn event_in(event: &str) {
    metrics::counter!("signaling_events_in_total", "event" => event_label(event)).increment(1);
}

pub(crate) fn event_out(event: &str) {
    metrics::counter!("signaling_events_out_total", "event" => event.to_owned()).increment(1);
}

pub(crate) fn event_dropped(reason: &'static str) {
    metrics::counter!("signaling_events_dropped_total", "reason" => reason).increment(1);
}

pub(crate) fn relay_latency(created_at_millis: u64) {
    let now = calls_bus::wire::now_millis();
    let millis = now.saturating_sub(created_at_millis);
    metrics::histogram!("signaling_relay_latency_seconds")
        .record(Duration::from_millis(millis).as_secs_f64());
}

pub(crate) fn event_handled(event: &'static str, outcome: &str, elapsed: Duration) {
    metrics::histogram!(
        "signaling_event_duration_seconds",
        "event" => event,
        "outcome" => outcome.to_owned()
    )
    .record(elapsed.as_secs_f64());
}

pub(crate) fn command(command: &'static str, outcome: &str, elapsed: Duration) {
    metrics::histogram!(
        "signaling_command_duration_seconds",
        "command" => command,
        "outcome" => outcome.to_owned()
    )
    .record(elapsed.as_secs_f64());
}

pub(crate) fn error(code: &str) {
    metrics::counter!("signaling_errors_total", "code" => code.to_owned()).increment(1);
}

pub(crate) fn sockets(delta: f64) {
    metrics::gauge!("signaling_sockets_connected").increment(delta);
}

pub(crate) fn subscriptions(delta: f64) {
    metrics::gauge!("signaling_subscriptions").increment(delta);
}

pub(crate) fn presence_failure(kind: &'static str) {
    metrics::counter!("signaling_presence_failures_total", "type" => kind).increment(1);
}
