//! The gateway's Prometheus metrics (served at `/metrics` through `common::metrics`).
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `gateway_requests_total` | counter | `route`, `status`, `upstream` |
//! | `gateway_upstream_duration_seconds` | histogram (time to response headers) | `upstream` |
//! | `gateway_upstream_retries_total` | counter | `upstream` |
//! | `gateway_upstream_ejections_total` | counter | `upstream`, `instance` |
//! | `gateway_upstream_healthy` | gauge (1 = taking traffic) | `upstream`, `instance` |
//! | `gateway_upstream_available_instances` | gauge | `upstream` |
//! | `gateway_websockets_open` | gauge | |
//! | `gateway_rate_limited_total` | counter | `scope` (`ip`, `user`, `initiate`) |
//!
//! Labels are bounded: routes are the gateway's route classes (not paths), statuses are HTTP
//! codes, instances come from configuration.

use std::sync::{LazyLock, OnceLock};
use std::time::Duration;

use http::StatusCode;
use metrics::{Counter, Histogram};

use crate::route::Route;

/// `upstream` label values, in [`upstream_index`] order.
const UPSTREAMS: [&str; 4] = ["none", "calls-api", "signaling", "notifier"];
/// Statuses whose counters are cached; others are looked up on each use.
const STATUSES: [u16; 24] = [
    101, 200, 201, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 408, 409, 413, 415, 422, 429,
    431, 500, 502, 503, 504,
];

/// Counter handles by (route, upstream, status): looking a labelled counter up in the recorder's
/// registry hashes its labels on every request, a cost worth avoiding on the hot path.
static REQUESTS: LazyLock<Box<[OnceLock<Counter>]>> = LazyLock::new(|| {
    (0..Route::COUNT * UPSTREAMS.len() * STATUSES.len())
        .map(|_| OnceLock::new())
        .collect()
});

fn upstream_index(upstream: &str) -> Option<usize> {
    UPSTREAMS.iter().position(|u| *u == upstream)
}

/// Registers descriptions (shown as `# HELP`).
pub fn describe() {
    metrics::describe_counter!(
        "gateway_requests_total",
        "Requests answered, by route class, status and upstream"
    );
    metrics::describe_histogram!(
        "gateway_upstream_duration_seconds",
        metrics::Unit::Seconds,
        "Time from sending a request upstream to its response headers"
    );
    metrics::describe_counter!(
        "gateway_upstream_retries_total",
        "Requests retried on another instance"
    );
    metrics::describe_counter!(
        "gateway_upstream_ejections_total",
        "Passive ejections of an instance after consecutive failures"
    );
    metrics::describe_gauge!(
        "gateway_upstream_healthy",
        "1 when the instance takes traffic (healthy and not ejected)"
    );
    metrics::describe_gauge!(
        "gateway_upstream_available_instances",
        "Instances taking traffic"
    );
    metrics::describe_gauge!(
        "gateway_websockets_open",
        "Proxied WebSocket connections open"
    );
    metrics::describe_counter!(
        "gateway_rate_limited_total",
        "Requests refused by a rate limit, by scope"
    );
}

/// One answered request.
pub fn request(route: Route, status: StatusCode, upstream: &'static str) {
    let register = || {
        metrics::counter!(
            "gateway_requests_total",
            "route" => route.label(),
            "status" => status.as_str().to_owned(),
            "upstream" => upstream
        )
    };
    let status_index = STATUSES.iter().position(|s| *s == status.as_u16());
    let cell =
        status_index
            .zip(upstream_index(upstream))
            .and_then(|(status_index, upstream_index)| {
                REQUESTS.get(
                    (route.index() * UPSTREAMS.len() + upstream_index) * STATUSES.len()
                        + status_index,
                )
            });
    match cell {
        Some(cell) => cell.get_or_init(register).increment(1),
        None => register().increment(1),
    }
}

/// The histogram of time to response headers from an upstream (held by its pool).
pub fn upstream_duration(upstream: &'static str) -> Histogram {
    metrics::histogram!("gateway_upstream_duration_seconds", "upstream" => upstream)
}

/// Records one upstream response time.
pub fn record_duration(histogram: &Histogram, elapsed: Duration) {
    histogram.record(elapsed.as_secs_f64());
}

/// A retry on another instance.
pub fn retried(upstream: &'static str) {
    metrics::counter!("gateway_upstream_retries_total", "upstream" => upstream).increment(1);
}

/// A passive ejection.
pub fn ejected(upstream: &'static str, instance: &str) {
    metrics::counter!("gateway_upstream_ejections_total", "upstream" => upstream, "instance" => instance.to_owned())
        .increment(1);
}

/// An instance's availability.
pub fn instance_health(upstream: &'static str, instance: &str, up: bool) {
    metrics::gauge!("gateway_upstream_healthy", "upstream" => upstream, "instance" => instance.to_owned())
        .set(if up { 1.0 } else { 0.0 });
}

/// Instances taking traffic in a pool.
pub fn available_instances(upstream: &'static str, count: usize) {
    metrics::gauge!("gateway_upstream_available_instances", "upstream" => upstream)
        .set(count as f64);
}

/// A request refused by a rate limit.
pub fn rate_limited(scope: &'static str) {
    metrics::counter!("gateway_rate_limited_total", "scope" => scope).increment(1);
}

/// Tracks one open proxied WebSocket for `gateway_websockets_open`: counted while alive.
#[derive(Debug)]
pub struct OpenWebSocket(());

impl OpenWebSocket {
    /// Counts a WebSocket as open until the guard drops.
    pub fn open() -> Self {
        metrics::gauge!("gateway_websockets_open").increment(1.0);
        Self(())
    }
}

impl Drop for OpenWebSocket {
    fn drop(&mut self) {
        metrics::gauge!("gateway_websockets_open").decrement(1.0);
    }
}
