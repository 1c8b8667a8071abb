//! Extractors that reject in the envelope: [`ValidJson`], [`ValidPath`], [`ValidQuery`], and
//! [`parse_json`] behind the first.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::request::Parts;
use http::{HeaderMap, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{ApiError, ErrorCode, FieldError};

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

pub(super) fn is_json_content_type(headers: &HeaderMap) -> bool {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn serde_location_is_stripped_from_messages() {
        assert_eq!(
            strip_location("missing field `a` at line 1 column 2"),
            "missing field `a`"
        );
        assert_eq!(strip_location("plain"), "plain");
    }
}
