//! Apple Push Notification service: the HTTP/2 provider API with token-based authentication.
//!
//! One [`ApnsClient`] holds one multiplexed HTTP/2 connection to its base URL, opened on the first
//! push and reused for every push after (Apple asks providers to keep connections open rather than
//! reconnect per notification), and one provider token: an ES256 JWT (`kid` = key id, `iss` = team
//! id, `iat`) that is reused for 50 minutes — Apple refuses tokens older than an hour and answers
//! `TooManyProviderTokenUpdates` to providers that renew more often than every 20 minutes. An
//! `ExpiredProviderToken` answer renews it at once and resends the push, once.
//!
//! Sources: Apple's "Sending notification requests to APNs", "Establishing a token-based
//! connection to APNs" and "Handling notification responses from APNs".

use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::config::Secret;
use http::{HeaderValue, Method, Request};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ConfigError;
use crate::outcome::PushOutcome;
use crate::transport::{self, BaseUrl, HttpClient, Response};

/// Apple's production endpoint.
pub const PRODUCTION_URL: &str = "https://api.push.apple.com";
/// Apple's development (sandbox) endpoint, for apps signed with a development profile.
pub const SANDBOX_URL: &str = "https://api.sandbox.push.apple.com";
/// Apple's limit for a VoIP notification's payload, in bytes.
pub const VOIP_PAYLOAD_LIMIT: usize = 5120;
/// Apple's limit for every other notification's payload, in bytes.
pub const PAYLOAD_LIMIT: usize = 4096;
/// Apple's limit for `apns-collapse-id`, in bytes.
pub const COLLAPSE_ID_LIMIT: usize = 64;
/// How long a push may take before it counts as a timeout, unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Renew the provider token after this long: inside Apple's one-hour limit with room for clock
/// skew, and well apart from its 20-minute minimum between renewals.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// Device tokens are 32 bytes today; Apple warns they may grow, so allow generously but not
/// absurdly (the token goes into the request path).
const MAX_DEVICE_TOKEN_HEX: usize = 400;

/// Which of Apple's two APNs environments the app's tokens belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApnsEnvironment {
    /// `api.push.apple.com`: apps from the App Store, TestFlight and ad-hoc builds.
    Production,
    /// `api.sandbox.push.apple.com`: apps built with a development provisioning profile.
    Sandbox,
}

impl ApnsEnvironment {
    /// Apple's endpoint for this environment.
    pub fn url(self) -> &'static str {
        match self {
            ApnsEnvironment::Production => PRODUCTION_URL,
            ApnsEnvironment::Sandbox => SANDBOX_URL,
        }
    }
}

/// The value given is neither `production` nor `sandbox`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected `production` or `sandbox`")]
pub struct UnknownEnvironment;

impl FromStr for ApnsEnvironment {
    type Err = UnknownEnvironment;

    /// `production` or `sandbox` (the values of `APNS_ENVIRONMENT`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "production" => Ok(ApnsEnvironment::Production),
            "sandbox" => Ok(ApnsEnvironment::Sandbox),
            _ => Err(UnknownEnvironment),
        }
    }
}

/// What an [`ApnsClient`] needs: the team's signing key and where to send.
#[derive(Clone, Debug)]
pub struct ApnsConfig {
    /// The contents of the `.p8` file Apple issues: an EC P-256 private key in PKCS#8 PEM form.
    pub key_pem: Secret,
    /// The key's 10-character id (the `kid` of every provider token).
    pub key_id: String,
    /// The developer team's 10-character id (the `iss` of every provider token).
    pub team_id: String,
    /// Production or sandbox; decides the default base URL.
    pub environment: ApnsEnvironment,
    /// Overrides the environment's URL. An `http://` base speaks cleartext HTTP/2 with prior
    /// knowledge (h2c), for test doubles.
    pub base_url: Option<String>,
    /// The longest one push may take, connection included.
    pub timeout: Duration,
}

