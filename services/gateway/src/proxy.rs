//! Forwarding one request to a pool: request bodies, retries, failures and their envelopes.
//!
//! Request bodies are read completely (up to `GATEWAY_MAX_BODY_BYTES`) before anything is sent
//! upstream, as nginx does by default. Two reasons: a slow client trickling its body ties up no
//! upstream connection, and the body can be replayed when a retry goes to another instance.
//! Response bodies stream through untouched.
//!
//! Retries go to a different instance each time, at most `GATEWAY_MAX_ATTEMPTS` in all:
//!
//! - a failed connection is retried whatever the method: the request never reached anyone;
//! - a connection that broke after the request was sent is retried only for idempotent requests
//!   (`GET`, `HEAD`, `OPTIONS`, `PUT`, `DELETE`, or any request with an `Idempotency-Key`, which
//!   calls-api deduplicates);
//! - a timeout is never retried: the instance may still be working on it, and a retry would
//!   double the load on an upstream that is already slow.
//!
//! When no instance answers: 503 `DEPENDENCY_UNAVAILABLE` if none was available, 502
//! `BAD_GATEWAY` after connection failures, 504 `GATEWAY_TIMEOUT` after a timeout.

use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::{Bytes, BytesMut};
use common::error::{ApiError, ErrorCode};
use http::header::{self, HeaderMap, HeaderName};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};

use crate::client::{PooledBody, SendError};
use crate::metrics;
use crate::pool::Pool;

