//! Access-token verification: one test per rejection, acceptance per algorithm, leeway, and
//! configuration. Keys under `tests/keys/` are test-only, generated with openssl.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::auth::{AuthError, JwtConfig, JwtVerifier, bearer_token, mint_hs256, mint_hs256_with};
use common::config::ConfigError;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-that-is-long-enough-for-hs256";

const RSA_PRIVATE: &str = include_str!("keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("keys/rsa_public.pem");
const EC_PRIVATE: &str = include_str!("keys/ec_p256_private.pem");
const EC_PUBLIC: &str = include_str!("keys/ec_p256_public.pem");
const EC_P384_PUBLIC: &str = include_str!("keys/ec_p384_public.pem");
const ED_PRIVATE: &str = include_str!("keys/ed25519_private.pem");
const ED_PUBLIC: &str = include_str!("keys/ed25519_public.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, key).unwrap()
}

fn hs(claims: &Value) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        claims,
    )
}

fn valid_claims() -> Value {
    json!({"sub": "user-1", "exp": now() + 600, "iat": now()})
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

fn rsa_verifier() -> JwtVerifier {
    JwtVerifier::from_public_key_pem(RSA_PUBLIC.as_bytes()).unwrap()
}

// ----- acceptance -----------------------------------------------------------------------------

#[tokio::test]
async fn hs256_token_is_accepted() {
    let claims = JwtVerifier::hs256(SECRET)
        .verify(&hs(&valid_claims()))
        .await
        .unwrap();
    assert_eq!(claims.sub.as_str(), "user-1");
    assert!(claims.exp > now());
}

#[tokio::test]
async fn rs256_token_is_accepted() {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let token = sign(Algorithm::RS256, &key, &valid_claims());
    let verifier = rsa_verifier();
    assert_eq!(verifier.algorithm(), Some(Algorithm::RS256));
    assert_eq!(
        verifier.verify(&token).await.unwrap().sub.as_str(),
        "user-1"
    );
}

#[tokio::test]
async fn es256_token_is_accepted() {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
    let token = sign(Algorithm::ES256, &key, &valid_claims());
    let verifier = JwtVerifier::from_public_key_pem(EC_PUBLIC.as_bytes()).unwrap();
    assert_eq!(verifier.algorithm(), Some(Algorithm::ES256));
    assert_eq!(
        verifier.verify(&token).await.unwrap().sub.as_str(),
        "user-1"
    );
}

#[tokio::test]
async fn eddsa_token_is_accepted() {
    let key = EncodingKey::from_ed_pem(ED_PRIVATE.as_bytes()).unwrap();
    let token = sign(Algorithm::EdDSA, &key, &valid_claims());
    let verifier = JwtVerifier::from_public_key_pem(ED_PUBLIC.as_bytes()).unwrap();
    assert_eq!(verifier.algorithm(), Some(Algorithm::EdDSA));
    assert_eq!(
        verifier.verify(&token).await.unwrap().sub.as_str(),
        "user-1"
    );
}

#[tokio::test]
async fn minted_token_is_accepted() {
    let token = mint_hs256(SECRET, "dev-user", Duration::from_secs(60));
    assert_eq!(
        JwtVerifier::hs256(SECRET)
            .verify(&token)
            .await
            .unwrap()
            .sub
            .as_str(),
        "dev-user"
    );
}

#[tokio::test]
async fn matching_issuer_and_audience_are_accepted() {
    let token = mint_hs256_with(
        SECRET,
        "u",
        Duration::from_secs(60),
        Some("auth.example"),
        Some("calls"),
    );
    let verifier = JwtVerifier::hs256(SECRET)
        .with_issuer("auth.example")
        .with_audience("calls");
    let claims = verifier.verify(&token).await.unwrap();
    assert_eq!(claims.iss.as_deref(), Some("auth.example"));
    assert_eq!(claims.aud, vec!["calls".to_owned()]);
}

#[tokio::test]
async fn audience_array_containing_the_configured_audience_is_accepted() {
    let token = hs(&json!({"sub": "u", "exp": now() + 60, "aud": ["other", "calls"]}));
    assert!(
        JwtVerifier::hs256(SECRET)
            .with_audience("calls")
            .verify(&token)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn issuer_and_audience_are_ignored_when_not_configured() {
    let token = hs(&json!({"sub": "u", "exp": now() + 60, "iss": "anyone", "aud": "anything"}));
    assert!(JwtVerifier::hs256(SECRET).verify(&token).await.is_ok());
}

// ----- leeway ---------------------------------------------------------------------------------

#[tokio::test]
async fn token_expired_ten_seconds_ago_is_accepted_within_leeway() {
    let token = hs(&json!({"sub": "u", "exp": now() - 10}));
    assert!(JwtVerifier::hs256(SECRET).verify(&token).await.is_ok());
}

#[tokio::test]
async fn token_expired_sixty_seconds_ago_is_rejected() {
    let token = hs(&json!({"sub": "u", "exp": now() - 60}));
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::Expired)
    );
}

#[tokio::test]
async fn token_valid_from_ten_seconds_ahead_is_accepted_within_leeway() {
    let token = hs(&json!({"sub": "u", "exp": now() + 600, "nbf": now() + 10}));
    assert!(JwtVerifier::hs256(SECRET).verify(&token).await.is_ok());
}

// ----- rejections -----------------------------------------------------------------------------

#[tokio::test]
async fn alg_none_token_is_rejected() {
    let token = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&valid_claims())
    );
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::WrongAlgorithm)
    );
    assert_eq!(
        rsa_verifier().verify(&token).await,
        Err(AuthError::WrongAlgorithm)
    );
}