impl ApnsConfig {
    /// A configuration with Apple's URL for `environment` and [`DEFAULT_TIMEOUT`].
    pub fn new(
        key_pem: Secret,
        key_id: impl Into<String>,
        team_id: impl Into<String>,
        environment: ApnsEnvironment,
    ) -> Self {
        ApnsConfig {
            key_pem,
            key_id: key_id.into(),
            team_id: team_id.into(),
            environment,
            base_url: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// The `apns-push-type` of a notification (the two this backend sends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApnsPushType {
    /// A PushKit VoIP push: the topic is the bundle id + `.voip`; payloads up to 5 KB.
    Voip,
    /// A visible notification: the topic is the bundle id; payloads up to 4 KB.
    Alert,
}

impl ApnsPushType {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            ApnsPushType::Voip => "voip",
            ApnsPushType::Alert => "alert",
        }
    }

    /// Apple's payload limit for this type, in bytes.
    pub fn payload_limit(self) -> usize {
        match self {
            ApnsPushType::Voip => VOIP_PAYLOAD_LIMIT,
            ApnsPushType::Alert => PAYLOAD_LIMIT,
        }
    }
}

/// The `apns-priority` of a notification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApnsPriority {
    /// 10: deliver immediately (ringing, missed-call alerts).
    High,
    /// 5: deliver when power considerations allow; may be grouped or delayed.
    Normal,
    /// 1: the device's power comes first; may not be delivered at all.
    Low,
}

impl ApnsPriority {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            ApnsPriority::High => "10",
            ApnsPriority::Normal => "5",
            ApnsPriority::Low => "1",
        }
    }
}

/// One notification for one device.
#[derive(Clone, Debug)]
pub struct ApnsNotification {
    /// The device token, hex as the app reported it.
    pub device_token: String,
    /// `apns-topic`: the bundle id, or the bundle id + `.voip` for VoIP pushes.
    pub topic: String,
    /// `apns-push-type`.
    pub push_type: ApnsPushType,
    /// `apns-priority`.
    pub priority: ApnsPriority,
    /// `apns-expiration`: the UNIX time (seconds) after which Apple discards the notification
    /// instead of storing it for an offline device; `None` leaves it to Apple.
    pub expiration: Option<u64>,
    /// `apns-collapse-id`: a newer notification with the same id replaces this one (≤ 64 bytes).
    pub collapse_id: Option<String>,
    /// `apns-id`: our id for the notification; Apple generates one when absent.
    pub apns_id: Option<Uuid>,
    /// The JSON payload (`aps` dictionary and custom keys).
    pub payload: serde_json::Value,
}

/// A client for one APNs base URL; cheap to clone (clones share the connection and the token).
#[derive(Clone)]
pub struct ApnsClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    base: BaseUrl,
    timeout: Duration,
    tokens: ProviderTokens,
}

impl std::fmt::Debug for ApnsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApnsClient")
            .field("base_url", &self.inner.base.as_str())
            .field("key_id", &self.inner.tokens.key_id)
            .field("team_id", &self.inner.tokens.team_id)
            .finish_non_exhaustive()
    }
}

impl ApnsClient {
    /// Checks the configuration (the key must sign an ES256 token) and prepares the client. No
    /// connection is opened until the first push.
    ///
    /// # Errors
    /// An empty key or team id, a key that is not an EC P-256 PKCS#8 PEM, a malformed base URL.
    pub fn new(config: ApnsConfig) -> Result<Self, ConfigError> {
        if config.key_id.trim().is_empty() {
            return Err(ConfigError::Empty {
                what: "APNs key id",
            });
        }
        if config.team_id.trim().is_empty() {
            return Err(ConfigError::Empty {
                what: "APNs team id",
            });
        }
        let base = BaseUrl::parse(
            "APNs URL",
            config
                .base_url
                .as_deref()
                .unwrap_or(config.environment.url()),
        )?;
        let key = EncodingKey::from_ec_pem(config.key_pem.expose().as_bytes())
            .map_err(|_| ConfigError::ApnsKey)?;
        let tokens = ProviderTokens {
            key,
            key_id: config.key_id,
            team_id: config.team_id,
            current: Mutex::new(None),
        };
        // Parsing the PEM does not prove the key signs; signing the first token does.
        tokens.current().map_err(|_| ConfigError::ApnsKey)?;
        Ok(ApnsClient {
            inner: Arc::new(Inner {
                http: transport::http2_client()?,
                base,
                timeout: config.timeout,
                tokens,
            }),
        })
    }

