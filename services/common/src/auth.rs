//! Access-token verification (CONTRACT section 2).
//!
//! Users are the `sub` of a JWT issued by the host application. Verification is configured with
//! exactly one key:
//!
//! - `JWT_SECRET`: HS256;
//! - `JWT_PUBLIC_KEY_FILE`: a PEM public key, whose type fixes the algorithm: RSA → RS256,
//!   EC P-256 → ES256, Ed25519 → EdDSA.
//!
//! The algorithm comes from the key, never from the token: a token whose header names any other
//! `alg` (including `none`, and HS256 presented to an RSA verifier, the classic confusion attack)
//! is rejected before any signature check. `exp` is required, `nbf` is honoured when present, both
//! with [`LEEWAY_SECS`] of clock-skew tolerance; `iss` and `aud` are enforced only when
//! `JWT_ISSUER` / `JWT_AUDIENCE` are set; `sub` must be a valid [`UserId`].
//!
//! [`AuthError`]'s messages describe the failure and never include the token.

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
const KEY_VARS: &[&str] = &[SECRET_VAR, KEY_FILE_VAR];

/// JWT settings, flattened into each service's `Config` with `#[command(flatten)]`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct JwtConfig {
    /// HMAC secret for HS256 access tokens. Exclusive with `JWT_PUBLIC_KEY_FILE`.
    #[arg(long = "jwt-secret", env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,
    /// PEM public key (RSA, EC P-256 or Ed25519) for RS256 / ES256 / EdDSA access tokens.
    #[arg(long = "jwt-public-key-file", env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,
    /// Required `iss` claim, when set.
    #[arg(long = "jwt-issuer", env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Required `aud` claim (one of the token's audiences), when set.
    #[arg(long = "jwt-audience", env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
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
    /// `sub` is missing or empty.
    #[error("access token has no subject")]
    MissingSubject,
    /// `sub` is present but not a valid user id (too long, control characters).
    #[error("access token subject is not a valid user id")]
    InvalidSubject,
}

impl From<AuthError> for ApiError {
    fn from(err: AuthError) -> Self {
        ApiError::new(ErrorCode::Unauthorized, capitalize(&err.to_string()))
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
    /// The user.
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

/// Verifies access tokens with one configured key. Cheap to clone; share it as
/// `Arc<JwtVerifier>` in application state.
#[derive(Clone, Debug)]
pub struct JwtVerifier {
    key: DecodingKey,
    algorithm: Algorithm,
    issuer: Option<String>,
    audience: Option<String>,
}

impl JwtVerifier {
    /// Builds the verifier from configuration: exactly one of `JWT_SECRET` /
    /// `JWT_PUBLIC_KEY_FILE`, the key type detected from the PEM.
    pub fn from_config(config: &JwtConfig) -> Result<Self, ConfigError> {
        let verifier = match (&config.jwt_secret, &config.jwt_public_key_file) {
            (Some(_), Some(_)) => return Err(ConfigError::Conflict { vars: KEY_VARS }),
            (None, None) => return Err(ConfigError::MissingOneOf { vars: KEY_VARS }),
            (Some(secret), None) => {
                if secret.expose().len() < 32 {
                    tracing::warn!(
                        "JWT_SECRET is shorter than 32 bytes; HS256 secrets should be long and random"
                    );
                }
                Self::hs256(secret.expose())
            }
            (None, Some(path)) => {
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
        let nonempty =
            |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(str::to_owned);
        let mut verifier = verifier;
        verifier.issuer = nonempty(&config.jwt_issuer);
        verifier.audience = nonempty(&config.jwt_audience);
        Ok(verifier)
    }

    /// An HS256 verifier.
    pub fn hs256(secret: &str) -> Self {
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            algorithm: Algorithm::HS256,
            issuer: None,
            audience: None,
        }
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
        Ok(Self {
            key,
            algorithm,
            issuer: None,
            audience: None,
        })
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

    /// The algorithm tokens must use.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// Verifies a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        if token.len() > MAX_TOKEN_BYTES {
            return Err(AuthError::Malformed);
        }
        // The header is checked by hand first so that `alg: none` and other algorithms are
        // reported as WrongAlgorithm (jsonwebtoken cannot even parse `none`).
        let alg = header_alg(token)?;
        if Algorithm::from_str(&alg).ok() != Some(self.algorithm) {
            return Err(AuthError::WrongAlgorithm);
        }

        let mut validation = Validation::new(self.algorithm);
        validation.leeway = LEEWAY_SECS;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        // `iss` and `aud` are checked by hand below: jsonwebtoken skips them when the claim is
        // null or of an unexpected type (`"iss": 123` would pass), and checks required claims
        // in hash-set order, which would make the reported error vary between runs.
        validation.set_required_spec_claims(&["exp"]);
        validation.iss = None;
        validation.validate_aud = false;

        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &self.key, &validation)
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
        claims_from(data.claims)
    }

    /// Verifies the token in an `Authorization` header value (`Bearer <token>`); `None` or a
    /// header without a bearer token is [`AuthError::Missing`].
    pub fn verify_authorization(&self, header: Option<&str>) -> Result<Claims, AuthError> {
        let token = header.and_then(bearer_token).ok_or(AuthError::Missing)?;
        self.verify(token)
    }
}

fn pem_label(text: &str) -> Option<&str> {
    let start = text.find("-----BEGIN ")? + "-----BEGIN ".len();
    let rest = &text[start..];
    let end = rest.find("-----")?;
    Some(rest[..end].trim())
}

fn header_alg(token: &str) -> Result<String, AuthError> {
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
    match header.get("alg") {
        Some(Value::String(alg)) => Ok(alg.clone()),
        _ => Err(AuthError::Malformed),
    }
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

fn claims_from(map: Map<String, Value>) -> Result<Claims, AuthError> {
    let sub = match map.get("sub") {
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
