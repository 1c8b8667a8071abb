//! Clients for the two services that wake a sleeping phone: Apple Push Notification service
//! (APNs: HTTP/2, token-based authentication) and Firebase Cloud Messaging (FCM HTTP v1, OAuth2
//! with a service account).
//!
//! Pure client code — no database, no bus. The notifier decides what to send, to whom and until
//! when; this crate sends one push and says what came of it as a [`PushOutcome`]: delivered,
//! remove the device, retry (after the provider's `Retry-After`), give up, or give up and raise the
//! credential alert. Every documented APNs reason and FCM error code maps to one of those, and so
//! does every local failure (timeout, connection error, a payload over the provider's limit), so
//! `send` returns an outcome, never an error.
//!
//! - [`apns`]: [`ApnsClient`] — one multiplexed HTTP/2 connection per base URL, the ES256 provider
//!   token cached for 50 minutes and renewed on `ExpiredProviderToken`; VoIP and alert pushes.
//! - [`fcm`]: [`FcmClient`] — the service-account file, the JWT bearer grant against its
//!   `token_uri`, the access token cached until shortly before it expires and renewed on a 401;
//!   `messages:send` with data, `android.priority`/`ttl` and an optional notification.
//! - [`outcome`]: [`PushOutcome`], the one result both clients return.
//! - [`error`]: [`ConfigError`], why a client cannot be built (checked at start-up).
//!
//! ```no_run
//! use calls_push::{ApnsClient, ApnsConfig, ApnsEnvironment, ApnsNotification, ApnsPriority,
//!     ApnsPushType, PushOutcome};
//! use common::config::Secret;
//!
//! # async fn ring() -> Result<(), Box<dyn std::error::Error>> {
//! let key = std::fs::read_to_string("AuthKey_ABC123DEFG.p8")?;
//! let apns = ApnsClient::new(ApnsConfig::new(
//!     Secret::new(key), "ABC123DEFG", "DEF123GHIJ", ApnsEnvironment::Production,
//! ))?;
//! let outcome = apns.send(&ApnsNotification {
//!     device_token: "5f1e…".into(),
//!     topic: "com.example.app.voip".into(),
//!     push_type: ApnsPushType::Voip,
//!     priority: ApnsPriority::High,
//!     expiration: Some(1_767_225_600),
//!     collapse_id: Some("call-42".into()),
//!     apns_id: None,
//!     payload: serde_json::json!({"type": "incoming_call", "callId": "call-42"}),
//! }).await;
//! match outcome {
//!     PushOutcome::Delivered { .. } => {}
//!     PushOutcome::InvalidToken { .. } => { /* delete the device */ }
//!     PushOutcome::Retry { after, .. } => { /* reschedule, not before `after` */ }
//!     PushOutcome::Rejected { .. } => { /* give up on this push */ }
//!     PushOutcome::CredentialsRejected { .. } => { /* give up and raise the alert */ }
//! }
//! # Ok(()) }
//! ```
//!
//! Base URLs are configurable for tests: an `http://` APNs base speaks cleartext HTTP/2 (h2c), an
//! `http://` FCM base or `token_uri` plain HTTP/1.1. The doubles the integration tests run against
//! (`tests/js/lib/push-doubles.mjs`) are written from Apple's and Google's documentation and
//! refuse what they refuse.

pub mod apns;
pub mod error;
pub mod fcm;
pub mod outcome;
mod transport;

pub use apns::{
    ApnsClient, ApnsConfig, ApnsEnvironment, ApnsNotification, ApnsPriority, ApnsPushType,
};
pub use error::ConfigError;
pub use fcm::{
    AndroidPriority, FcmClient, FcmConfig, FcmMessage, FcmNotification, ServiceAccountKey,
};
pub use outcome::PushOutcome;
