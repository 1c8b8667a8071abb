//! Firebase Cloud Messaging, HTTP v1 API, authenticated with a Google service account.
//!
//! The service-account key signs an RS256 JWT assertion (`iss` = the account's email, `scope` =
//! FCM's, `aud` = the file's `token_uri`, one hour from `iat` to `exp`), exchanged at `token_uri`
//! for an OAuth2 access token (the JWT bearer grant of Google's "Using OAuth 2.0 for Server to
//! Server Applications"). The access token is cached until a minute before its `expires_in` and
//! shared by every send; a 401 from FCM fetches a new one and resends, once.
//!
//! Why not `gcp_auth` or `yup-oauth2`: the grant is a few lines with `jsonwebtoken`, and written
//! here it keeps what the notifier needs to see — an `invalid_grant` (revoked key: raise the
//! credential alert) told apart from a token endpoint that is merely down (retry) — and the
//! timeouts under the caller's control, on the same HTTP client as the sends.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use common::config::Secret;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;
use crate::outcome::PushOutcome;
use crate::transport::{self, BaseUrl, HttpClient, Response};

/// Google's FCM endpoint.
pub const DEFAULT_URL: &str = "https://fcm.googleapis.com";
/// Google's OAuth2 token endpoint, used when a service-account file names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
/// The OAuth2 scope that allows sending messages.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// How long a send (or a token request) may take before it counts as a timeout, unless configured.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

const JWT_BEARER_GRANT: &str = "urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer";
/// Google accepts assertions valid for at most one hour.
const ASSERTION_LIFETIME_S: u64 = 3600;
/// Renew an access token this long before Google says it expires, so a send never carries one
/// that expires in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// The fields of a Google service-account key file this client uses. `Debug` redacts the key.
#[derive(Clone, Debug)]
pub struct ServiceAccountKey {
    /// The Firebase (Google Cloud) project the messages are sent in.
    pub project_id: String,
    /// The account's email: the `iss` of every assertion.
    pub client_email: String,
    /// The RSA private key, PKCS#8 PEM.
    pub private_key: Secret,
    /// The key's id, sent as the assertion's `kid`.
    pub private_key_id: Option<String>,
    /// Where assertions are exchanged for access tokens (honoured as given: tests point it at a
    /// double).
    pub token_uri: String,
}

#[derive(Deserialize)]
struct RawServiceAccount {
    #[serde(rename = "type")]
    kind: Option<String>,
    project_id: String,
    client_email: String,
    private_key: String,
    private_key_id: Option<String>,
    token_uri: Option<String>,
}

