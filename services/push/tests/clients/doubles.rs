//! The APNs and FCM doubles of `tests/js/lib/push-doubles.mjs`, run as a node child process: its
//! first stdout line says where they listen and where the credentials it generated are; its
//! control endpoint injects faults and returns what the doubles received. The child exits when
//! its stdin closes, i.e. when the test drops [`Doubles`].

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use calls_push::{ApnsConfig, ApnsEnvironment, FcmConfig, ServiceAccountKey};
use common::config::Secret;
use serde::Deserialize;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/js/lib/push-doubles.mjs"
);
/// Node starts and generates an RSA key in well under a second; a loaded CI machine gets slack.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub const BUNDLE_ID: &str = "com.example.calls";

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApnsInfo {
    pub url: String,
    pub key_file: PathBuf,
    pub key_id: String,
    pub team_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FcmInfo {
    pub url: String,
    pub token_uri: String,
    pub service_account_file: PathBuf,
    pub project_id: String,
}

#[derive(Debug, Deserialize)]
struct Started {
    control: String,
    apns: ApnsInfo,
    fcm: FcmInfo,
}

pub struct Doubles {
    pub apns: ApnsInfo,
    pub fcm: FcmInfo,
    control: String,
    http: reqwest::Client,
    _child: Child,
}

impl Doubles {
    pub async fn start() -> Doubles {
        Self::start_with(&[]).await
    }

    /// `args` go to `push-doubles.mjs --serve` (e.g. `--access-token-ttl 2`).
    pub async fn start_with(args: &[&str]) -> Doubles {
        let node = std::env::var("NODE").unwrap_or_else(|_| "node".to_owned());
        let mut child = Command::new(&node)
            .arg(SCRIPT)
            .arg("--serve")
            .args(["--bundle-id", BUNDLE_ID])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {node} (node is needed for the push doubles): {e}")
            });
        let stdout = child.stdout.take().expect("piped stdout");
        let line = tokio::time::timeout(START_TIMEOUT, BufReader::new(stdout).lines().next_line())
            .await
            .expect("the push doubles did not start in time")
            .expect("reading the push doubles' stdout")
            .expect("the push doubles exited before saying where they listen");
        let started: Started =
            serde_json::from_str(&line).expect("the doubles' start-up line is JSON");
        Doubles {
            apns: started.apns,
            fcm: started.fcm,
            control: started.control,
            http: reqwest::Client::new(),
            _child: child,
        }
    }

    pub fn apns_config(&self) -> ApnsConfig {
        let pem = std::fs::read_to_string(&self.apns.key_file).expect("the generated .p8 file");
        let mut config = ApnsConfig::new(
            Secret::new(pem),
            &self.apns.key_id,
            &self.apns.team_id,
            ApnsEnvironment::Sandbox,
        );
        config.base_url = Some(self.apns.url.clone());
        config
    }

    pub fn fcm_config(&self) -> FcmConfig {
        let account = ServiceAccountKey::from_file(&self.fcm.service_account_file)
            .expect("the generated service-account file");
        let mut config = FcmConfig::new(account);
        config.base_url = Some(self.fcm.url.clone());
        config
    }

    async fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.control))
            .send()
            .await
            .expect("control endpoint reachable")
            .json()
            .await
            .expect("control endpoint answers JSON")
    }

    async fn post(&self, path: &str, body: Value) {
        let status = self
            .http
            .post(format!("{}{path}", self.control))
            .json(&body)
            .send()
            .await
            .expect("control endpoint reachable")
            .status();
        assert!(status.is_success(), "control {path} answered {status}");
    }

    /// Accepted APNs requests, waiting (up to 10 s) until there are at least `min`.
    pub async fn apns_requests(&self, min: usize) -> Vec<Value> {
        array(self.get(&format!("/apns/requests?min={min}")).await)
    }

    /// Every APNs request with the status it got.
    pub async fn apns_log(&self) -> Vec<Value> {
        array(self.get("/apns/log").await)
    }

    pub async fn apns_connections(&self) -> u64 {
        self.get("/apns/stats").await["connections"]
            .as_u64()
            .unwrap_or_default()
    }

    /// `{token?, next?, times?, status?, reason?, delayMs?, retryAfter?}`.
    pub async fn apns_fault(&self, fault: Value) {
        self.post("/apns/faults", fault).await;
    }

    pub async fn apns_drop_connections(&self) {
        self.post("/apns/drop-connections", Value::Null).await;
    }

    pub async fn fcm_requests(&self, min: usize) -> Vec<Value> {
        array(self.get(&format!("/fcm/requests?min={min}")).await)
    }

    pub async fn fcm_log(&self) -> Vec<Value> {
        array(self.get("/fcm/log").await)
    }

    /// Every call of the token endpoint: `{status, error, header, claims}`.
    pub async fn fcm_token_requests(&self) -> Vec<Value> {
        array(self.get("/fcm/token-requests").await)
    }

    /// `{token?, next?, times?, errorCode?, delayMs?, retryAfter?}`.
    pub async fn fcm_fault(&self, fault: Value) {
        self.post("/fcm/faults", fault).await;
    }

    pub async fn fcm_expire_access_tokens(&self) {
        self.post("/fcm/expire-access-tokens", Value::Null).await;
    }
}

fn array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        other => panic!("expected a JSON array from the control endpoint, got {other}"),
    }
}

/// A loopback address nothing listens on.
pub async fn closed_port_url(scheme: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    format!("{scheme}://127.0.0.1:{port}")
}
