//! Access-token verification (CONTRACT section 2).
//!
//! Users are the `sub` (or the claim named by `JWT_USER_CLAIM`) of a JWT issued by the host
//! application or its identity provider. Verification is configured with exactly one source of
//! keys:
//!
//! - `JWT_SECRET`: HS256;
//! - `JWT_PUBLIC_KEY_FILE`: a PEM public key, whose type fixes the algorithm: RSA → RS256,
//!   EC P-256 → ES256, Ed25519 → EdDSA;
//! - `JWT_JWKS_URL`: the identity provider's JWKS (Firebase, Auth0, Cognito, Supabase, Keycloak,
//!   Clerk…): the key is chosen by the token's `kid`, and the key's type fixes the algorithm as
//!   above. Keys are cached, refreshed in the background and on an unknown `kid` (rate-limited
//!   by `JWT_JWKS_MIN_REFRESH_SECONDS`); see [`jwks`]. `JWT_ISSUER` is required with it: a
//!   provider's keys may sign for other tenants too (Firebase's sign for every project).
//!
//! The algorithm comes from the key, never from the token: a token whose header names any other
//! `alg` (including `none`, and HS256 presented to an RSA verifier, the classic confusion attack)
//! is rejected before any signature check. `exp` is required, `nbf` is honoured when present, both
//! with [`LEEWAY_SECS`] of clock-skew tolerance; `iss` and `aud` are enforced only when
//! `JWT_ISSUER` / `JWT_AUDIENCE` are set; the user claim must be a valid [`UserId`].
//!
//! [`AuthError`]'s messages describe the failure and never include the token.

pub mod jwks;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{FromRef, FromRequestParts};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::AUTHORIZATION;
use http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::{ConfigError, Secret};
use crate::error::{ApiError, ErrorCode};
use crate::ids::UserId;

/// Clock-skew tolerance for `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// Tokens longer than this are rejected unparsed: real access tokens are well under 2 KiB, and
/// the cap bounds the work an anonymous caller can cause.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

const SECRET_VAR: &str = "JWT_SECRET";
const KEY_FILE_VAR: &str = "JWT_PUBLIC_KEY_FILE";
const JWKS_VAR: &str = "JWT_JWKS_URL";
const KEY_VARS: &[&str] = &[SECRET_VAR, KEY_FILE_VAR, JWKS_VAR];

/// The claim that holds the user id unless `JWT_USER_CLAIM` says otherwise.
pub const DEFAULT_USER_CLAIM: &str = "sub";
/// Default of `JWT_JWKS_MIN_REFRESH_SECONDS`.
pub const DEFAULT_JWKS_MIN_REFRESH_SECS: u64 = 30;

/// JWT settings, flattened into each service's `Config` with `#[command(flatten)]`: every
/// service that verifies tokens reads the same variables and builds the same [`JwtVerifier`].
#[derive(clap::Args, Clone, Debug)]
pub struct JwtConfig {
    /// HMAC secret for HS256 access tokens. Set exactly one of `JWT_SECRET`,
    /// `JWT_PUBLIC_KEY_FILE` and `JWT_JWKS_URL`.
    #[arg(long = "jwt-secret", env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// PEM public key (RSA, EC P-256 or Ed25519) for RS256 / ES256 / EdDSA access tokens.
    #[arg(long = "jwt-public-key-file", env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// The identity provider's JWKS URL (Firebase, Auth0, Cognito, Supabase, Keycloak, Clerk…):
    /// keys chosen by the token's `kid`, RS256 / ES256 / EdDSA, cached and refreshed. Requires
    /// `JWT_ISSUER`.
    #[arg(long = "jwt-jwks-url", env = "JWT_JWKS_URL")]
    pub jwt_jwks_url: Option<String>,
    /// With `JWT_JWKS_URL`: the shortest time between two fetches of the key set caused by
    /// tokens with an unknown `kid` (and between retries while the provider is unreachable), in
    /// seconds.
    #[arg(long = "jwt-jwks-min-refresh-seconds", env = "JWT_JWKS_MIN_REFRESH_SECONDS", default_value_t = DEFAULT_JWKS_MIN_REFRESH_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub jwt_jwks_min_refresh_seconds: u64,
    /// The claim that holds the user id (`sub` for most providers; a string).
    #[arg(long = "jwt-user-claim", env = "JWT_USER_CLAIM", default_value = DEFAULT_USER_CLAIM)]
    pub jwt_user_claim: String,
    /// Required `iss` claim, when set.
    #[arg(long = "jwt-issuer", env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim (one of the token's audiences), when set.
    #[arg(long = "jwt-audience", env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            jwt_public_key_file: None,
            jwt_jwks_url: None,
            jwt_jwks_min_refresh_seconds: DEFAULT_JWKS_MIN_REFRESH_SECS,
            jwt_user_claim: DEFAULT_USER_CLAIM.to_owned(),
            jwt_issuer: None,
            jwt_audience: None,
        }
    }
}

