//! The HTTP surface: the device registry `/api/v1/devices` (CONTRACT section 8, through the
//! gateway with the same edge auth as every `/api` route), its OpenAPI fragment at
//! `/api/docs/openapi.json` (the gateway merges it into the one document apps read), and
//! `/healthz`, `/readyz`, `/metrics`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use common::auth::{Authenticated, JwtVerifier};
use common::error::{ApiError, ErrorCode, ValidJson, ValidPath, ok};
use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::devices::{Device, DeviceId, Platform, PushProvider, RegisterDevice};
use crate::store::{Store, StoreError, now_ms};

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The registry.
    pub store: Store,
    /// Access-token verification.
    pub jwt: Arc<JwtVerifier>,
    /// `DEVICES_PER_USER`.
    pub devices_per_user: u32,
}

impl FromRef<AppState> for Arc<JwtVerifier> {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

fn store_error(e: StoreError) -> ApiError {
    if e.is_unavailable() {
        ApiError::dependency_unavailable("database")
    } else {
        ApiError::internal_from(e)
    }
}

/// `{items: [Device]}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceList {
    /// The caller's devices, most recently updated first.
    pub items: Vec<Device>,
}

/// Envelope of a device.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct DeviceEnvelope {
    #[schema(example = 200)]
    status_code: u16,
    #[schema(example = "Device registered")]
    message: String,
    data: Device,
}

/// Envelope of the device list.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct DeviceListEnvelope {
    #[schema(example = 200)]
    status_code: u16,
    #[schema(example = "Devices")]
    message: String,
    data: DeviceList,
}

/// The path parameter, validated (1..=128 of `[A-Za-z0-9._:-]`).
#[derive(serde::Deserialize)]
pub struct DevicePath {
    #[serde(rename = "deviceId")]
    device_id: DeviceId,
}

#[utoipa::path(
    put, path = "/api/v1/devices/{deviceId}", tag = "devices",
    params(("deviceId" = String, Path, description = "Chosen by the app: 1 to 128 of A-Z a-z 0-9 . _ : -")),
    request_body = RegisterDevice,
    responses(
        (status = 200, description = "Device registered (created or replaced); a token another registration held moves here", body = DeviceEnvelope),
        (status = 400, description = "VALIDATION_FAILED (unknown platform, an APNs token that is not hex, a VoIP token on Android, …)"),
        (status = 401, description = "UNAUTHORIZED"),
        (status = 503, description = "DEPENDENCY_UNAVAILABLE"),
    ),
    security(("bearer" = []))
)]
pub async fn register(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidPath(path): ValidPath<DevicePath>,
    ValidJson(body): ValidJson<RegisterDevice>,
) -> Result<Response, ApiError> {
    let registration = body.validate().map_err(ApiError::validation)?;
    let registered = state
        .store
        .register_device(
            auth.user_id().as_str(),
            &path.device_id,
            &registration,
            now_ms(),
            state.devices_per_user,
        )
        .await
        .map_err(store_error)?;
    crate::metrics::registration(registration.platform.as_str());
    tracing::info!(
        device_id = %path.device_id,
        platform = registration.platform.as_str(),
        created = registered.created,
        moved_from_others = registered.moved_from_others,
        evicted = registered.evicted,
        "device registered"
    );
    Ok(ok(StatusCode::OK, "Device registered", registered.device))
}

#[utoipa::path(
    get, path = "/api/v1/devices", tag = "devices",
    responses(
        (status = 200, description = "The caller's devices", body = DeviceListEnvelope),
        (status = 401, description = "UNAUTHORIZED"),
    ),
    security(("bearer" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
) -> Result<Response, ApiError> {
    let items = state
        .store
        .devices(auth.user_id().as_str())
        .await
        .map_err(store_error)?;
    Ok(ok(StatusCode::OK, "Devices", DeviceList { items }))
}

#[utoipa::path(
    delete, path = "/api/v1/devices/{deviceId}", tag = "devices",
    params(("deviceId" = String, Path, description = "The device to forget")),
    responses(
        (status = 200, description = "Device removed; pushes still queued for it are dropped"),
        (status = 401, description = "UNAUTHORIZED"),
        (status = 404, description = "NOT_FOUND: the caller has no device by that id"),
    ),
    security(("bearer" = []))
)]
pub async fn remove(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidPath(path): ValidPath<DevicePath>,
) -> Result<Response, ApiError> {
    let deleted = state
        .store
        .delete_device(auth.user_id().as_str(), &path.device_id, now_ms())
        .await
        .map_err(store_error)?;
    if !deleted {
        return Err(ApiError::new(ErrorCode::NotFound, "Device not found"));
    }
    Ok(ok(
        StatusCode::OK,
        "Device removed",
        serde_json::Value::Null,
    ))
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// notifier's part of the API document.
#[derive(OpenApi)]
#[openapi(
    info(title = "Calls API: devices", version = "1.0.0"),
    paths(register, list, remove),
    components(schemas(Device, RegisterDevice, Platform, PushProvider, DeviceList, DeviceEnvelope, DeviceListEnvelope)),
    modifiers(&BearerAuth),
    tags((name = "devices", description = "Register phones so calls ring them while the app sleeps (APNs VoIP, FCM)"))
)]
pub struct ApiDoc;

/// The document notifier serves at `/api/docs/openapi.json`: the device registry and the
/// webhook API (internal, like calls-api's membership API, which its document also lists).
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.merge(crate::webhooks::api::WebhooksDoc::openapi());
    doc
}

/// The complete router: the device API, `internal` (the internal API, kept out of the API
/// document), docs and health; `ready` is the readiness check behind `/readyz`.
pub fn router<F, Fut>(state: AppState, internal: Router, max_body_bytes: usize, ready: F) -> Router
where
    F: Fn() -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let api = Router::new()
        .route("/api/v1/devices", get(list))
        .route(
            "/api/v1/devices/{deviceId}",
            axum::routing::put(register).delete(remove),
        )
        .with_state(state)
        .merge(internal)
        .layer(axum::middleware::from_fn_with_state(
            "notifier",
            common::telemetry::observe_http,
        ));
    let docs = Router::new().route(
        "/api/docs/openapi.json",
        get(|| async { axum::Json(document()) }),
    );
    common::stack::finish(
        api.merge(docs).merge(common::health::router(ready)),
        max_body_bytes,
    )
}
