//! Errors as clients see them (CONTRACT section 1): every refusal is the JSON envelope with the
//! right status and code, a `requestId` equal to the `x-request-id` header, field `details` for
//! validation failures, and nothing a client should not see (SQL, stack traces, secrets, tokens).

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{Value, json};
use support::{JWT_SECRET, Options, Resp, TestApp, id_of, spawn_app};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// `initiate` with a raw body and content type.
async fn initiate_raw(
    app: &TestApp,
    content_type: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> Resp {
    let mut request = app
        .request_as("alice", Method::POST, "/api/v1/calls/rooms/room/initiate")
        .body(body);
    if let Some(ct) = content_type {
        request = request.header("content-type", ct);
    }
    app.send(request).await
}

#[track_caller]
fn assert_field(resp: &Resp, field: &str, what: &str) {
    let err = resp.err(400, "VALIDATION_FAILED");
    assert_eq!(
        err.details[0].field, field,
        "{what}: the details must name the field: {}",
        resp.text
    );
    assert!(
        !err.details[0].message.is_empty(),
        "{what}: the details must say what is wrong"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initiate_bodies_that_fail_validation_get_400_naming_the_field() {
    let app = spawn_app(Options::default()).await;
    // CALL_MAX_INVITEES is 100 (a group may ring more people than its 16 seats).
    let too_many: Vec<String> = (0..101).map(|i| format!("u{i}")).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "missing type",
            json!({"isGroupCall": false, "inviteUserIds": ["bob"]}),
            "type",
        ),
        (
            "missing isGroupCall",
            json!({"type": "video", "inviteUserIds": ["bob"]}),
            "isGroupCall",
        ),
        (
            "missing inviteUserIds",
            json!({"type": "video", "isGroupCall": true}),
            "inviteUserIds",
        ),
        (
            "unknown call type",
            json!({"type": "hologram", "isGroupCall": false, "inviteUserIds": ["bob"]}),
            "type",
        ),
        (
            "isGroupCall of the wrong type",
            json!({"type": "video", "isGroupCall": "yes", "inviteUserIds": ["bob"]}),
            "isGroupCall",
        ),
        (
            "inviteUserIds not a list",
            json!({"type": "video", "isGroupCall": false, "inviteUserIds": "bob"}),
            "inviteUserIds",
        ),
        (
            "a number among the invitees",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["bob", 7]}),
            "inviteUserIds[1]",
        ),
        (
            "an empty user id",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": [""]}),
            "inviteUserIds[0]",
        ),
        (
            "nobody invited",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": []}),
            "inviteUserIds",
        ),
        (
            "duplicate invitees",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["bob", "bob"]}),
            "inviteUserIds",
        ),
        (
            "inviting yourself",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["bob", "alice"]}),
            "inviteUserIds",
        ),
        (
            "a 1:1 with two invitees",
            json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["bob", "carol"]}),
            "inviteUserIds",
        ),
        (
            "maxParticipants below 2",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["bob"], "maxParticipants": 1}),
            "maxParticipants",
        ),
        (
            "maxParticipants above the limit",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["bob"], "maxParticipants": 17}),
            "maxParticipants",
        ),
        (
            "negative maxParticipants",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["bob"], "maxParticipants": -3}),
            "maxParticipants",
        ),
        (
            "maxParticipants not a number",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["bob"], "maxParticipants": "ten"}),
            "maxParticipants",
        ),
        (
            "more invitees than the limit allows",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": too_many}),
            "inviteUserIds",
        ),
        (
            "a ring timeout under five seconds",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["bob"], "ringTimeoutSeconds": 4}),
            "ringTimeoutSeconds",
        ),
        (
            "a ring timeout over CALL_RING_TIMEOUT_SECONDS",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["bob"], "ringTimeoutSeconds": 46}),
            "ringTimeoutSeconds",
        ),
        ("a JSON array instead of an object", json!([]), "body"),
    ];
    for (what, body, field) in cases {
        let resp = app.try_initiate("alice", "room", body).await;
        assert_field(&resp, field, what);
    }
    assert!(
        app.active("alice", "room").await.ok(200).is_null(),
        "a refused initiate must not create a call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_media_and_join_bodies_that_fail_validation_get_400_naming_the_field() {
    let app = spawn_app(Options::default()).await;
    let call = app.initiate("alice", "room", &["bob", "carol"], true).await;
    let id = id_of(&call);
    let status = format!("/api/v1/calls/{id}/status");
    let media = format!("/api/v1/calls/{id}/media");

    assert_field(
        &app.patch("bob", &status, json!({"status": "sleeping"}))
            .await,
        "status",
        "an unknown status",
    );
    // A number where an enum is expected: serde_json classifies it as a syntax error, so
    // common::error::parse_json reports "Malformed JSON body" on `body` rather than `status`
    // (reported to the lead: that is the common crate's to fix). The code is still right.
    app.patch("bob", &status, json!({"status": 3}))
        .await
        .err(400, "VALIDATION_FAILED");
    assert_field(
        &app.patch("bob", &status, json!({})).await,
        "status",
        "no status",
    );
    assert_field(
        &app.patch(
            "bob",
            &status,
            json!({"status": "declined", "declineReason": "x".repeat(300)}),
        )
        .await,
        "reason",
        "an overlong decline reason",
    );
    app.join("alice", &id).await.ok(200);
    assert_field(
        &app.patch("alice", &media, json!({})).await,
        "body",
        "a media update without any flag",
    );
    assert_field(
        &app.patch("alice", &media, json!({"isMicMuted": "yes"}))
            .await,
        "isMicMuted",
        "a flag that is not a boolean",
    );
    assert_field(
        &app.post(
            "carol",
            &format!("/api/v1/calls/{id}/join"),
            json!({"isCameraOff": 1}),
        )
        .await,
        "isCameraOff",
        "a join flag that is not a boolean",
    );
    let after = app.call("alice", &id).await.ok(200);
    assert_eq!(
        support::statuses(&after)[1].1,
        "invited",
        "a refused status change must change nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_json_and_wrong_content_types_get_the_envelope_not_plain_text() {
    let app = spawn_app(Options::default()).await;
    let valid = r#"{"type":"video","isGroupCall":false,"inviteUserIds":["bob"]}"#;

    let resp = initiate_raw(&app, Some("application/json"), r#"{"type": "video","#).await;
    assert_field(&resp, "body", "truncated JSON");
    let resp = initiate_raw(&app, Some("application/json"), "").await;
    assert_field(&resp, "body", "an empty body");
    let resp = initiate_raw(&app, Some("application/json"), format!("{valid} trailing")).await;
    assert_field(&resp, "body", "garbage after the JSON value");
    let resp = initiate_raw(&app, Some("text/plain"), valid).await;
    assert_field(&resp, "Content-Type", "JSON sent as text/plain");
    let resp = initiate_raw(
        &app,
        Some("application/x-www-form-urlencoded"),
        "type=video",
    )
    .await;
    assert_field(&resp, "Content-Type", "a form post");
    let resp = initiate_raw(&app, None, valid).await;
    assert_field(&resp, "Content-Type", "no content type");
    let resp = initiate_raw(&app, Some("application/json; charset=utf-8"), valid).await;
    resp.ok(201);

    let id = id_of(&resp.body["data"]);
    let join = app
        .request_as("bob", Method::POST, &format!("/api/v1/calls/{id}/join"))
        .header("content-type", "application/json")
        .body("not json");
    assert_field(
        &app.send(join).await,
        "body",
        "a join body that is not JSON",
    );
    let status = app
        .request_as("bob", Method::PATCH, &format!("/api/v1/calls/{id}/status"))
        .header("content-type", "application/json")
        .body(r#"{"status": "ringing""#);
    assert_field(&app.send(status).await, "body", "a truncated status body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_64_kib_get_413_in_the_envelope() {
    let app = spawn_app(Options::default()).await;
    let padded = |bytes: usize| {
        serde_json::to_vec(&json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["bob"], "padding": "x".repeat(bytes)}))
            .unwrap()
    };
    let resp = initiate_raw(&app, Some("application/json"), padded(70 * 1024)).await;
    resp.err(413, "PAYLOAD_TOO_LARGE");
    assert!(app.active("alice", "room").await.ok(200).is_null());

    // Just under the limit is fine (unknown fields are ignored).
    let call = initiate_raw(&app, Some("application/json"), padded(60 * 1024))
        .await
        .ok(201);
    let join = app
        .request_as(
            "bob",
            Method::POST,
            &format!("/api/v1/calls/{}/join", id_of(&call)),
        )
        .header("content-type", "application/json")
        .body(padded(100 * 1024));
    app.send(join).await.err(413, "PAYLOAD_TOO_LARGE");
    let status = app
        .request_as(
            "bob",
            Method::PATCH,
            &format!("/api/v1/calls/{}/status", id_of(&call)),
        )
        .header("content-type", "application/json")
        .body(vec![b' '; 65 * 1024 + 1]);
    app.send(status).await.err(413, "PAYLOAD_TOO_LARGE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_in_the_path_and_bad_paging_get_400_naming_the_parameter() {
    let app = spawn_app(Options::default()).await;
    assert_field(
        &app.get("alice", "/api/v1/calls/not-a-uuid").await,
        "id",
        "GET a call by a non-UUID",
    );
    assert_field(
        &app.post_empty("alice", "/api/v1/calls/123/join").await,
        "id",
        "join a non-UUID",
    );
    assert_field(
        &app.post_empty("alice", "/api/v1/calls/123/end").await,
        "id",
        "end a non-UUID",
    );
    assert_field(
        &app.post_empty("alice", "/api/v1/calls/123/media/session")
            .await,
        "id",
        "media session of a non-UUID",
    );
    assert_field(
        &app.patch(
            "alice",
            "/api/v1/calls/xyz/status",
            json!({"status": "left"}),
        )
        .await,
        "id",
        "PATCH status of a non-UUID",
    );
    assert_field(
        &app.patch(
            "alice",
            "/api/v1/calls/xyz/media",
            json!({"isMicMuted": true}),
        )
        .await,
        "id",
        "PATCH media of a non-UUID",
    );
    let long_room = "r".repeat(300);
    assert_field(
        &app.try_initiate(
            "alice",
            &long_room,
            json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["bob"]}),
        )
        .await,
        "chatRoomId",
        "a chat room id over 255 bytes",
    );
    assert_field(
        &app.active("alice", &long_room).await,
        "chatRoomId",
        "the active call of an overlong room id",
    );

    for (query, field) in [
        ("?limit=0", "limit"),
        ("?limit=101", "limit"),
        ("?limit=-1", "limit"),
        ("?limit=ten", "limit"),
        ("?before=not-a-cursor", "before"),
        (
            &format!("?before={}", URL_SAFE_NO_PAD.encode("12:not-a-uuid")),
            "before",
        ),
    ] {
        assert_field(
            &app.history("alice", query).await,
            field,
            &format!("GET /calls{query}"),
        );
    }
    app.history("alice", "?limit=100").await.ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_access_token_get_401() {
    let app = spawn_app(Options::default()).await;
    let call = app.initiate("alice", "room", &["bob"], false).await;
    let id = id_of(&call);
    let bad_tokens: Vec<(&str, Option<String>)> = vec![
        ("no Authorization header", None),
        ("an empty bearer", Some("Bearer ".into())),
        ("not a JWT", Some("Bearer not.a.jwt".into())),
        ("the Basic scheme", Some("Basic YWxpY2U6c2VjcmV0".into())),
        (
            "a token signed with another secret",
            Some(format!(
                "Bearer {}",
                common::auth::mint_hs256("another-secret", "alice", Duration::from_secs(600))
            )),
        ),
        (
            "an expired token",
            Some(format!(
                "Bearer {}",
                hs256(&json!({"sub": "alice", "exp": now() - 120}), JWT_SECRET)
            )),
        ),
        (
            "a token without exp",
            Some(format!(
                "Bearer {}",
                hs256(&json!({"sub": "alice"}), JWT_SECRET)
            )),
        ),
        (
            "an unsigned alg:none token",
            Some(format!(
                "Bearer {}.{}.",
                b64(&json!({"alg": "none", "typ": "JWT"})),
                b64(&json!({"sub": "alice", "exp": now() + 600}))
            )),
        ),
        (
            "an empty subject",
            Some(format!(
                "Bearer {}",
                hs256(&json!({"sub": "", "exp": now() + 600}), JWT_SECRET)
            )),
        ),
    ];
    for (_, header) in &bad_tokens {
        if let Some(h) = header {
            app.remember_token(h.trim_start_matches("Bearer ").trim_start_matches("Basic "));
        }
    }
    let endpoints: Vec<(Method, String, Option<Value>)> = vec![
        (
            Method::POST,
            "/api/v1/calls/rooms/room/initiate".into(),
            Some(json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["bob"]})),
        ),
        (Method::GET, format!("/api/v1/calls/{id}"), None),
        (Method::POST, format!("/api/v1/calls/{id}/join"), None),
        (
            Method::POST,
            format!("/api/v1/calls/{id}/media/session"),
            None,
        ),
        (
            Method::PATCH,
            format!("/api/v1/calls/{id}/status"),
            Some(json!({"status": "ringing"})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/calls/{id}/media"),
            Some(json!({"isMicMuted": true})),
        ),
        (Method::POST, format!("/api/v1/calls/{id}/end"), None),
        (Method::GET, "/api/v1/calls/rooms/room/active".into(), None),
        (Method::GET, "/api/v1/calls".into(), None),
        // Authentication comes before validation: a stranger learns nothing about the body.
        (
            Method::POST,
            "/api/v1/calls/rooms/room/initiate".into(),
            Some(json!({"type": "hologram"})),
        ),
    ];
    for (what, header) in &bad_tokens {
        for (method, path, body) in &endpoints {
            let mut request = app.request(method.clone(), path);
            if let Some(h) = header {
                request = request.header("authorization", h);
            }
            if let Some(b) = body {
                request = request.json(b);
            }
            let resp = app.send(request).await;
            assert_eq!(
                resp.status, 401,
                "{what} on {method} {path} must be refused with 401, got {}",
                resp.text
            );
            resp.err(401, "UNAUTHORIZED");
        }
    }
    // The call is untouched.
    assert_eq!(app.call("alice", &id).await.ok(200)["status"], "ringing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_and_audience_are_enforced_when_configured() {
    let app = spawn_app(Options {
        jwt_issuer: Some("https://auth.example".into()),
        jwt_audience: Some("calls".into()),
        ..Options::default()
    })
    .await;
    let ttl = Duration::from_secs(600);
    let mint = |iss: Option<&str>, aud: Option<&str>| {
        common::auth::mint_hs256_with(JWT_SECRET, "alice", ttl, iss, aud)
    };
    let cases = [
        (
            "the right issuer and audience",
            mint(Some("https://auth.example"), Some("calls")),
            200,
        ),
        ("no issuer", mint(None, Some("calls")), 401),
        (
            "another issuer",
            mint(Some("https://evil.example"), Some("calls")),
            401,
        ),
        ("no audience", mint(Some("https://auth.example"), None), 401),
        (
            "another audience",
            mint(Some("https://auth.example"), Some("billing")),
            401,
        ),
    ];
    for (what, token, status) in cases {
        app.remember_token(&token);
        let resp = app
            .send(
                app.request(Method::GET, "/api/v1/calls")
                    .bearer_auth(&token),
            )
            .await;
        assert_eq!(resp.status, status, "a token with {what}: {}", resp.text);
        if status == 401 {
            resp.err(401, "UNAUTHORIZED");
        }
    }
}

/// The body without the request id, which differs per request.
fn without_request_id(resp: &Resp) -> Value {
    let mut body = resp.body.clone();
    body.as_object_mut().unwrap().remove("requestId");
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_learns_nothing_about_someone_elses_call() {
    let app = spawn_app(Options::default()).await;
    let call = app.initiate("alice", "room", &["bob"], false).await;
    let real = id_of(&call);
    let missing = uuid::Uuid::now_v7().to_string();
    let ended = app.initiate("carol", "other", &["dave"], false).await;
    app.end("carol", &id_of(&ended)).await.ok(200);

    for id in [real.as_str(), id_of(&ended).as_str()] {
        let attempts: [(&str, Resp, Resp); 6] = [
            (
                "GET",
                app.call("mallory", id).await,
                app.call("mallory", &missing).await,
            ),
            (
                "join",
                app.join("mallory", id).await,
                app.join("mallory", &missing).await,
            ),
            (
                "end",
                app.end("mallory", id).await,
                app.end("mallory", &missing).await,
            ),
            (
                "media session",
                app.media_session("mallory", id).await,
                app.media_session("mallory", &missing).await,
            ),
            (
                "status",
                app.set_status("mallory", id, "ringing").await,
                app.set_status("mallory", &missing, "ringing").await,
            ),
            (
                "media",
                app.update_media("mallory", id, json!({"isMicMuted": true}))
                    .await,
                app.update_media("mallory", &missing, json!({"isMicMuted": true}))
                    .await,
            ),
        ];
        for (what, someone_elses, nonexistent) in attempts {
            someone_elses.err(404, "CALL_NOT_FOUND");
            nonexistent.err(404, "CALL_NOT_FOUND");
            assert_eq!(
                without_request_id(&someone_elses),
                without_request_id(&nonexistent),
                "{what}: a stranger must not be able to tell someone else's call from no call"
            );
        }
    }
    let untouched = app.call("alice", &real).await.ok(200);
    assert_eq!(
        untouched["participants"].as_array().unwrap().len(),
        2,
        "the stranger must not have joined"
    );
    assert_eq!(untouched["status"], "ringing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acting_on_an_ended_call_is_call_ended() {
    let app = spawn_app(Options::default()).await;
    let call = app.initiate("alice", "room", &["bob", "carol"], true).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    app.end("alice", &id).await.ok(200);
    app.join("bob", &id).await.err(409, "CALL_ENDED");
    app.join("carol", &id).await.err(409, "CALL_ENDED");
    app.set_status("carol", &id, "ringing")
        .await
        .err(409, "CALL_ENDED");
    app.set_status("bob", &id, "joined")
        .await
        .err(409, "CALL_ENDED");
    app.update_media("bob", &id, json!({"isMicMuted": true}))
        .await
        .err(409, "CALL_ENDED");
    app.media_session("bob", &id).await.err(409, "CALL_ENDED");
    app.end("alice", &id).await.err(409, "CALL_ENDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn media_before_joining_is_not_joined_and_without_a_provider_is_503() {
    let app = spawn_app(Options::default()).await;
    let call = app.initiate("alice", "room", &["bob", "carol"], true).await;
    let id = id_of(&call);
    app.media_session("bob", &id).await.err(409, "NOT_JOINED");
    app.update_media("bob", &id, json!({"isCameraOff": true}))
        .await
        .err(409, "NOT_JOINED");
    app.join("bob", &id).await.ok(200);
    app.set_status("bob", &id, "left").await.ok(200);
    app.media_session("bob", &id).await.err(409, "NOT_JOINED");
    app.update_media("bob", &id, json!({"isCameraOff": true}))
        .await
        .err(409, "NOT_JOINED");

    // No MEDIA_TOKEN_URL: media sessions are switched off, the rest works.
    let err = app
        .media_session("alice", &id)
        .await
        .err(503, "MEDIA_PROVIDER_NOT_CONFIGURED");
    assert!(!err.message.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_wrong_methods_get_404_and_405_envelopes() {
    let app = spawn_app(Options::default()).await;
    let call = app.initiate("alice", "room", &["bob"], false).await;
    let id = id_of(&call);
    for path in [
        "/api/v1/nope",
        "/nope",
        "/api/v2/calls",
        &format!("/api/v1/calls/{id}/unknown"),
    ] {
        app.get("alice", path).await.err(404, "NOT_FOUND");
    }
    for (method, path) in [
        (Method::DELETE, format!("/api/v1/calls/{id}")),
        (Method::GET, format!("/api/v1/calls/{id}/join")),
        (Method::PUT, "/api/v1/calls/rooms/room/initiate".to_owned()),
        (Method::POST, "/api/v1/calls".to_owned()),
        (Method::POST, format!("/api/v1/calls/{id}/status")),
        (Method::GET, "/internal/v1/rooms/room/members".to_owned()),
    ] {
        let resp = app
            .send(app.request_as("alice", method.clone(), &path))
            .await;
        resp.err(405, "METHOD_NOT_ALLOWED");
        assert!(
            resp.header("allow").is_some(),
            "{method} {path}: a 405 says which methods are allowed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_carries_the_request_id_the_client_sent() {
    let app = spawn_app(Options::default()).await;
    let call = app.initiate("alice", "room", &["bob"], false).await;
    let id = id_of(&call);
    let with_id = |request: reqwest::RequestBuilder, rid: &str| request.header("X-Request-Id", rid);
    let cases: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            app.request(Method::GET, "/api/v1/calls"),
            401,
            "UNAUTHORIZED",
        ),
        (
            app.request_as("alice", Method::GET, "/api/v1/calls/nope"),
            400,
            "VALIDATION_FAILED",
        ),
        (
            app.request_as("mallory", Method::GET, &format!("/api/v1/calls/{id}")),
            404,
            "CALL_NOT_FOUND",
        ),
        (
            app.request_as("alice", Method::GET, "/no/such/route"),
            404,
            "NOT_FOUND",
        ),
        (
            app.request_as("alice", Method::DELETE, &format!("/api/v1/calls/{id}")),
            405,
            "METHOD_NOT_ALLOWED",
        ),
        (
            app.request_as("alice", Method::POST, "/api/v1/calls/rooms/room/initiate")
                .header("content-type", "application/json")
                .body(vec![b'x'; 70 * 1024]),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            app.request_as(
                "bob",
                Method::POST,
                &format!("/api/v1/calls/{id}/media/session"),
            ),
            409,
            "NOT_JOINED",
        ),
    ];
    for (i, (request, status, code)) in cases.into_iter().enumerate() {
        let rid = format!("client-trace-{i}");
        let resp = app.send(with_id(request, &rid)).await;
        let err = resp.err(status, code);
        assert_eq!(
            err.request_id.as_deref(),
            Some(rid.as_str()),
            "{code}: the client's X-Request-Id must come back"
        );
    }
    // An id the server will not echo into a body (too long, or not printable ASCII) is
    // replaced, so the body and the header still agree.
    for odd in [
        "x".repeat(200),
        "tab\there".to_owned(),
        "ünïcode".to_owned(),
    ] {
        let Ok(value) = reqwest::header::HeaderValue::from_bytes(odd.as_bytes()) else {
            continue;
        };
        let resp = app
            .send(
                app.request(Method::GET, "/api/v1/calls")
                    .header("X-Request-Id", value),
            )
            .await;
        let err = resp.err(401, "UNAUTHORIZED");
        assert!(
            err.request_id.as_deref().is_some_and(|id| id != odd),
            "an unusable X-Request-Id must be replaced"
        );
    }
    // Without one, the server makes one up, different per request.
    let a = app
        .send(app.request(Method::GET, "/api/v1/calls"))
        .await
        .err(401, "UNAUTHORIZED");
    let b = app
        .send(app.request(Method::GET, "/api/v1/calls"))
        .await
        .err(401, "UNAUTHORIZED");
    assert!(
        a.request_id.is_some() && a.request_id != b.request_id,
        "generated request ids must differ"
    );
    // Successes carry the header too.
    let ok = app
        .send(with_id(
            app.request_as("alice", Method::GET, "/api/v1/calls"),
            "ok-trace",
        ))
        .await;
    ok.ok(200);
    assert_eq!(ok.header("x-request-id"), Some("ok-trace"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_stored_verbatim_and_errors_never_show_sql_or_internals() {
    let app = spawn_app(Options::default()).await;
    let room = "r'; DROP TABLE calls; --";
    let encoded = "r%27%3B%20DROP%20TABLE%20calls%3B%20--";
    let call = app
        .try_initiate("alice", encoded, json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["b'ob", "\"carol\"", "x OR 1=1"]}))
        .await
        .ok(201);
    assert_eq!(
        call["chatRoomId"], room,
        "ids are data, stored and returned verbatim"
    );
    let id = id_of(&call);
    assert_eq!(app.call("b'ob", &id).await.ok(200)["chatRoomId"], room);
    assert_eq!(
        app.active("alice", encoded).await.ok(200)["id"],
        id.as_str()
    );

    let probes: Vec<Resp> = vec![
        app.history(
            "alice",
            &format!("?before={}", URL_SAFE_NO_PAD.encode("1:' OR 1=1 --")),
        )
        .await,
        app.history("alice", "?before=%27%3B%20SELECT%201").await,
        app.history("alice", "?limit=99999999999999999999").await,
        app.get("alice", "/api/v1/calls/'%20OR%201=1").await,
        app.patch(
            "b'ob",
            &format!("/api/v1/calls/{id}/status"),
            json!({"status": "joined'; --"}),
        )
        .await,
        app.send(
            app.request_as("alice", Method::POST, "/api/v1/calls/rooms/x/initiate")
                .header("Idempotency-Key", "'; DELETE FROM calls; --")
                .json(&json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["bob"]})),
        )
        .await,
    ];
    for resp in &probes {
        if resp.status >= 400 {
            assert!(
                resp.status < 500,
                "{}: hostile input must be a client error, not a {}: {}",
                resp.what,
                resp.status,
                resp.text
            );
            let lower = resp.text.to_lowercase();
            for leak in [
                "select ",
                "insert ",
                "delete from",
                "sqlx",
                "syntax",
                "postgres",
                "sqlite",
                "panicked",
                ".rs:",
                "backtrace",
            ] {
                assert!(
                    !lower.contains(leak),
                    "{}: the error shows internals ({leak:?}): {}",
                    resp.what,
                    resp.text
                );
            }
        }
    }
    // Nothing was dropped or deleted.
    assert_eq!(app.call("alice", &id).await.ok(200)["id"], id.as_str());
    assert_eq!(
        app.history("alice", "").await.ok(200)["items"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}