/// Why a token was not accepted. The messages are safe to return to clients and to log: they
/// never contain the token or claim values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token was presented.
    #[error("missing access token")]
    Missing,
    /// Not a JWT, or its parts do not decode, or a claim has the wrong type.
    #[error("malformed access token")]
    Malformed,
    /// `exp` is missing.
    #[error("access token has no expiry")]
    MissingExpiry,
    /// `exp` is in the past (beyond the leeway).
    #[error("access token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("access token not yet valid")]
    NotYetValid,
    /// The signature does not match.
    #[error("access token signature is invalid")]
    BadSignature,
    /// The header's `alg` is not the configured key's algorithm.
    #[error("access token algorithm is not accepted")]
    WrongAlgorithm,
    /// `iss` is missing or not the configured issuer.
    #[error("access token issuer is not accepted")]
    WrongIssuer,
    /// `aud` is missing or does not include the configured audience.
    #[error("access token audience is not accepted")]
    WrongAudience,
    /// The user claim (`sub`, or `JWT_USER_CLAIM`) is missing or empty.
    #[error("access token has no subject")]
    MissingSubject,
    /// The user claim is present but not a valid user id (not a string, too long, control
    /// characters).
    #[error("access token subject is not a valid user id")]
    InvalidSubject,
    /// The token's `kid` is not in the identity provider's key set, even after a refresh.
    #[error("access token signing key is not known")]
    UnknownKey,
    /// The identity provider's keys could not be fetched since start-up: the token cannot be
    /// checked at all. Not the client's fault; 503, safe to retry.
    #[error("the identity provider's keys are unavailable")]
    KeysUnavailable,
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        match err {
            AuthError::KeysUnavailable => ApiError::dependency_unavailable("identity provider"),
            err => ApiError::new(ErrorCode::Unauthorized, capitalize(&err.to_string())),
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The verified claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user: the `sub` claim, or the claim `JWT_USER_CLAIM` names.
    pub sub: UserId,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// Not-before, when present.
    pub nbf: Option<u64>,
    /// Issued-at, when present.
    pub iat: Option<u64>,
    /// Issuer, when present and a string.
    pub iss: Option<String>,
    /// Audiences (the claim may be a string or an array).
    pub aud: Vec<String>,
    /// The standard `name` claim (OpenID Connect), when present and a string: how the user is
    /// shown to the people they call.
    pub name: Option<String>,
    /// The standard `picture` claim (OpenID Connect), when present and a string.
    pub picture: Option<String>,
}

/// Verifies access tokens with the configured key or key set. Cheap to clone (clones share a
/// JWKS cache); share it as `Arc<JwtVerifier>` in application state.
#[derive(Clone, Debug)]
pub struct JwtVerifier {
    keys: Keys,
    issuer: Option<String>,
    audience: Option<String>,
    user_claim: Arc<str>,
}

/// Where verification keys come from.
#[derive(Clone, Debug)]
enum Keys {
    /// One key and its algorithm (`JWT_SECRET`, `JWT_PUBLIC_KEY_FILE`).
    Fixed(Arc<jwks::VerifyKey>),
    /// The identity provider's key set (`JWT_JWKS_URL`).
    Jwks(jwks::Jwks),
}

