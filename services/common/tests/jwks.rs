//! `JWT_JWKS_URL`: a JWKS provider on a local port, serving RS256, ES256 and EdDSA keys the way
//! Firebase, Auth0 and Cognito do (`{"keys": [...]}`, `Cache-Control: max-age`), and able to
//! rotate keys, fail, or vanish mid-test. Every fetch is counted, so the refresh limit is checked
//! by what the provider actually saw.

#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::auth::{AuthError, JwtConfig, JwtVerifier};
use common::config::ConfigError;
use common::error::{ApiError, ErrorCode};
use http::StatusCode;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const RSA_PRIVATE: &str = include_str!("keys/rsa_private.pem");
const RSA2_PRIVATE: &str = include_str!("keys/rsa2_private.pem");
const EC_PRIVATE: &str = include_str!("keys/ec_p256_private.pem");
const ED_PRIVATE: &str = include_str!("keys/ed25519_private.pem");

const ISSUER: &str = "https://securetoken.google.com/calls-test";
const AUDIENCE: &str = "calls-test";

/// How long a test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(10);

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap()
}
fn rsa2() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA2_PRIVATE.as_bytes()).unwrap()
}
fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap()
}
fn ed() -> EncodingKey {
    EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap()
}

/// The public JWK of a private key, as a provider publishes it.
fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Value {
    let mut value = serde_json::to_value(Jwk::from_encoding_key(key, alg).unwrap()).unwrap();
    value["kid"] = json!(kid);
    value["use"] = json!("sig");
    value
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "iat": now(), "exp": now() + 600})
}

fn token(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

/// A token whose header and signature are written by hand (`alg: none`, odd `kid`s).
fn raw_token(header: &Value, claims: &Value, signature: &str) -> String {
    let enc = |v: &Value| URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap());
    format!("{}.{}.{signature}", enc(header), enc(claims))
}

struct Published {
    keys: Vec<Value>,
    status: StatusCode,
    cache_control: String,
}

/// The identity provider's JWKS endpoint.
struct Provider {
    url: String,
    published: Arc<Mutex<Published>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone)]
struct ProviderState {
    published: Arc<Mutex<Published>>,
    fetches: Arc<AtomicUsize>,
}

async fn serve_jwks(State(state): State<ProviderState>) -> Response {
    state.fetches.fetch_add(1, Ordering::SeqCst);
    let published = state.published.lock().unwrap();
    if published.status != StatusCode::OK {
        return (published.status, "provider trouble").into_response();
    }
    (
        [
            (http::header::CONTENT_TYPE, "application/json".to_owned()),
            (http::header::CACHE_CONTROL, published.cache_control.clone()),
        ],
        json!({"keys": published.keys}).to_string(),
    )
        .into_response()
}

