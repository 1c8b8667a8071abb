//! The HTTP surface: `/api/v1` (CONTRACT section 4), `/internal/v1` (room membership, section 6),
//! `/api/docs` (Swagger UI and the OpenAPI document), `/healthz`, `/readyz`, `/metrics`.
//!
//! Handlers only parse and translate: rules live in [`crate::service`] and [`crate::domain`].
//! Every response, including framework rejections (bad JSON, wrong content type, oversized
//! bodies, unknown routes), is in the contract's envelope.

pub mod calls;
pub mod docs;
pub mod internal;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRef, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, patch, post, put};
use common::auth::JwtVerifier;
use common::config::Secret;
use http::HeaderName;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use crate::media::MediaClient;
use crate::service::Calls;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub calls: Calls,
    pub jwt: Arc<JwtVerifier>,
    pub media: MediaClient,
    pub internal_token: Option<Secret>,
}

impl FromRef<AppState> for Arc<JwtVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

/// The complete router; `ready` is the readiness check behind `/readyz`.
pub fn router<F, Fut>(state: AppState, max_body_bytes: usize, ready: F) -> Router
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let request_id = HeaderName::from_static(common::error::REQUEST_ID_HEADER);
    let api = Router::new()
        .route("/api/v1/calls", get(calls::history))
        .route(
            "/api/v1/calls/rooms/{chatRoomId}/initiate",
            post(calls::initiate),
        )
        .route(
            "/api/v1/calls/rooms/{chatRoomId}/active",
            get(calls::active),
        )
        .route("/api/v1/calls/{id}", get(calls::get_call))
        .route("/api/v1/calls/{id}/join", post(calls::join))
        .route(
            "/api/v1/calls/{id}/media/session",
            post(calls::media_session),
        )
        .route("/api/v1/calls/{id}/status", patch(calls::update_status))
        .route("/api/v1/calls/{id}/media", patch(calls::update_media))
        .route("/api/v1/calls/{id}/end", post(calls::end))
        .route(
            "/internal/v1/rooms/{chatRoomId}/members",
            put(internal::replace_members),
        )
        .route(
            "/internal/v1/rooms/{chatRoomId}/members/{userId}",
            post(internal::add_member).delete(internal::remove_member),
        )
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            "calls-api",
            common::telemetry::observe_http,
        ));

    let app = common::error::with_fallbacks(
        api.merge(docs::router())
            .merge(common::health::router(ready)),
    );
    app.layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(axum::middleware::from_fn(
            common::error::envelope_middleware,
        ))
        .layer(PropagateRequestIdLayer::new(request_id.clone()))
        .layer(SetRequestIdLayer::new(request_id, MakeRequestUuid))
        .layer(axum::middleware::from_fn(drop_unusable_request_id))
}

/// The longest request id the error envelope echoes (`common::error` ignores longer ones).
const MAX_REQUEST_ID_LEN: usize = 128;

/// Removes an incoming `X-Request-Id` that the error envelope would not echo (empty, over
/// 128 bytes, or not printable ASCII), so that `SetRequestIdLayer` assigns a fresh one. Without
/// this the response header would carry the client's id while error bodies had no `requestId`
/// at all, and the two must always agree (CONTRACT section 1).
async fn drop_unusable_request_id(mut request: Request, next: Next) -> Response {
    let header = common::error::REQUEST_ID_HEADER;
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
