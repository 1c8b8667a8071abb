//! Logs and traces.
//!
//! **Logs**: JSON lines on stdout, filtered by `RUST_LOG` (default `info`). Every line carries the
//! fields of the span it was written in: a request's line has its `request_id`, `trace_id` and
//! `user_id`; a bus message's line (a command, an event relayed) has that message's span.
//!
//! **Traces**: OpenTelemetry, through the `tracing` spans the services open for each request,
//! RPC, bus message, database operation and socket event. Spans always get real trace ids (so
//! logs can be joined on `trace_id` even with no collector); they are exported over OTLP when the
//! standard variables ask for it:
//!
//! | variable | effect |
//! |---|---|
//! | `OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` | export to this collector; unset: no export |
//! | `OTEL_EXPORTER_OTLP_PROTOCOL` / `..._TRACES_PROTOCOL` | `http/protobuf` (default, port 4318), `http/json`, or `grpc` (port 4317) |
//! | `OTEL_EXPORTER_OTLP_HEADERS`, `..._TIMEOUT`, `..._COMPRESSION` | as the OTLP specification says |
//! | `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES` | the resource; the service name defaults to the binary's |
//! | `OTEL_TRACES_SAMPLER`, `OTEL_TRACES_SAMPLER_ARG` | sampling (default `parentbased_always_on`) |
//! | `OTEL_BSP_*` | batching |
//! | `OTEL_SDK_DISABLED=true`, `OTEL_TRACES_EXPORTER=none` | no export even if an endpoint is set |
//!
//! Context crosses process boundaries as W3C `traceparent`/`tracestate`: in HTTP headers
//! ([`set_parent_from_http`], [`inject_http`]), gRPC metadata and NATS message headers (both
//! through [`traceparent`] / [`set_parent`]). The trace filter is separate from `RUST_LOG`, so
//! `RUST_LOG=warn` quiets the logs without cutting traces. Log lines written inside a span are
//! attached to it as span events only when exporting; otherwise nobody would read them.
//!
//! The standalone binary runs every service in one process and each service calls [`init`], so
//! only the first call installs anything and later calls do nothing.

use std::sync::{Mutex, OnceLock};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{EnvFilter, FilterExt, LevelFilter, Targets, filter_fn};
use tracing_subscriber::layer::Filter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// The W3C trace context header.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C vendor trace state header.
pub const TRACESTATE: &str = "tracestate";

static INSTALLED: OnceLock<()> = OnceLock::new();
/// The provider, kept to flush it at exit; `None` after [`shutdown`].
static PROVIDER: Mutex<Option<SdkTracerProvider>> = Mutex::new(None);
static EXPORTING: OnceLock<bool> = OnceLock::new();

/// Installs the global subscriber (JSON logs + OpenTelemetry) once; later calls (from other
/// services in the same process) are no-ops. An unparsable `RUST_LOG` falls back to `info`
/// rather than failing start-up, and says so; an exporter that cannot be built is reported and
/// tracing goes on without export.
pub fn init(service_name: &str) {
    let mut first = false;
    let mut export_error = None;
    INSTALLED.get_or_init(|| {
        first = true;
        let (filter, bad_filter) = match EnvFilter::try_from_default_env() {
            Ok(filter) => (filter, None),
            Err(err) => {
                let bad = std::env::var("RUST_LOG")
                    .ok()
                    .map(|value| (value, err.to_string()));
                (EnvFilter::new("info"), bad)
            }
        };
        let (provider, exporting) = match export::provider(service_name) {
            Ok(built) => built,
            Err(err) => {
                export_error = Some(err);
                (SdkTracerProvider::builder().build(), false)
            }
        };
        let _ = EXPORTING.set(exporting);
        let tracer = provider.tracer("calls-backend");
        if let Ok(mut slot) = PROVIDER.lock() {
            *slot = Some(provider);
        }
        let logs = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_target(true)
            .with_filter(filter);
        let traces = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_filter(trace_filter(exporting));
        // `try_init` fails only if another subscriber was set (e.g. by a test harness); logging
        // then goes there, which is fine.
        let _ = Registry::default().with(logs).with(traces).try_init();
        if let Some((value, err)) = bad_filter {
            // Only an unset variable is expected; a set-but-invalid one deserves a warning.
            if !value.is_empty() {
                tracing::warn!(rust_log = %value, error = %err, "invalid RUST_LOG; using info");
            }
        }
    });
    if first {
        tracing::info!(
            service = service_name,
            otlp_export = exporting(),
            "logging initialised"
        );
        if let Some(err) = export_error {
            tracing::error!(error = %err, "cannot export traces; check the OTEL_EXPORTER_OTLP_* variables");
        }
    }
}

