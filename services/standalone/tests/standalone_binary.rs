//! The `calls-backend` binary as a developer runs it (`make run`): one process, SQLite in a
//! data directory, reached only through the gateway, with a development token from
//! `calls-backend token`.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_calls-backend");
const SECRET: &str = "standalone-test-secret";
const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";

struct Backend {
    child: Child,
    base: String,
    _data: tempdir::TempDir,
}

/// A temporary directory removed on drop (no extra dependency for one helper).
mod tempdir {
    pub struct TempDir(pub std::path::PathBuf);
    impl TempDir {
        pub fn new() -> Self {
            let dir = std::env::temp_dir().join(format!("calls-standalone-{}", uuid_like()));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn uuid_like() -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{}-{nanos}", std::process::id())
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on a port the OS picks and reads the address from its banner.
fn start(agora: bool) -> Backend {
    let data = tempdir::TempDir::new();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .current_dir(&data.0)
        .env("GATEWAY_LISTEN", "127.0.0.1:0")
        .env("JWT_SECRET", SECRET)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL")
        .env_remove("AGORA_APP_ID")
        .env_remove("AGORA_APP_CERTIFICATE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if agora {
        cmd.env("AGORA_APP_ID", APP_ID)
            .env("AGORA_APP_CERTIFICATE", CERT);
    }
    let mut child = cmd.spawn().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    let base = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no banner within 60 s; output: {seen:#?}"));
        if let Some(url) = line.trim().strip_prefix("REST API") {
            break url.trim().trim_end_matches("/api/v1").to_owned();
        }
        seen.push(line);
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Backend {
        child,
        base,
        _data: data,
    }
}

fn token(user: &str) -> String {
    let out = Command::new(BIN)
        .args(["token", user])
        .env("JWT_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "token command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

async fn post(
    base: &str,
    path: &str,
    user: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .bearer_auth(token(user))
        .json(&body)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_developer_can_run_a_call_through_the_gateway_with_a_minted_token() {
    let backend = start(true);
    let health = reqwest::get(format!("{}/healthz", backend.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200, "the gateway should answer /healthz");

    let (status, body) = post(
        &backend.base,
        "/api/v1/calls/rooms/room-1/initiate",
        "alice",
        serde_json::json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["bob"]}),
    )
    .await;
    assert_eq!(status, 201, "initiate: {body}");
    let call_id = body["data"]["id"].as_str().unwrap().to_owned();

    let (status, body) = post(
        &backend.base,
        &format!("/api/v1/calls/{call_id}/join"),
        "bob",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200, "join: {body}");
    assert_eq!(body["data"]["status"], "active");

    let (status, body) = post(
        &backend.base,
        &format!("/api/v1/calls/{call_id}/media/session"),
        "bob",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200, "media session: {body}");
    assert_eq!(body["data"]["channelName"], format!("call_{call_id}"));
    assert_eq!(body["data"]["userAccount"], "bob");
    let rtc = agora_token_check(body["data"]["rtcToken"].as_str().unwrap());
    assert!(
        rtc,
        "the token signed in-process must verify with the app certificate"
    );

    let (status, body) = post(
        &backend.base,
        &format!("/api/v1/calls/{call_id}/end"),
        "alice",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 200, "end: {body}");
    assert_eq!(body["data"]["endReason"], "completed");
}

/// Checks an RTC token the way Agora would: it decodes and its signature verifies.
fn agora_token_check(token: &str) -> bool {
    token.starts_with("007")
        && agora_token::decode(token)
            .map(|t| t.verify(CERT))
            .unwrap_or(false)
}

#[tokio::test]
async fn without_agora_credentials_media_sessions_say_the_provider_is_not_configured() {
    let backend = start(false);
    let (_, body) = post(
        &backend.base,
        "/api/v1/calls/rooms/room-2/initiate",
        "carol",
        serde_json::json!({"type": "audio", "isGroupCall": true, "inviteUserIds": ["dave", "erin"]}),
    )
    .await;
    let call_id = body["data"]["id"].as_str().unwrap().to_owned();
    let (status, body) = post(
        &backend.base,
        &format!("/api/v1/calls/{call_id}/media/session"),
        "carol",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], "MEDIA_PROVIDER_NOT_CONFIGURED");
}

#[test]
fn the_token_command_refuses_to_run_without_a_secret() {
    let out = Command::new(BIN)
        .args(["token", "alice"])
        .env_remove("JWT_SECRET")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("JWT_SECRET"),
        "the error should name JWT_SECRET"
    );
}
