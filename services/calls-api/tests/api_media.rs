//! Media sessions (`POST /calls/:id/media/session`, CONTRACT section 4) with the real media-token
//! service in process: the guide's recommended 1:1 and group flows end with an Agora token that
//! verifies for the call's channel and the caller's account; renewals; and the 503s when the
//! provider is not configured or media-token cannot be reached.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{
    AGORA_APP_ID, AGORA_CERT, MediaTokenServer, Options, TestApp, assert_timestamp, id_of,
    participant, spawn_app,
};

async fn app_with_media(with_agora: bool) -> (TestApp, MediaTokenServer) {
    let media = MediaTokenServer::start(with_agora).await;
    let app = spawn_app(Options {
        media_token_url: Some(media.url.clone()),
        ..Options::default()
    })
    .await;
    (app, media)
}

/// Gets a media session as `user` and checks it against the contract and the Agora token
/// inside; returns the session.
async fn media_session(app: &TestApp, user: &str, call_id: &str) -> Value {
    let resp = app.media_session(user, call_id).await;
    let session = resp.ok(200);
    assert_eq!(resp.body["message"], "Media session created successfully");
    let mut keys: Vec<&str> = session
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "appId",
            "channelName",
            "expiresAt",
            "mode",
            "provider",
            "rtcToken",
            "userAccount"
        ]
    );
    let channel = format!("call_{call_id}");
    assert_eq!(session["provider"], "agora");
    assert_eq!(session["mode"], "sfu");
    assert_eq!(session["channelName"], channel.as_str());
    assert_eq!(session["userAccount"], user);
    assert_eq!(session["appId"], AGORA_APP_ID);
    assert_timestamp(&session["expiresAt"], "expiresAt");

    let token = session["rtcToken"].as_str().unwrap();
    assert!(
        token.starts_with("007"),
        "an AccessToken2 starts with 007: {token}"
    );
    let decoded =
        agora_token::decode(token).unwrap_or_else(|e| panic!("the rtcToken does not decode: {e}"));
    assert!(
        decoded.verify(AGORA_CERT),
        "the rtcToken's signature does not verify with the app certificate"
    );
    assert_eq!(decoded.app_id(), AGORA_APP_ID);
    match decoded.services() {
        [
            agora_token::Service::Rtc {
                channel_name,
                account,
                privileges,
            },
        ] => {
            assert_eq!(
                channel_name, &channel,
                "the token must be bound to the call's channel"
            );
            assert_eq!(
                account, user,
                "the token must be bound to the caller's account"
            );
            assert_eq!(
                privileges.keys().copied().collect::<Vec<_>>(),
                vec![1, 2, 3, 4],
                "a participant joins and publishes audio, video and data"
            );
        }
        other => panic!("expected exactly one RTC service in the token, got {other:?}"),
    }
    let expires = time::OffsetDateTime::parse(
        session["expiresAt"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap()
    .unix_timestamp();
    assert_eq!(
        u64::try_from(expires).unwrap(),
        decoded.expires_at(),
        "expiresAt must be when the token expires"
    );
    let ttl = expires - time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (3500..=3610).contains(&ttl),
        "AGORA_TOKEN_TTL_SECONDS defaults to an hour, got {ttl} s"
    );
    session
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recommended_one_to_one_flow_gets_both_sides_a_token_for_the_calls_channel() {
    let (app, _media) = app_with_media(true).await;
    // 1. initiate, 3. join, 5. media session, 7. media toggles, 8. end.
    let call = app.initiate("alice", "dm", &["bob"], false).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    let bob = media_session(&app, "bob", &id).await;
    let alice = media_session(&app, "alice", &id).await;
    assert_eq!(
        alice["channelName"], bob["channelName"],
        "both sides meet in one channel"
    );
    assert_ne!(alice["rtcToken"], bob["rtcToken"]);

    let me = app
        .update_media("bob", &id, json!({"isMicMuted": true}))
        .await
        .ok(200);
    assert_eq!(me["isMicMuted"], true);
    let ended = app.end("bob", &id).await.ok(200);
    assert_eq!(ended["endReason"], "completed");
    app.media_session("bob", &id).await.err(409, "CALL_ENDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recommended_group_flow_gets_every_participant_a_token_for_the_same_channel() {
    let (app, _media) = app_with_media(true).await;
    let call = app
        .initiate("alice", "team", &["bob", "carol", "dave"], true)
        .await;
    let id = id_of(&call);
    let mut channels = Vec::new();
    for user in ["bob", "carol"] {
        app.join(user, &id).await.ok(200);
        channels.push(media_session(&app, user, &id).await["channelName"].clone());
    }
    channels.push(media_session(&app, "alice", &id).await["channelName"].clone());
    assert!(
        channels.iter().all(|c| *c == channels[0]),
        "everyone in a group call shares its channel: {channels:?}"
    );
    app.media_session("dave", &id).await.err(409, "NOT_JOINED");
    app.media_session("mallory", &id)
        .await
        .err(404, "CALL_NOT_FOUND");

    app.set_status("carol", &id, "left").await.ok(200);
    app.media_session("carol", &id).await.err(409, "NOT_JOINED");
    let ended = app.end("alice", &id).await.ok(200);
    assert_eq!(participant(&ended, "dave")["status"], "missed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_again_renews_the_media_token() {
    let (app, _media) = app_with_media(true).await;
    let call = app.initiate("alice", "dm", &["bob"], false).await;
    let id = id_of(&call);
    let first = media_session(&app, "alice", &id).await;
    let second = media_session(&app, "alice", &id).await;
    assert_ne!(
        first["rtcToken"], second["rtcToken"],
        "a renewal is a new token"
    );
    assert_eq!(first["channelName"], second["channelName"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_media_token_service_without_agora_credentials_means_media_provider_not_configured() {
    let (app, _media) = app_with_media(false).await;
    let call = app.initiate("alice", "dm", &["bob"], false).await;
    let id = id_of(&call);
    app.media_session("alice", &id)
        .await
        .err(503, "MEDIA_PROVIDER_NOT_CONFIGURED");
    // Calls themselves keep working.
    app.join("bob", &id).await.ok(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_or_silent_media_token_service_is_a_retryable_503() {
    // Nobody listens on this port.
    let closed = support::free_port();
    let app = spawn_app(Options {
        media_token_url: Some(format!("http://127.0.0.1:{closed}")),
        media_token_timeout_ms: 300,
        ..Options::default()
    })
    .await;
    let call = app.initiate("alice", "dm", &["bob"], false).await;
    let started = Instant::now();
    app.media_session("alice", &id_of(&call))
        .await
        .err(503, "DEPENDENCY_UNAVAILABLE");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a refused connection should fail fast, took {:?}",
        started.elapsed()
    );
    drop(app);

    // A listener that accepts connections and never answers: the timeout must cut it short.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let _holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let app = spawn_app(Options {
        media_token_url: Some(format!("http://{silent_addr}")),
        media_token_timeout_ms: 300,
        ..Options::default()
    })
    .await;
    let call = app.initiate("alice", "dm", &["bob"], false).await;
    let started = Instant::now();
    app.media_session("alice", &id_of(&call))
        .await
        .err(503, "DEPENDENCY_UNAVAILABLE");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "MEDIA_TOKEN_TIMEOUT_MS=300 must bound the wait, took {:?}",
        started.elapsed()
    );
}
