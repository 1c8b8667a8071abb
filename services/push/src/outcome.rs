//! What one push attempt came to, in the terms the notifier's workers act on.

use std::time::{Duration, SystemTime};

/// The result of sending one push to APNs or FCM.
///
/// Every answer of either service, and every local failure (timeout, connection refused, a
/// payload too large to send), lands in exactly one variant, so a worker's `match` decides
/// what happens to the delivery and to the device without knowing either provider's codes.
/// `reason` is the provider's own code (`"Unregistered"`, `"UNAVAILABLE"`, `"timeout"`…): fit for
/// logs and metrics, never containing a device token or a credential.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The service accepted the push. `id` is APNs' `apns-id` or FCM's message name.
    Delivered {
        /// The provider's id for this push.
        id: String,
    },
    /// The token will never work again: remove the device. Do not retry.
    InvalidToken {
        /// The provider's code (`"Unregistered"`, `"BadDeviceToken"`, `"UNREGISTERED"`…).
        reason: String,
        /// When APNs learnt the token was invalid (the `timestamp` of a 410). Apple: a token
        /// registered again after that time is a fresh registration and must not be removed.
        since: Option<SystemTime>,
    },
    /// A transient failure (throttling, a provider outage, a timeout, a dropped connection): try
    /// again, not before `after` when the provider said so, while the push is still useful.
    Retry {
        /// The provider's code, or `"timeout"` / `"connection"` for local failures.
        reason: String,
        /// The provider's `Retry-After`, when it sent one.
        after: Option<Duration>,
    },
    /// This push can never be accepted as it is (too large, a bad topic…). Do not retry, keep the
    /// device: the fault is in what we sent, not in the token.
    Rejected {
        /// The provider's code (`"PayloadTooLarge"`, `"BadTopic"`, `"INVALID_ARGUMENT"`…).
        reason: String,
    },
    /// The provider refuses our credentials (the APNs signing key, the FCM service account, or
    /// the Firebase project's own APNs credentials): no push to this provider can succeed until an
    /// operator fixes them. Do not retry, keep the device, raise the credential alert.
    CredentialsRejected {
        /// The provider's code (`"InvalidProviderToken"`, `"token endpoint: invalid_grant"`…).
        reason: String,
    },
}

impl PushOutcome {
    /// A low-cardinality label for metrics: `delivered`, `invalid_token`, `retry`, `rejected` or
    /// `credentials_rejected`.
    pub fn label(&self) -> &'static str {
        match self {
            PushOutcome::Delivered { .. } => "delivered",
            PushOutcome::InvalidToken { .. } => "invalid_token",
            PushOutcome::Retry { .. } => "retry",
            PushOutcome::Rejected { .. } => "rejected",
            PushOutcome::CredentialsRejected { .. } => "credentials_rejected",
        }
    }

    /// The provider's code or the local failure, for logs (empty for [`PushOutcome::Delivered`]).
    pub fn reason(&self) -> &str {
        match self {
            PushOutcome::Delivered { .. } => "",
            PushOutcome::InvalidToken { reason, .. }
            | PushOutcome::Retry { reason, .. }
            | PushOutcome::Rejected { reason }
            | PushOutcome::CredentialsRejected { reason } => reason,
        }
    }

    pub(crate) fn retry(reason: impl Into<String>, after: Option<Duration>) -> Self {
        PushOutcome::Retry {
            reason: reason.into(),
            after,
        }
    }

    pub(crate) fn rejected(reason: impl Into<String>) -> Self {
        PushOutcome::Rejected {
            reason: reason.into(),
        }
    }

    pub(crate) fn credentials(reason: impl Into<String>) -> Self {
        PushOutcome::CredentialsRejected {
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid_token(reason: impl Into<String>, since: Option<SystemTime>) -> Self {
        PushOutcome::InvalidToken {
            reason: reason.into(),
            since,
        }
    }
}
