//! Verification keys from an identity provider's JSON Web Key Set (`JWT_JWKS_URL`).
//!
//! Firebase, Auth0, Cognito, Supabase, Keycloak and Clerk sign access tokens with keys they
//! rotate and publish as a JWKS. `Jwks` keeps the last good set and finds a token's key by its
//! `kid`:
//!
//! - **Algorithms come from the key, never from the token.** RSA keys verify RS256, EC P-256 keys
//!   ES256, Ed25519 keys EdDSA. A key whose own `alg` says otherwise, a key for encryption
//!   (`use: enc`), a symmetric (`oct`) key or any other curve is skipped: an HMAC key in a public
//!   document would let anyone sign, and the token's `alg` must match the key's (checked by the
//!   caller).
//! - **Refreshed in the background** when the set's `Cache-Control: max-age` runs out (ten
//!   minutes without one, never more often than `JWT_JWKS_MIN_REFRESH_SECONDS`), and **on an
//!   unknown `kid`** — a key published since the last fetch — at most once per
//!   `JWT_JWKS_MIN_REFRESH_SECONDS` whatever the number of tokens asking: garbage `kid`s cannot
//!   make the service hammer the provider. Concurrent requests share one fetch.
//! - **The last good set stays in use while the provider is unreachable** (or answers garbage, or
//!   an empty set): tokens signed with known keys keep working. The fetch metrics and
//!   `jwt_jwks_last_success_timestamp_seconds` let an alert say how long it has been.
//!
//! The fetch is plain HTTPS (reqwest with rustls and the Mozilla roots, so a distroless image
//! needs no CA bundle), bounded in time and size.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use serde_json::Value;

use super::AuthError;

/// How long a key set is used before a background refresh when the provider sends no
/// `Cache-Control: max-age`.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);
/// The longest a `max-age` is honoured: a provider that says "a year" still gets asked daily.
pub const MAX_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Largest JWKS document read (real ones are a few KiB).
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most keys kept from one document.
pub const MAX_KEYS: usize = 64;
/// Time one fetch may take, connection included.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// Counters of fetch outcomes (`outcome` = `ok` | `error`).
pub const FETCHES_METRIC: &str = "jwt_jwks_fetches_total";
/// Keys in the set in use.
pub const KEYS_METRIC: &str = "jwt_jwks_keys";
/// Unix time of the last successful fetch (0 until one succeeds).
pub const LAST_SUCCESS_METRIC: &str = "jwt_jwks_last_success_timestamp_seconds";
/// Tokens whose `kid` was not in the set (`outcome` = `refreshed` when that triggered a fetch,
/// `limited` when the refresh limit held it back).
pub const UNKNOWN_KID_METRIC: &str = "jwt_jwks_unknown_kid_total";

/// One usable verification key and the only algorithm it verifies.
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub(crate) key: DecodingKey,
    pub(crate) algorithm: Algorithm,
}

impl std::fmt::Debug for VerifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyKey")
            .field("algorithm", &self.algorithm)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct KeySet {
    by_kid: HashMap<String, Arc<VerifyKey>>,
    /// The one key of a set whose keys carry no `kid`; tokens without a `kid` use it.
    only: Option<Arc<VerifyKey>>,
    /// Whether a fetch ever succeeded.
    loaded: bool,
}

impl KeySet {
    fn find(&self, kid: Option<&str>) -> Option<Arc<VerifyKey>> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None => self.only.clone().or_else(|| {
                // A token without a `kid` is unambiguous only when the set has one key.
                (self.by_kid.len() == 1)
                    .then(|| self.by_kid.values().next().cloned())
                    .flatten()
            }),
        }
    }
}

/// Why a fetch failed: logged and counted, never shown to clients.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the provider answered HTTP {0}")]
    Status(u16),
    #[error("the document is larger than {MAX_DOCUMENT_BYTES} bytes")]
    TooLarge,
    #[error("the document is not a JWKS: {0}")]
    NotJwks(serde_json::Error),
    #[error("the document has no usable signing key (RS256, ES256 or EdDSA)")]
    NoUsableKey,
}

/// The key set of one `JWT_JWKS_URL`, shared by every clone of a verifier.
#[derive(Clone)]
pub(crate) struct Jwks {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.inner.url.as_str())
            .field("min_refresh", &self.inner.min_refresh)
            .finish_non_exhaustive()
    }
}