/// After an early refusal (401, 413, 429, ...) the rest of the request body is read and thrown
/// away, up to this much for up to [`LINGER_TIMEOUT`]: closing a connection with unread data
/// makes the kernel send a reset, which can destroy the refusal before the client reads it.
const LINGER_MAX_BYTES: usize = 1024 * 1024;
const LINGER_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads a request body completely: 413 past `cap` (on `Content-Length` before reading, or while
/// reading a chunked body), 408 when it does not arrive within `timeout`.
pub async fn read_body(
    mut body: Incoming,
    cap: usize,
    timeout: Duration,
) -> Result<Bytes, ApiError> {
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    if body.size_hint().lower() > cap as u64 {
        discard(body).await;
        return Err(too_large());
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut total = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => {
                return Err(ApiError::new(
                    ErrorCode::RequestTimeout,
                    "The request body did not arrive in time",
                ));
            }
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                return Err(ApiError::new(
                    ErrorCode::BadRequest,
                    "Could not read the request body",
                ));
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total > cap {
            discard(body).await;
            return Err(too_large());
        }
        // One frame (the common case) is kept as is; only multi-frame bodies are copied.
        match first.take() {
            None if rest.is_empty() => first = Some(data),
            None => rest.extend_from_slice(&data),
            Some(previous) => {
                rest.extend_from_slice(&previous);
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// 413 `PAYLOAD_TOO_LARGE`.
pub fn too_large() -> ApiError {
    ApiError::from_code(ErrorCode::PayloadTooLarge)
}

/// Reads and drops what is left of a body, within the linger limits.
pub async fn discard(mut body: Incoming) {
    if body.is_end_stream() {
        return;
    }
    let drain = async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                seen = seen.saturating_add(data.len());
                if seen > LINGER_MAX_BYTES {
                    break;
                }
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIMEOUT, drain).await;
}

/// Whether a request may be sent twice.
pub fn is_idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) || headers.contains_key(&crate::headers::IDEMPOTENCY_KEY)
}

/// What goes upstream, minus the instance: method, path and query, rewritten headers, body.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// The method.
    pub method: Method,
    /// The client's path and query, forwarded as is.
    pub path_and_query: PathAndQuery,
    /// Headers after hop-by-hop removal and `X-Forwarded-*`.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

/// Why one attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The connection could not be made.
    Connect,
    /// The connection was not made within the connect timeout.
    ConnectTimeout,
    /// The connection broke after the request was (maybe) sent.
    Transport,
    /// No response headers within the request timeout.
    Timeout,
}

impl Failure {
    /// Whether another instance may be tried.
    pub fn retryable(self, idempotent: bool) -> bool {
        match self {
            Self::Connect | Self::ConnectTimeout => true,
            Self::Transport => idempotent,
            Self::Timeout => false,
        }
    }

    /// The envelope the client gets when this was the last attempt.
    pub fn to_error(self, upstream: &str) -> ApiError {
        match self {
            Self::Connect => ApiError::new(
                ErrorCode::BadGateway,
                format!("{upstream} could not be reached"),
            ),
            Self::Transport => ApiError::new(
                ErrorCode::BadGateway,
                format!("{upstream} closed the connection without answering"),
            ),
            Self::ConnectTimeout | Self::Timeout => ApiError::new(
                ErrorCode::GatewayTimeout,
                format!("{upstream} did not answer in time"),
            ),
        }
    }
}

/// 503 when a pool has no instance to try.
pub fn unavailable(upstream: &str) -> ApiError {
    ApiError::dependency_unavailable(upstream)
}

/// Sends requests upstream and turns the answers into client responses.
#[derive(Debug, Clone)]
pub struct Forwarder {
    max_attempts: usize,
    strip_cors: bool,
}

impl Forwarder {
    /// A forwarder trying up to `max_attempts` instances. With `strip_cors`, the gateway owns
    /// CORS and drops the upstreams' `Access-Control-*` response headers so that only its own
    /// are sent.
    pub fn new(max_attempts: u32, strip_cors: bool) -> Self {
        Self {
            max_attempts: usize::try_from(max_attempts).unwrap_or(1).max(1),
            strip_cors,
        }
    }

    /// The request for instance `index`.
    fn build(
        &self,
        pool: &Pool,
        index: usize,
        outbound: &Outbound,
        headers: HeaderMap,
    ) -> Result<Request<Full<Bytes>>, ApiError> {
        let instance = pool.instance(index).ok_or_else(ApiError::internal)?;
        let uri = instance
            .url()
            .origin_for(&outbound.path_and_query)
            .map_err(ApiError::internal_from)?;
        let mut request = Request::new(Full::new(outbound.body.clone()));
        *request.method_mut() = outbound.method.clone();
        *request.uri_mut() = uri;
        *request.version_mut() = Version::HTTP_11;
        *request.headers_mut() = headers;
        Ok(request)
    }

    /// One attempt on instance `index`, reporting the outcome to the pool.
    pub async fn send(
        &self,
        pool: &Pool,
        index: usize,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Response<PooledBody>, Failure> {
        let started = Instant::now();
        let Some(instance) = pool.instance(index) else {
            return Err(Failure::Connect);
        };
        match tokio::time::timeout(timeout, instance.connections().send(request)).await {
            Ok(Ok(response)) => {
                pool.report_success(index);
                pool.record_duration(started.elapsed());
                Ok(response)
            }
            Ok(Err(err)) => {
                pool.report_failure(index);
                let failure = classify(&err);
                tracing::warn!(upstream = pool.name(), instance = instance.label(), ?failure, error = %err, "upstream request failed");
                Err(failure)
            }
            Err(_) => {
                pool.report_failure(index);
                tracing::warn!(
                    upstream = pool.name(),
                    instance = instance.label(),
                    timeout_ms = timeout.as_millis() as u64,
                    "upstream did not answer in time"
                );
                Err(Failure::Timeout)
            }
        }
    }

    /// Sends to instance `index` only (a pinned session).
    pub async fn send_to(
        &self,
        pool: &Pool,
        index: usize,
        outbound: &Outbound,
        timeout: Duration,
    ) -> Result<Result<Response<PooledBody>, Failure>, ApiError> {
        let request = self.build(pool, index, outbound, outbound.headers.clone())?;
        Ok(self.send(pool, index, request, timeout).await)
    }

    /// Sends to the pool's instances in round-robin order, retrying as the module describes.
    /// Returns the response and the instance that gave it.
    pub async fn send_balanced(
        &self,
        pool: &Pool,
        mut outbound: Outbound,
        idempotent: bool,
        timeout: Duration,
    ) -> Result<(Response<PooledBody>, usize), ApiError> {
        let attempts = self.max_attempts.min(pool.len());
        let mut tried: Vec<usize> = Vec::new();
        let mut last = None;
        for attempt in 0..attempts {
            let Some(index) = pool.pick(&tried) else {
                break;
            };
            if attempt > 0 {
                metrics::retried(pool.name());
            }
            // The last possible attempt takes the headers instead of copying them.
            let headers = if attempt + 1 == attempts {
                std::mem::take(&mut outbound.headers)
            } else {
                outbound.headers.clone()
            };
            let request = self.build(pool, index, &outbound, headers)?;
            match self.send(pool, index, request, timeout).await {
                Ok(response) => return Ok((response, index)),
                Err(failure) => {
                    last = Some(failure);
                    tried.push(index);
                    if !failure.retryable(idempotent) {
                        break;
                    }
                }
            }
        }
        Err(match last {
            Some(failure) => failure.to_error(pool.name()),
            None => unavailable(pool.name()),
        })
    }

    /// An upstream response as the client gets it: status, headers minus hop-by-hop ones, and
    /// the body streamed untouched.
    pub fn to_client(&self, response: Response<PooledBody>) -> Response<Body> {
        let (mut parts, body) = response.into_parts();
        self.clean_response_headers(&mut parts.headers);
        Response::from_parts(parts, Body::new(body))
    }

    /// [`Forwarder::to_client`] for a body already read.
    pub fn to_client_buffered(
        &self,
        mut parts: http::response::Parts,
        body: Bytes,
    ) -> Response<Body> {
        self.clean_response_headers(&mut parts.headers);
        // The length is that of what was read, which a timed-out read may have cut short;
        // hyper sets it from the body.
        parts.headers.remove(header::CONTENT_LENGTH);
        Response::from_parts(parts, Body::from(body))
    }

    fn clean_response_headers(&self, headers: &mut HeaderMap) {
        crate::headers::strip_hop_by_hop(headers, false);
        if self.strip_cors {
            let cors: Vec<HeaderName> = headers
                .keys()
                .filter(|name| name.as_str().starts_with("access-control-"))
                .cloned()
                .collect();
            for name in cors {
                headers.remove(name);
            }
        }
    }
}

/// Reads a small upstream response body completely (for the engine.io handshake and "unknown
/// session" answers), or `None` if it is larger than `limit` or does not arrive within `timeout`.
pub async fn read_small(
    response: Response<PooledBody>,
    limit: u64,
    timeout: Duration,
) -> Result<(http::response::Parts, Bytes), Response<PooledBody>> {
    let fits = response
        .body()
        .size_hint()
        .upper()
        .is_some_and(|upper| upper <= limit);
    if !fits {
        return Err(response);
    }
    let (parts, body) = response.into_parts();
    match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(collected)) => Ok((parts, collected.to_bytes())),
        // The body is gone; answer with an empty one rather than nothing.
        _ => Ok((parts, Bytes::new())),
    }
}

