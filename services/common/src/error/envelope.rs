//! The success envelope.

use axum::response::{IntoResponse, Response};
use http::header::CONTENT_TYPE;
use http::{HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};

use super::ApiError;

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