struct Inner {
    url: reqwest::Url,
    client: reqwest::Client,
    min_refresh: Duration,
    keys: RwLock<Arc<KeySet>>,
    /// One fetch at a time; waiters then look at its result instead of fetching again.
    fetching: tokio::sync::Mutex<()>,
    /// Bumped after every fetch attempt, so a waiter can tell one happened while it waited.
    attempts: AtomicU64,
    last_attempt: Mutex<Option<Instant>>,
    /// When the background loop should fetch next (set from `max-age` or the retry delay).
    next_refresh: Mutex<Duration>,
    background: AtomicBool,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Jwks {
    /// A key set fetched from `url`. Nothing is fetched yet unless a Tokio runtime is running, in
    /// which case the background refresher starts at once (so the first token does not wait,
    /// and an unreachable provider shows in the metrics from start-up).
    ///
    /// Verifiers for the same URL and limit in one process (the standalone binary runs every
    /// service in one) share one set, one refresher and one fetch budget.
    pub(crate) fn shared(url: reqwest::Url, min_refresh: Duration) -> Result<Self, String> {
        static SHARED: Mutex<Vec<(String, Duration, Weak<Inner>)>> = Mutex::new(Vec::new());
        let mut shared = SHARED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        shared.retain(|(_, _, weak)| weak.strong_count() > 0);
        if let Some(inner) = shared
            .iter()
            .find(|(u, m, _)| u == url.as_str() && *m == min_refresh)
            .and_then(|(_, _, weak)| weak.upgrade())
        {
            let jwks = Self { inner };
            jwks.start_background();
            return Ok(jwks);
        }
        let jwks = Self::new(url.clone(), min_refresh)?;
        shared.push((url.to_string(), min_refresh, Arc::downgrade(&jwks.inner)));
        Ok(jwks)
    }

    fn new(url: reqwest::Url, min_refresh: Duration) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .connect_timeout(FETCH_TIMEOUT)
            .redirect(redirect_policy())
            .user_agent(concat!("calls-backend/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        metrics::gauge!(LAST_SUCCESS_METRIC).set(0.0);
        // A zero limit would turn a failing provider into a busy loop.
        let min_refresh = min_refresh.max(Duration::from_millis(100));
        let jwks = Self {
            inner: Arc::new(Inner {
                url,
                client,
                min_refresh,
                keys: RwLock::new(Arc::new(KeySet::default())),
                fetching: tokio::sync::Mutex::new(()),
                attempts: AtomicU64::new(0),
                last_attempt: Mutex::new(None),
                next_refresh: Mutex::new(Duration::ZERO),
                background: AtomicBool::new(false),
            }),
        };
        jwks.start_background();
        Ok(jwks)
    }

    fn current(&self) -> Arc<KeySet> {
        self.inner
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The key for a token's `kid`: from the set in use, or after one refresh if the `kid` is
    /// unknown and the refresh limit allows. `UnknownKey` when it is still not there;
    /// `KeysUnavailable` when no set was ever fetched (the provider has been unreachable since
    /// start-up), which is not the token's fault.
    pub(crate) async fn key_for(&self, kid: Option<&str>) -> Result<Arc<VerifyKey>, AuthError> {
        self.start_background();
        let seen = self.inner.attempts.load(Ordering::SeqCst);
        let set = self.current();
        if let Some(key) = set.find(kid) {
            return Ok(key);
        }
        if kid.is_some() || !set.loaded {
            let refreshed = self.refresh_for_unknown(seen).await;
            metrics::counter!(UNKNOWN_KID_METRIC, "outcome" => if refreshed { "refreshed" } else { "limited" })
                .increment(1);
        }
        let set = self.current();
        match set.find(kid) {
            Some(key) => Ok(key),
            None if !set.loaded => Err(AuthError::KeysUnavailable),
            None => Err(AuthError::UnknownKey),
        }
    }

    /// Fetches once for a `kid` that was not found, unless another fetch finished since the
    /// caller looked (`seen`) or the last attempt is more recent than the refresh limit. Returns
    /// whether this call fetched.
    async fn refresh_for_unknown(&self, seen: u64) -> bool {
        let _one_at_a_time = self.inner.fetching.lock().await;
        if self.inner.attempts.load(Ordering::SeqCst) != seen {
            return false;
        }
        let recent = self
            .inner
            .last_attempt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < self.inner.min_refresh);
        if recent {
            return false;
        }
        self.fetch_locked().await;
        true
    }

    /// One fetch; the caller holds `fetching`. Success replaces the set; failure keeps it.
    async fn fetch_locked(&self) {
        *self
            .inner
            .last_attempt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        let next = match fetch(&self.inner.client, &self.inner.url).await {
            Ok((set, max_age)) => {
                metrics::counter!(FETCHES_METRIC, "outcome" => "ok").increment(1);
                let count = set.by_kid.len() + usize::from(set.only.is_some());
                metrics::gauge!(KEYS_METRIC).set(count as f64);
                metrics::gauge!(LAST_SUCCESS_METRIC).set(unix_now());
                tracing::debug!(url = %self.inner.url, keys = set.by_kid.len(), ?max_age, "JWKS fetched");
                *self
                    .inner
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(set);
                max_age.clamp(
                    self.inner.min_refresh,
                    MAX_MAX_AGE.max(self.inner.min_refresh),
                )
            }
            Err(err) => {
                metrics::counter!(FETCHES_METRIC, "outcome" => "error").increment(1);
                let kept = self.current().loaded;
                tracing::warn!(url = %self.inner.url, error = %err, keeping_last_good_keys = kept, "JWKS fetch failed");
                self.inner.min_refresh
            }
        };
        *self
            .inner
            .next_refresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        self.inner.attempts.fetch_add(1, Ordering::SeqCst);
    }

    /// Starts the background refresher once, if a Tokio runtime is running. It holds only a weak
    /// reference and stops when the last verifier sharing this set is dropped.
    fn start_background(&self) {
        if self.inner.background.load(Ordering::Relaxed) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.background.swap(true, Ordering::SeqCst) {
            return;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            loop {
                let Some(inner) = weak.upgrade() else { break };
                let jwks = Jwks { inner };
                // Any fetch, this loop's or one caused by an unknown `kid`, restarts the wait.
                let wait = jwks.until_due();
                if wait.is_zero() {
                    let _one_at_a_time = jwks.inner.fetching.lock().await;
                    if jwks.until_due().is_zero() {
                        jwks.fetch_locked().await;
                    }
                    continue;
                }
                drop(jwks);
                tokio::time::sleep(wait).await;
            }
        });
    }

    /// How long until the background refresh is due (zero before the first fetch).
    fn until_due(&self) -> Duration {
        let last = *self
            .inner
            .last_attempt
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let next = *self
            .inner
            .next_refresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        last.map_or(Duration::ZERO, |at| next.saturating_sub(at.elapsed()))
    }
}

/// A few redirects are followed, never from HTTPS to plain HTTP: that would let anyone on the
/// path publish keys.
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt.url().scheme() != "https"
            && attempt.previous().iter().any(|u| u.scheme() == "https");
        if downgrade {
            attempt.error("refusing a redirect from https to http")
        } else if attempt.previous().len() > 3 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<Value>,
}