#[tokio::test]
async fn hs256_token_signed_with_the_rsa_public_key_is_rejected_by_an_rs256_verifier() {
    // The classic confusion: the attacker knows the public key and uses its PEM bytes as an
    // HMAC secret, hoping the verifier takes the algorithm from the token.
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC.as_bytes()),
        &valid_claims(),
    );
    assert_eq!(
        rsa_verifier().verify(&token).await,
        Err(AuthError::WrongAlgorithm)
    );
}

#[tokio::test]
async fn rs256_token_is_rejected_by_an_hs256_verifier() {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap();
    let token = sign(Algorithm::RS256, &key, &valid_claims());
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::WrongAlgorithm)
    );
}

#[tokio::test]
async fn hs512_token_is_rejected_by_an_hs256_verifier() {
    let token = sign(
        Algorithm::HS512,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        &valid_claims(),
    );
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::WrongAlgorithm)
    );
}

#[tokio::test]
async fn expired_token_is_rejected() {
    let token = hs(&json!({"sub": "u", "exp": now() - 3600}));
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::Expired)
    );
}

#[tokio::test]
async fn token_without_expiry_is_rejected() {
    let token = hs(&json!({"sub": "u"}));
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::MissingExpiry)
    );
}

#[tokio::test]
async fn not_yet_valid_token_is_rejected() {
    let token = hs(&json!({"sub": "u", "exp": now() + 3600, "nbf": now() + 120}));
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::NotYetValid)
    );
}

#[tokio::test]
async fn wrong_issuer_is_rejected() {
    let verifier = JwtVerifier::hs256(SECRET).with_issuer("auth.example");
    let token = hs(&json!({"sub": "u", "exp": now() + 60, "iss": "evil.example"}));
    assert_eq!(verifier.verify(&token).await, Err(AuthError::WrongIssuer));
    for iss in [json!(null), json!(123), json!(["auth.example"])] {
        let token = hs(&json!({"sub": "u", "exp": now() + 60, "iss": iss}));
        assert_eq!(
            verifier.verify(&token).await,
            Err(AuthError::WrongIssuer),
            "{iss}"
        );
    }
    let token = hs(&json!({"sub": "u", "exp": now() + 60}));
    assert_eq!(verifier.verify(&token).await, Err(AuthError::WrongIssuer));
}

#[tokio::test]
async fn wrong_audience_is_rejected() {
    let verifier = JwtVerifier::hs256(SECRET).with_audience("calls");
    let token = hs(&json!({"sub": "u", "exp": now() + 60, "aud": "billing"}));
    assert_eq!(verifier.verify(&token).await, Err(AuthError::WrongAudience));
    for aud in [json!(null), json!(7), json!(["billing"]), json!([])] {
        let token = hs(&json!({"sub": "u", "exp": now() + 60, "aud": aud}));
        assert_eq!(
            verifier.verify(&token).await,
            Err(AuthError::WrongAudience),
            "{aud}"
        );
    }
    let token = hs(&json!({"sub": "u", "exp": now() + 60}));
    assert_eq!(verifier.verify(&token).await, Err(AuthError::WrongAudience));
}

#[tokio::test]
async fn bad_signature_is_rejected() {
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"some-other-secret-of-similar-length-xx"),
        &valid_claims(),
    );
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::BadSignature)
    );
}