impl ServiceAccountKey {
    /// Parses the JSON the Cloud console downloads.
    ///
    /// # Errors
    /// Not JSON, a missing field, or a `type` other than `service_account`. The message never
    /// quotes the file's contents.
    pub fn from_json(json: &str) -> Result<Self, ConfigError> {
        let raw: RawServiceAccount = serde_json::from_str(json).map_err(|e| {
            // serde_json may quote the offending value; for this file that could be the key.
            let what = match e.classify() {
                serde_json::error::Category::Data if e.to_string().starts_with("missing field") => {
                    e.to_string()
                        .split(" at line")
                        .next()
                        .unwrap_or("missing field")
                        .to_owned()
                }
                serde_json::error::Category::Data => "a field has the wrong type".to_owned(),
                _ => "not valid JSON".to_owned(),
            };
            ConfigError::ServiceAccount(format!(
                "{what} (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if let Some(kind) = raw.kind.as_deref().filter(|k| *k != "service_account") {
            return Err(ConfigError::ServiceAccount(format!(
                "`type` is `{kind}`, expected `service_account`"
            )));
        }
        Ok(ServiceAccountKey {
            project_id: raw.project_id,
            client_email: raw.client_email,
            private_key: Secret::new(raw.private_key),
            private_key_id: raw.private_key_id,
            token_uri: raw
                .token_uri
                .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned()),
        })
    }

    /// Reads and parses a service-account key file.
    ///
    /// # Errors
    /// The file cannot be read, or [`ServiceAccountKey::from_json`] refuses it.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let json =
            std::fs::read_to_string(path).map_err(|source| ConfigError::ReadServiceAccount {
                path: path.to_owned(),
                source,
            })?;
        Self::from_json(&json)
    }
}

/// What an [`FcmClient`] needs.
#[derive(Clone, Debug)]
pub struct FcmConfig {
    /// The credentials, and the project and token endpoint they belong to.
    pub service_account: ServiceAccountKey,
    /// Overrides [`DEFAULT_URL`] (a test double).
    pub base_url: Option<String>,
    /// The longest one send, or one token request, may take.
    pub timeout: Duration,
}

impl FcmConfig {
    /// Google's URL and [`DEFAULT_TIMEOUT`].
    pub fn new(service_account: ServiceAccountKey) -> Self {
        FcmConfig {
            service_account,
            base_url: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

/// `android.priority`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AndroidPriority {
    /// Wakes the device (Doze included) and may start a foreground service or show a
    /// full-screen intent: ringing.
    High,
    /// Delivered when the device is awake anyway.
    Normal,
}

impl AndroidPriority {
    fn as_str(self) -> &'static str {
        match self {
            AndroidPriority::High => "HIGH",
            AndroidPriority::Normal => "NORMAL",
        }
    }
}

/// A visible notification's text (`message.notification`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FcmNotification {
    /// The title.
    pub title: String,
    /// The body.
    pub body: String,
}

/// One message to one registration token.
#[derive(Clone, Debug)]
pub struct FcmMessage {
    /// The app instance's registration token.
    pub token: String,
    /// `message.data`: delivered to the app as is; FCM allows only string values.
    pub data: BTreeMap<String, String>,
    /// `android.priority`.
    pub priority: AndroidPriority,
    /// `android.ttl`: how long FCM keeps the message for an offline device (`None`: FCM's
    /// default of four weeks; zero: now or never).
    pub ttl: Option<Duration>,
    /// `message.notification`, for a visible notification.
    pub notification: Option<FcmNotification>,
}

#[derive(Serialize)]
struct SendRequest<'a> {
    message: WireMessage<'a>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    token: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    data: &'a BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    notification: Option<&'a FcmNotification>,
    android: WireAndroid,
}

#[derive(Serialize)]
struct WireAndroid {
    priority: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<String>,
}

/// A `google.protobuf.Duration` in its JSON form: seconds, up to nine fractional digits, `s`.
fn duration_json(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        return format!("{}s", d.as_secs());
    }
    let fraction = format!("{:09}", d.subsec_nanos());
    format!("{}.{}s", d.as_secs(), fraction.trim_end_matches('0'))
}

/// A client for one Firebase project; cheap to clone (clones share connections and the access
/// token).
#[derive(Clone)]
pub struct FcmClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: HttpClient,
    send_uri: Uri,
    project_id: String,
    timeout: Duration,
    tokens: AccessTokens,
}

impl std::fmt::Debug for FcmClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FcmClient")
            .field("send_uri", &self.inner.send_uri)
            .field("client_email", &self.inner.tokens.client_email)
            .finish_non_exhaustive()
    }
}

