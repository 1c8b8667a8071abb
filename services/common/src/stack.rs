//! The HTTP stack every service with a public-facing API puts around its routes (calls-api,
//! notifier): envelope fallbacks for unknown routes and methods, the body limit, the middleware
//! that turns framework plain-text errors into envelopes, and request ids (`X-Request-Id`,
//! assigned when the client sent none or an unusable one, echoed in the response and in error
//! bodies).

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderName;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// The longest request id the error envelope echoes (`crate::error` ignores longer ones).
const MAX_REQUEST_ID_LEN: usize = 128;

/// Wraps a service's complete router (API, docs and health routes merged) in the stack.
pub fn finish(app: Router, max_body_bytes: usize) -> Router {
    let request_id = HeaderName::from_static(crate::error::REQUEST_ID_HEADER);
    crate::error::with_fallbacks(app)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(crate::error::envelope_middleware))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(axum::middleware::from_fn(drop_unusable_request_id))
}

/// Removes an incoming `X-Request-Id` that the error envelope would not echo (empty, over
/// 128 bytes, or not printable ASCII), so that `SetRequestIdLayer` assigns a fresh one. Without
/// this the response header would carry the client's id while error bodies had no `requestId`
/// at all, and the two must always agree (CONTRACT section 1).
async fn drop_unusable_request_id(mut request: Request, next: Next) -> Response {
    let header = crate::error::REQUEST_ID_HEADER;
    let unusable = request.headers().get_all(header).iter().any(|value| {
        let bytes = value.as_bytes();
        bytes.is_empty()
            || bytes.len() > MAX_REQUEST_ID_LEN
            || !bytes.iter().all(u8::is_ascii_graphic)
    }) || request.headers().get_all(header).iter().count() > 1;
    if unusable {
        request.headers_mut().remove(header);
    }
    next.run(request).await
}
