//! The response envelope of CONTRACT section 1, and everything that keeps framework defaults out
//! of it.
//!
//! Success bodies are `{"statusCode","message","data"}` ([`Envelope`], [`ok`]); error bodies are
//! `{"statusCode","message","error","code","requestId"?,"details"?}` ([`ApiError`]).
//!
//! axum and tower-http answer some failures themselves with plain text (a JSON body that does not
//! parse, a body over the limit, an unknown route, a timeout). Four pieces make sure clients only
//! ever see the envelope:
//!
//! - [`ValidJson`], [`ValidPath`] and [`ValidQuery`] replace axum's extractors and reject with an
//!   [`ApiError`] naming the offending field where serde can tell;
//! - [`not_found`] and [`method_not_allowed`] are router fallbacks ([`with_fallbacks`] installs
//!   both);
//! - [`envelope_middleware`] rewrites any remaining non-JSON error response (4xx/5xx) into the
//!   envelope, and stamps `requestId` into error bodies.
//!
//! # Request ids
//!
//! `requestId` is copied from the request's `x-request-id` header (or the response's, if an
//! inner layer set it). A service wires it as:
//!
//! ```
//! use axum::middleware::from_fn;
//! use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
//!
//! let routes: axum::Router = axum::Router::new();
//! let app: axum::Router = common::error::with_fallbacks(routes)
//!     .layer(from_fn(common::error::envelope_middleware))       // innermost of the three
//!     .layer(PropagateRequestIdLayer::x_request_id())
//!     .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid)); // outermost: runs first
//! ```
//!
//! Every [`ApiError`] response carries a copy of the error in its extensions, so the middleware
//! can re-render it with the id without parsing JSON. Handlers never need to set
//! [`ApiError::request_id`] themselves.

use std::fmt;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// The default limit on request bodies (CONTRACT section 1: 64 KiB). Services apply it with
/// `axum::extract::DefaultBodyLimit::max(DEFAULT_BODY_LIMIT)`; [`ValidJson`] honours whatever
/// limit is in force and answers 413 `PAYLOAD_TOO_LARGE` past it.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;