fn set_vars(config: &JwtConfig) -> Vec<&'static str> {
    [
        (config.jwt_secret.is_some(), SECRET_VAR),
        (config.jwt_public_key_file.is_some(), KEY_FILE_VAR),
        (
            config
                .jwt_jwks_url
                .as_deref()
                .is_some_and(|u| !u.is_empty()),
            JWKS_VAR,
        ),
    ]
    .into_iter()
    .filter_map(|(set, var)| set.then_some(var))
    .collect()
}

impl JwtVerifier {
    /// Builds the verifier from configuration: exactly one of `JWT_SECRET` /
    /// `JWT_PUBLIC_KEY_FILE` (the key type detected from the PEM) / `JWT_JWKS_URL` (with
    /// `JWT_ISSUER`). With a JWKS and a running Tokio runtime, the first fetch starts at once.
    pub fn from_config(config: &JwtConfig) -> Result<Self, ConfigError> {
        let nonempty =
            |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        let set = set_vars(config);
        if set.len() > 1 {
            let vars: &'static [&'static str] = match (set[0], set[1]) {
                (SECRET_VAR, KEY_FILE_VAR) => &KEY_VARS[..2],
                (SECRET_VAR, _) => &[SECRET_VAR, JWKS_VAR],
                _ => &KEY_VARS[1..],
            };
            return Err(ConfigError::Conflict { vars });
        }
        let user_claim = config.jwt_user_claim.trim();
        if user_claim.is_empty() {
            return Err(ConfigError::Invalid {
                var: "JWT_USER_CLAIM",
                reason: "must name a claim, such as sub".to_owned(),
            });
        }
        let verifier = match (
            &config.jwt_secret,
            &config.jwt_public_key_file,
            nonempty(&config.jwt_jwks_url),
        ) {
            (None, None, None) => return Err(ConfigError::MissingOneOf { vars: KEY_VARS }),
            (None, None, Some(url)) => {
                if nonempty(&config.jwt_issuer).is_none() {
                    return Err(ConfigError::Invalid {
                        var: JWKS_VAR,
                        reason: "needs JWT_ISSUER: an identity provider's keys may sign tokens \
                                 for other tenants too, so the issuer must be checked"
                            .to_owned(),
                    });
                }
                let url = jwks_url(&url)?;
                let min_refresh = Duration::from_secs(config.jwt_jwks_min_refresh_seconds.max(1));
                let jwks = jwks::Jwks::shared(url, min_refresh).map_err(|reason| {
                    ConfigError::Invalid {
                        var: JWKS_VAR,
                        reason,
                    }
                })?;
                Self {
                    keys: Keys::Jwks(jwks),
                    issuer: None,
                    audience: None,
                    user_claim: Arc::from(DEFAULT_USER_CLAIM),
                }
            }
            (Some(secret), _, _) => {
                if secret.expose().len() < 32 {
                    tracing::warn!(
                        "JWT_SECRET is shorter than 32 bytes; HS256 secrets should be long and random"
                    );
                }
                Self::hs256(secret.expose())
            }
            (None, Some(path), _) => {
                let pem = std::fs::read(path).map_err(|source| ConfigError::ReadFile {
                    var: KEY_FILE_VAR,
                    path: path.clone(),
                    source,
                })?;
                Self::from_public_key_pem(&pem).map_err(|reason| ConfigError::Invalid {
                    var: KEY_FILE_VAR,
                    reason,
                })?
            }
        };
        let mut verifier = verifier;
        verifier.issuer = nonempty(&config.jwt_issuer);
        verifier.audience = nonempty(&config.jwt_audience);
        verifier.user_claim = Arc::from(user_claim);
        Ok(verifier)
    }

    fn fixed(key: DecodingKey, algorithm: Algorithm) -> Self {
        Self {
            keys: Keys::Fixed(Arc::new(jwks::VerifyKey { key, algorithm })),
            issuer: None,
            audience: None,
            user_claim: Arc::from(DEFAULT_USER_CLAIM),
        }
    }

    /// An HS256 verifier.
    pub fn hs256(secret: &str) -> Self {
        Self::fixed(
            DecodingKey::from_secret(secret.as_bytes()),
            Algorithm::HS256,
        )
    }

    /// A verifier for the key set at a JWKS URL (`http://` is accepted for tests and in-cluster
    /// providers), refreshed at most once per `min_refresh` for unknown `kid`s. Add
    /// [`JwtVerifier::with_issuer`]: `from_config` requires it.
    pub fn jwks(url: &str, min_refresh: Duration) -> Result<Self, String> {
        let url = reqwest::Url::parse(url).map_err(|e| format!("not a URL: {e}"))?;
        let jwks = jwks::Jwks::shared(url, min_refresh)?;
        Ok(Self {
            keys: Keys::Jwks(jwks),
            issuer: None,
            audience: None,
            user_claim: Arc::from(DEFAULT_USER_CLAIM),
        })
    }

    /// A verifier for a PEM public key: RSA → RS256, EC P-256 → ES256, Ed25519 → EdDSA.
    /// The error says what is wrong with the key, in words fit for a start-up message.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file".to_owned())?;
        let label = pem_label(text).ok_or_else(|| "not a PEM file".to_owned())?;
        match label {
            "PUBLIC KEY" | "RSA PUBLIC KEY" => {}
            l if l.contains("PRIVATE KEY") => {
                return Err(
                    "holds a private key; give the public key (openssl pkey -pubout)".to_owned(),
                );
            }
            other => {
                return Err(format!(
                    "unsupported PEM block \"{other}\"; expected PUBLIC KEY"
                ));
            }
        }

        let (key, algorithm) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            (key, Algorithm::RS256)
        } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
            // 65 bytes uncompressed / 33 compressed is P-256; P-384 keys are 97 / 49.
            match key.try_get_as_bytes().map(<[u8]>::len) {
                Ok(65 | 33) => (key, Algorithm::ES256),
                _ => return Err("EC keys must be on curve P-256 (ES256)".to_owned()),
            }
        } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
            // Checked here because the Ed25519 verifier slices the key without a length check.
            match key.try_get_as_bytes().map(<[u8]>::len) {
                Ok(32) => (key, Algorithm::EdDSA),
                _ => return Err("not a valid Ed25519 public key".to_owned()),
            }
        } else {
            return Err("unsupported key type; use RSA, EC P-256 or Ed25519".to_owned());
        };

        // Build the verifier once now so a key that parses as PEM but not as a key fails at
        // start-up instead of on every request.
        if let Err(err) = jsonwebtoken::crypto::verify("AA", b"probe", &key, algorithm) {
            return Err(format!("unusable {algorithm:?} key: {err}"));
        }
        Ok(Self::fixed(key, algorithm))
    }

    /// Requires this `iss`.
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Requires this audience among the token's `aud`.
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audience = Some(audience.into());
        self
    }

    /// Reads the user id from this claim instead of `sub`.
    pub fn with_user_claim(mut self, claim: impl Into<String>) -> Self {
        self.user_claim = Arc::from(claim.into());
        self
    }

    /// The algorithm tokens must use with a fixed key; `None` with a JWKS, where each key fixes
    /// its own.
    pub fn algorithm(&self) -> Option<Algorithm> {
        match &self.keys {
            Keys::Fixed(key) => Some(key.algorithm),
            Keys::Jwks(_) => None,
        }
    }

    /// Verifies a token and returns its claims. With a JWKS this may wait for one fetch of the
    /// key set (an unknown `kid`, within the refresh limit); with a fixed key it never waits.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        // The header is checked by hand first so that `alg: none` and other algorithms are
        // reported as WrongAlgorithm (jsonwebtoken cannot even parse `none`).
        let header = header_of(token)?;
        let key = match &self.keys {
            Keys::Fixed(key) => key.clone(),
            Keys::Jwks(jwks) => {
                // A token naming an algorithm no JWKS key can have (none, HS256, RS512…) is
                // refused before its `kid` may cause a fetch.
                if !matches!(
                    Algorithm::from_str(&header.alg),
                    Ok(Algorithm::RS256 | Algorithm::ES256 | Algorithm::EdDSA)
                ) {
                    return Err(AuthError::WrongAlgorithm);
                }
                jwks.key_for(header.kid.as_deref()).await?
            }
        };
        if Algorithm::from_str(&header.alg).ok() != Some(key.algorithm) {
            return Err(AuthError::WrongAlgorithm);
        }
        self.check(token, &key)
    }

    fn check(&self, token: &str, key: &jwks::VerifyKey) -> Result<Claims, AuthError> {
        let mut validation = Validation::new(key.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // `iss` and `aud` are checked by hand below: jsonwebtoken skips them when the claim is
        // null or of an unexpected type (`"iss": 123` would pass), and checks required claims
        // in hash-set order, which would make the reported error vary between runs.
        validation.set_required_spec_claims(&["exp"]);
        validation.iss = None;
        validation.validate_aud = false;

        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(map_jwt_error)?;
        if let Some(expected) = &self.issuer
            && data.claims.get("iss").and_then(Value::as_str) != Some(expected.as_str())
        {
            return Err(AuthError::WrongIssuer);
        }
        if let Some(expected) = &self.audience {
            let matches = match data.claims.get("aud") {
                Some(Value::String(aud)) => aud == expected,
                Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(expected)),
                _ => false,
            };
            if !matches {
                return Err(AuthError::WrongAudience);
            }
        }
        claims_from(data.claims, &self.user_claim)
    }

    /// Verifies the token in an `Authorization` header value (`Bearer <token>`); `None` or a
    /// header without a bearer token is [`AuthError::Missing`].
    pub async fn verify_authorization(&self, header: Option<&str>) -> Result<Claims, AuthError> {
        let token = header.and_then(bearer_token).ok_or(AuthError::Missing)?;
        self.verify(token).await
    }
}