/// Spans the traces keep: the services' own at `info` and above; the libraries' internals (HTTP/2
/// frames, connection pools) would bury them.
///
/// Log events inside a span become span events, which only an exporter reads: without one, the
/// layer keeps to spans (their ids are what log lines are joined on). Besides the recording
/// saved, this keeps the layer from declaring an interest in every `info` event, which made
/// `tracing::enabled!` true for events the log filter drops, so that code preparing a log line
/// only when it will be written (the gateway's access log) paid for it anyway.
fn trace_filter<S>(exporting: bool) -> impl Filter<S>
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    // The hint matters: tracing-subscriber sets the `log` crate's maximum level from it, and a
    // filter without one lifts that to `trace`, so every `log::trace!` of a dependency (tungstenite
    // writes one per frame) would be matched against the filters at run time.
    let spans_only = filter_fn(move |metadata| exporting || metadata.is_span())
        .with_max_level_hint(LevelFilter::INFO);
    targets().and(spans_only)
}

fn targets() -> Targets {
    Targets::new()
        .with_default(LevelFilter::INFO)
        .with_target("h2", LevelFilter::OFF)
        .with_target("hyper", LevelFilter::OFF)
        .with_target("hyper_util", LevelFilter::OFF)
        .with_target("tower", LevelFilter::OFF)
        .with_target("tonic", LevelFilter::OFF)
        .with_target("async_nats", LevelFilter::OFF)
        .with_target("sqlx", LevelFilter::OFF)
        .with_target("socketioxide", LevelFilter::OFF)
        .with_target("engineioxide", LevelFilter::OFF)
        .with_target("opentelemetry", LevelFilter::OFF)
        .with_target("opentelemetry_sdk", LevelFilter::OFF)
        .with_target("opentelemetry_otlp", LevelFilter::OFF)
}

/// Whether spans are being exported to a collector.
pub fn exporting() -> bool {
    EXPORTING.get().copied().unwrap_or(false)
}

/// Exports the spans still buffered and stops the exporter. Call once at exit; spans ended
/// afterwards are dropped.
pub fn shutdown() {
    let provider = PROVIDER.lock().ok().and_then(|mut slot| slot.take());
    if let Some(provider) = provider
        && let Err(err) = provider.shutdown()
    {
        // Nothing was set up to export (or it already stopped): not worth a line.
        if exporting() {
            tracing::warn!(error = %err, "flushing traces at exit failed");
        }
    }
}

/// The two W3C headers, borrowed from wherever they were carried.
#[derive(Default)]
struct Carrier<'a> {
    traceparent: Option<&'a str>,
    tracestate: Option<&'a str>,
}

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent,
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT, TRACESTATE]
    }
}

/// Owned headers produced by injection.
#[derive(Default)]
struct Injected {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Injector for Injected {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// Makes the remote context in `traceparent` (and `tracestate`) the parent of `span`; a missing
/// or malformed value leaves `span` a root, with a new trace id. Call before the span is first
/// entered. Records the span's `trace_id` field if it has one.
pub fn set_parent(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if let Some(traceparent) = traceparent {
        let carrier = Carrier {
            traceparent: Some(traceparent),
            tracestate,
        };
        let context = TraceContextPropagator::new().extract(&carrier);
        if context.span().span_context().is_valid() {
            // Only fails if the span is disabled for tracing, in which case it has no context.
            let _ = span.set_parent(context);
        }
    }
    record_trace_id(span);
}

/// [`set_parent`] from HTTP (or gRPC metadata converted to HTTP) headers.
pub fn set_parent_from_http(span: &tracing::Span, headers: &http::HeaderMap) {
    let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
    set_parent(span, get(TRACEPARENT), get(TRACESTATE));
}

/// Sets the `trace_id` field of `span` (declared `trace_id = tracing::field::Empty`) to its
/// trace id, so log lines written inside it can be joined with the trace.
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id.as_str());
    }
}

/// The span's trace id as 32 hex digits, if it has a valid context.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    let span_ref = context.span();
    let span_context = span_ref.span_context();
    span_context
        .is_valid()
        .then(|| span_context.trace_id().to_string())
}

/// The W3C `traceparent` (and `tracestate`, when not empty) that makes a remote operation a
/// child of `span`.
pub fn traceparent(span: &tracing::Span) -> Option<(String, Option<String>)> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut injected = Injected::default();
    TraceContextPropagator::new().inject_context(&context, &mut injected);
    injected.traceparent.map(|tp| (tp, injected.tracestate))
}

