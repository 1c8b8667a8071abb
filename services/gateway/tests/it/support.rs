//! Test harness: small axum upstreams on real sockets, and the gateway in-process.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use clap::Parser;
use http::StatusCode;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The HS256 secret the test gateways verify with.
pub const SECRET: &str = "gateway-tests-secret-0123456789abcdef";

/// A valid access token for `user`.
pub fn token(user: &str) -> String {
    common::auth::mint_hs256(SECRET, user, Duration::from_secs(600))
}

/// A generous deadline for anything polled.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// Polls `check` until it returns true, or panics with `what` after [`DEADLINE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// An HTTP client that ignores proxy settings from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("reqwest client")
}

// ------------------------------------------------------------------------------------------
// Upstreams

struct UpstreamState {
    name: String,
    requests: AtomicUsize,
    sessions: Mutex<HashSet<String>>,
    next_sid: AtomicUsize,
    healthy: AtomicBool,
}

/// A fake calls-api / signaling instance.
///
/// - `GET /healthz`: 200, or 503 after [`Upstream::set_healthy`]`(false)`;
/// - `/api/v1/slow?ms=N`: answers after N ms;
/// - `/api/v1/conflict`: a 409 envelope, to check it passes through untouched;
/// - `/socket.io/`: a fake engine.io: a polling handshake without `sid` opens a session whose
///   sid starts with the instance name; requests with a known sid are answered
///   `<instance>:<sid>:<method>`, unknown sids get engine.io's 400 "Session ID unknown";
///   `transport=websocket` upgrades to an echo that prefixes messages with the instance name;
/// - anything else: a JSON echo of instance, method, path, query, headers and body.
pub struct Upstream {
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<UpstreamState>,
    kill: Mutex<CancellationToken>,
}

impl Upstream {
    /// Starts an instance named `name` on a free port.
    pub async fn start(name: &str) -> Arc<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let state = Arc::new(UpstreamState {
            name: name.to_owned(),
            requests: AtomicUsize::new(0),
            sessions: Mutex::new(HashSet::new()),
            next_sid: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
        });
        let kill = CancellationToken::new();
        tokio::spawn(serve(listener, app(state.clone()), kill.clone()));
        Arc::new(Self {
            addr,
            state,
            kill: Mutex::new(kill),
        })
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests it has answered, health checks excluded.
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Makes `/healthz` answer 200 or 503.
    pub fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }

    /// Stops it abruptly: the listener closes and every open connection is dropped.
    pub fn kill(&self) {
        self.kill.lock().expect("kill lock").cancel();
    }

    /// Starts it again on the same port (sessions survive, as if it had only been unreachable).
    pub async fn restart(&self) {
        let listener = TcpListener::bind(self.addr).await.expect("rebind upstream");
        let kill = CancellationToken::new();
        *self.kill.lock().expect("kill lock") = kill.clone();
        tokio::spawn(serve(listener, app(self.state.clone()), kill));
    }
}

async fn serve(listener: TcpListener, app: Router, kill: CancellationToken) {
    loop {
        let stream = tokio::select! {
            () = kill.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let kill = kill.clone();
        tokio::spawn(async move {
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            tokio::select! {
                _ = connection => {}
                () = kill.cancelled() => {}
            }
        });
    }
}

fn app(state: Arc<UpstreamState>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/api/v1/slow", get(slow))
        .route("/api/v1/conflict", get(conflict))
        .route("/socket.io/", axum::routing::any(engine_io))
        .fallback(echo)
        .with_state(state)
}

async fn healthz(State(state): State<Arc<UpstreamState>>) -> StatusCode {
    if state.healthy.load(Ordering::SeqCst) {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn query_map(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

async fn slow(State(state): State<Arc<UpstreamState>>, request: Request) -> Response {
    let ms: u64 = query_map(request.uri().query())
        .get("ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    // Counted on arrival, so a test can tell the request is in flight.
    state.requests.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(ms)).await;
    echo_uncounted(&state, request).await
}

/// The exact bytes `/api/v1/conflict` answers with.
pub const CONFLICT_BODY: &str = r#"{"statusCode":409,"message":"Call is full","error":"Conflict","code":"CALL_FULL","requestId":"upstream-id"}"#;

async fn conflict(State(state): State<Arc<UpstreamState>>) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::CONFLICT,
        [("content-type", "application/json"), ("x-upstream", "yes")],
        CONFLICT_BODY,
    )
        .into_response()
}

async fn echo(State(state): State<Arc<UpstreamState>>, request: Request) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    echo_uncounted(&state, request).await
}

async fn echo_uncounted(state: &UpstreamState, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let mut headers = BTreeMap::<String, String>::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    axum::Json(json!({
        "instance": state.name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "query": parts.uri.query(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
        "bodyLen": body.len(),
    }))
    .into_response()
}

fn unknown_session() -> Response {
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/json")],
        r#"{"code":"1","message":"Session ID unknown"}"#,
    )
        .into_response()
}

async fn engine_io(State(state): State<Arc<UpstreamState>>, request: Request) -> Response {
    state.requests.fetch_add(1, Ordering::SeqCst);
    let query = query_map(request.uri().query());
    let sid = query.get("sid").cloned();
    let known = |sid: &str| state.sessions.lock().expect("sessions").contains(sid);
    if query.get("transport").map(String::as_str) == Some("websocket") {
        if sid.as_deref().is_some_and(|sid| !known(sid)) {
            return unknown_session();
        }
        let (mut parts, _) = request.into_parts();
        let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &state).await {
            Ok(upgrade) => upgrade,
            Err(rejection) => return rejection.into_response(),
        };
        let name = state.name.clone();
        return upgrade.on_upgrade(move |socket| echo_websocket(socket, name));
    }
    match sid {
        None if request.method() == http::Method::GET => {
            let n = state.next_sid.fetch_add(1, Ordering::SeqCst);
            let sid = format!("{}-{n}", state.name);
            state.sessions.lock().expect("sessions").insert(sid.clone());
            let open = format!(
                r#"0{{"sid":"{sid}","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}}"#
            );
            (
                StatusCode::OK,
                [("content-type", "text/plain; charset=UTF-8")],
                open,
            )
                .into_response()
        }
        Some(sid) if known(&sid) => (
            StatusCode::OK,
            format!("{}:{sid}:{}", state.name, request.method()),
        )
            .into_response(),
        Some(_) => unknown_session(),
        None => StatusCode::BAD_REQUEST.into_response(),
    }
}