/// `JWT_JWKS_URL` as a URL: HTTPS, or plain HTTP (with a warning unless it is loopback: keys
/// fetched in the clear can be swapped by anyone on the path).
fn jwks_url(value: &str) -> Result<reqwest::Url, ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        var: JWKS_VAR,
        reason: reason.to_owned(),
    };
    let url = reqwest::Url::parse(value.trim()).map_err(|_| invalid("not a URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("credentials in the URL are not supported"));
    }
    match url.scheme() {
        "https" => {}
        "http" => {
            let loopback = url.host_str().is_some_and(|host| {
                host == "localhost"
                    || host == "[::1]"
                    || host
                        .parse::<std::net::Ipv4Addr>()
                        .is_ok_and(|ip| ip.is_loopback())
            });
            if !loopback {
                tracing::warn!(
                    "JWT_JWKS_URL is plain http: anyone between this service and the provider \
                     could substitute keys; use https outside a trusted network"
                );
            }
        }
        _ => return Err(invalid("must be an https:// URL")),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    Ok(url)
}

fn pem_label(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &text[start..];
    let end = rest.find("-----")?;
    Some(rest[..end].trim())
}

/// The header fields verification looks at.
struct TokenHeader {
    alg: String,
    kid: Option<String>,
}

fn header_of(token: &str) -> Result<TokenHeader, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    let header: Map<String, Value> =
        serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => alg.clone(),
        _ => return Err(AuthError::Malformed),
    };
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AuthError::Malformed),
    };
    Ok(TokenHeader { alg, kid })
}