#[tokio::test]
async fn tampered_payload_is_rejected() {
    let token = hs(&valid_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = b64(&json!({"sub": "admin", "exp": now() + 600}));
    let token = format!("{}.{}.{}", parts[0], forged, parts[2]);
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::BadSignature)
    );
}

#[tokio::test]
async fn rs256_token_signed_by_another_key_is_rejected() {
    // An EC-signed token relabelled RS256 has a signature of the wrong shape entirely.
    let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap();
    let es = sign(Algorithm::ES256, &key, &valid_claims());
    let parts: Vec<&str> = es.split('.').collect();
    let token = format!(
        "{}.{}.{}",
        b64(&json!({"alg": "RS256"})),
        parts[1],
        parts[2]
    );
    assert_eq!(
        rsa_verifier().verify(&token).await,
        Err(AuthError::BadSignature)
    );
}

#[tokio::test]
async fn malformed_token_is_rejected() {
    let verifier = JwtVerifier::hs256(SECRET);
    for token in [
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.???.***",
        "e30.e30.",
        "bm90IGpzb24.e30.x",
    ] {
        assert_eq!(
            verifier.verify(token).await,
            Err(AuthError::Malformed),
            "{token}"
        );
    }
    let header_without_alg = format!(
        "{}.{}.sig",
        b64(&json!({"typ": "JWT"})),
        b64(&valid_claims())
    );
    assert_eq!(
        verifier.verify(&header_without_alg).await,
        Err(AuthError::Malformed)
    );
    let oversized = format!("{}.{}.x", b64(&json!({"alg": "HS256"})), "A".repeat(20_000));
    assert_eq!(verifier.verify(&oversized).await, Err(AuthError::Malformed));
}

#[tokio::test]
async fn empty_token_is_missing() {
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify("").await,
        Err(AuthError::Missing)
    );
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify_authorization(None).await,
        Err(AuthError::Missing)
    );
    assert_eq!(
        JwtVerifier::hs256(SECRET)
            .verify_authorization(Some("Basic dXNlcjpwYXNz"))
            .await,
        Err(AuthError::Missing)
    );
}

#[tokio::test]
async fn token_without_subject_is_rejected() {
    let token = hs(&json!({"exp": now() + 60}));
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::MissingSubject)
    );
}

#[tokio::test]
async fn token_with_empty_subject_is_rejected() {
    let token = hs(&json!({"sub": "", "exp": now() + 60}));
    assert_eq!(
        JwtVerifier::hs256(SECRET).verify(&token).await,
        Err(AuthError::MissingSubject)
    );
}

#[tokio::test]
async fn token_with_unusable_subject_is_rejected() {
    let verifier = JwtVerifier::hs256(SECRET);
    let token = hs(&json!({"sub": "a\nb", "exp": now() + 60}));
    assert_eq!(
        verifier.verify(&token).await,
        Err(AuthError::InvalidSubject)
    );
    let token = hs(&json!({"sub": 42, "exp": now() + 60}));
    assert_eq!(
        verifier.verify(&token).await,
        Err(AuthError::InvalidSubject)
    );
}

#[tokio::test]
async fn token_with_non_numeric_expiry_is_rejected() {
    let token = hs(&json!({"sub": "u", "exp": "tomorrow"}));
    assert!(JwtVerifier::hs256(SECRET).verify(&token).await.is_err());
}

#[tokio::test]
async fn auth_error_messages_never_contain_the_token() {
    let token = hs(&json!({"sub": "u", "exp": now() - 3600}));
    let err = JwtVerifier::hs256(SECRET).verify(&token).await.unwrap_err();
    for part in token.split('.') {
        assert!(!err.to_string().contains(part));
        assert!(!format!("{err:?}").contains(part));
    }
}

#[test]
fn bearer_token_is_extracted_from_authorization_values() {
    assert_eq!(bearer_token("bEaReR xyz"), Some("xyz"));
    assert_eq!(bearer_token("Token xyz"), None);
}

// ----- configuration --------------------------------------------------------------------------

fn config() -> JwtConfig {
    JwtConfig::default()
}

#[test]
fn config_with_a_secret_builds_an_hs256_verifier() {
    let cfg = JwtConfig {
        jwt_secret: Some(SECRET.parse().unwrap()),
        ..config()
    };
    assert_eq!(
        JwtVerifier::from_config(&cfg).unwrap().algorithm().unwrap(),
        Algorithm::HS256
    );
}