fn classify(err: &SendError) -> Failure {
    match err {
        SendError::Connect(_) => Failure::Connect,
        SendError::ConnectTimeout => Failure::ConnectTimeout,
        SendError::Transport(_) => Failure::Transport,
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;

    #[test]
    fn idempotent_methods_and_idempotency_keys_allow_replays() {
        let none = HeaderMap::new();
        assert!(is_idempotent(&Method::GET, &none));
        assert!(is_idempotent(&Method::PUT, &none));
        assert!(is_idempotent(&Method::DELETE, &none));
        assert!(!is_idempotent(&Method::POST, &none));
        assert!(!is_idempotent(&Method::PATCH, &none));
        let mut keyed = HeaderMap::new();
        keyed.insert("idempotency-key", http::HeaderValue::from_static("k1"));
        assert!(is_idempotent(&Method::POST, &keyed));
    }

    #[test]
    fn only_failures_before_sending_are_retried_for_non_idempotent_requests() {
        assert!(Failure::Connect.retryable(false));
        assert!(Failure::ConnectTimeout.retryable(false));
        assert!(!Failure::Transport.retryable(false));
        assert!(Failure::Transport.retryable(true));
        assert!(!Failure::Timeout.retryable(true));
    }

    #[test]
    fn failures_map_to_502_and_504_envelopes() {
        assert_eq!(
            Failure::Connect.to_error("calls-api").status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            Failure::Transport.to_error("calls-api").code,
            ErrorCode::BadGateway
        );
        assert_eq!(
            Failure::Timeout.to_error("calls-api").code,
            ErrorCode::GatewayTimeout
        );
        assert_eq!(
            Failure::ConnectTimeout.to_error("x").status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            unavailable("signaling").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(unavailable("signaling").message, "signaling is unavailable");
    }
}