impl FcmClient {
    /// Checks the configuration (the key must sign an RS256 assertion) and prepares the client.
    /// Nothing is fetched until the first send.
    ///
    /// # Errors
    /// An empty project or email, a project id that cannot be a path segment, a key that is not
    /// RSA PEM, a malformed base URL or `token_uri`.
    pub fn new(config: FcmConfig) -> Result<Self, ConfigError> {
        let account = config.service_account;
        if account.client_email.trim().is_empty() {
            return Err(ConfigError::Empty {
                what: "service account client_email",
            });
        }
        if account.project_id.is_empty()
            || !account
                .project_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'_'))
        {
            return Err(ConfigError::ServiceAccount(
                "project_id must be a Google Cloud project id".into(),
            ));
        }
        let base = BaseUrl::parse("FCM URL", config.base_url.as_deref().unwrap_or(DEFAULT_URL))?;
        let send_uri = base
            .join(&format!(
                "/v1/projects/{}/messages:send",
                account.project_id
            ))
            .map_err(|e| ConfigError::Url {
                what: "FCM URL",
                url: base.as_str().to_owned(),
                reason: e.to_string(),
            })?;
        let token_uri =
            BaseUrl::parse("service account token_uri", &account.token_uri).and_then(|_| {
                account
                    .token_uri
                    .parse::<Uri>()
                    .map_err(|e| ConfigError::Url {
                        what: "service account token_uri",
                        url: account.token_uri.clone(),
                        reason: e.to_string(),
                    })
            })?;
        let key = EncodingKey::from_rsa_pem(account.private_key.expose().as_bytes())
            .map_err(|_| ConfigError::ServiceAccountKey)?;
        let http = transport::http_client()?;
        let tokens = AccessTokens {
            key,
            client_email: account.client_email,
            key_id: account.private_key_id,
            audience: account.token_uri,
            token_uri,
            http: http.clone(),
            timeout: config.timeout,
            state: tokio::sync::Mutex::new(TokenState::default()),
        };
        // Parsing the PEM does not prove the key signs; signing an assertion does.
        tokens
            .assertion()
            .map_err(|_| ConfigError::ServiceAccountKey)?;
        Ok(FcmClient {
            inner: Arc::new(Inner {
                http,
                send_uri,
                project_id: account.project_id,
                timeout: config.timeout,
                tokens,
            }),
        })
    }

    /// The Firebase project messages are sent in.
    pub fn project_id(&self) -> &str {
        &self.inner.project_id
    }

    /// Sends one message and says what came of it. A token request that fails ends the send with
    /// its outcome (retry when the endpoint is down, credentials rejected on `invalid_grant`).
    pub async fn send(&self, message: &FcmMessage) -> PushOutcome {
        if message.token.is_empty() {
            return PushOutcome::invalid_token("INVALID_ARGUMENT (message.token)", None);
        }
        let body = SendRequest {
            message: WireMessage {
                token: &message.token,
                data: &message.data,
                notification: message.notification.as_ref(),
                android: WireAndroid {
                    priority: message.priority.as_str(),
                    ttl: message.ttl.map(duration_json),
                },
            },
        };
        let body = match serde_json::to_vec(&body) {
            Ok(body) => Bytes::from(body),
            Err(_) => return PushOutcome::rejected("INVALID_ARGUMENT"),
        };
        let first = match self.inner.tokens.get().await {
            Ok(token) => token,
            Err(outcome) => return outcome,
        };
        match self.attempt(&body, &first).await {
            Attempt::Unauthenticated => {
                // Revoked or expired early: one fresh token, one more try.
                self.inner.tokens.invalidate(&first).await;
                let renewed = match self.inner.tokens.get().await {
                    Ok(token) => token,
                    Err(outcome) => return outcome,
                };
                match self.attempt(&body, &renewed).await {
                    Attempt::Unauthenticated => PushOutcome::credentials("UNAUTHENTICATED"),
                    Attempt::Done(outcome) => outcome,
                }
            }
            Attempt::Done(outcome) => outcome,
        }
    }

    async fn attempt(&self, body: &Bytes, token: &Secret) -> Attempt {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.inner.send_uri.clone())
            .header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()));
        let request = match request {
            Ok(request) => request,
            Err(_) => return Attempt::Done(PushOutcome::rejected("INVALID_ARGUMENT")),
        };
        match transport::exchange(&self.inner.http, request, self.inner.timeout).await {
            Ok(response) => {
                let error = GoogleError::read(&response.body);
                if response.status == StatusCode::UNAUTHORIZED && error.fcm_code.is_none() {
                    Attempt::Unauthenticated
                } else {
                    Attempt::Done(classify(&response, &error))
                }
            }
            Err(error) => Attempt::Done(error.into_retry()),
        }
    }
}

