//! Edge authentication.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::*;

fn expired_token(user: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Past the 30 s leeway.
    let claims = serde_json::json!({"sub": user, "iat": now - 600, "exp": now - 120});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn missing_malformed_badly_signed_and_expired_tokens_get_a_401_envelope() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;
    let client = client();
    let url = gw.url("/api/v1/calls");

    let missing = client.get(&url).send().await.unwrap();
    let body = assert_envelope(missing, 401, "UNAUTHORIZED").await;
    assert_eq!(body["message"], "Missing access token");

    let malformed = client
        .get(&url)
        .bearer_auth("not-a-jwt")
        .send()
        .await
        .unwrap();
    assert_envelope(malformed, 401, "UNAUTHORIZED").await;

    let forged = common::auth::mint_hs256(
        "another-secret-0123456789abcdef-xyz",
        "alice",
        std::time::Duration::from_secs(60),
    );
    let bad_signature = client.get(&url).bearer_auth(forged).send().await.unwrap();
    let body = assert_envelope(bad_signature, 401, "UNAUTHORIZED").await;
    assert_eq!(body["message"], "Access token signature is invalid");

    let expired = client
        .get(&url)
        .bearer_auth(expired_token("alice"))
        .send()
        .await
        .unwrap();
    let body = assert_envelope(expired, 401, "UNAUTHORIZED").await;
    assert_eq!(body["message"], "Access token expired");

    let basic = client
        .get(&url)
        .header("authorization", "Basic YTpi")
        .send()
        .await
        .unwrap();
    assert_envelope(basic, 401, "UNAUTHORIZED").await;

    assert_eq!(
        api.requests(),
        0,
        "nothing unauthenticated reaches calls-api"
    );
    let ok = client
        .get(&url)
        .bearer_auth(token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
}

#[tokio::test]
async fn api_docs_are_public() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;

    for path in ["/api/docs", "/api/docs/", "/api/docs/openapi.json"] {
        let echo = echoed(client().get(gw.url(path)).send().await.unwrap()).await;
        assert_eq!(echo["path"], path);
    }
}

#[tokio::test]
async fn every_other_api_path_needs_a_token() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;

    for path in [
        "/api",
        "/api/v2/anything",
        "/api/docsx",
        "/api/v1/calls/rooms/r1/initiate",
    ] {
        let response = client().post(gw.url(path)).send().await.unwrap();
        assert_envelope(response, 401, "UNAUTHORIZED").await;
    }
}

#[tokio::test]
async fn socket_io_handshakes_are_left_to_signaling_to_authenticate() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;

    // The token travels in the Socket.IO CONNECT packet, invisible at the HTTP level.
    let response = client()
        .get(gw.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}