    /// The base URL pushes go to.
    pub fn base_url(&self) -> &str {
        self.inner.base.as_str()
    }

    /// Sends one notification and says what came of it. Never panics and never returns early
    /// without an outcome: local refusals (a token that is not hex, a payload over Apple's limit)
    /// come back as the outcome Apple would have given.
    pub async fn send(&self, notification: &ApnsNotification) -> PushOutcome {
        let prepared = match prepare(notification) {
            Ok(prepared) => prepared,
            Err(refusal) => return refusal,
        };
        let first = match self.inner.tokens.current() {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        let outcome = self.attempt(&prepared, &first).await;
        match outcome {
            Attempt::ExpiredProviderToken => {
                tracing::info!("APNs says the provider token expired; renewing it");
                let renewed = match self.inner.tokens.renew(&first) {
                    Ok(token) => token,
                    Err(outcome) => return outcome,
                };
                match self.attempt(&prepared, &renewed).await {
                    // A fresh token refused as expired: our clock is off, which no retry fixes.
                    Attempt::ExpiredProviderToken => {
                        PushOutcome::credentials("ExpiredProviderToken")
                    }
                    Attempt::Done(outcome) => outcome,
                }
            }
            Attempt::Done(outcome) => outcome,
        }
    }

    async fn attempt(&self, prepared: &Prepared, token: &str) -> Attempt {
        let request = match prepared.request(&self.inner.base, token) {
            Ok(request) => request,
            Err(outcome) => return Attempt::Done(outcome),
        };
        match transport::exchange(&self.inner.http, request, self.inner.timeout).await {
            Ok(response) => {
                let answer = Answer::read(&response);
                if answer.reason.as_deref() == Some("ExpiredProviderToken") {
                    Attempt::ExpiredProviderToken
                } else {
                    Attempt::Done(classify(&answer, prepared.apns_id.as_deref()))
                }
            }
            Err(error) => Attempt::Done(error.into_retry()),
        }
    }
}

enum Attempt {
    ExpiredProviderToken,
    Done(PushOutcome),
}

/// A notification checked and encoded once, resent as is after a token renewal.
struct Prepared {
    path: String,
    headers: Vec<(&'static str, HeaderValue)>,
    apns_id: Option<String>,
    body: Bytes,
}

impl Prepared {
    fn request(&self, base: &BaseUrl, token: &str) -> Result<Request<Full<Bytes>>, PushOutcome> {
        let uri = base
            .join(&self.path)
            .map_err(|_| PushOutcome::invalid_token("BadDeviceToken", None))?;
        let mut builder = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header(http::header::AUTHORIZATION, format!("bearer {token}"))
            .header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in &self.headers {
            builder = builder.header(*name, value.clone());
        }
        builder
            .body(Full::new(self.body.clone()))
            .map_err(|_| PushOutcome::rejected("BadRequest"))
    }
}

/// Refuses locally what Apple would refuse, with the outcome Apple's answer would map to, so a
/// worker sees the same result whether the check ran here or there.
fn prepare(n: &ApnsNotification) -> Result<Prepared, PushOutcome> {
    let token = n.device_token.as_str();
    if token.is_empty()
        || token.len() > MAX_DEVICE_TOKEN_HEX
        || !token.len().is_multiple_of(2)
        || !token.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(PushOutcome::invalid_token("BadDeviceToken", None));
    }
    if n.topic.is_empty() {
        return Err(PushOutcome::rejected("MissingTopic"));
    }
    let body = serde_json::to_vec(&n.payload).map_err(|_| PushOutcome::rejected("BadPayload"))?;
    if body.len() > n.push_type.payload_limit() {
        return Err(PushOutcome::rejected("PayloadTooLarge"));
    }
    let header = |value: &str, reason: &'static str| {
        HeaderValue::from_str(value).map_err(|_| PushOutcome::rejected(reason))
    };
    let mut headers = vec![
        ("apns-topic", header(&n.topic, "BadTopic")?),
        (
            "apns-push-type",
            HeaderValue::from_static(n.push_type.as_str()),
        ),
        (
            "apns-priority",
            HeaderValue::from_static(n.priority.as_str()),
        ),
    ];
    if let Some(expiration) = n.expiration {
        headers.push(("apns-expiration", HeaderValue::from(expiration)));
    }
    if let Some(collapse_id) = &n.collapse_id {
        if collapse_id.len() > COLLAPSE_ID_LIMIT {
            return Err(PushOutcome::rejected("BadCollapseId"));
        }
        headers.push(("apns-collapse-id", header(collapse_id, "BadCollapseId")?));
    }
    let apns_id = n.apns_id.map(|id| id.hyphenated().to_string());
    if let Some(id) = &apns_id {
        headers.push(("apns-id", header(id, "BadMessageId")?));
    }
    Ok(Prepared {
        path: format!("/3/device/{token}"),
        headers,
        apns_id,
        body: Bytes::from(body),
    })
}