async fn fetch(
    client: &reqwest::Client,
    url: &reqwest::Url,
) -> Result<(KeySet, Duration), FetchError> {
    let mut response = client
        .get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let max_age = response
        .headers()
        .get_all(http::header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(max_age)
        .unwrap_or(DEFAULT_MAX_AGE);
    if response
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    let document: Document = serde_json::from_slice(&body).map_err(FetchError::NotJwks)?;
    let set = key_set(document.keys);
    if set.by_kid.is_empty() && set.only.is_none() {
        return Err(FetchError::NoUsableKey);
    }
    Ok((set, max_age))
}

/// `max-age` of one `Cache-Control` value (`public, max-age=19008, must-revalidate`).
/// `no-cache` / `no-store` count as zero: refresh as often as the limit allows.
pub(crate) fn max_age(value: &str) -> Option<Duration> {
    let mut found = None;
    for directive in value.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            found = secs
                .trim_matches('"')
                .parse::<u64>()
                .ok()
                .map(Duration::from_secs);
        }
    }
    found
}

/// The usable signing keys of a document's `keys`; anything else is skipped (and logged), so one
/// odd key does not take the others down with it.
fn key_set(keys: Vec<Value>) -> KeySet {
    let mut set = KeySet {
        loaded: true,
        ..KeySet::default()
    };
    let mut without_kid = Vec::new();
    for value in keys.into_iter().take(MAX_KEYS) {
        let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
            tracing::debug!("skipping a JWKS entry that is not a JWK");
            continue;
        };
        let kid = jwk.common.key_id.clone();
        match usable_key(&jwk) {
            Ok(key) => match kid {
                Some(kid) => {
                    set.by_kid.insert(kid, Arc::new(key));
                }
                None => without_kid.push(Arc::new(key)),
            },
            Err(reason) => tracing::debug!(
                kid = kid.as_deref().unwrap_or(""),
                reason,
                "skipping a JWKS key"
            ),
        }
    }
    if set.by_kid.is_empty() && without_kid.len() == 1 {
        set.only = without_kid.pop();
    }
    set
}

