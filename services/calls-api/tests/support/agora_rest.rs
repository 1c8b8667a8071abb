//! A double of Agora's kicking-rule RESTful API (`POST /dev/v1/kicking-rule`), written from
//! Agora's public reference ("Create a banning rule", Channel Management REST API) and refusing
//! what it documents as refused:
//! - HTTP Basic credentials of the customer id and secret, else 401 with a `message`;
//! - `Content-Type: application/json` and a JSON object body, else 400;
//! - `appid` (required, the project's App ID: another is 400), `uid` a number and not 0,
//!   `cname` a string, at least one of `cname` / `uid` / `ip`; `privileges` a non-empty list
//!   of `join_channel` / `publish_audio` / `publish_video`; `time` (minutes) or
//!   `time_in_seconds`, numbers, not both;
//! - other methods and paths 404.
//!
//! A created rule answers 200 `{"status": "success", "id": <rule id>}`. Tests can queue
//! failures (`fail_next`) answered before the next requests are looked at, as Agora does when
//! it rate-limits (429) or is unavailable (503).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use serde_json::{Value, json};

pub const CUSTOMER_ID: &str = "integration-customer-id-77f1";
pub const CUSTOMER_SECRET: &str = "integration-customer-secret-c3d9a0";

#[derive(Default)]
struct Inner {
    /// Rules created, as posted.
    rules: Vec<Value>,
    /// Requests refused, with the status given.
    refused: Vec<(u16, Value)>,
    /// Answers to give before looking at the next requests.
    failures: VecDeque<u16>,
}

#[derive(Clone)]
pub struct AgoraRestDouble {
    pub url: String,
    pub app_id: String,
    inner: Arc<Mutex<Inner>>,
}

impl AgoraRestDouble {
    /// Serves on a port of its own, for the project `app_id`.
    pub async fn start(app_id: &str) -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let state = (app_id.to_owned(), inner.clone());
        let app = axum::Router::new()
            .route("/dev/v1/kicking-rule", post(create_rule))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}"),
            app_id: app_id.to_owned(),
            inner,
        }
    }

    /// Answers the next `count` requests with `status` whatever they hold.
    pub fn fail_next(&self, status: u16, count: usize) {
        let mut inner = self.inner.lock().unwrap();
        inner.failures.extend(std::iter::repeat_n(status, count));
    }

    pub fn rules(&self) -> Vec<Value> {
        self.inner.lock().unwrap().rules.clone()
    }

    pub fn refused(&self) -> Vec<(u16, Value)> {
        self.inner.lock().unwrap().refused.clone()
    }

    /// Waits until `count` rules were created; returns them.
    pub async fn wait_for_rules(&self, count: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + super::DEADLINE;
        loop {
            let rules = self.rules();
            if rules.len() >= count {
                return rules;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "expected {count} kicking rules, got {rules:?} (refused: {:?})",
                self.refused()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

type DoubleState = (String, Arc<Mutex<Inner>>);

fn refuse(inner: &Mutex<Inner>, status: StatusCode, body: Value, message: &str) -> Response {
    inner.lock().unwrap().refused.push((status.as_u16(), body));
    (status, axum::Json(json!({"message": message}))).into_response()
}

async fn create_rule(
    State((app_id, inner)): State<DoubleState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let queued = inner.lock().unwrap().failures.pop_front();
    if let Some(status) = queued {
        let status = StatusCode::from_u16(status).unwrap();
        return refuse(&inner, status, parsed, "queued failure");
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD
            .encode(format!("{CUSTOMER_ID}:{CUSTOMER_SECRET}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return refuse(
            &inner,
            StatusCode::UNAUTHORIZED,
            parsed,
            "Invalid authentication credentials",
        );
    }
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !json_type {
        return refuse(
            &inner,
            StatusCode::BAD_REQUEST,
            parsed,
            "Content-Type must be application/json",
        );
    }
    if let Err(message) = check_rule(&parsed, &app_id) {
        return refuse(&inner, StatusCode::BAD_REQUEST, parsed, &message);
    }
    let mut state = inner.lock().unwrap();
    state.rules.push(parsed);
    let id = 1952 + state.rules.len();
    axum::Json(json!({"status": "success", "id": id})).into_response()
}

fn check_rule(rule: &Value, app_id: &str) -> Result<(), String> {
    let Some(fields) = rule.as_object() else {
        return Err("the body must be a JSON object".into());
    };
    match fields.get("appid").and_then(Value::as_str) {
        Some(id) if id == app_id => {}
        Some(_) => return Err("invalid appid".into()),
        None => return Err("appid is required".into()),
    }
    if let Some(uid) = fields.get("uid") {
        match uid.as_u64() {
            Some(0) => return Err("uid must not be 0".into()),
            Some(_) => {}
            None => return Err("uid must be a number".into()),
        }
    }
    if fields.get("cname").is_some_and(|c| !c.is_string()) {
        return Err("cname must be a string".into());
    }
    if !["cname", "uid", "ip"]
        .iter()
        .any(|k| fields.contains_key(*k))
    {
        return Err("one of cname, uid or ip is required".into());
    }
    let privileges = fields.get("privileges").and_then(Value::as_array);
    let allowed = ["join_channel", "publish_audio", "publish_video"];
    match privileges {
        Some(list)
            if !list.is_empty()
                && list
                    .iter()
                    .all(|p| p.as_str().is_some_and(|p| allowed.contains(&p))) => {}
        _ => {
            return Err("privileges must list join_channel, publish_audio or publish_video".into());
        }
    }
    if fields.contains_key("time") && fields.contains_key("time_in_seconds") {
        return Err("set time or time_in_seconds, not both".into());
    }
    for key in ["time", "time_in_seconds"] {
        if fields.get(key).is_some_and(|t| !t.is_u64()) {
            return Err(format!("{key} must be a number"));
        }
    }
    Ok(())
}