/// What APNs answered: status, `apns-id`, and the JSON body's `reason` and `timestamp`.
#[derive(Debug, Default)]
struct Answer {
    status: u16,
    apns_id: Option<String>,
    reason: Option<String>,
    timestamp: Option<u64>,
    retry_after: Option<Duration>,
}

#[derive(Deserialize)]
struct ErrorBody {
    reason: Option<String>,
    timestamp: Option<u64>,
}

impl Answer {
    fn read(response: &Response) -> Answer {
        let body: Option<ErrorBody> = serde_json::from_slice(&response.body).ok();
        Answer {
            status: response.status.as_u16(),
            apns_id: response
                .headers
                .get("apns-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            reason: body.as_ref().and_then(|b| b.reason.clone()),
            timestamp: body.and_then(|b| b.timestamp),
            retry_after: transport::retry_after(&response.headers),
        }
    }
}

/// Apple's answer as an outcome: every reason in "Handling notification responses from APNs",
/// then the status for reasons Apple adds later.
fn classify(answer: &Answer, sent_id: Option<&str>) -> PushOutcome {
    if answer.status == 200 {
        return PushOutcome::Delivered {
            id: answer
                .apns_id
                .clone()
                .or_else(|| sent_id.map(str::to_owned))
                .unwrap_or_default(),
        };
    }
    let reason = answer
        .reason
        .clone()
        .unwrap_or_else(|| format!("HTTP {}", answer.status));
    let since = answer
        .timestamp
        .map(|ms| UNIX_EPOCH + Duration::from_millis(ms));
    match (answer.status, reason.as_str()) {
        // The token is gone for this topic (app removed, token rotated), or was never valid here.
        (410, _) | (400, "BadDeviceToken" | "DeviceTokenNotForTopic" | "MissingDeviceToken") => {
            PushOutcome::invalid_token(reason, since)
        }
        // Apple closed an idle connection under the request: resend on a fresh one.
        (400, "IdleTimeout") => PushOutcome::retry(reason, answer.retry_after),
        // Every 403 is about our credentials: InvalidProviderToken, MissingProviderToken,
        // BadCertificate, BadCertificateEnvironment, Forbidden, UnrelatedKeyIdInToken,
        // BadEnvironmentKeyInToken, and ExpiredProviderToken when a freshly signed token is
        // refused too (`send` renews and resends on the first one).
        (403, _) => PushOutcome::credentials(reason),
        // Throttled (per device, or our token renewals) or Apple's side failing: try again later.
        (429, _) | (500..=599, _) => PushOutcome::retry(reason, answer.retry_after),
        // Everything else is about what we sent (BadCollapseId, BadExpirationDate, BadMessageId,
        // BadPriority, BadTopic, DuplicateHeaders, InvalidPushType, MissingTopic, PayloadEmpty,
        // TopicDisallowed, BadPath, MethodNotAllowed, PayloadTooLarge): resending cannot help and
        // the device is not at fault.
        _ => PushOutcome::rejected(reason),
    }
}

/// The cached provider token and the key that signs it.
struct ProviderTokens {
    key: EncodingKey,
    key_id: String,
    team_id: String,
    current: Mutex<Option<ProviderToken>>,
}

struct ProviderToken {
    jwt: String,
    issued: Instant,
}

#[derive(Serialize)]
struct Claims<'a> {
    iss: &'a str,
    iat: u64,
}

