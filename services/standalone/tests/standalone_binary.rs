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
    internal: Option<String>,
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
    start_with(agora, &[])
}

fn start_with(agora: bool, extra_env: &[(&str, &str)]) -> Backend {
    let data = tempdir::TempDir::new();
    let mut cmd = Command::new(BIN);
    cmd.arg("serve")
        .current_dir(&data.0)
        .env("GATEWAY_LISTEN", "127.0.0.1:0")
        .env("GATEWAY_ADMIN_LISTEN", "127.0.0.1:0")
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
    for (key, value) in extra_env {
        cmd.env(key, value);
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
    let (mut base, mut internal) = (None, None);
    // The banner ends with the line about minting a token.
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no banner within 60 s; output: {seen:#?}"));
        let text = line.trim();
        if let Some(url) = text.strip_prefix("REST API") {
            base = Some(url.trim().trim_end_matches("/api/v1").to_owned());
        } else if let Some(url) = text.strip_prefix("Internal API") {
            internal = url.split_whitespace().next().map(str::to_owned);
        } else if text.starts_with("Mint a development token") {
            break;
        }
        seen.push(line);
    }
    let base = base.unwrap_or_else(|| panic!("the banner has no REST API line: {seen:#?}"));
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || while rx.recv().is_ok() {});
    Backend {
        child,
        base,
        internal,
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

#[tokio::test]
async fn table_membership_works_in_one_process_through_the_exposed_internal_api() {
    let backend = start_with(
        false,
        &[
            ("MEMBERSHIP_MODE", "table"),
            ("INTERNAL_API_TOKEN", "internal-secret"),
            ("CALLS_API_LISTEN", "127.0.0.1:0"),
        ],
    );
    let internal = backend
        .internal
        .clone()
        .expect("the banner should print the internal API address");
    let resp = reqwest::Client::new()
        .put(format!("{internal}/rooms/team/members"))
        .bearer_auth("internal-secret")
        .json(&serde_json::json!({"userIds": ["alice", "bob"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        200,
        "the chat backend could not write members"
    );

    let (status, body) = post(
        &backend.base,
        "/api/v1/calls/rooms/team/initiate",
        "mallory",
        serde_json::json!({"type": "audio", "isGroupCall": false, "inviteUserIds": ["bob"]}),
    )
    .await;
    assert_eq!(status, 403, "a non-member started a call: {body}");
    let (status, body) = post(
        &backend.base,
        "/api/v1/calls/rooms/team/initiate",
        "alice",
        serde_json::json!({"type": "audio", "isGroupCall": false, "inviteUserIds": ["bob"]}),
    )
    .await;
    assert_eq!(status, 201, "a member could not start a call: {body}");

    // The gateway itself never exposes /internal.
    let through_gateway = reqwest::Client::new()
        .put(format!("{}/internal/v1/rooms/team/members", backend.base))
        .bearer_auth("internal-secret")
        .json(&serde_json::json!({"userIds": ["mallory"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(through_gateway.status(), 404);
}

#[tokio::test]
async fn the_openapi_command_prints_exactly_the_document_the_gateway_serves() {
    let out = Command::new(BIN).arg("openapi").output().unwrap();
    assert!(
        out.status.success(),
        "openapi command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let backend = start(false);
    let served: serde_json::Value = reqwest::get(format!("{}/api/docs/openapi.json", backend.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        printed, served,
        "clients/js generates its types from `calls-backend openapi`: it must be what apps see"
    );
}