enum Attempt {
    Unauthenticated,
    Done(PushOutcome),
}

/// The parts of Google's error body (`{"error": {"code", "message", "status", "details"}}`) the
/// mapping needs.
#[derive(Debug, Default)]
struct GoogleError {
    status: Option<String>,
    message: String,
    /// `errorCode` of a `google.firebase.fcm.v1.FcmError` detail.
    fcm_code: Option<String>,
    /// `field`s of a `google.rpc.BadRequest` detail.
    fields: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    status: Option<String>,
    #[serde(default)]
    details: Vec<serde_json::Value>,
}

impl GoogleError {
    fn read(body: &[u8]) -> GoogleError {
        let Ok(envelope) = serde_json::from_slice::<ErrorEnvelope>(body) else {
            return GoogleError::default();
        };
        let mut error = GoogleError {
            status: envelope.error.status,
            message: envelope.error.message,
            ..GoogleError::default()
        };
        for detail in &envelope.error.details {
            let kind = detail.get("@type").and_then(|t| t.as_str()).unwrap_or("");
            if kind.ends_with("google.firebase.fcm.v1.FcmError") {
                error.fcm_code = detail
                    .get("errorCode")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned);
            } else if kind.ends_with("google.rpc.BadRequest") {
                let violations = detail.get("fieldViolations").and_then(|v| v.as_array());
                error.fields.extend(
                    violations
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.get("field").and_then(|f| f.as_str()))
                        .map(str::to_owned),
                );
            }
        }
        error
    }

    /// Whether an INVALID_ARGUMENT is about the registration token rather than the message:
    /// Google names the field, or says so in the message of an `FcmError` (its documented
    /// example: "The registration token is not a valid FCM registration token").
    fn is_about_the_token(&self) -> bool {
        self.fields.iter().any(|f| f == "message.token")
            || (self.fcm_code.is_some()
                && self
                    .message
                    .to_ascii_lowercase()
                    .contains("registration token"))
    }
}

#[derive(Deserialize)]
struct Sent {
    name: String,
}

/// FCM's answer as an outcome: the `FcmError` code when there is one (every value of FCM's
/// `ErrorCode`), else the HTTP status and google.rpc status.
fn classify(response: &Response, error: &GoogleError) -> PushOutcome {
    let status = response.status.as_u16();
    if response.status.is_success() {
        return match serde_json::from_slice::<Sent>(&response.body) {
            Ok(sent) => PushOutcome::Delivered { id: sent.name },
            Err(_) => PushOutcome::Delivered { id: String::new() },
        };
    }
    let retry_after = transport::retry_after(&response.headers);
    let code = error
        .fcm_code
        .clone()
        .filter(|c| c != "UNSPECIFIED_ERROR")
        .or_else(|| error.status.clone())
        .unwrap_or_else(|| format!("HTTP {status}"));
    // The reason names the offending field, never the message text (which can quote values).
    let reason = match error.fields.first() {
        Some(field) => format!("{code} ({field})"),
        None => code.clone(),
    };
    match code.as_str() {
        "UNREGISTERED" => PushOutcome::invalid_token(reason, None),
        "INVALID_ARGUMENT" if error.is_about_the_token() => {
            PushOutcome::invalid_token(reason, None)
        }
        // Our project or credentials do not match (SENDER_ID_MISMATCH: the token belongs to
        // another sender; THIRD_PARTY_AUTH_ERROR: the project's APNs or web-push credentials are
        // refused; PERMISSION_DENIED / UNAUTHENTICATED: the service account is).
        "SENDER_ID_MISMATCH"
        | "THIRD_PARTY_AUTH_ERROR"
        | "PERMISSION_DENIED"
        | "UNAUTHENTICATED" => PushOutcome::credentials(reason),
        "QUOTA_EXCEEDED" | "UNAVAILABLE" | "INTERNAL" | "RESOURCE_EXHAUSTED" => {
            PushOutcome::retry(reason, retry_after)
        }
        _ => match status {
            401 | 403 => PushOutcome::credentials(reason),
            429 | 500..=599 => PushOutcome::retry(reason, retry_after),
            _ => PushOutcome::rejected(reason),
        },
    }
}