/// A JWK as a verification key with its one algorithm, or why it is not usable.
pub(crate) fn usable_key(jwk: &Jwk) -> Result<VerifyKey, &'static str> {
    if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
        return Err("an encryption key");
    }
    let (algorithm, key) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            // Every provider signs with 2048 bits or more; anything shorter is weak or broken.
            let n = super::URL_SAFE_NO_PAD
                .decode(&rsa.n)
                .map_err(|_| "bad RSA n")?;
            let e = super::URL_SAFE_NO_PAD
                .decode(&rsa.e)
                .map_err(|_| "bad RSA e")?;
            let bits = n.iter().skip_while(|b| **b == 0).count() * 8;
            if bits < 2048 || e.is_empty() || e.len() > 8 {
                return Err("an RSA key shorter than 2048 bits or with a bad exponent");
            }
            (
                Algorithm::RS256,
                DecodingKey::from_rsa_components(&rsa.n, &rsa.e)
                    .map_err(|_| "bad RSA parameters")?,
            )
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            if ec.curve != EllipticCurve::P256 {
                return Err("an EC key not on P-256");
            }
            // Both coordinates of a P-256 point are 32 bytes; anything else is not a P-256 key,
            // whatever its `crv` says.
            let x = super::URL_SAFE_NO_PAD
                .decode(&ec.x)
                .map_err(|_| "bad EC x")?;
            let y = super::URL_SAFE_NO_PAD
                .decode(&ec.y)
                .map_err(|_| "bad EC y")?;
            if x.len() != 32 || y.len() != 32 {
                return Err("EC coordinates are not 32 bytes");
            }
            (
                Algorithm::ES256,
                DecodingKey::from_ec_components(&ec.x, &ec.y).map_err(|_| "bad EC parameters")?,
            )
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            if okp.curve != EllipticCurve::Ed25519 {
                return Err("an OKP key that is not Ed25519");
            }
            // Checked here because the Ed25519 verifier slices the key without a length check.
            let x = super::URL_SAFE_NO_PAD
                .decode(&okp.x)
                .map_err(|_| "bad Ed25519 x")?;
            if x.len() != 32 {
                return Err("an Ed25519 key that is not 32 bytes");
            }
            (
                Algorithm::EdDSA,
                DecodingKey::from_ed_components(&okp.x).map_err(|_| "bad Ed25519 parameters")?,
            )
        }
        AlgorithmParameters::OctetKey(_) => return Err("a symmetric key"),
        _ => return Err("an unsupported key type"),
    };
    let declared = jwk.common.key_algorithm;
    let matches = match declared {
        None => true,
        Some(KeyAlgorithm::RS256) => algorithm == Algorithm::RS256,
        Some(KeyAlgorithm::ES256) => algorithm == Algorithm::ES256,
        Some(KeyAlgorithm::EdDSA) => algorithm == Algorithm::EdDSA,
        Some(_) => false,
    };
    if !matches {
        return Err("its alg is not RS256, ES256 or EdDSA for its key type");
    }
    // A key that decodes but cannot build a verifier (an RSA modulus of zero length, say) is
    // dropped now rather than failing every token signed with it.
    if jsonwebtoken::crypto::verify("AA", b"probe", &key, algorithm).is_err() {
        return Err("unusable key material");
    }
    Ok(VerifyKey { key, algorithm })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_is_read_from_cache_control() {
        assert_eq!(
            max_age("public, max-age=19008, must-revalidate, no-transform"),
            Some(Duration::from_secs(19008))
        );
        assert_eq!(max_age("Max-Age=60"), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }
}