/// The header that carries the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The stable, machine-readable error codes of the contract. Serialized in
/// `SCREAMING_SNAKE_CASE` (`CALL_FULL`).
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// 400: body, path or query fails validation.
    ValidationFailed,
    /// 401: missing, malformed, expired or wrongly signed access token.
    Unauthorized,
    /// 403: authenticated but not allowed.
    Forbidden,
    /// 404: no such call, or the caller may not see it.
    CallNotFound,
    /// 409: joining would exceed `maxParticipants`.
    CallFull,
    /// 409: acting on an ended call.
    CallEnded,
    /// 409: a status change the state machine forbids.
    InvalidTransition,
    /// 409: the room has a live call the caller may not see.
    CallAlreadyActive,
    /// 409: media session or media update before joining.
    NotJoined,
    /// 413: body over the limit.
    PayloadTooLarge,
    /// 431: request headers over the gateway's limit (size or count).
    HeaderTooLarge,
    /// 429: too many requests; comes with `Retry-After`.
    RateLimited,
    /// 503: Agora app id / certificate not set.
    MediaProviderNotConfigured,
    /// 503: database, bus or token service down; safe to retry.
    DependencyUnavailable,
    /// 404: no such route.
    NotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 408: the request took too long to arrive or to be handled.
    RequestTimeout,
    /// 4xx without a more specific code (only produced when converting a framework response
    /// whose status has no code of its own; the status is kept).
    BadRequest,
    /// 502: an upstream answered badly (gateway).
    BadGateway,
    /// 504: an upstream did not answer in time (gateway).
    GatewayTimeout,
    /// 500: a bug or an unexpected failure; details are logged, never shown.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            Self::ValidationFailed | Self::BadRequest => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::CallNotFound | Self::NotFound => StatusCode::NOT_FOUND,
            Self::CallFull
            | Self::CallEnded
            | Self::InvalidTransition
            | Self::CallAlreadyActive
            | Self::NotJoined => StatusCode::CONFLICT,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::HeaderTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::MediaProviderNotConfigured | Self::DependencyUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::BadGateway => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The wire form, e.g. `"CALL_FULL"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ValidationFailed => "VALIDATION_FAILED",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden => "FORBIDDEN",
            Self::CallNotFound => "CALL_NOT_FOUND",
            Self::CallFull => "CALL_FULL",
            Self::CallEnded => "CALL_ENDED",
            Self::InvalidTransition => "INVALID_TRANSITION",
            Self::CallAlreadyActive => "CALL_ALREADY_ACTIVE",
            Self::NotJoined => "NOT_JOINED",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::HeaderTooLarge => "HEADER_TOO_LARGE",
            Self::RateLimited => "RATE_LIMITED",
            Self::MediaProviderNotConfigured => "MEDIA_PROVIDER_NOT_CONFIGURED",
            Self::DependencyUnavailable => "DEPENDENCY_UNAVAILABLE",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotAllowed => "METHOD_NOT_ALLOWED",
            Self::RequestTimeout => "REQUEST_TIMEOUT",
            Self::BadRequest => "BAD_REQUEST",
            Self::BadGateway => "BAD_GATEWAY",
            Self::GatewayTimeout => "GATEWAY_TIMEOUT",
            Self::Internal => "INTERNAL",
        }
    }

    /// A short sentence for when the caller has nothing more specific to say.
    pub fn default_message(self) -> &'static str {
        match self {
            Self::ValidationFailed => "Validation failed",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::CallNotFound => "Call not found",
            Self::CallFull => "Call is full",
            Self::CallEnded => "Call has ended",
            Self::InvalidTransition => "Invalid status transition",
            Self::CallAlreadyActive => "A call is already active in this room",
            Self::NotJoined => "You have not joined this call",
            Self::PayloadTooLarge => "Request body is too large",
            Self::HeaderTooLarge => "Request headers are too large",
            Self::RateLimited => "Too many requests",
            Self::MediaProviderNotConfigured => "Media provider is not configured",
            Self::DependencyUnavailable => "A dependency is unavailable; retry later",
            Self::NotFound => "Route not found",
            Self::MethodNotAllowed => "Method not allowed",
            Self::RequestTimeout => "Request timed out",
            Self::BadRequest => "Bad request",
            Self::BadGateway => "Bad gateway",
            Self::GatewayTimeout => "Upstream timed out",
            Self::Internal => "Internal server error",
        }
    }

    /// The code a bare HTTP status maps to when a framework produced it without one.
    pub fn from_status(status: StatusCode) -> Self {
        match status {
            // 415 and 422 are validation failures in the contract's terms (a wrong content type,
            // a body that does not fit the schema): they become 400 VALIDATION_FAILED.
            StatusCode::BAD_REQUEST
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
            | StatusCode::UNPROCESSABLE_ENTITY => Self::ValidationFailed,
            StatusCode::UNAUTHORIZED => Self::Unauthorized,
            StatusCode::FORBIDDEN => Self::Forbidden,
            StatusCode::NOT_FOUND => Self::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Self::MethodNotAllowed,
            StatusCode::REQUEST_TIMEOUT => Self::RequestTimeout,
            StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Self::HeaderTooLarge,
            StatusCode::TOO_MANY_REQUESTS => Self::RateLimited,
            StatusCode::BAD_GATEWAY => Self::BadGateway,
            StatusCode::SERVICE_UNAVAILABLE => Self::DependencyUnavailable,
            StatusCode::GATEWAY_TIMEOUT => Self::GatewayTimeout,
            s if s.is_client_error() => Self::BadRequest,
            _ => Self::Internal,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field that failed validation: `{"field": "inviteUserIds[0]", "message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    /// The field's path in the request (`type`, `inviteUserIds[1]`, or a path parameter name).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl FieldError {
    /// A field error.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// An error as the client sees it: rendered as the error envelope by its `IntoResponse`.
///
/// Build it with the constructors; `code` decides the HTTP status. `Internal` errors always show
/// a generic message whatever `message` holds, so an internal detail put there by mistake stays
/// in the logs. Use [`ApiError::internal_from`] to log the cause and answer 500 in one step.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    /// The machine-readable code.
    pub code: ErrorCode,
    /// A short human sentence.
    pub message: String,
    /// Field errors (validation); omitted from the body when empty.
    pub details: Vec<FieldError>,
    /// Seconds for the `Retry-After` header (429, and 503 where it is known).
    pub retry_after: Option<u64>,
    /// The request id; usually filled by [`envelope_middleware`], not by handlers.
    pub request_id: Option<String>,
    /// Set only when a framework response with a status that has no code of its own is
    /// converted, so the original status survives.
    status: Option<StatusCode>,
}