/// Writes `span`'s context into outgoing HTTP headers, replacing any the request came with.
pub fn inject_http(span: &tracing::Span, headers: &mut http::HeaderMap) {
    let Some((traceparent, tracestate)) = traceparent(span) else {
        return;
    };
    if let Ok(value) = http::HeaderValue::from_str(&traceparent) {
        headers.insert(TRACEPARENT, value);
    }
    match tracestate.and_then(|s| http::HeaderValue::from_str(&s).ok()) {
        Some(value) => {
            headers.insert(TRACESTATE, value);
        }
        None => {
            headers.remove(TRACESTATE);
        }
    }
}

/// Axum middleware for a service's routes (`axum::middleware::from_fn_with_state(name, observe_http)`,
/// applied with `Router::layer` so the route template is known): a server span continuing the
/// caller's trace, one log line per request (method, route, status, duration, request id, trace
/// id, user id, and the error code of a refusal), `http_requests_total` /
/// `http_request_duration_seconds` by service, method, route template (never the raw path, which
/// carries ids) and status, and `http_errors_total` by service, route and the contract's error
/// code.
///
/// Handlers that learn who the caller is record it with
/// `tracing::Span::current().record("user_id", ..)`.
pub async fn observe_http(
    axum::extract::State(service): axum::extract::State<&'static str>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use tracing::Instrument;

    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let request_id = request
        .headers()
        .get(crate::error::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let span = tracing::info_span!(
        "http.request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        service,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        request_id = %request_id,
        trace_id = tracing::field::Empty,
        user_id = tracing::field::Empty,
    );
    set_parent_from_http(&span, request.headers());
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    let code = response
        .extensions()
        .get::<crate::error::ApiError>()
        .map(|err| err.code.as_str());
    span.in_scope(|| match code {
        None => tracing::info!(
            status,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        ),
        Some(code) => tracing::info!(
            status,
            code,
            duration_ms = elapsed.as_secs_f64() * 1000.0,
            "request"
        ),
    });
    crate::metrics::record_http_request(service, &method, &route, status, elapsed);
    if let Some(code) = code {
        metrics::counter!("http_errors_total", "service" => service, "route" => route, "code" => code)
            .increment(1);
    }
    response
}

mod export {
    //! The OTLP exporter, configured from the standard `OTEL_*` variables.

    use opentelemetry_otlp::{Protocol, WithExportConfig};
    use opentelemetry_sdk::Resource;
    use opentelemetry_sdk::trace::{SdkTracerProvider, span_processor_with_async_runtime};

    fn var(name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }

    /// The provider, and whether it exports. Export needs an endpoint, and neither
    /// `OTEL_SDK_DISABLED=true` nor `OTEL_TRACES_EXPORTER=none`.
    pub(super) fn provider(service_name: &str) -> Result<(SdkTracerProvider, bool), String> {
        // The builder's detectors read OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
        let mut resource = Resource::builder();
        if var("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(service_name.to_owned());
        }
        // Replicas of one service (two signaling nodes, say) are told apart in a trace by
        // their instance id: a fresh one per process, as the semantic conventions suggest.
        if !var("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| a.contains("service.instance.id=")) {
            resource = resource.with_attribute(opentelemetry::KeyValue::new(
                "service.instance.id",
                uuid::Uuid::new_v4().to_string(),
            ));
        }
        let resource = resource.build();
        let builder = SdkTracerProvider::builder().with_resource(resource);
        let disabled = var("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"))
            || var("OTEL_TRACES_EXPORTER").is_some_and(|v| v.eq_ignore_ascii_case("none"));
        let endpoint = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .or_else(|| var("OTEL_EXPORTER_OTLP_ENDPOINT"));
        if disabled || endpoint.is_none() {
            return Ok((builder.build(), false));
        }
        let protocol = match var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            .or_else(|| var("OTEL_EXPORTER_OTLP_PROTOCOL"))
            .as_deref()
        {
            // The specification's default.
            None | Some("http/protobuf") => Protocol::HttpBinary,
            Some("http/json") => Protocol::HttpJson,
            Some("grpc") => Protocol::Grpc,
            Some(other) => {
                return Err(format!(
                    "OTEL_EXPORTER_OTLP_PROTOCOL {other:?} is not one of grpc, http/protobuf, http/json"
                ));
            }
        };
        // The exporter's clients (tonic, hyper) and the batch processor need a Tokio runtime,
        // and `init` runs before a service's own runtime exists (and must not depend on it:
        // traces are flushed after it stops). One small runtime of its own, for the process.
        let runtime = export_runtime()?;
        let _entered = runtime.enter();
        let exporter = match protocol {
            Protocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_protocol(protocol)
                .build(),
            _ => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .build(),
        }
        .map_err(|e| e.to_string())?;
        let processor = span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build();
        Ok((builder.with_span_processor(processor).build(), true))
    }

    fn export_runtime() -> Result<&'static tokio::runtime::Handle, String> {
        static HANDLE: std::sync::OnceLock<tokio::runtime::Handle> = std::sync::OnceLock::new();
        if let Some(handle) = HANDLE.get() {
            return Ok(handle);
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otel-export")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the trace export runtime: {e}"))?;
        let handle = runtime.handle().clone();
        // The runtime lives as long as the process: its worker thread drives the exporter.
        std::thread::Builder::new()
            .name("otel-export-keeper".into())
            .spawn(move || runtime.block_on(std::future::pending::<()>()))
            .map_err(|e| format!("cannot start the trace export thread: {e}"))?;
        Ok(HANDLE.get_or_init(|| handle))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_exporter_info_events_the_logs_drop_are_disabled_but_spans_still_get_trace_ids() {
        use tracing_subscriber::fmt::MakeWriter;

        #[derive(Clone, Copy)]
        struct Sink;
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl MakeWriter<'_> for Sink {
            type Writer = Sink;
            fn make_writer(&self) -> Sink {
                Sink
            }
        }

        let subscriber = |exporting: bool| {
            let tracer = SdkTracerProvider::builder().build().tracer("test");
            Registry::default()
                .with(
                    tracing_subscriber::fmt::layer()
                        .with_writer(Sink)
                        .with_filter(LevelFilter::WARN),
                )
                .with(
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(trace_filter(exporting)),
                )
        };
        tracing::subscriber::with_default(subscriber(false), || {
            assert!(!tracing::enabled!(target: "gateway::access", tracing::Level::INFO));
            assert!(tracing::enabled!(tracing::Level::WARN));
            let span = tracing::info_span!("request", trace_id = tracing::field::Empty);
            assert!(trace_id(&span).is_some(), "spans still have a trace id");
        });
        tracing::subscriber::with_default(subscriber(true), || {
            // Exported spans carry their events.
            assert!(tracing::enabled!(target: "gateway::access", tracing::Level::INFO));
        });
    }

    #[test]
    fn the_trace_filter_keeps_a_max_level_so_log_records_below_it_are_skipped_cheaply() {
        for exporting in [false, true] {
            assert_eq!(
                Filter::<Registry>::max_level_hint(&trace_filter::<Registry>(exporting)),
                Some(LevelFilter::INFO)
            );
        }
    }

    #[test]
    fn init_can_be_called_more_than_once() {
        init("first");
        init("second");
        tracing::info!("still logging");
    }

    #[test]
    fn a_span_continues_the_trace_of_the_traceparent_it_was_given() {
        init("test");
        let span = tracing::info_span!("child", trace_id = tracing::field::Empty);
        set_parent(
            &span,
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            None,
        );
        assert_eq!(
            trace_id(&span).as_deref(),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        let (tp, _) = traceparent(&span).expect("a traceparent");
        assert!(
            tp.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{tp}"
        );
        assert!(
            !tp.contains("00f067aa0ba902b7"),
            "the child has its own span id: {tp}"
        );
    }

    #[test]
    fn a_malformed_traceparent_starts_a_new_trace_instead_of_failing() {
        init("test");
        let span = tracing::info_span!("root", trace_id = tracing::field::Empty);
        set_parent(&span, Some("garbage"), None);
        let id = trace_id(&span).expect("a fresh trace id");
        assert_eq!(id.len(), 32);
        assert_ne!(id, "00000000000000000000000000000000");
    }

    #[test]
    fn injected_http_headers_replace_the_incoming_ones() {
        init("test");
        let span = tracing::info_span!("outgoing");
        let mut headers = http::HeaderMap::new();
        headers.insert(
            TRACEPARENT,
            http::HeaderValue::from_static(
                "00-11111111111111111111111111111111-2222222222222222-01",
            ),
        );
        inject_http(&span, &mut headers);
        let value = headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(value.starts_with("00-") && value.len() == 55, "{value}");
        assert!(!value.contains("1111111111111111"), "{value}");
    }
}