/// The cached access token and what it takes to get a new one.
struct AccessTokens {
    key: EncodingKey,
    client_email: String,
    key_id: Option<String>,
    /// `token_uri` exactly as the file gives it: the assertion's `aud`.
    audience: String,
    token_uri: Uri,
    http: HttpClient,
    timeout: Duration,
    state: tokio::sync::Mutex<TokenState>,
}

#[derive(Default)]
struct TokenState {
    current: Option<AccessToken>,
    /// The last failed fetch: sends that queued behind it share its outcome instead of each
    /// waiting out its own timeout against an endpoint that is down.
    last_failure: Option<(Instant, PushOutcome)>,
}

struct AccessToken {
    value: Secret,
    refresh_at: Instant,
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct OAuthError {
    error: String,
}

impl AccessTokens {
    async fn get(&self) -> Result<Secret, PushOutcome> {
        let asked = Instant::now();
        let mut state = self.state.lock().await;
        if let Some(token) = state
            .current
            .as_ref()
            .filter(|t| Instant::now() < t.refresh_at)
        {
            return Ok(token.value.clone());
        }
        if let Some((failed_at, outcome)) = &state.last_failure
            && *failed_at >= asked
        {
            return Err(outcome.clone());
        }
        match self.fetch().await {
            Ok(token) => {
                let value = token.value.clone();
                state.current = Some(token);
                state.last_failure = None;
                Ok(value)
            }
            Err(outcome) => {
                state.current = None;
                state.last_failure = Some((Instant::now(), outcome.clone()));
                Err(outcome)
            }
        }
    }

    /// Forgets `stale` unless a concurrent send already replaced it.
    async fn invalidate(&self, stale: &Secret) {
        let mut state = self.state.lock().await;
        if state.current.as_ref().is_some_and(|t| &t.value == stale) {
            state.current = None;
        }
    }

    fn assertion(&self) -> Result<String, jsonwebtoken::errors::Error> {
        let mut header = Header::new(Algorithm::RS256);
        header.kid.clone_from(&self.key_id);
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let claims = AssertionClaims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.audience,
            iat,
            exp: iat + ASSERTION_LIFETIME_S,
        };
        jsonwebtoken::encode(&header, &claims, &self.key)
    }

    async fn fetch(&self) -> Result<AccessToken, PushOutcome> {
        let assertion = self
            .assertion()
            .map_err(|_| PushOutcome::credentials("cannot sign the token request"))?;
        // The assertion is base64url and dots: nothing in it needs form-encoding.
        let form = format!("grant_type={JWT_BEARER_GRANT}&assertion={assertion}");
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.token_uri.clone())
            .header(
                http::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(Full::new(Bytes::from(form)))
            .map_err(|_| PushOutcome::credentials("token endpoint: bad token_uri"))?;
        let requested = Instant::now();
        let response = transport::exchange(&self.http, request, self.timeout)
            .await
            .map_err(|e| match e.into_retry() {
                PushOutcome::Retry { reason, after } => {
                    PushOutcome::retry(format!("token endpoint: {reason}"), after)
                }
                other => other,
            })?;
        let (token, expires_in) = read_token_response(&response)?;
        let lifetime = Duration::from_secs(expires_in);
        // Short-lived tokens (a test double's) still get a useful life: half of it at least.
        let margin = REFRESH_MARGIN.min(lifetime / 2);
        Ok(AccessToken {
            value: Secret::new(token),
            refresh_at: requested + lifetime - margin,
        })
    }
}

