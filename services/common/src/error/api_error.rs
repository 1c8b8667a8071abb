//! [`ApiError`], the error as a client sees it, and the JSON body it renders to.

use std::fmt;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::ErrorCode;

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
    /// The request id; usually filled by [`envelope_middleware`](super::envelope_middleware), not by handlers.
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

    pub(super) fn body(&self) -> Bytes {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
}