#[test]
fn config_with_a_key_file_detects_the_algorithm_from_the_pem() {
    for (file, alg) in [
        ("rsa_public.pem", Algorithm::RS256),
        ("ec_p256_public.pem", Algorithm::ES256),
        ("ed25519_public.pem", Algorithm::EdDSA),
    ] {
        let cfg = JwtConfig {
            jwt_public_key_file: Some(key_path(file)),
            ..config()
        };
        assert_eq!(
            JwtVerifier::from_config(&cfg).unwrap().algorithm().unwrap(),
            alg,
            "{file}"
        );
    }
}

#[test]
fn config_with_both_secret_and_key_file_is_rejected() {
    let cfg = JwtConfig {
        jwt_secret: Some(SECRET.parse().unwrap()),
        jwt_public_key_file: Some(key_path("rsa_public.pem")),
        ..config()
    };
    let err = JwtVerifier::from_config(&cfg).unwrap_err();
    assert!(matches!(err, ConfigError::Conflict { .. }));
    let message = err.to_string();
    assert!(
        message.contains("JWT_SECRET") && message.contains("JWT_PUBLIC_KEY_FILE"),
        "{message}"
    );
}

#[test]
fn config_with_neither_secret_nor_key_file_is_rejected() {
    let message = JwtVerifier::from_config(&config()).unwrap_err().to_string();
    assert!(
        message.contains("JWT_SECRET") && message.contains("JWT_PUBLIC_KEY_FILE"),
        "{message}"
    );
}

#[test]
fn missing_key_file_is_reported_with_its_variable() {
    let cfg = JwtConfig {
        jwt_public_key_file: Some(key_path("nope.pem")),
        ..config()
    };
    let message = JwtVerifier::from_config(&cfg).unwrap_err().to_string();
    assert!(message.contains("JWT_PUBLIC_KEY_FILE"), "{message}");
}

#[test]
fn private_key_file_is_refused() {
    let cfg = JwtConfig {
        jwt_public_key_file: Some(key_path("rsa_private.pem")),
        ..config()
    };
    let message = JwtVerifier::from_config(&cfg).unwrap_err().to_string();
    assert!(
        message.contains("JWT_PUBLIC_KEY_FILE") && message.contains("private"),
        "{message}"
    );
}

#[test]
fn p384_key_is_refused() {
    let err = JwtVerifier::from_public_key_pem(EC_P384_PUBLIC.as_bytes()).unwrap_err();
    assert!(err.contains("P-256"), "{err}");
}

#[test]
fn garbage_key_file_is_refused() {
    let mut file = std::env::temp_dir();
    file.push(format!("common-test-garbage-{}.pem", std::process::id()));
    let mut f = std::fs::File::create(&file).unwrap();
    f.write_all(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
        .unwrap();
    let cfg = JwtConfig {
        jwt_public_key_file: Some(file.clone()),
        ..config()
    };
    let result = JwtVerifier::from_config(&cfg);
    std::fs::remove_file(&file).ok();
    assert!(matches!(
        result,
        Err(ConfigError::Invalid {
            var: "JWT_PUBLIC_KEY_FILE",
            ..
        })
    ));
    assert!(JwtVerifier::from_public_key_pem(b"not a pem").is_err());
    assert!(JwtVerifier::from_public_key_pem(&[0xff, 0xfe]).is_err());
}

#[tokio::test]
async fn configured_issuer_and_audience_are_enforced() {
    let cfg = JwtConfig {
        jwt_secret: Some(SECRET.parse().unwrap()),
        jwt_issuer: Some("auth.example".into()),
        jwt_audience: Some("calls".into()),
        ..config()
    };
    let verifier = JwtVerifier::from_config(&cfg).unwrap();
    let good = mint_hs256_with(
        SECRET,
        "u",
        Duration::from_secs(60),
        Some("auth.example"),
        Some("calls"),
    );
    assert!(verifier.verify(&good).await.is_ok());
    let bare = mint_hs256(SECRET, "u", Duration::from_secs(60));
    assert_eq!(verifier.verify(&bare).await, Err(AuthError::WrongIssuer));
}

#[test]
fn jwt_config_reads_the_environment_variable_names() {
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
        "JWT_SECRET",
        "JWT_PUBLIC_KEY_FILE",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
    ] {
        assert!(envs.iter().any(|e| e == var), "{var}");
    }
    let cfg = Cfg::try_parse_from(["x", "--jwt-secret", "s", "--jwt-issuer", "i"]).unwrap();
    assert_eq!(cfg.jwt.jwt_secret.unwrap().expose(), "s");
    assert_eq!(cfg.jwt.jwt_issuer.as_deref(), Some("i"));
}
