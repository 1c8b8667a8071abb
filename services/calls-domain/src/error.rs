//! Why the state machine refused a command. One variant per contract error code, so the API
//! maps them 1:1 (CONTRACT section 1) without interpreting them.

/// A refused command. No state was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// `FORBIDDEN` (403): the caller sees the call but may not do this (a guest ending a
    /// group call).
    #[error("not allowed")]
    Forbidden,
    /// `CALL_NOT_FOUND` (404): no such call, or the caller may not see it.
    #[error("call not found")]
    NotFound,
    /// `CALL_FULL` (409): joining would exceed `maxParticipants`.
    #[error("call is full")]
    CallFull,
    /// `CALL_ENDED` (409): the call is over.
    #[error("call has ended")]
    CallEnded,
    /// `INVALID_TRANSITION` (409): the participant status change is not allowed.
    #[error("invalid status transition")]
    InvalidTransition,
    /// `NOT_JOINED` (409): the caller must be `joined` for this.
    #[error("not joined")]
    NotJoined,
    /// `VALIDATION_FAILED` (400).
    #[error("{0}")]
    Validation(ValidationError),
}

/// One invalid field (the contract's `details: [{field, message}]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The field, as named in the request body (`inviteUserIds`, `maxParticipants`, ...).
    pub field: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl DomainError {
    /// The contract's error code.
    pub fn code(&self) -> &'static str {
        match self {
            DomainError::Forbidden => "FORBIDDEN",
            DomainError::NotFound => "CALL_NOT_FOUND",
            DomainError::CallFull => "CALL_FULL",
            DomainError::CallEnded => "CALL_ENDED",
            DomainError::InvalidTransition => "INVALID_TRANSITION",
            DomainError::NotJoined => "NOT_JOINED",
            DomainError::Validation(_) => "VALIDATION_FAILED",
        }
    }

    /// The HTTP status the contract gives this error.
    pub fn http_status(&self) -> u16 {
        match self {
            DomainError::Forbidden => 403,
            DomainError::NotFound => 404,
            DomainError::CallFull
            | DomainError::CallEnded
            | DomainError::InvalidTransition
            | DomainError::NotJoined => 409,
            DomainError::Validation(_) => 400,
        }
    }

    pub fn validation(field: &'static str, message: impl Into<String>) -> Self {
        DomainError::Validation(ValidationError {
            field,
            message: message.into(),
        })
    }
}
