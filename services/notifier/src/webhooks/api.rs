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
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

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

/// A webhook endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EndpointView {
    /// A UUID, or `env` for `WEBHOOK_URL`.
    id: String,
    /// Where deliveries go.
    #[schema(example = "https://chat.example.com/hooks/calls")]
    url: String,
    /// The signing secrets: whole in the answer that creates the endpoint, afterwards a hint
    /// (`whsec_MfKQ…`).
    secrets: Vec<String>,
    /// The types it receives; `null` for every type.
    event_types: Option<Vec<EventType>>,
    /// Whether deliveries are sent.
    enabled: bool,
    /// Why it was disabled (410, failing for a whole retry window, the API).
    disabled_reason: Option<String>,
    /// When it last accepted a delivery.
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

/// A new endpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBody {
    /// `https://…` (or `http://…`); no user name or password.
    #[schema(example = "https://chat.example.com/hooks/calls")]
    url: String,
    /// `whsec_<base64 of 24 to 64 bytes>`, up to five; one is generated when omitted.
    #[serde(default)]
    secrets: Option<Vec<String>>,
    /// Event types to receive; omitted or `null` for every type.
    #[serde(default)]
    #[schema(value_type = Option<Vec<EventType>>)]
    event_types: Option<Vec<String>>,
    /// Default `true`.
    #[serde(default)]
    enabled: Option<bool>,
}

/// Changes to an endpoint; absent fields stay as they are.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchBody {
    #[serde(default)]
    url: Option<String>,
    /// The new set of secrets (two while rotating).
    #[serde(default)]
    secrets: Option<Vec<String>>,
    /// `null` for every type, a list for some: kept as JSON to tell `null` from absent.
    #[serde(default)]
    #[schema(value_type = Option<Vec<EventType>>)]
    event_types: Option<Value>,
    /// `true` enables it again (after a 410 or a dead letter: then replay); `false` fails what
    /// is pending.
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

#[utoipa::path(
    post, path = "/internal/v1/webhooks", operation_id = "createWebhook", tag = "webhooks",
    request_body = CreateBody,
    responses(
        (status = 201, description = "Created; the only answer that shows the whole secrets", body = EndpointView),
        (status = 400, description = "VALIDATION_FAILED (url, secrets, eventTypes)"),
        (status = 401, description = "UNAUTHORIZED"),
    ),
    security(("internal" = []))
)]
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

#[utoipa::path(
    get, path = "/internal/v1/webhooks", operation_id = "listWebhooks", tag = "webhooks",
    responses((status = 200, description = "`{items: [endpoint]}`", body = Vec<EndpointView>), (status = 401, description = "UNAUTHORIZED")),
    security(("internal" = []))
)]
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

#[utoipa::path(
    get, path = "/internal/v1/webhooks/{id}", operation_id = "readWebhook", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 200, description = "The endpoint", body = EndpointView), (status = 404, description = "NOT_FOUND")),
    security(("internal" = []))
)]
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

#[utoipa::path(
    patch, path = "/internal/v1/webhooks/{id}", operation_id = "updateWebhook", tag = "webhooks",
    params(("id" = String, Path)),
    request_body = PatchBody,
    responses((status = 200, description = "Updated", body = EndpointView), (status = 400, description = "VALIDATION_FAILED"), (status = 404, description = "NOT_FOUND")),
    security(("internal" = []))
)]
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

#[utoipa::path(
    delete, path = "/internal/v1/webhooks/{id}", operation_id = "removeWebhook", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 200, description = "Deleted with its deliveries"), (status = 400, description = "`env` (WEBHOOK_URL) cannot be deleted"), (status = 404, description = "NOT_FOUND")),
    security(("internal" = []))
)]
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

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct DeliveriesQuery {
    /// `pending`, `delivered` or `failed` (dead letters).
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    /// 1 to 200, default 50.
    limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    #[serde(default)]
    before: Option<i64>,
}

/// One event for one endpoint.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
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
    /// The body: `{type, timestamp, data}`.
    #[schema(value_type = Object)]
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

#[utoipa::path(
    get, path = "/internal/v1/webhooks/{id}/deliveries", operation_id = "listWebhookDeliveries", tag = "webhooks",
    params(("id" = String, Path), DeliveriesQuery),
    responses((status = 200, description = "`{items: [delivery], nextCursor}`, newest first", body = Vec<DeliveryView>), (status = 404, description = "NOT_FOUND")),
    security(("internal" = []))
)]
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

/// Which dead letters to send again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayBody {
    /// RFC 3339: the failed deliveries queued at or after this.
    #[schema(example = "2026-01-01T00:00:00Z")]
    since: String,
}

#[utoipa::path(
    post, path = "/internal/v1/webhooks/{id}/replay", operation_id = "replayWebhookDeliveries", tag = "webhooks",
    params(("id" = String, Path)),
    request_body = ReplayBody,
    responses((status = 200, description = "`{replayed, enabled}`: dead letters queued again with their webhook-ids"), (status = 404, description = "NOT_FOUND")),
    security(("internal" = []))
)]
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

struct InternalAuth;

impl Modify for InternalAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "internal",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "INTERNAL_API_TOKEN (never routed by the gateway: call the service's own address)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The internal webhooks API in the API document (served by notifier itself, not the gateway).
#[derive(OpenApi)]
#[openapi(
    paths(create, list, read, update, remove, deliveries, replay),
    components(schemas(EndpointView, CreateBody, PatchBody, DeliveryView, ReplayBody, EventType)),
    modifiers(&InternalAuth),
    tags((name = "webhooks", description = "Webhook endpoints, dead letters and replays, for the host application's back end (notifier's internal API, `INTERNAL_API_TOKEN`; docs/webhooks.md)"))
)]
pub struct WebhooksDoc;

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
