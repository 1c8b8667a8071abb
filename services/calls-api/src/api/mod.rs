//! The HTTP surface: `/api/v1` (CONTRACT section 4), `/internal/v1` (room membership, section 6),
//! `/webhooks/agora` (Agora's channel notices, section 11),
//! `/api/docs` (Swagger UI and the OpenAPI document), `/healthz`, `/readyz`, `/metrics`.
//!
//! Handlers only parse and translate: rules live in [`crate::service`] and [`crate::domain`].
//! Every response, including framework rejections (bad JSON, wrong content type, oversized
//! bodies, unknown routes), is in the contract's envelope.

pub mod calls;
pub mod docs;
pub mod internal;
pub mod webhooks;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::routing::{get, patch, post, put};
use common::auth::JwtVerifier;
use common::config::Secret;

use crate::media::MediaClient;
use crate::service::Calls;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub calls: Calls,
    pub jwt: Arc<JwtVerifier>,
    pub media: MediaClient,
    pub internal_token: Option<Secret>,
    /// `AGORA_NCS_SECRET`: `/webhooks/agora` answers 404 while unset.
    pub ncs_secret: Option<Secret>,
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
        .route("/api/v1/calls/{id}/invite", post(calls::invite))
        .route(
            "/api/v1/calls/{id}/participants/{userId}/remove",
            post(calls::remove_participant),
        )
        .route("/webhooks/agora", post(webhooks::agora))
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

    common::stack::finish(
        api.merge(docs::router())
            .merge(common::health::router(ready)),
        max_body_bytes,
    )
}
