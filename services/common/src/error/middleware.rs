//! Router fallbacks and the middleware that turns every remaining error response into the
//! envelope, with the request id.

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderMap, HeaderValue};

use super::extract::is_json_content_type;
use super::{ApiError, ErrorCode, REQUEST_ID_HEADER};

/// Router fallback: 404 `NOT_FOUND` in the envelope.
pub async fn not_found() -> ApiError {
    ApiError::not_found()
}

/// Method-not-allowed fallback: 405 `METHOD_NOT_ALLOWED` in the envelope. (axum still adds the
/// `Allow` header.)
pub async fn method_not_allowed() -> ApiError {
    ApiError::from_code(ErrorCode::MethodNotAllowed)
}

/// Installs [`not_found`] and [`method_not_allowed`] on a router. Call it on the final, merged
/// router: axum refuses to merge two routers that both have a fallback.
pub fn with_fallbacks<S>(router: axum::Router<S>) -> axum::Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// The longest request id copied into a body; longer ones are ignored rather than echoed.
const MAX_REQUEST_ID_LEN: usize = 128;

fn request_id_from(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(REQUEST_ID_HEADER)?.to_str().ok()?;
    let ok = !value.is_empty()
        && value.len() <= MAX_REQUEST_ID_LEN
        && value.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| value.to_owned())
}

fn is_json_response(headers: &HeaderMap) -> bool {
    is_json_content_type(headers)
}

/// Middleware (`axum::middleware::from_fn(envelope_middleware)`) that guarantees every error
/// response is the envelope:
///
/// - an [`ApiError`] response gets `requestId` from the `x-request-id` header;
/// - any other 4xx/5xx response whose body is not JSON (axum's and tower-http's plain-text
///   defaults: 404, 405, 408 timeouts, 413 body limits, 415, 422, ...) is replaced by the envelope
///   for its status, keeping its headers (`Allow`, `Retry-After`);
/// - other responses pass through untouched.
pub async fn envelope_middleware(request: Request, next: Next) -> Response {
    let request_id = request_id_from(request.headers());
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let request_id = request_id.or_else(|| request_id_from(response.headers()));

    let existing = response.extensions().get::<ApiError>().cloned();
    let err = match existing {
        Some(err) if err.request_id.is_some() || request_id.is_none() => return response,
        Some(err) => err,
        None if is_json_response(response.headers()) => return response,
        None => ApiError::from_status(status),
    };
    let err = match request_id {
        Some(id) => err.with_request_id(id),
        None => err,
    };
    rerender(response, err)
}

/// Replaces a response's body with `err`'s envelope, keeping the original headers (minus the
/// ones describing the old body).
fn rerender(response: Response, err: ApiError) -> Response {
    let (mut parts, _old_body) = response.into_parts();
    let body = err.body();
    parts.status = err.status();
    parts.headers.remove(CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let Some(secs) = err.retry_after {
        parts.headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    parts.extensions.insert(err);
    Response::from_parts(parts, Body::from(body))
}