async fn echo_websocket(mut socket: WebSocket, name: String) {
    while let Some(Ok(message)) = socket.recv().await {
        match message {
            Message::Text(text) => {
                let reply = format!("{name}:{}", text.as_str());
                if socket.send(Message::Text(reply.into())).await.is_err() {
                    break;
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
}

// ------------------------------------------------------------------------------------------
// The gateway

/// A gateway running in-process.
pub struct Gateway {
    /// Its address.
    pub addr: SocketAddr,
    /// Its admin listener's address.
    pub admin_addr: SocketAddr,
    shutdown: CancellationToken,
    handle: Option<JoinHandle<Result<(), gateway::RunError>>>,
}

/// Test defaults: fast health checks, limits off (tests that need them turn them on).
const DEFAULTS: &[&str] = &[
    "--health-check-interval-ms",
    "100",
    "--rate-limit-per-ip-per-minute",
    "0",
    "--rate-limit-per-user-per-minute",
    "0",
    "--rate-limit-initiate-per-user-per-minute",
    "0",
];

impl Gateway {
    /// Starts a gateway over these upstreams; `extra` flags override the test defaults.
    pub async fn start(calls_api: &[&Upstream], signaling: &[&Upstream], extra: &[&str]) -> Self {
        let calls: Vec<String> = calls_api.iter().map(|u| u.url()).collect();
        let sig: Vec<String> = signaling.iter().map(|u| u.url()).collect();
        Self::start_urls(&calls.join(","), &sig.join(","), extra).await
    }

    /// Starts a gateway over upstream URL lists.
    pub async fn start_urls(calls_api: &str, signaling: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "gateway",
            "--calls-api-upstreams",
            calls_api,
            "--signaling-upstreams",
            signaling,
            "--jwt-secret",
            SECRET,
        ];
        args.extend_from_slice(DEFAULTS);
        args.extend_from_slice(extra);
        let config = gateway::Config::try_parse_from(args).expect("gateway config");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let addr = listener.local_addr().expect("gateway addr");
        let admin = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let admin_addr = admin.local_addr().expect("admin addr");
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(gateway::run_with_admin(
            config,
            listener,
            admin,
            shutdown.clone().cancelled_owned(),
        ));
        Self {
            addr,
            admin_addr,
            shutdown,
            handle: Some(handle),
        }
    }

    /// `http://addr` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Starts graceful shutdown.
    pub fn trigger_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits for `run` to return.
    pub async fn stopped(&mut self) -> Result<(), gateway::RunError> {
        let handle = self.handle.take().expect("not yet stopped");
        tokio::time::timeout(DEADLINE, handle)
            .await
            .expect("gateway stops in time")
            .expect("gateway task")
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&self) {
        let client = client();
        let url = self.url("/readyz");
        eventually("the gateway to be ready", || {
            let request = client.get(&url).send();
            async move { request.await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
    }

    /// `http://admin_addr` + `path`: the admin listener (`GATEWAY_ADMIN_LISTEN`).
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin_addr)
    }

    /// The text of `/metrics`, from the admin listener.
    pub async fn metrics(&self) -> String {
        client()
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

// ------------------------------------------------------------------------------------------
// Assertions and raw HTTP

/// Asserts an error envelope with `status` and `code` and returns its body.
pub async fn assert_envelope(response: reqwest::Response, status: u16, code: &str) -> Value {
    assert_eq!(response.status().as_u16(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type}"
    );
    let request_id = response
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = response.json().await.expect("JSON envelope");
    assert_eq!(body["statusCode"], status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(body["message"].is_string(), "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(
        body["requestId"].as_str(),
        request_id.as_deref(),
        "requestId matches the header: {body}"
    );
    body
}

/// The JSON echo of a 200 response.
pub async fn echoed(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200, "echo status");
    response.json().await.expect("echo JSON")
}

/// A raw HTTP/1.1 exchange: writes `request`, reads until the server closes (or `DEADLINE`).
/// Returns the status code and the whole response text.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    read_response(&mut stream).await
}

/// Reads a response until the connection closes.
pub async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, stream.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// The body of a raw response (after the blank line), decoding nothing.
pub fn raw_body(text: &str) -> &str {
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// Bytes helper for request bodies.
pub fn bytes(len: usize) -> Bytes {
    Bytes::from(vec![b'x'; len])
}

/// An instance that passes health checks but drops every other request without answering,
/// after reading its head: a process that accepts and then crashes mid-request.
pub async fn start_broken_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind broken upstream");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match stream.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    if head.starts_with(b"GET /healthz ") {
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if stream.write_all(ok).await.is_err() {
                            return;
                        }
                    } else {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// An address nothing listens on.
pub async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

/// The value of one metric sample line (`name{labels} value`) in a `/metrics` text.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}