impl ApiError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after: None,
            request_id: None,
            status: None,
        }
    }

    /// An error with the code's default message.
    pub fn from_code(code: ErrorCode) -> Self {
        Self::new(code, code.default_message())
    }

    /// 400 `VALIDATION_FAILED` with field errors.
    pub fn validation(details: Vec<FieldError>) -> Self {
        Self::from_code(ErrorCode::ValidationFailed).with_details(details)
    }

    /// 400 `VALIDATION_FAILED` for one field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        let detail = FieldError::new(field, message);
        Self::new(ErrorCode::ValidationFailed, detail.message.clone()).with_details(vec![detail])
    }

    /// 401 `UNAUTHORIZED`.
    pub fn unauthorized() -> Self {
        Self::from_code(ErrorCode::Unauthorized)
    }

    /// 403 `FORBIDDEN`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }

    /// 404 `NOT_FOUND` (no such route).
    pub fn not_found() -> Self {
        Self::from_code(ErrorCode::NotFound)
    }

    /// 429 `RATE_LIMITED` with `Retry-After`.
    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self::from_code(ErrorCode::RateLimited).with_retry_after(retry_after_secs)
    }

    /// 503 `DEPENDENCY_UNAVAILABLE`, naming the dependency (e.g. `database`).
    pub fn dependency_unavailable(dependency: &str) -> Self {
        Self::new(
            ErrorCode::DependencyUnavailable,
            format!("{dependency} is unavailable"),
        )
    }

    /// 500 `INTERNAL` with the generic message.
    pub fn internal() -> Self {
        Self::from_code(ErrorCode::Internal)
    }

    /// Logs `cause` at error level and returns a 500 that shows nothing of it.
    pub fn internal_from(cause: impl fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::internal()
    }

    /// Replaces the field errors.
    pub fn with_details(mut self, details: Vec<FieldError>) -> Self {
        self.details = details;
        self
    }

    /// Sets `Retry-After` (seconds).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// Sets the request id shown in the body.
    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// The HTTP status this error is sent with.
    pub fn status(&self) -> StatusCode {
        self.status.unwrap_or_else(|| self.code.status())
    }

    /// Converts a bare status from a framework into the envelope, keeping that status.
    pub fn from_status(status: StatusCode) -> Self {
        let code = ErrorCode::from_status(status);
        let mut err = Self::from_code(code);
        if code.status() != status && code != ErrorCode::ValidationFailed {
            err.status = Some(status);
        }
        err
    }

    fn shown_message(&self) -> &str {
        if self.code == ErrorCode::Internal {
            ErrorCode::Internal.default_message()
        } else {
            &self.message
        }
    }

    fn body(&self) -> Bytes {
        let status = self.status();
        let body = ErrorBody {
            status_code: status.as_u16(),
            message: self.shown_message(),
            error: status.canonical_reason().unwrap_or("Error"),
            code: self.code.as_str(),
            request_id: self.request_id.as_deref(),
            details: &self.details,
        };
        // Serializing strings and integers cannot fail; the fallback keeps this panic-free.
        serde_json::to_vec(&body).map(Bytes::from).unwrap_or_else(|_| {
            Bytes::from_static(
                br#"{"statusCode":500,"message":"Internal server error","error":"Internal Server Error","code":"INTERNAL"}"#,
            )
        })
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorBody<'a> {
    status_code: u16,
    message: &'a str,
    error: &'a str,
    code: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<&'a str>,
    #[serde(skip_serializing_if = "<[FieldError]>::is_empty")]
    details: &'a [FieldError],
}

/// The error envelope as a client reads it: for tests and for services that call each other.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorEnvelope {
    /// The HTTP status, repeated.
    pub status_code: u16,
    /// A short human sentence.
    pub message: String,
    /// The HTTP reason phrase.
    pub error: String,
    /// The machine-readable code.
    pub code: String,
    /// The request id, when known.
    #[serde(default)]
    pub request_id: Option<String>,
    /// Field errors.
    #[serde(default)]
    pub details: Vec<FieldError>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), self.body()).into_response();
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(secs) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        // A copy travels with the response so `envelope_middleware` can add the request id
        // without parsing the body again.
        response.extensions_mut().insert(self);
        response
    }
}

/// A success body: `{"statusCode":200,"message":"...","data":...}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope<T> {
    /// The HTTP status, repeated.
    pub status_code: u16,
    /// A short human sentence.
    pub message: String,
    /// The payload.
    pub data: T,
}

impl<T> Envelope<T> {
    /// A success envelope.
    pub fn new(status: StatusCode, message: impl Into<String>, data: T) -> Self {
        Self {
            status_code: status.as_u16(),
            message: message.into(),
            data,
        }
    }
}

impl<T: Serialize> IntoResponse for Envelope<T> {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status_code).unwrap_or(StatusCode::OK);
        match serde_json::to_vec(&self) {
            Ok(body) => {
                let mut response = (status, body).into_response();
                response
                    .headers_mut()
                    .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response
            }
            Err(err) => {
                ApiError::internal_from(format!("serializing response: {err}")).into_response()
            }
        }
    }
}