impl ProviderTokens {
    /// The cached token, or a new one once the cached one is 50 minutes old.
    fn current(&self) -> Result<String, PushOutcome> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = current
            .as_ref()
            .filter(|t| t.issued.elapsed() < TOKEN_LIFETIME)
        {
            return Ok(token.jwt.clone());
        }
        let fresh = self.sign()?;
        *current = Some(fresh);
        Ok(current.as_ref().map(|t| t.jwt.clone()).unwrap_or_default())
    }

    /// Replaces `stale` with a new token, unless a concurrent push already did: many in-flight
    /// pushes refused with the same token must cause one renewal, not one each (Apple throttles
    /// renewals).
    fn renew(&self, stale: &str) -> Result<String, PushOutcome> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(token) = current.as_ref().filter(|t| t.jwt != stale) {
            return Ok(token.jwt.clone());
        }
        let fresh = self.sign()?;
        let jwt = fresh.jwt.clone();
        *current = Some(fresh);
        Ok(jwt)
    }

    fn sign(&self) -> Result<ProviderToken, PushOutcome> {
        let mut header = Header::new(Algorithm::ES256);
        // Apple's token header is exactly `alg` and `kid`.
        header.typ = None;
        header.kid = Some(self.key_id.clone());
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let claims = Claims {
            iss: &self.team_id,
            iat,
        };
        let jwt = jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|_| PushOutcome::credentials("cannot sign the provider token"))?;
        Ok(ProviderToken {
            jwt,
            issued: Instant::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, reason: &str) -> Answer {
        Answer {
            status,
            reason: Some(reason.to_owned()),
            ..Answer::default()
        }
    }

    /// Every reason of Apple's table, with the status Apple gives it.
    #[test]
    fn every_documented_apns_reason_maps_to_the_outcome_the_notifier_acts_on() {
        let table: &[(u16, &str, &str)] = &[
            (400, "BadCollapseId", "rejected"),
            (400, "BadDeviceToken", "invalid_token"),
            (400, "BadExpirationDate", "rejected"),
            (400, "BadMessageId", "rejected"),
            (400, "BadPriority", "rejected"),
            (400, "BadTopic", "rejected"),
            (400, "DeviceTokenNotForTopic", "invalid_token"),
            (400, "DuplicateHeaders", "rejected"),
            (400, "IdleTimeout", "retry"),
            (400, "InvalidPushType", "rejected"),
            (400, "MissingDeviceToken", "invalid_token"),
            (400, "MissingTopic", "rejected"),
            (400, "PayloadEmpty", "rejected"),
            (400, "TopicDisallowed", "rejected"),
            (403, "BadCertificate", "credentials_rejected"),
            (403, "BadCertificateEnvironment", "credentials_rejected"),
            (403, "ExpiredProviderToken", "credentials_rejected"),
            (403, "Forbidden", "credentials_rejected"),
            (403, "InvalidProviderToken", "credentials_rejected"),
            (403, "MissingProviderToken", "credentials_rejected"),
            (403, "UnrelatedKeyIdInToken", "credentials_rejected"),
            (403, "BadEnvironmentKeyInToken", "credentials_rejected"),
            (404, "BadPath", "rejected"),
            (405, "MethodNotAllowed", "rejected"),
            (410, "ExpiredToken", "invalid_token"),
            (410, "Unregistered", "invalid_token"),
            (413, "PayloadTooLarge", "rejected"),
            (429, "TooManyProviderTokenUpdates", "retry"),
            (429, "TooManyRequests", "retry"),
            (500, "InternalServerError", "retry"),
            (503, "ServiceUnavailable", "retry"),
            (503, "Shutdown", "retry"),
        ];
        for (status, reason, expected) in table {
            let outcome = classify(&answer(*status, reason), None);
            assert_eq!(outcome.label(), *expected, "{status} {reason}");
            assert_eq!(outcome.reason(), *reason);
        }
    }

    #[test]
    fn reasons_apple_adds_later_fall_back_on_the_status() {
        assert_eq!(
            classify(&answer(410, "SomethingNew"), None).label(),
            "invalid_token"
        );
        assert_eq!(
            classify(&answer(403, "SomethingNew"), None).label(),
            "credentials_rejected"
        );
        assert_eq!(
            classify(&answer(502, "SomethingNew"), None).label(),
            "retry"
        );
        assert_eq!(
            classify(&answer(400, "SomethingNew"), None).label(),
            "rejected"
        );
        let bare = Answer {
            status: 503,
            ..Answer::default()
        };
        assert_eq!(classify(&bare, None).reason(), "HTTP 503");
    }

    #[test]
    fn a_410_carries_the_time_apple_learnt_the_token_was_invalid() {
        let gone = Answer {
            status: 410,
            reason: Some("Unregistered".into()),
            timestamp: Some(1_700_000_000_123),
            ..Answer::default()
        };
        assert_eq!(
            classify(&gone, None),
            PushOutcome::InvalidToken {
                reason: "Unregistered".into(),
                since: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_123)),
            }
        );
    }

    #[test]
    fn delivered_reports_apples_apns_id_or_ours() {
        let ok = Answer {
            status: 200,
            apns_id: Some("from-apple".into()),
            ..Answer::default()
        };
        assert_eq!(
            classify(&ok, Some("ours")),
            PushOutcome::Delivered {
                id: "from-apple".into()
            }
        );
        let bare = Answer {
            status: 200,
            ..Answer::default()
        };
        assert_eq!(
            classify(&bare, Some("ours")),
            PushOutcome::Delivered { id: "ours".into() }
        );
    }

    fn voip(token: &str, payload: serde_json::Value) -> ApnsNotification {
        ApnsNotification {
            device_token: token.into(),
            topic: "com.example.app.voip".into(),
            push_type: ApnsPushType::Voip,
            priority: ApnsPriority::High,
            expiration: None,
            collapse_id: None,
            apns_id: None,
            payload,
        }
    }

    #[test]
    fn a_device_token_that_is_not_even_length_hex_is_refused_as_apple_would() {
        for bad in ["", "abc", "zz00", "0a 0b", &"ab".repeat(201)] {
            let refusal = prepare(&voip(bad, serde_json::json!({}))).err();
            assert_eq!(refusal.map(|o| o.label()), Some("invalid_token"), "{bad:?}");
        }
        assert!(prepare(&voip(&"0A".repeat(32), serde_json::json!({}))).is_ok());
    }

    #[test]
    fn payload_limits_are_5120_bytes_for_voip_and_4096_for_alerts() {
        let padded =
            |bytes: usize| serde_json::json!({ "p": "x".repeat(bytes - r#"{"p":""}"#.len()) });
        let token = "ab".repeat(32);
        assert!(prepare(&voip(&token, padded(5120))).is_ok());
        assert_eq!(
            prepare(&voip(&token, padded(5121))).err(),
            Some(PushOutcome::rejected("PayloadTooLarge"))
        );
        let mut alert = voip(&token, padded(4097));
        alert.push_type = ApnsPushType::Alert;
        assert_eq!(
            prepare(&alert).err(),
            Some(PushOutcome::rejected("PayloadTooLarge"))
        );
    }

    #[test]
    fn a_collapse_id_over_64_bytes_is_refused() {
        let mut n = voip(&"ab".repeat(32), serde_json::json!({}));
        n.collapse_id = Some("c".repeat(65));
        assert_eq!(
            prepare(&n).err(),
            Some(PushOutcome::rejected("BadCollapseId"))
        );
        n.collapse_id = Some("c".repeat(64));
        assert!(prepare(&n).is_ok());
    }

    /// A throwaway P-256 key, generated for these tests only.
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQggCq7fqlesuRIddqc
vQwWR/9+t+b/oGlfGzFOgQ7h8KuhRANCAASOM0M0h+oow/1sDXrh893vJ9mau8la
v3wTOUC6TqRpBpSOryhd0jCNPsJoXsfNgPeSOE4xHsQxYVSapyrUjG/j
-----END PRIVATE KEY-----
";

    fn tokens() -> ProviderTokens {
        ProviderTokens {
            key: EncodingKey::from_ec_pem(TEST_KEY.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
            key_id: "KEY1234567".into(),
            team_id: "TEAM123456".into(),
            current: Mutex::new(None),
        }
    }

    fn issued(tokens: &ProviderTokens) -> Option<Instant> {
        tokens.current.lock().ok()?.as_ref().map(|t| t.issued)
    }

    fn age(tokens: &ProviderTokens, by: Duration) {
        if let Ok(mut current) = tokens.current.lock()
            && let Some(token) = current.as_mut()
        {
            token.issued = token.issued.checked_sub(by).unwrap_or(token.issued);
        }
    }

    #[test]
    fn the_provider_token_is_reused_for_fifty_minutes_then_renewed() {
        let tokens = tokens();
        assert!(tokens.current().is_ok());
        let first = issued(&tokens);
        assert!(tokens.current().is_ok());
        assert_eq!(issued(&tokens), first, "reused while fresh");

        age(&tokens, Duration::from_secs(49 * 60));
        let aged = issued(&tokens);
        assert!(tokens.current().is_ok());
        assert_eq!(issued(&tokens), aged, "49 minutes old: still reused");

        age(&tokens, Duration::from_secs(2 * 60));
        assert!(tokens.current().is_ok());
        assert!(issued(&tokens) > aged, "51 minutes old: renewed");
    }

    #[test]
    fn many_pushes_refused_with_the_same_expired_token_renew_it_once() {
        let tokens = tokens();
        if let Ok(mut current) = tokens.current.lock() {
            *current = Some(ProviderToken {
                jwt: "the-token-apple-refused".into(),
                issued: Instant::now(),
            });
        }
        let before = issued(&tokens);

        let renewed = tokens.renew("the-token-apple-refused").unwrap_or_default();
        assert_ne!(renewed, "the-token-apple-refused");
        let renewed_at = issued(&tokens);
        assert!(renewed_at > before);

        let again = tokens.renew("the-token-apple-refused").unwrap_or_default();
        assert_eq!(
            again, renewed,
            "a second refusal of the old token gets the new one"
        );
        assert_eq!(issued(&tokens), renewed_at, "and renews nothing");
    }

    #[test]
    fn provider_tokens_carry_exactly_alg_and_kid_and_the_team_as_issuer() {
        let jwt = tokens().current().unwrap_or_default();
        let mut parts = jwt.split('.');
        let decode = |part: Option<&str>| -> serde_json::Value {
            use base64::Engine as _;
            let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part.unwrap_or_default())
                .unwrap_or_default();
            serde_json::from_slice(&bytes).unwrap_or_default()
        };
        assert_eq!(
            decode(parts.next()),
            serde_json::json!({"alg": "ES256", "kid": "KEY1234567"})
        );
        let claims = decode(parts.next());
        assert_eq!(claims["iss"], "TEAM123456");
        assert!(claims["iat"].as_u64().is_some());
    }

    #[test]
    fn environments_parse_from_their_variable_values() {
        assert_eq!("production".parse(), Ok(ApnsEnvironment::Production));
        assert_eq!("sandbox".parse(), Ok(ApnsEnvironment::Sandbox));
        assert_eq!(
            "Production".parse::<ApnsEnvironment>(),
            Err(UnknownEnvironment)
        );
    }
}
