//! `GET /healthz`, `GET /readyz` and `GET /metrics`, the same on every service.
//!
//! `/healthz` says the process is alive (for liveness probes: no dependency checks, so a database
//! outage does not get pods restarted). `/readyz` runs the service's own readiness check (database
//! reachable, bus connected, ...) so load balancers stop sending traffic while it fails.

use std::future::Future;

use axum::Router;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::StatusCode;
use serde_json::json;

use crate::error::ApiError;

/// The health routes. `ready` returns `Err(dependency)` naming what is unreachable (for example
/// `"database"`); that becomes a 503 `DEPENDENCY_UNAVAILABLE` envelope.
///
/// Generic over the state so it merges into any service's router:
/// `Router::new().merge(common::health::router(move || check(db.clone())))`.
pub fn router<S, F, Fut>(ready: F) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send + 'static,
{
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(move || readyz(ready.clone())))
        .route("/metrics", get(crate::metrics::metrics_handler))
}

/// A readiness check for services without dependencies.
pub async fn always_ready() -> Result<(), String> {
    Ok(())
}

async fn healthz() -> Response {
    (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
}

async fn readyz<F, Fut>(ready: F) -> Response
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    match ready().await {
        Ok(()) => (StatusCode::OK, axum::Json(json!({"status": "ready"}))).into_response(),
        Err(dependency) => {
            tracing::warn!(%dependency, "not ready");
            ApiError::dependency_unavailable(&dependency).into_response()
        }
    }
}
