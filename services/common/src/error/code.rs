//! The contract's error codes and the HTTP status each is sent with.

use std::fmt;

use http::StatusCode;
use serde::Serialize;

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
}
