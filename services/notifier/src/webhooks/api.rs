//! The internal API of webhooks (CONTRACT section 9), for the host application's operators and
//! back end: endpoints (create, list, read, update, delete), their deliveries, and replays.
//! Authenticated with `INTERNAL_API_TOKEN`; answers 404 while that is unset, and the gateway
//! never routes `/internal`.
//!
//! Secrets are returned whole only in the answer that creates the endpoint; afterwards as a
//! hint (`whsec_MfKQ…`).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::Response;
use axum::routing::{get, post};
use common::config::Secret;
use common::error::{ApiError, ErrorCode, FieldError, ValidJson, ValidPath, ValidQuery, ok};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::Notify;

use super::client::check_host;
use super::model::{EndpointId, EventType, WebhookSecret, parse_secrets, validate_url};
use crate::plan::rfc3339;
use crate::store::{DeliveryRecord, Endpoint, EndpointPatch, Store, StoreError, now_ms};

/// Most deliveries one listing returns.
const MAX_PAGE: u32 = 200;

/// What the handlers reach.
#[derive(Clone)]
pub struct InternalState {
    /// The store.
    pub store: Store,
    /// `INTERNAL_API_TOKEN`.
    pub token: Option<Secret>,
    /// `WEBHOOK_ALLOW_PRIVATE`.
    pub allow_private: bool,
    /// Woken after a replay.
    pub wake: Arc<Notify>,
}

fn authorize(state: &InternalState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.token else {
        return Err(ApiError::not_found());
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(common::auth::bearer_token);
    match presented {
        Some(token) if expected.matches(token) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

fn store_error(e: StoreError) -> ApiError {
    if e.is_unavailable() {
        ApiError::dependency_unavailable("database")
    } else {
        ApiError::internal_from(e)
    }
}

fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "Webhook endpoint not found")
}

/// An endpoint as the API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EndpointView {
    id: String,
    url: String,
    secrets: Vec<String>,
    event_types: Option<Vec<EventType>>,
    enabled: bool,
    disabled_reason: Option<String>,
    last_success_at: Option<String>,
    created_at: String,
    updated_at: String,
}