/// Shorthand for `Envelope::new(status, message, data).into_response()`.
pub fn ok<T: Serialize>(status: StatusCode, message: &str, data: T) -> Response {
    Envelope::new(status, message, data).into_response()
}

/// `Result` with [`ApiError`], for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

// ---------------------------------------------------------------------------------------------
// Extractors

/// `axum::Json` with envelope rejections.
///
/// - wrong or missing `Content-Type` → 400 `VALIDATION_FAILED` (field `Content-Type`);
/// - body over the limit → 413 `PAYLOAD_TOO_LARGE`;
/// - malformed JSON → 400 `VALIDATION_FAILED` (field `body`);
/// - missing field, wrong type, unknown enum value → 400 `VALIDATION_FAILED` with the field's
///   path (`inviteUserIds[2]`, `type`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidJson<T>(pub T);

impl<S, T> FromRequest<S> for ValidJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json_content_type(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::ValidationFailed,
                "Expected a request with Content-Type: application/json",
            )
            .with_details(vec![FieldError::new(
                "Content-Type",
                "must be application/json",
            )]));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::from_code(ErrorCode::PayloadTooLarge)
            } else {
                ApiError::new(
                    ErrorCode::ValidationFailed,
                    "Could not read the request body",
                )
            }
        })?;
        parse_json(&bytes).map(ValidJson)
    }
}

impl<T: Serialize> IntoResponse for ValidJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Messages echo parts of the client's input (serde quotes bad values); cap them so an error
/// body stays small whatever was sent.
const MAX_MESSAGE_CHARS: usize = 200;

fn truncate(message: &str) -> String {
    if message.chars().count() <= MAX_MESSAGE_CHARS {
        message.to_owned()
    } else {
        let mut s: String = message.chars().take(MAX_MESSAGE_CHARS).collect();
        s.push('…');
        s
    }
}

/// serde_json appends " at line L column C"; clients want the field, not the coordinates.
fn strip_location(message: &str) -> &str {
    match message.rfind(" at line ") {
        Some(at) if message[at..].contains(" column ") => &message[..at],
        _ => message,
    }
}

/// Pulls `x` out of serde's "missing field `x`".
fn missing_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("missing field `")?;
    rest.split('`').next()
}

fn join_path(parent: &str, field: &str) -> String {
    if parent.is_empty() || parent == "." {
        field.to_owned()
    } else {
        format!("{parent}.{field}")
    }
}

/// Deserializes JSON, reporting errors in the envelope with the path of the failing field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let result: Result<T, _> = serde_path_to_error::deserialize(&mut de);
    match result {
        Ok(value) => match de.end() {
            Ok(()) => Ok(value),
            Err(_) => Err(malformed_json("unexpected characters after the JSON value")),
        },
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            let message = inner.to_string();
            let message = strip_location(&message);
            match inner.classify() {
                serde_json::error::Category::Data => {
                    let field = match missing_field_name(message) {
                        Some(name) => join_path(&path, name),
                        None if path == "." || path.is_empty() => "body".to_owned(),
                        None => path,
                    };
                    let message = truncate(message);
                    Err(ApiError::new(
                        ErrorCode::ValidationFailed,
                        format!("Invalid request body: {message}"),
                    )
                    .with_details(vec![FieldError::new(field, message)]))
                }
                serde_json::error::Category::Eof if bytes.iter().all(u8::is_ascii_whitespace) => {
                    Err(malformed_json("the request body is empty"))
                }
                _ => Err(malformed_json(message)),
            }
        }
    }
}

fn malformed_json(reason: &str) -> ApiError {
    ApiError::new(ErrorCode::ValidationFailed, "Malformed JSON body")
        .with_details(vec![FieldError::new("body", truncate(reason))])
}

/// `axum::extract::Path` with envelope rejections: 400 `VALIDATION_FAILED` naming the
/// parameter. Path types such as [`crate::ids::CallId`] validate while deserializing, so a bad
/// id never reaches a handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ValidPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ValidPath(value)),
            Err(rejection) => {
                // A single-parameter route (`/calls/{id}`) deserializes without naming the key;
                // the raw parameters do know it.
                let only_key =
                    match axum::extract::RawPathParams::from_request_parts(parts, state).await {
                        Ok(raw) if raw.iter().count() == 1 => {
                            raw.iter().next().map(|(k, _)| k.to_owned())
                        }
                        _ => None,
                    };
                Err(path_rejection(rejection, only_key))
            }
        }
    }
}