impl Provider {
    async fn start(keys: Vec<Value>, max_age_secs: u64) -> Self {
        let published = Arc::new(Mutex::new(Published {
            keys,
            status: StatusCode::OK,
            cache_control: format!("public, max-age={max_age_secs}, must-revalidate"),
        }));
        let fetches = Arc::new(AtomicUsize::new(0));
        let state = ProviderState {
            published: published.clone(),
            fetches: fetches.clone(),
        };
        let app = axum::Router::new()
            .route("/.well-known/jwks.json", axum::routing::get(serve_jwks))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url,
            published,
            fetches,
            task,
        }
    }

    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }

    fn publish(&self, keys: Vec<Value>) {
        self.published.lock().unwrap().keys = keys;
    }

    fn fail_with(&self, status: StatusCode) {
        self.published.lock().unwrap().status = status;
    }

    /// Waits until the provider has served `n` fetches.
    async fn wait_for_fetches(&self, n: usize) {
        let until = Instant::now() + PATIENCE;
        while self.fetches() < n {
            assert!(
                Instant::now() < until,
                "the provider saw {} fetches, expected {n}",
                self.fetches()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn verifier(provider: &Provider, min_refresh: Duration) -> JwtVerifier {
    JwtVerifier::jwks(&provider.url, min_refresh)
        .unwrap()
        .with_issuer(ISSUER)
        .with_audience(AUDIENCE)
}

/// Verifies `token` until it passes (the verifier may first have to wait out its refresh
/// limit), failing after [`PATIENCE`].
async fn eventually_accepted(verifier: &JwtVerifier, token: &str) -> String {
    let until = Instant::now() + PATIENCE;
    loop {
        match verifier.verify(token).await {
            Ok(claims) => return claims.sub.as_str().to_owned(),
            Err(err) => assert!(Instant::now() < until, "still refused: {err:?}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn standard_keys() -> Vec<Value> {
    vec![
        jwk(&rsa(), Algorithm::RS256, "rsa-1"),
        jwk(&ec(), Algorithm::ES256, "ec-1"),
        jwk(&ed(), Algorithm::EdDSA, "ed-1"),
    ]
}

// ----- keys by kid ----------------------------------------------------------------------------

#[tokio::test]
async fn rs256_es256_and_eddsa_tokens_are_verified_with_the_key_their_kid_names() {
    let provider = Provider::start(standard_keys(), 3600).await;
    let verifier = verifier(&provider, Duration::from_secs(60));
    for (alg, kid, key, user) in [
        (Algorithm::RS256, "rsa-1", rsa(), "alice"),
        (Algorithm::ES256, "ec-1", ec(), "bob"),
        (Algorithm::EdDSA, "ed-1", ed(), "carol"),
    ] {
        let claims = verifier
            .verify(&token(alg, Some(kid), &key, &claims(user)))
            .await
            .unwrap_or_else(|e| panic!("{kid}: {e:?}"));
        assert_eq!(claims.sub.as_str(), user);
        assert_eq!(claims.iss.as_deref(), Some(ISSUER));
    }
    // One fetch served them all: known kids never cause another.
    assert_eq!(provider.fetches(), 1);
    // A token signed by another key than the one its kid names fails its signature.
    let forged = token(Algorithm::RS256, Some("rsa-1"), &rsa2(), &claims("mallory"));
    assert_eq!(verifier.verify(&forged).await, Err(AuthError::BadSignature));
}

#[tokio::test]
async fn the_user_id_can_come_from_another_claim() {
    let provider = Provider::start(standard_keys(), 3600).await;
    let verifier = verifier(&provider, Duration::from_secs(60)).with_user_claim("user_id");
    let mut c = claims("provider-sub");
    c["user_id"] = json!("chat-user-7");
    let claims = verifier
        .verify(&token(Algorithm::RS256, Some("rsa-1"), &rsa(), &c))
        .await
        .unwrap();
    assert_eq!(claims.sub.as_str(), "chat-user-7");
    // Without that claim there is no user.
    assert_eq!(
        verifier
            .verify(&token(
                Algorithm::RS256,
                Some("rsa-1"),
                &rsa(),
                &claims_without_user()
            ))
            .await,
        Err(AuthError::MissingSubject)
    );
}

fn claims_without_user() -> Value {
    claims("someone")
}

// ----- rotation and refresh -------------------------------------------------------------------

#[tokio::test]
async fn a_key_rotation_is_picked_up_without_a_restart() {
    let provider = Provider::start(vec![jwk(&rsa(), Algorithm::RS256, "2024-01")], 3600).await;
    let verifier = verifier(&provider, Duration::from_millis(300));
    let old = token(Algorithm::RS256, Some("2024-01"), &rsa(), &claims("alice"));
    assert_eq!(verifier.verify(&old).await.unwrap().sub.as_str(), "alice");

    // The provider publishes a new key and retires the old one; tokens signed with the new key
    // arrive long before the cached set's max-age runs out.
    provider.publish(vec![jwk(&rsa2(), Algorithm::RS256, "2024-02")]);
    let new = token(Algorithm::RS256, Some("2024-02"), &rsa2(), &claims("bob"));
    assert_eq!(eventually_accepted(&verifier, &new).await, "bob");
    // The refresh replaced the set: the retired key verifies nothing any more.
    assert_eq!(verifier.verify(&old).await, Err(AuthError::UnknownKey));
    assert!(
        provider.fetches() <= 3,
        "rotation took {} fetches",
        provider.fetches()
    );
}

#[tokio::test]
async fn the_set_is_refreshed_in_the_background_when_its_max_age_runs_out() {
    let provider = Provider::start(vec![jwk(&rsa(), Algorithm::RS256, "old")], 1).await;
    let verifier = verifier(&provider, Duration::from_secs(1));
    let old = token(Algorithm::RS256, Some("old"), &rsa(), &claims("alice"));
    assert!(verifier.verify(&old).await.is_ok());
    // The old key is withdrawn: no token asks for anything new, yet the next background refresh
    // (max-age 1 s) drops it.
    provider.publish(vec![jwk(&rsa2(), Algorithm::RS256, "new")]);
    provider.wait_for_fetches(2).await;
    let until = Instant::now() + PATIENCE;
    while verifier.verify(&old).await.is_ok() {
        assert!(Instant::now() < until, "the withdrawn key is still trusted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let new = token(Algorithm::RS256, Some("new"), &rsa2(), &claims("bob"));
    assert!(verifier.verify(&new).await.is_ok());
}

#[tokio::test]
async fn an_unknown_kid_refreshes_once_and_garbage_kids_never_exceed_the_refresh_limit() {
    const LIMIT: Duration = Duration::from_secs(2);
    let provider = Provider::start(standard_keys(), 3600).await;
    let verifier = Arc::new(verifier(&provider, LIMIT));
    let good = token(Algorithm::RS256, Some("rsa-1"), &rsa(), &claims("alice"));
    assert!(verifier.verify(&good).await.is_ok());
    assert_eq!(provider.fetches(), 1, "the start-up fetch");
    // Four hundred forged tokens with random kids (an unknown kid is refused before any
    // signature check, so the signature need not even be real).
    let garbage: Vec<String> = (0..400)
        .map(|i| {
            raw_token(
                &json!({"alg": "RS256", "kid": format!("garbage-{i}")}),
                &claims("mallory"),
                "AAAA",
            )
        })
        .collect();
    // Once the start-up fetch is older than the limit, an unknown kid may refresh.
    tokio::time::sleep(LIMIT + Duration::from_millis(100)).await;

    let started = Instant::now();
    for batch in garbage.chunks(50) {
        let mut attempts = tokio::task::JoinSet::new();
        for t in batch {
            let (verifier, t) = (verifier.clone(), t.clone());
            attempts.spawn(async move { verifier.verify(&t).await });
        }
        while let Some(result) = attempts.join_next().await {
            assert_eq!(result.unwrap(), Err(AuthError::UnknownKey));
        }
    }
    assert!(
        started.elapsed() < LIMIT,
        "the machine is too slow for this test's window"
    );
    // One refresh for all of them.
    assert_eq!(provider.fetches(), 2, "garbage kids hammered the provider");
    // Real tokens were never held up.
    assert!(verifier.verify(&good).await.is_ok());
    assert_eq!(provider.fetches(), 2);
}

// ----- provider trouble -----------------------------------------------------------------------

#[tokio::test]
async fn the_last_good_keys_keep_working_while_the_provider_is_down() {
    let provider = Provider::start(standard_keys(), 1).await;
    let verifier = verifier(&provider, Duration::from_millis(200));
    let good = token(Algorithm::ES256, Some("ec-1"), &ec(), &claims("alice"));
    assert!(verifier.verify(&good).await.is_ok());

    provider.fail_with(StatusCode::SERVICE_UNAVAILABLE);
    // Background refreshes (max-age 1 s) and an unknown kid both hit the failing provider...
    let unknown = token(Algorithm::RS256, Some("new"), &rsa2(), &claims("bob"));
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(verifier.verify(&unknown).await, Err(AuthError::UnknownKey));
    provider.wait_for_fetches(3).await;
    // ...and the cached keys stay in use: the token is still accepted, not a 503.
    assert!(verifier.verify(&good).await.is_ok());

    // The provider answering garbage or an empty set is no better than it being down.
    provider.fail_with(StatusCode::OK);
    provider.publish(vec![]);
    let fetched = provider.fetches();
    provider.wait_for_fetches(fetched + 1).await;
    assert!(verifier.verify(&good).await.is_ok());
}

#[tokio::test]
async fn a_provider_unreachable_since_start_up_makes_tokens_uncheckable_not_invalid() {
    // A port nobody listens on.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", closed.local_addr().unwrap());
    drop(closed);
    let verifier = JwtVerifier::jwks(&url, Duration::from_secs(60))
        .unwrap()
        .with_issuer(ISSUER);
    let token = token(Algorithm::RS256, Some("rsa-1"), &rsa(), &claims("alice"));
    let err = verifier.verify(&token).await.unwrap_err();
    assert_eq!(err, AuthError::KeysUnavailable);
    // The app is told to retry (503 DEPENDENCY_UNAVAILABLE), not to sign the user out (401).
    let api = ApiError::from(err);
    assert_eq!(api.code, ErrorCode::DependencyUnavailable);
    assert_eq!(api.status(), StatusCode::SERVICE_UNAVAILABLE);
}

// ----- what is refused ------------------------------------------------------------------------

#[tokio::test]
async fn a_wrong_issuer_or_audience_is_refused_whatever_the_key() {
    let provider = Provider::start(standard_keys(), 3600).await;
    let verifier = verifier(&provider, Duration::from_secs(60));
    let mut other_project = claims("alice");
    other_project["iss"] = json!("https://securetoken.google.com/someone-elses-project");
    assert_eq!(
        verifier
            .verify(&token(
                Algorithm::RS256,
                Some("rsa-1"),
                &rsa(),
                &other_project
            ))
            .await,
        Err(AuthError::WrongIssuer)
    );
    let mut other_audience = claims("alice");
    other_audience["aud"] = json!("another-api");
    assert_eq!(
        verifier
            .verify(&token(
                Algorithm::ES256,
                Some("ec-1"),
                &ec(),
                &other_audience
            ))
            .await,
        Err(AuthError::WrongAudience)
    );
}

#[tokio::test]
async fn an_alg_that_does_not_match_the_key_none_and_hmac_are_refused_without_fetching() {
    let provider = Provider::start(standard_keys(), 3600).await;
    let verifier = verifier(&provider, Duration::from_millis(1));
    provider.wait_for_fetches(1).await;
    let c = claims("mallory");

    // The EC key's kid on an RS256 token (signed by an RSA key): the key fixes the algorithm.
    assert_eq!(
        verifier
            .verify(&token(Algorithm::RS256, Some("ec-1"), &rsa(), &c))
            .await,
        Err(AuthError::WrongAlgorithm)
    );
    // `none`, with and without a signature.
    for signature in ["", "AAAA"] {
        let none = raw_token(&json!({"alg": "none", "kid": "rsa-1"}), &c, signature);
        assert_eq!(verifier.verify(&none).await, Err(AuthError::WrongAlgorithm));
    }
    // HS256 keyed with the RSA key's public JWK (the classic confusion), and RS512.
    let public_jwk = serde_json::to_vec(&jwk(&rsa(), Algorithm::RS256, "rsa-1")).unwrap();
    let confused = token(
        Algorithm::HS256,
        Some("rsa-1"),
        &EncodingKey::from_secret(&public_jwk),
        &c,
    );
    assert_eq!(
        verifier.verify(&confused).await,
        Err(AuthError::WrongAlgorithm)
    );
    let rs512 = token(Algorithm::RS512, Some("rsa-1"), &rsa(), &c);
    assert_eq!(
        verifier.verify(&rs512).await,
        Err(AuthError::WrongAlgorithm)
    );
    // None of these made the verifier fetch keys for them.
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(provider.fetches(), 1);
}

#[tokio::test]
async fn keys_a_jwks_may_hold_but_the_contract_does_not_allow_are_never_used() {
    let secret = b"a-shared-secret-published-by-mistake";
    let mut rs512 = jwk(&rsa2(), Algorithm::RS256, "rs512");
    rs512["alg"] = json!("RS512");
    let mut encryption = jwk(&rsa2(), Algorithm::RS256, "enc");
    encryption["use"] = json!("enc");
    let p384 = json!({"kty": "EC", "crv": "P-384", "kid": "p384",
        "x": URL_SAFE_NO_PAD.encode([7u8; 48]), "y": URL_SAFE_NO_PAD.encode([9u8; 48])});
    let short_ed = json!({"kty": "OKP", "crv": "Ed25519", "kid": "short-ed", "x": URL_SAFE_NO_PAD.encode([1u8; 16])});
    let keys = vec![
        json!({"kty": "oct", "kid": "hmac", "k": URL_SAFE_NO_PAD.encode(secret)}),
        rs512,
        encryption,
        p384,
        short_ed,
        json!({"kty": "RSA", "kid": "broken", "n": "", "e": "AQAB"}),
        json!("not even an object"),
        jwk(&rsa(), Algorithm::RS256, "rsa-1"),
    ];
    let provider = Provider::start(keys, 3600).await;
    let verifier = verifier(&provider, Duration::from_secs(60));
    let c = claims("mallory");
    assert!(
        verifier
            .verify(&token(Algorithm::RS256, Some("rsa-1"), &rsa(), &c))
            .await
            .is_ok(),
        "one odd key must not take the good ones down"
    );
    let hmac = token(
        Algorithm::HS256,
        Some("hmac"),
        &EncodingKey::from_secret(secret),
        &c,
    );
    assert_eq!(verifier.verify(&hmac).await, Err(AuthError::WrongAlgorithm));
    for kid in ["rs512", "enc", "broken"] {
        let t = token(Algorithm::RS256, Some(kid), &rsa2(), &c);
        assert_eq!(
            verifier.verify(&t).await,
            Err(AuthError::UnknownKey),
            "{kid}"
        );
    }
    let ed_token = raw_token(&json!({"alg": "EdDSA", "kid": "short-ed"}), &c, "AAAA");
    assert_eq!(verifier.verify(&ed_token).await, Err(AuthError::UnknownKey));
    let es_token = raw_token(&json!({"alg": "ES256", "kid": "p384"}), &c, "AAAA");
    assert_eq!(verifier.verify(&es_token).await, Err(AuthError::UnknownKey));
}

// ----- configuration --------------------------------------------------------------------------

fn jwks_config(url: &str) -> JwtConfig {
    JwtConfig {
        jwt_jwks_url: Some(url.to_owned()),
        jwt_issuer: Some(ISSUER.to_owned()),
        ..JwtConfig::default()
    }
}

#[tokio::test]
async fn configuration_builds_a_jwks_verifier_with_the_user_claim() {
    let provider = Provider::start(standard_keys(), 3600).await;
    let config = JwtConfig {
        jwt_user_claim: "uid".into(),
        jwt_jwks_min_refresh_seconds: 5,
        ..jwks_config(&provider.url)
    };
    let verifier = JwtVerifier::from_config(&config).unwrap();
    assert_eq!(verifier.algorithm(), None);
    let mut c = claims("ignored");
    c["uid"] = json!("u-42");
    c.as_object_mut().unwrap().remove("aud");
    let claims = verifier
        .verify(&token(Algorithm::ES256, Some("ec-1"), &ec(), &c))
        .await
        .unwrap();
    assert_eq!(claims.sub.as_str(), "u-42");
}

#[test]
fn a_jwks_url_needs_an_issuer_and_excludes_the_other_key_sources() {
    let url = "https://example.invalid/.well-known/jwks.json";
    let without_issuer = JwtConfig {
        jwt_issuer: None,
        ..jwks_config(url)
    };
    let message = JwtVerifier::from_config(&without_issuer)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("JWT_JWKS_URL") && message.contains("JWT_ISSUER"),
        "{message}"
    );

    let both = JwtConfig {
        jwt_secret: Some("s".parse().unwrap()),
        ..jwks_config(url)
    };
    let err = JwtVerifier::from_config(&both).unwrap_err();
    assert!(matches!(err, ConfigError::Conflict { .. }));
    let message = err.to_string();
    assert!(
        message.contains("JWT_SECRET") && message.contains("JWT_JWKS_URL"),
        "{message}"
    );

    for bad in [
        "not a url",
        "ftp://example.com/jwks",
        "https://user:pw@example.com/jwks",
    ] {
        let err = JwtVerifier::from_config(&jwks_config(bad)).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "JWT_JWKS_URL",
                    ..
                }
            ),
            "{bad}: {err}"
        );
    }

    let blank_claim = JwtConfig {
        jwt_user_claim: " ".into(),
        ..jwks_config(url)
    };
    assert!(matches!(
        JwtVerifier::from_config(&blank_claim).unwrap_err(),
        ConfigError::Invalid {
            var: "JWT_USER_CLAIM",
            ..
        }
    ));
    // Built outside a runtime: nothing is fetched until a runtime verifies a token.
    assert!(JwtVerifier::from_config(&jwks_config(url)).is_ok());
}

#[test]
fn the_jwks_variables_are_read_from_the_environment() {
    use clap::{CommandFactory, Parser};
    #[derive(Parser)]
    struct Cfg {
        #[command(flatten)]
        jwt: JwtConfig,
    }
    let envs: Vec<String> = Cfg::command()
        .get_arguments()
        .filter_map(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
        .collect();
    for var in [
        "JWT_JWKS_URL",
        "JWT_USER_CLAIM",
        "JWT_JWKS_MIN_REFRESH_SECONDS",
    ] {
        assert!(envs.iter().any(|e| e == var), "{var}");
    }
    let defaults = Cfg::try_parse_from(["x"]).unwrap().jwt;
    assert_eq!(defaults.jwt_user_claim, "sub");
    assert_eq!(defaults.jwt_jwks_min_refresh_seconds, 30);
    assert!(Cfg::try_parse_from(["x", "--jwt-jwks-min-refresh-seconds", "0"]).is_err());
}