/// The token endpoint's answer: the token and its lifetime, or the outcome every send waiting on
/// it gets.
fn read_token_response(response: &Response) -> Result<(String, u64), PushOutcome> {
    let status = response.status.as_u16();
    if response.status.is_success() {
        return match serde_json::from_slice::<TokenResponse>(&response.body) {
            Ok(token) if !token.access_token.is_empty() => {
                Ok((token.access_token, token.expires_in.unwrap_or(3600)))
            }
            _ => Err(PushOutcome::retry(
                "token endpoint: a response without an access token",
                None,
            )),
        };
    }
    if status == 429 || status >= 500 {
        return Err(PushOutcome::retry(
            format!("token endpoint: HTTP {status}"),
            transport::retry_after(&response.headers),
        ));
    }
    // invalid_grant (revoked or deleted key, clock far off), invalid_client, unauthorized_client,
    // invalid_scope, or a token_uri that is not a token endpoint: only an operator can fix these.
    let error = serde_json::from_slice::<OAuthError>(&response.body)
        .map(|e| e.error)
        .unwrap_or_else(|_| format!("HTTP {status}"));
    Err(PushOutcome::credentials(format!("token endpoint: {error}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    fn response(status: u16, body: serde_json::Value) -> Response {
        Response {
            status: StatusCode::from_u16(status).unwrap_or(StatusCode::IM_A_TEAPOT),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    fn fcm_error(code: u16, status: &str, error_code: &str, message: &str) -> Response {
        response(
            code,
            serde_json::json!({"error": {"code": code, "message": message, "status": status, "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code}
            ]}}),
        )
    }

    fn outcome(response: &Response) -> PushOutcome {
        classify(response, &GoogleError::read(&response.body))
    }

    #[test]
    fn every_fcm_error_code_maps_to_the_outcome_the_notifier_acts_on() {
        let table = [
            (
                404,
                "NOT_FOUND",
                "UNREGISTERED",
                "Requested entity was not found.",
                "invalid_token",
            ),
            (
                400,
                "INVALID_ARGUMENT",
                "INVALID_ARGUMENT",
                "The registration token is not a valid FCM registration token",
                "invalid_token",
            ),
            (
                400,
                "INVALID_ARGUMENT",
                "INVALID_ARGUMENT",
                "Message is too big",
                "rejected",
            ),
            (
                403,
                "PERMISSION_DENIED",
                "SENDER_ID_MISMATCH",
                "SenderId mismatch",
                "credentials_rejected",
            ),
            (
                429,
                "RESOURCE_EXHAUSTED",
                "QUOTA_EXCEEDED",
                "Quota exceeded",
                "retry",
            ),
            (
                503,
                "UNAVAILABLE",
                "UNAVAILABLE",
                "The service is currently unavailable.",
                "retry",
            ),
            (
                500,
                "INTERNAL",
                "INTERNAL",
                "Internal error encountered.",
                "retry",
            ),
            (
                401,
                "UNAUTHENTICATED",
                "THIRD_PARTY_AUTH_ERROR",
                "Auth error from APNS or Web Push Service",
                "credentials_rejected",
            ),
            (500, "INTERNAL", "UNSPECIFIED_ERROR", "?", "retry"),
            (
                400,
                "INVALID_ARGUMENT",
                "UNSPECIFIED_ERROR",
                "?",
                "rejected",
            ),
        ];
        for (code, status, error_code, message, expected) in table {
            assert_eq!(
                outcome(&fcm_error(code, status, error_code, message)).label(),
                expected,
                "{error_code}: {message}"
            );
        }
    }

    #[test]
    fn an_invalid_argument_naming_the_token_field_removes_the_device_and_others_do_not() {
        let violation = |field: &str| {
            response(
                400,
                serde_json::json!({"error": {"code": 400, "message": "Invalid value", "status": "INVALID_ARGUMENT", "details": [
                    {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [{"field": field, "description": "Invalid value"}]}
                ]}}),
            )
        };
        assert_eq!(
            outcome(&violation("message.token")).label(),
            "invalid_token"
        );
        let ttl = outcome(&violation("message.android.ttl"));
        assert_eq!(
            ttl,
            PushOutcome::rejected("INVALID_ARGUMENT (message.android.ttl)")
        );
    }

    #[test]
    fn errors_without_fcm_details_fall_back_on_the_google_status_and_http_status() {
        let plain = |code: u16, status: &str| {
            response(
                code,
                serde_json::json!({"error": {"code": code, "message": "x", "status": status}}),
            )
        };
        assert_eq!(
            outcome(&plain(403, "PERMISSION_DENIED")).label(),
            "credentials_rejected"
        );
        assert_eq!(outcome(&plain(404, "NOT_FOUND")).label(), "rejected");
        assert_eq!(outcome(&plain(502, "BAD_GATEWAY")).label(), "retry");
        let html = Response {
            status: StatusCode::BAD_GATEWAY,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"<html>502</html>"),
        };
        assert_eq!(outcome(&html), PushOutcome::retry("HTTP 502", None));
    }

    #[test]
    fn retry_after_is_honoured_on_unavailable_and_quota_exceeded() {
        let mut busy = fcm_error(503, "UNAVAILABLE", "UNAVAILABLE", "busy");
        busy.headers
            .insert(http::header::RETRY_AFTER, HeaderValue::from_static("30"));
        assert_eq!(
            outcome(&busy),
            PushOutcome::retry("UNAVAILABLE", Some(Duration::from_secs(30)))
        );
    }

    #[test]
    fn a_success_reports_the_message_name() {
        let ok = response(
            200,
            serde_json::json!({"name": "projects/p/messages/0:1%ab"}),
        );
        assert_eq!(
            outcome(&ok),
            PushOutcome::Delivered {
                id: "projects/p/messages/0:1%ab".into()
            }
        );
    }

    #[test]
    fn token_endpoint_errors_are_credentials_and_outages_are_retries() {
        let grant = response(
            400,
            serde_json::json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."}),
        );
        assert_eq!(
            read_token_response(&grant).err(),
            Some(PushOutcome::credentials("token endpoint: invalid_grant"))
        );
        let down = response(503, serde_json::json!({}));
        assert_eq!(
            read_token_response(&down).err().map(|o| o.label()),
            Some("retry")
        );
        let ok = response(
            200,
            serde_json::json!({"access_token": "ya29.x", "expires_in": 3599, "token_type": "Bearer"}),
        );
        assert_eq!(
            read_token_response(&ok).ok(),
            Some(("ya29.x".to_owned(), 3599))
        );
    }

    #[test]
    fn ttls_are_protobuf_durations() {
        assert_eq!(duration_json(Duration::from_secs(30)), "30s");
        assert_eq!(duration_json(Duration::from_millis(1500)), "1.5s");
        assert_eq!(duration_json(Duration::new(2, 1)), "2.000000001s");
        assert_eq!(duration_json(Duration::ZERO), "0s");
    }

    #[test]
    fn service_account_errors_never_quote_the_file() {
        let wrong_type =
            r#"{"project_id": "p", "client_email": "e", "private_key": 12345, "token_uri": "x"}"#;
        let message = ServiceAccountKey::from_json(wrong_type)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            message.contains("wrong type") && !message.contains("12345"),
            "{message}"
        );
        let missing = ServiceAccountKey::from_json(r#"{"project_id": "p"}"#)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(message.contains("invalid"), "{message}");
        assert!(missing.contains("missing field"), "{missing}");
        let user = r#"{"type": "authorized_user", "project_id": "p", "client_email": "e", "private_key": "k"}"#;
        assert!(ServiceAccountKey::from_json(user).is_err());
    }
}