fn path_rejection(rejection: PathRejection, only_key: Option<String>) -> ApiError {
    use axum::extract::path::ErrorKind as K;
    match rejection {
        PathRejection::FailedToDeserializePathParams(err) => {
            if err.status().is_server_error() {
                return ApiError::internal_from(format!("path extraction: {}", err.body_text()));
            }
            let (field, message) = match err.kind() {
                K::ParseErrorAtKey {
                    key, expected_type, ..
                } => (key.clone(), format!("expected {expected_type}")),
                K::DeserializeError { key, message, .. } => (key.clone(), message.clone()),
                K::InvalidUtf8InPathParam { key } => (key.clone(), "invalid UTF-8".to_owned()),
                K::ParseErrorAtIndex {
                    index,
                    expected_type,
                    ..
                } => (
                    format!("path[{index}]"),
                    format!("expected {expected_type}"),
                ),
                K::ParseError { expected_type, .. } => (
                    only_key.unwrap_or_else(|| "path".to_owned()),
                    format!("expected {expected_type}"),
                ),
                K::Message(message) => (
                    only_key.unwrap_or_else(|| "path".to_owned()),
                    message.clone(),
                ),
                other => (
                    only_key.unwrap_or_else(|| "path".to_owned()),
                    other.to_string(),
                ),
            };
            let message = truncate(&message);
            ApiError::new(
                ErrorCode::ValidationFailed,
                format!("Invalid path parameter {field}: {message}"),
            )
            .with_details(vec![FieldError::new(field, message)])
        }
        other => ApiError::internal_from(format!("path extraction: {}", other.body_text())),
    }
}

/// `axum::extract::Query` with envelope rejections: 400 `VALIDATION_FAILED`, naming the
/// parameter when serde reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ValidQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ValidQuery(value)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

fn query_rejection(rejection: &QueryRejection) -> ApiError {
    let text = rejection.body_text();
    let message = text
        .strip_prefix("Failed to deserialize query string: ")
        .unwrap_or(&text);
    // serde_urlencoded prefixes value errors with the key (`limit: invalid digit ...`).
    let keyed = message.split_once(": ").filter(|(key, _)| {
        !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    });
    let (field, detail) = match (missing_field_name(message), keyed) {
        (Some(name), _) => (name, message),
        (None, Some((key, rest))) => (key, rest),
        (None, None) => ("query", message),
    };
    ApiError::new(
        ErrorCode::ValidationFailed,
        format!("Invalid query string: {}", truncate(message)),
    )
    .with_details(vec![FieldError::new(field, truncate(detail))])
}

// ---------------------------------------------------------------------------------------------
// Fallbacks and the middleware

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_code_maps_to_its_contract_status() {
        assert_eq!(
            ErrorCode::ValidationFailed.status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(ErrorCode::CallFull.status(), StatusCode::CONFLICT);
        assert_eq!(
            ErrorCode::PayloadTooLarge.status(),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            ErrorCode::RateLimited.status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(
            ErrorCode::MediaProviderNotConfigured.status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(ErrorCode::CallNotFound.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn serde_name_and_as_str_agree() {
        for code in [
            ErrorCode::ValidationFailed,
            ErrorCode::CallAlreadyActive,
            ErrorCode::MediaProviderNotConfigured,
            ErrorCode::NotJoined,
            ErrorCode::Internal,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn error_body_has_the_contract_shape() {
        let err = ApiError::new(ErrorCode::CallFull, "Call is full").with_request_id("req-1");
        let body: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "statusCode": 409, "message": "Call is full", "error": "Conflict",
                "code": "CALL_FULL", "requestId": "req-1"
            })
        );
        let text = String::from_utf8(err.body().to_vec()).unwrap();
        assert!(text.starts_with(
            r#"{"statusCode":409,"message":"Call is full","error":"Conflict","code":"CALL_FULL""#
        ));
    }

    #[test]
    fn internal_errors_never_show_their_message() {
        let err = ApiError::new(ErrorCode::Internal, "SELECT * FROM secrets failed");
        let text = String::from_utf8(err.body().to_vec()).unwrap();
        assert!(!text.contains("SELECT"), "{text}");
        assert!(text.contains("Internal server error"));
    }

    #[test]
    fn unknown_client_statuses_keep_their_status() {
        let err = ApiError::from_status(StatusCode::LENGTH_REQUIRED);
        assert_eq!(err.status(), StatusCode::LENGTH_REQUIRED);
        assert_eq!(err.code, ErrorCode::BadRequest);
        let err = ApiError::from_status(StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn serde_location_is_stripped_from_messages() {
        assert_eq!(
            strip_location("missing field `a` at line 1 column 2"),
            "missing field `a`"
        );
        assert_eq!(strip_location("plain"), "plain");
    }
}