fn map_jwt_error(err: jsonwebtoken::errors::Error) -> AuthError {
    match err.kind() {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidAlgorithm => AuthError::WrongAlgorithm,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => AuthError::MissingExpiry,
            "iss" => AuthError::WrongIssuer,
            "aud" => AuthError::WrongAudience,
            "sub" => AuthError::MissingSubject,
            _ => AuthError::Malformed,
        },
        ErrorKind::InvalidEcdsaKey | ErrorKind::InvalidEddsaKey | ErrorKind::InvalidRsaKey(_) => {
            // The key was checked at start-up, so this is a token whose signature bytes are not
            // even shaped like a signature.
            AuthError::BadSignature
        }
        _ => AuthError::Malformed,
    }
}

fn numeric(value: Option<&Value>) -> Option<u64> {
    match value? {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
                .map(|f| f as u64)
        }),
        _ => None,
    }
}

fn claims_from(map: Map<String, Value>, user_claim: &str) -> Result<Claims, AuthError> {
    let sub = match map.get(user_claim) {
        None | Some(Value::Null) => return Err(AuthError::MissingSubject),
        Some(Value::String(s)) if s.is_empty() => return Err(AuthError::MissingSubject),
        Some(Value::String(s)) => UserId::from_str(s).map_err(|_| AuthError::InvalidSubject)?,
        Some(_) => return Err(AuthError::InvalidSubject),
    };
    // jsonwebtoken has already required and validated `exp` as a number.
    let exp = numeric(map.get("exp")).ok_or(AuthError::MissingExpiry)?;
    let aud = match map.get("aud") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    Ok(Claims {
        sub,
        exp,
        nbf: numeric(map.get("nbf")),
        iat: numeric(map.get("iat")),
        iss: map.get("iss").and_then(Value::as_str).map(str::to_owned),
        aud,
        name: map.get("name").and_then(Value::as_str).map(str::to_owned),
        picture: map
            .get("picture")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// The token of an `Authorization: Bearer <token>` header value; the scheme is matched
/// case-insensitively. `None` for other schemes or an empty token.
pub fn bearer_token(authorization_header_value: &str) -> Option<&str> {
    let value = authorization_header_value.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim();
    (!token.is_empty()).then_some(token)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Serialize)]
struct MintClaims<'a> {
    sub: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<&'a str>,
}

/// Mints an HS256 access token for `sub`, valid for `ttl`: for the developer "mint a token"
/// command and for tests. Production tokens come from the host application's auth service.
pub fn mint_hs256(secret: &str, sub: &str, ttl: Duration) -> String {
    mint_hs256_with(secret, sub, ttl, None, None)
}

/// [`mint_hs256`] with optional `iss` and `aud` claims.
pub fn mint_hs256_with(
    secret: &str,
    sub: &str,
    ttl: Duration,
    iss: Option<&str>,
    aud: Option<&str>,
) -> String {
    let iat = now_secs();
    let claims = MintClaims {
        sub,
        iat,
        exp: iat.saturating_add(ttl.as_secs()),
        iss,
        aud,
    };
    // HMAC accepts keys of any length and these claims always serialize, so encoding cannot
    // fail; an empty string (which every verifier rejects) keeps this panic-free regardless.
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap_or_default()
}

/// Extractor for handlers that require a signed-in user: reads `Authorization: Bearer`, verifies
/// it with the state's `Arc<JwtVerifier>`, and rejects with 401 `UNAUTHORIZED` in the envelope.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

impl Authenticated {
    /// The user.
    pub fn user_id(&self) -> &UserId {
        &self.0.sub
    }
}

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    Arc<JwtVerifier>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let verifier = Arc::<JwtVerifier>::from_ref(state);
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let claims = verifier
            .verify_authorization(header)
            .await
            .map_err(ApiError::from)?;
        // The request's log line and span say who made it (see `telemetry::observe_http`).
        tracing::Span::current().record("user_id", claims.sub.as_str());
        Ok(Authenticated(claims))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer abc"), Some("abc"));
        assert_eq!(bearer_token("BEARER   abc "), Some("abc"));
    }

    #[test]
    fn non_bearer_or_empty_authorization_yields_no_token() {
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token("Bearer   "), None);
        assert_eq!(bearer_token("Bearerabc"), None);
        assert_eq!(bearer_token(""), None);
    }

    #[test]
    fn auth_errors_become_401_envelopes() {
        let err = ApiError::from(AuthError::Expired);
        assert_eq!(err.code, ErrorCode::Unauthorized);
        assert_eq!(err.message, "Access token expired");
    }
}
