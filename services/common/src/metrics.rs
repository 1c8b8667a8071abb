//! Prometheus metrics.
//!
//! One global recorder per process (the `metrics` facade allows only one), installed by the first
//! call to [`prometheus`]; every later call, from any service in the same process, gets a handle
//! to the same recorder. `GET /metrics` is served by [`metrics_handler`] (mounted by
//! [`crate::health::router`]).
//!
//! Durations are recorded in seconds; metrics whose name ends in `_seconds` get latency buckets
//! from 1 ms to 30 s, others the exporter's summary.

use std::sync::OnceLock;

use axum::response::IntoResponse;
use http::StatusCode;
use http::header::CONTENT_TYPE;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: fine below 100 ms where API calls live, coarse up to 30 s.
pub const LATENCY_BUCKETS_SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Participants per call (a histogram recorded when a call ends).
pub const PARTICIPANTS_METRIC: &str = "calls_participants_per_call";
/// Buckets for [`PARTICIPANTS_METRIC`]: every size up to a 1:1, then the group sizes that matter
/// for capacity (`CALL_MAX_PARTICIPANTS` defaults to 16).
pub const PARTICIPANT_BUCKETS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0, 24.0, 32.0];

/// The Prometheus text exposition content type.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4";

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder on first use and returns a handle to it.
///
/// If some other recorder was installed first (a test harness, say), the handle belongs to a
/// recorder that is not global: `/metrics` then serves an empty page instead of failing.
pub fn prometheus() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = builder
                .set_buckets_for_metric(
                    Matcher::Suffix("_seconds".to_owned()),
                    LATENCY_BUCKETS_SECONDS,
                )
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full(PARTICIPANTS_METRIC.to_owned()),
                        PARTICIPANT_BUCKETS,
                    )
                })
                // Only an empty bucket list is refused, and ours are not empty.
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            // Histograms buffer samples until upkeep drains them. Scrapes run it too, but a
            // service nobody scrapes would otherwise grow without bound; one plain thread per
            // process (not a task: this may run outside any runtime) keeps memory flat.
            let upkeep = handle.clone();
            let spawned = std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(std::time::Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "metrics upkeep thread not started; histograms drain only on scrape");
            }
            handle
        })
        .clone()
}

/// One answered HTTP request: `http_requests_total` and `http_request_duration_seconds`, by
/// `service`, `method`, `route` (the template, never the raw path) and, for the counter,
/// `status`. The same names and labels in every service make one dashboard cover them all.
pub fn record_http_request(
    service: &'static str,
    method: &str,
    route: &str,
    status: u16,
    elapsed: std::time::Duration,
) {
    metrics::counter!("http_requests_total", "service" => service, "method" => method.to_owned(), "route" => route.to_owned(), "status" => status.to_string())
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "service" => service, "method" => method.to_owned(), "route" => route.to_owned())
        .record(elapsed.as_secs_f64());
}

/// Lower-snake gRPC status code names (`ok`, `unavailable`, ...), stable for metric labels.
pub fn grpc_code_name(code: i32) -> &'static str {
    match code {
        0 => "ok",
        1 => "cancelled",
        3 => "invalid_argument",
        4 => "deadline_exceeded",
        5 => "not_found",
        6 => "already_exists",
        7 => "permission_denied",
        8 => "resource_exhausted",
        9 => "failed_precondition",
        10 => "aborted",
        11 => "out_of_range",
        12 => "unimplemented",
        13 => "internal",
        14 => "unavailable",
        15 => "data_loss",
        16 => "unauthenticated",
        _ => "unknown",
    }
}

/// `GET /metrics`: the Prometheus text format.
pub async fn metrics_handler() -> impl IntoResponse {
    let handle = prometheus();
    // Without the exporter's HTTP listener nobody else runs upkeep; doing it per scrape keeps
    // histogram buffers bounded.
    handle.run_upkeep();
    (
        StatusCode::OK,
        [(CONTENT_TYPE, CONTENT_TYPE_TEXT)],
        handle.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_is_shared_between_callers() {
        let a = prometheus();
        metrics::counter!("common_test_shared_total").increment(3);
        let b = prometheus();
        assert!(a.render().contains("common_test_shared_total 3"));
        assert!(b.render().contains("common_test_shared_total 3"));
    }

    #[test]
    fn seconds_histograms_use_latency_buckets() {
        let handle = prometheus();
        metrics::histogram!("common_test_latency_seconds").record(0.003);
        let text = handle.render();
        assert!(
            text.contains("common_test_latency_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
    }
}