impl EndpointView {
    fn of(e: &Endpoint, whole_secrets: bool) -> EndpointView {
        EndpointView {
            id: e.id.to_string(),
            url: e.url.clone(),
            secrets: e
                .secrets
                .iter()
                .map(|s| {
                    if whole_secrets {
                        s.expose().to_owned()
                    } else {
                        s.hint()
                    }
                })
                .collect(),
            event_types: e.event_types.clone(),
            enabled: e.enabled,
            disabled_reason: e.disabled_reason.clone(),
            last_success_at: e.last_success_ms.map(rfc3339),
            created_at: rfc3339(e.created_ms),
            updated_at: rfc3339(e.updated_ms),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateBody {
    url: String,
    #[serde(default)]
    secrets: Option<Vec<String>>,
    #[serde(default)]
    event_types: Option<Vec<String>>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PatchBody {
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    secrets: Option<Vec<String>>,
    /// `null` for every type, a list for some: kept as JSON to tell `null` from absent.
    #[serde(default)]
    event_types: Option<Value>,
    #[serde(default)]
    enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct EndpointPath {
    id: EndpointId,
}

async fn checked_url(url: &str, allow_private: bool) -> Result<String, FieldError> {
    let parsed = validate_url(url, allow_private).map_err(|e| FieldError::new("url", e))?;
    // A name that resolves to a refused address now is refused now; the connection checks
    // again whatever it resolves to then.
    check_host(parsed.host(), allow_private)
        .await
        .map_err(|e| FieldError::new("url", e.to_string()))?;
    Ok(parsed.as_str().to_owned())
}

fn checked_types(types: &[String]) -> Result<Vec<EventType>, FieldError> {
    let mut out = Vec::new();
    for (i, name) in types.iter().enumerate() {
        let Some(t) = EventType::parse(name) else {
            let known: Vec<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
            return Err(FieldError::new(
                format!("eventTypes[{i}]"),
                format!("unknown event type; expected one of {}", known.join(", ")),
            ));
        };
        if !out.contains(&t) {
            out.push(t);
        }
    }
    if out.is_empty() {
        return Err(FieldError::new(
            "eventTypes",
            "must name at least one type (or be null for every type)",
        ));
    }
    Ok(out)
}

fn checked_secrets(secrets: &[String]) -> Result<Vec<WebhookSecret>, FieldError> {
    parse_secrets(secrets.iter().map(String::as_str)).map_err(|e| FieldError::new("secrets", e))
}

async fn create(
    State(state): State<InternalState>,
    headers: HeaderMap,
    ValidJson(body): ValidJson<CreateBody>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let mut errors = Vec::new();
    let url = checked_url(&body.url, state.allow_private)
        .await
        .map_err(|e| errors.push(e))
        .ok();
    let secrets = match &body.secrets {
        None => Some(vec![WebhookSecret::generate()]),
        Some(list) => checked_secrets(list).map_err(|e| errors.push(e)).ok(),
    };
    let event_types = match &body.event_types {
        None => Some(None),
        Some(list) => checked_types(list)
            .map(Some)
            .map_err(|e| errors.push(e))
            .ok(),
    };
    let (Some(url), Some(secrets), Some(event_types)) = (url, secrets, event_types) else {
        return Err(ApiError::validation(errors));
    };
    let now = now_ms();
    let endpoint = Endpoint {
        id: EndpointId::generate(),
        url,
        secrets,
        event_types,
        enabled: body.enabled.unwrap_or(true),
        disabled_reason: None,
        last_success_ms: None,
        created_ms: now,
        updated_ms: now,
    };
    state
        .store
        .create_endpoint(&endpoint)
        .await
        .map_err(store_error)?;
    tracing::info!(endpoint = %endpoint.id, "webhook endpoint created");
    Ok(ok(
        StatusCode::CREATED,
        "Webhook endpoint created",
        EndpointView::of(&endpoint, true),
    ))
}

async fn list(
    State(state): State<InternalState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let items: Vec<EndpointView> = state
        .store
        .endpoints()
        .await
        .map_err(store_error)?
        .iter()
        .map(|e| EndpointView::of(e, false))
        .collect();
    Ok(ok(
        StatusCode::OK,
        "Webhook endpoints",
        serde_json::json!({ "items": items }),
    ))
}

async fn read(
    State(state): State<InternalState>,
    headers: HeaderMap,
    ValidPath(path): ValidPath<EndpointPath>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let endpoint = state
        .store
        .endpoint(&path.id)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    Ok(ok(
        StatusCode::OK,
        "Webhook endpoint",
        EndpointView::of(&endpoint, false),
    ))
}

async fn update(
    State(state): State<InternalState>,
    headers: HeaderMap,
    ValidPath(path): ValidPath<EndpointPath>,
    ValidJson(body): ValidJson<PatchBody>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let mut errors = Vec::new();
    let mut patch = EndpointPatch {
        enabled: body.enabled,
        ..EndpointPatch::default()
    };
    if let Some(url) = &body.url {
        match checked_url(url, state.allow_private).await {
            Ok(url) => patch.url = Some(url),
            Err(e) => errors.push(e),
        }
    }
    if let Some(list) = &body.secrets {
        match checked_secrets(list) {
            Ok(secrets) => patch.secrets = Some(secrets),
            Err(e) => errors.push(e),
        }
    }
    match &body.event_types {
        None => {}
        Some(Value::Null) => patch.event_types = Some(None),
        Some(value) => match serde_json::from_value::<Vec<String>>(value.clone()) {
            Ok(list) => match checked_types(&list) {
                Ok(types) => patch.event_types = Some(Some(types)),
                Err(e) => errors.push(e),
            },
            Err(_) => errors.push(FieldError::new(
                "eventTypes",
                "must be a list of event types, or null",
            )),
        },
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let endpoint = state
        .store
        .update_endpoint(&path.id, &patch, now_ms())
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    tracing::info!(endpoint = %endpoint.id, enabled = endpoint.enabled,
        secrets = endpoint.secrets.len(), "webhook endpoint updated");
    state.wake.notify_one();
    Ok(ok(
        StatusCode::OK,
        "Webhook endpoint updated",
        EndpointView::of(&endpoint, false),
    ))
}

async fn remove(
    State(state): State<InternalState>,
    headers: HeaderMap,
    ValidPath(path): ValidPath<EndpointPath>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    if path.id.as_str() == EndpointId::ENV {
        return Err(ApiError::invalid_field(
            "id",
            "the endpoint of WEBHOOK_URL is removed by unsetting WEBHOOK_URL (disable it with PATCH meanwhile)",
        ));
    }
    if !state
        .store
        .delete_endpoint(&path.id)
        .await
        .map_err(store_error)?
    {
        return Err(not_found());
    }
    tracing::info!(endpoint = %path.id, "webhook endpoint deleted");
    Ok(ok(StatusCode::OK, "Webhook endpoint deleted", Value::Null))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveriesQuery {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<u32>,
    #[serde(default)]
    before: Option<i64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct DeliveryView {
    id: i64,
    webhook_id: String,
    event_type: String,
    call_id: String,
    status: String,
    attempts: i64,
    last_status: Option<i64>,
    last_error: Option<String>,
    created_at: String,
    last_attempt_at: Option<String>,
    finished_at: Option<String>,
    payload: Value,
}

impl From<DeliveryRecord> for DeliveryView {
    fn from(d: DeliveryRecord) -> Self {
        DeliveryView {
            id: d.id,
            webhook_id: d.message_id,
            event_type: d.event_type,
            call_id: d.call_id,
            status: d.status,
            attempts: d.attempts,
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: rfc3339(d.created_ms),
            last_attempt_at: d.last_attempt_ms.map(rfc3339),
            finished_at: d.finished_ms.map(rfc3339),
            payload: serde_json::from_str(&d.body).unwrap_or(Value::Null),
        }
    }
}

async fn deliveries(
    State(state): State<InternalState>,
    headers: HeaderMap,
    ValidPath(path): ValidPath<EndpointPath>,
    ValidQuery(query): ValidQuery<DeliveriesQuery>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let status = match query.status.as_deref() {
        None => None,
        Some(s @ ("pending" | "delivered" | "failed")) => Some(s),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "status",
                "must be pending, delivered or failed",
            ));
        }
    };
    let limit = query.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid_field(
            "limit",
            format!("must be 1 to {MAX_PAGE}"),
        ));
    }
    if state
        .store
        .endpoint(&path.id)
        .await
        .map_err(store_error)?
        .is_none()
    {
        return Err(not_found());
    }
    let rows = state
        .store
        .webhook_deliveries(&path.id, status, query.before, limit)
        .await
        .map_err(store_error)?;
    let next_cursor = (rows.len() == limit as usize)
        .then(|| rows.last().map(|d| d.id))
        .flatten();
    let items: Vec<DeliveryView> = rows.into_iter().map(DeliveryView::from).collect();
    Ok(ok(
        StatusCode::OK,
        "Webhook deliveries",
        serde_json::json!({ "items": items, "nextCursor": next_cursor }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    since: String,
}

async fn replay(
    State(state): State<InternalState>,
    headers: HeaderMap,
    ValidPath(path): ValidPath<EndpointPath>,
    ValidJson(body): ValidJson<ReplayBody>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    let Some(since) = super::stream::millis(&body.since) else {
        return Err(ApiError::invalid_field(
            "since",
            "must be an RFC 3339 time (2026-01-01T00:00:00Z)",
        ));
    };
    let endpoint = state
        .store
        .endpoint(&path.id)
        .await
        .map_err(store_error)?
        .ok_or_else(not_found)?;
    let replayed = state
        .store
        .replay(&path.id, since, now_ms())
        .await
        .map_err(store_error)?;
    tracing::info!(endpoint = %path.id, replayed, "webhook deliveries replayed");
    state.wake.notify_one();
    let message = if endpoint.enabled {
        "Failed deliveries queued again"
    } else {
        "Failed deliveries queued again; they go once the endpoint is enabled"
    };
    Ok(ok(
        StatusCode::OK,
        message,
        serde_json::json!({ "replayed": replayed, "enabled": endpoint.enabled }),
    ))
}

/// The routes, with their state.
pub fn router(state: InternalState) -> Router {
    Router::new()
        .route("/internal/v1/webhooks", post(create).get(list))
        .route(
            "/internal/v1/webhooks/{id}",
            get(read).patch(update).delete(remove),
        )
        .route("/internal/v1/webhooks/{id}/deliveries", get(deliveries))
        .route("/internal/v1/webhooks/{id}/replay", post(replay))
        .with_state(state)
}
