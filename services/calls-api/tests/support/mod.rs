//! The integration-test harness: the real calls-api, in process, against real dependencies.
//!
//! [`spawn_app`] gives each test its own world, zero-to-production style:
//! - a fresh PostgreSQL database (created from `CALLS_TEST_POSTGRES_URL`, default
//!   `postgres://postgres@127.0.0.1:5432/postgres`) or a SQLite file in the temp directory;
//! - a unique `NATS_SUBJECT_PREFIX` (`t<random>`) on the shared NATS (`CALLS_TEST_NATS_URL`,
//!   default `nats://127.0.0.1:4222`), or the in-process bus;
//! - `calls_api::run_with_bus` on `127.0.0.1:0`, `/healthz` polled until it answers;
//! - an [`EventLog`] subscribed to `{prefix}.evt.>` *before* the service starts, so no event is
//!   missed.
//!
//! Dropping the [`TestApp`] (also when the test panics) stops the service, drops the database
//! and deletes the test's JetStream stream.
//!
//! Every response read through [`Api`] is checked for leaked secrets (the JWT secret, the
//! internal and media credentials, the Agora certificate, any access token the test minted), and
//! [`Resp::ok`] / [`Resp::err`] check the contract's envelopes, including that an error's
//! `requestId` is the response's `x-request-id`.

#![allow(dead_code)] // each test binary uses its own part of the harness
#![allow(clippy::unwrap_used)]

pub mod agora_rest;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use calls_api::config::{AgoraRestConfig, CallRules, Config, DatabaseConfig, MembershipMode};
use calls_bus::{Bus, BusError, Headers, PresenceMessage, Subjects};
use common::auth::JwtConfig;
use common::config::Secret;
use common::error::ErrorEnvelope;
use common::shutdown::CancellationToken;
use futures::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Connection;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub const JWT_SECRET: &str = "integration-jwt-secret-4f0c2b9a8e71d3";
pub const INTERNAL_TOKEN: &str = "integration-internal-token-91ad07c4";
pub const MEDIA_CREDENTIAL: &str = "integration-media-credential-5e2f88";
/// Agora's published test credentials.
pub const AGORA_APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
pub const AGORA_CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";
/// `AGORA_NCS_SECRET` when [`Options::ncs`] is set.
pub const NCS_SECRET: &str = "integration-ncs-secret-0b7e41d2";

/// How long anything the tests wait for may take before it counts as never happening.
pub const DEADLINE: Duration = Duration::from_secs(15);

pub fn admin_url() -> String {
    std::env::var("CALLS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn shared_nats_url() -> String {
    std::env::var("CALLS_TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

fn tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..12].to_owned()
}

// ----- options ---------------------------------------------------------------------------------

/// Which database and bus the service runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    /// The scaled deployment: a fresh PostgreSQL database and the real NATS.
    PostgresNats,
    /// The embedded default: a SQLite file and the in-process bus.
    SqliteLocal,
}

/// What to start; `Options::default()` is the scaled deployment in open membership mode with
/// production timers, except that the workers poll every 50 ms.
#[derive(Clone, Debug)]
pub struct Options {
    pub stack: Stack,
    /// A NATS other than the shared one (a test-owned `nats-server`).
    pub nats_url: Option<String>,
    /// Reach PostgreSQL through this address instead of its own (a test-owned proxy).
    pub postgres_via: Option<SocketAddr>,
    pub membership: MembershipMode,
    /// Set `INTERNAL_API_TOKEN` (always set in table mode).
    pub internal_token: bool,
    pub ring_timeout_seconds: u64,
    pub disconnect_grace_seconds: u64,
    pub max_duration_seconds: u64,
    pub max_participants: u32,
    pub max_invitees: u32,
    pub alone_timeout_seconds: u64,
    /// `CALL_MEDIA_GRACE_SECONDS`.
    pub media_grace_seconds: u64,
    pub media_token_url: Option<String>,
    pub media_token_timeout_ms: u64,
    pub heartbeat_seconds: u64,
    pub worker_poll_ms: u64,
    /// `DATABASE_ACQUIRE_TIMEOUT_MS`.
    pub database_acquire_timeout_ms: u64,
    /// `JWT_ISSUER` / `JWT_AUDIENCE`.
    pub jwt_issuer: Option<String>,
    pub jwt_audience: Option<String>,
    /// Set `AGORA_NCS_SECRET` to [`NCS_SECRET`].
    pub ncs: bool,
    /// Send kicks to this Agora RESTful API (an [`agora_rest::AgoraRestDouble`]'s URL), with
    /// its credentials and [`AGORA_APP_ID`].
    pub agora_rest_url: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            stack: Stack::PostgresNats,
            nats_url: None,
            postgres_via: None,
            membership: MembershipMode::Open,
            internal_token: false,
            ring_timeout_seconds: 45,
            disconnect_grace_seconds: 30,
            max_duration_seconds: 14_400,
            max_participants: 16,
            max_invitees: 100,
            alone_timeout_seconds: 120,
            media_grace_seconds: 30,
            media_token_url: None,
            media_token_timeout_ms: 2_000,
            heartbeat_seconds: 5,
            worker_poll_ms: 50,
            database_acquire_timeout_ms: 5_000,
            jwt_issuer: None,
            jwt_audience: None,
            ncs: false,
            agora_rest_url: None,
        }
    }
}

impl Options {
    pub fn on(stack: Stack) -> Self {
        Options {
            stack,
            ..Options::default()
        }
    }

    pub fn table_mode(mut self) -> Self {
        self.membership = MembershipMode::Table;
        self.internal_token = true;
        self
    }
}

// ----- databases -------------------------------------------------------------------------------

/// A database of one test's own.
#[derive(Clone, Debug)]
pub struct TestDb {
    /// What the service connects to.
    pub url: String,
    kind: DbKind,
}

#[derive(Clone, Debug)]
enum DbKind {
    Postgres { name: String },
    Sqlite { path: PathBuf },
}

/// `host:port` of a `postgres://user@host:port/db` URL.
pub fn postgres_authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest)
}

impl TestDb {
    pub async fn create(stack: Stack, postgres_via: Option<SocketAddr>) -> TestDb {
        match stack {
            Stack::PostgresNats => {
                let name = format!("calls_api_test_{}", uuid::Uuid::new_v4().simple());
                let admin = admin_url();
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {admin}: {e}"));
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .unwrap();
                conn.close().await.ok();
                let (base, _) = admin.rsplit_once('/').unwrap();
                let mut url = format!("{base}/{name}");
                if let Some(via) = postgres_via {
                    url = url.replacen(postgres_authority(&admin), &via.to_string(), 1);
                }
                TestDb {
                    url,
                    kind: DbKind::Postgres { name },
                }
            }
            Stack::SqliteLocal => {
                let path = std::env::temp_dir().join(format!("calls_api_test_{}.db", tag()));
                TestDb {
                    url: format!("sqlite://{}", path.display()),
                    kind: DbKind::Sqlite { path },
                }
            }
        }
    }

    /// Drops the database (forcibly: the service may still hold connections).
    pub async fn destroy(&self) {
        match &self.kind {
            DbKind::Postgres { name } => {
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
                    let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut conn)
                    .await;
                    conn.close().await.ok();
                }
            }
            DbKind::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    std::fs::remove_file(p).ok();
                }
            }
        }
    }
}

// ----- the application -------------------------------------------------------------------------

/// One running calls-api replica.
struct Instance {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), calls_api::RunError>>,
}

/// A running calls-api with its database, bus, and a log of every event it published.
pub struct TestApp {
    pub api: Api,
    pub addr: SocketAddr,
    pub subjects: Subjects,
    /// The test's own connection to the bus (how signaling sees it).
    pub bus: Bus,
    pub events: EventLog,
    pub db: TestDb,
    pub options: Options,
    nats_url: String,
    /// The service's bus, for replicas on the in-process bus.
    app_bus: Bus,
    instances: Vec<Instance>,
}

impl std::ops::Deref for TestApp {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

/// The configuration `spawn_app` runs the service with.
pub fn build_config(options: &Options, db_url: &str, nats_url: &str, prefix: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        database: DatabaseConfig {
            url: Secret::new(db_url),
            max_connections: 6,
            acquire_timeout_ms: options.database_acquire_timeout_ms,
        },
        nats_url: nats_url.to_owned(),
        nats_subject_prefix: prefix.to_owned(),
        nats_stream_replicas: 1,
        jwt: JwtConfig {
            jwt_secret: Some(Secret::new(JWT_SECRET)),
            jwt_issuer: options.jwt_issuer.clone(),
            jwt_audience: options.jwt_audience.clone(),
            ..JwtConfig::default()
        },
        membership_mode: options.membership,
        internal_api_token: (options.internal_token || options.membership == MembershipMode::Table)
            .then(|| Secret::new(INTERNAL_TOKEN)),
        calls: CallRules {
            ring_timeout_seconds: options.ring_timeout_seconds,
            disconnect_grace_seconds: options.disconnect_grace_seconds,
            max_duration_seconds: options.max_duration_seconds,
            max_participants: options.max_participants,
            max_invitees: options.max_invitees,
            alone_timeout_seconds: options.alone_timeout_seconds,
            media_grace_seconds: options.media_grace_seconds,
        },
        media_token_url: options.media_token_url.clone(),
        media_token_service_token: options
            .media_token_url
            .as_ref()
            .map(|_| Secret::new(MEDIA_CREDENTIAL)),
        media_token_timeout_ms: options.media_token_timeout_ms,
        agora_ncs_secret: options.ncs.then(|| Secret::new(NCS_SECRET)),
        agora_rest: AgoraRestConfig {
            app_id: options
                .agora_rest_url
                .as_ref()
                .map(|_| AGORA_APP_ID.to_owned()),
            customer_id: options
                .agora_rest_url
                .as_ref()
                .map(|_| agora_rest::CUSTOMER_ID.to_owned()),
            customer_secret: options
                .agora_rest_url
                .as_ref()
                .map(|_| Secret::new(agora_rest::CUSTOMER_SECRET)),
            rest_url: options
                .agora_rest_url
                .clone()
                .unwrap_or_else(|| "https://api.sd-rtn.com".into()),
            ban_seconds: 0,
        },
        max_body_bytes: common::error::DEFAULT_BODY_LIMIT,
        presence_heartbeat_seconds: options.heartbeat_seconds,
        worker_poll_ms: options.worker_poll_ms,
    }
}

async fn connect_bus(stack: Stack, nats_url: &str, local: Option<&Bus>) -> Bus {
    match stack {
        Stack::PostgresNats => Bus::connect(nats_url)
            .await
            .unwrap_or_else(|e| panic!("NATS is not reachable at {nats_url}: {e}")),
        Stack::SqliteLocal => local.cloned().unwrap_or_else(Bus::local),
    }
}

async fn start_instance(config: Config, bus: Bus) -> (SocketAddr, Instance) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let mut task = tokio::spawn(calls_api::run_with_bus(
        config,
        bus,
        listener,
        shutdown.clone().cancelled_owned(),
    ));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let started = Instant::now();
    loop {
        if task.is_finished() {
            let result = (&mut task).await;
            panic!("calls-api stopped while starting: {result:?}");
        }
        if let Ok(resp) = http.get(format!("http://{addr}/healthz")).send().await
            && resp.status().is_success()
        {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "calls-api never answered /healthz on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (addr, Instance { shutdown, task })
}

/// Starts calls-api as `options` say, with a database, subject prefix and event log of its own.
pub async fn spawn_app(options: Options) -> TestApp {
    let db = TestDb::create(options.stack, options.postgres_via).await;
    let nats_url = options.nats_url.clone().unwrap_or_else(shared_nats_url);
    let prefix = format!("t{}", tag());
    let subjects = Subjects::new(prefix.clone());

    let app_bus = connect_bus(options.stack, &nats_url, None).await;
    // On NATS the test talks over a connection of its own, as signaling would; in process it
    // shares the one bus there is.
    let bus = connect_bus(options.stack, &nats_url, Some(&app_bus)).await;
    let events = EventLog::start(&bus, &subjects.all_events()).await;

    let config = build_config(&options, &db.url, &nats_url, &prefix);
    let (addr, instance) = start_instance(config, app_bus.clone()).await;
    TestApp {
        api: Api::new(format!("http://{addr}")),
        addr,
        subjects,
        bus,
        events,
        db,
        options,
        nats_url,
        app_bus,
        instances: vec![instance],
    }
}

impl TestApp {
    /// Starts another replica on the same database and subject prefix (its own NATS
    /// connection), and returns a client of it sharing this app's tokens.
    pub async fn spawn_replica(&mut self) -> Api {
        let bus = connect_bus(self.options.stack, &self.nats_url, Some(&self.app_bus)).await;
        let config = build_config(
            &self.options,
            &self.db.url,
            &self.nats_url,
            self.subjects.prefix(),
        );
        let (addr, instance) = start_instance(config, bus).await;
        self.instances.push(instance);
        self.api.at(format!("http://{addr}"))
    }

    /// Sends a command as signaling does (`{prefix}.cmd.<name>`) and returns the ack. Retries
    /// while calls-api's subscription is not up yet.
    pub async fn command(&self, name: &str, user: &str, payload: Value) -> Value {
        let request = json!({"userId": user, "socketId": format!("sock-{user}"), "nodeId": "node-test", "payload": payload});
        self.request_raw(
            &self.subjects.command(name),
            serde_json::to_vec(&request).unwrap(),
        )
        .await
    }

    /// Sends a presence report as a request and returns the ack.
    pub async fn presence(&self, message: &PresenceMessage) -> Value {
        let subject = self.subjects.presence(message.node_id());
        self.request_raw(&subject, serde_json::to_vec(message).unwrap())
            .await
    }

    /// A request on the bus with raw bytes; the reply parsed as JSON.
    pub async fn request_raw(&self, subject: &str, payload: Vec<u8>) -> Value {
        let started = Instant::now();
        loop {
            match self
                .bus
                .request(
                    subject,
                    Headers::new(),
                    payload.clone().into(),
                    Duration::from_secs(5),
                )
                .await
            {
                Ok(reply) => {
                    return serde_json::from_slice(&reply.payload).unwrap_or_else(|e| {
                        panic!(
                            "calls-api answered {subject} with something that is not JSON ({e}): {:?}",
                            String::from_utf8_lossy(&reply.payload)
                        )
                    });
                }
                Err(BusError::NoResponders) if started.elapsed() < DEADLINE => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("signaling's request on {subject} failed: {e}"),
            }
        }
    }

    /// Polls `GET /calls/:id` as `user` until `done` holds for the call, and returns it.
    pub async fn wait_for_call(
        &self,
        user: &str,
        id: &str,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let started = Instant::now();
        loop {
            let call = self.call(user, id).await.ok(200);
            if done(&call) {
                return call;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "{what} never happened; the call stayed {call:#}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The JetStream stream of this app's prefix.
    pub fn stream_name(&self) -> String {
        calls_api::workers::stream_name(&self.subjects)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        for instance in &self.instances {
            instance.shutdown.cancel();
        }
        let tasks: Vec<_> = self.instances.drain(..).map(|i| i.task).collect();
        let db = self.db.clone();
        let stream = (self.options.stack == Stack::PostgresNats && self.options.nats_url.is_none())
            .then(|| (self.nats_url.clone(), self.stream_name()));
        // Clean up on a thread with a runtime of its own: this may run while a failed test
        // unwinds, and the service's tasks keep running on the test's runtime meanwhile.
        let cleanup = std::thread::spawn(move || {
            let started = Instant::now();
            while tasks.iter().any(|t| !t.is_finished())
                && started.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            for task in &tasks {
                task.abort();
            }
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                if let Some((url, name)) = stream
                    && let Ok(bus) = Bus::connect(&url).await
                {
                    let _ = bus.delete_stream(&name).await;
                }
                db.destroy().await;
            });
        });
        let _ = cleanup.join();
    }
}

// ----- REST client -----------------------------------------------------------------------------

/// Access tokens minted so far, by user: every response is checked for all of them.
#[derive(Clone, Default)]
pub struct Tokens(Arc<Mutex<HashMap<String, String>>>);

impl Tokens {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().values().cloned().collect()
    }
}

/// A REST client of one replica.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    tokens: Tokens,
}

/// A response, read in full.
#[derive(Clone, Debug)]
pub struct Resp {
    /// `METHOD path`, for failure messages.
    pub what: String,
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
    /// The body as JSON (`Null` if it is not JSON; see `text`).
    pub body: Value,
}

impl Api {
    fn new(base: String) -> Api {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Api {
            base,
            http,
            tokens: Tokens::default(),
        }
    }

    /// A client of another replica, sharing the tokens.
    pub fn at(&self, base: String) -> Api {
        Api {
            base,
            http: self.http.clone(),
            tokens: self.tokens.clone(),
        }
    }

    /// A valid access token of `user` (minted once per user and app).
    pub fn token(&self, user: &str) -> String {
        self.tokens
            .0
            .lock()
            .unwrap()
            .entry(user.to_owned())
            .or_insert_with(|| {
                common::auth::mint_hs256(JWT_SECRET, user, Duration::from_secs(3600))
            })
            .clone()
    }

    /// Remembers a token the test forged, so responses are checked for it too.
    pub fn remember_token(&self, token: &str) {
        if token.len() < 8 {
            return; // too short to be a credential; would match any body
        }
        self.tokens
            .0
            .lock()
            .unwrap()
            .insert(format!("forged:{token}"), token.to_owned());
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request without credentials.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        let resp = self.request(Method::GET, "/metrics").send().await.unwrap();
        resp.text().await.unwrap()
    }

    /// Polls `/metrics` until it contains `line`.
    pub async fn wait_for_metric(&self, line: &str) {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let text = self.metrics().await;
            if text.contains(line) {
                return;
            }
            assert!(Instant::now() < deadline, "no {line} in {text}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A request as `user`.
    pub fn request_as(&self, user: &str, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.request(method, path).bearer_auth(self.token(user))
    }

    /// Sends and reads the response; checks it leaks no secret.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Resp {
        let built = request.build().unwrap();
        let what = format!("{} {}", built.method(), built.url().path());
        let response = self
            .http
            .execute(built)
            .await
            .unwrap_or_else(|e| panic!("{what}: the client got no response: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        let resp = Resp {
            what,
            status,
            headers,
            text,
            body,
        };
        self.check_no_secrets(&resp);
        resp
    }

    fn check_no_secrets(&self, resp: &Resp) {
        let lower = resp.text.to_ascii_lowercase();
        for secret in [
            JWT_SECRET,
            INTERNAL_TOKEN,
            MEDIA_CREDENTIAL,
            AGORA_CERT,
            NCS_SECRET,
            agora_rest::CUSTOMER_SECRET,
        ] {
            assert!(
                !lower.contains(&secret.to_ascii_lowercase()),
                "{}: the response body shows a secret to the client: {}",
                resp.what,
                resp.text
            );
        }
        for token in self.tokens.all() {
            assert!(
                !resp.text.contains(&token),
                "{}: the response body echoes an access token: {}",
                resp.what,
                resp.text
            );
        }
    }

    pub async fn get(&self, user: &str, path: &str) -> Resp {
        self.send(self.request_as(user, Method::GET, path)).await
    }

    pub async fn post(&self, user: &str, path: &str, body: Value) -> Resp {
        self.send(self.request_as(user, Method::POST, path).json(&body))
            .await
    }

    /// A POST without a body (how mobile clients call the action endpoints).
    pub async fn post_empty(&self, user: &str, path: &str) -> Resp {
        self.send(self.request_as(user, Method::POST, path)).await
    }

    pub async fn patch(&self, user: &str, path: &str, body: Value) -> Resp {
        self.send(self.request_as(user, Method::PATCH, path).json(&body))
            .await
    }

    // --- the calls API, by endpoint ---

    pub async fn try_initiate(&self, user: &str, room: &str, body: Value) -> Resp {
        self.post(user, &format!("/api/v1/calls/rooms/{room}/initiate"), body)
            .await
    }

    /// Initiates a call and expects a new one (201); returns the call.
    pub async fn initiate(&self, user: &str, room: &str, invitees: &[&str], group: bool) -> Value {
        let call = self
            .try_initiate(
                user,
                room,
                json!({"type": "video", "isGroupCall": group, "inviteUserIds": invitees}),
            )
            .await
            .ok(201);
        assert_call_shape(&call);
        call
    }

    pub async fn join(&self, user: &str, id: &str) -> Resp {
        self.post_empty(user, &format!("/api/v1/calls/{id}/join"))
            .await
    }

    pub async fn set_status(&self, user: &str, id: &str, status: &str) -> Resp {
        self.patch(
            user,
            &format!("/api/v1/calls/{id}/status"),
            json!({"status": status}),
        )
        .await
    }

    pub async fn update_media(&self, user: &str, id: &str, body: Value) -> Resp {
        self.patch(user, &format!("/api/v1/calls/{id}/media"), body)
            .await
    }

    pub async fn end(&self, user: &str, id: &str) -> Resp {
        self.post_empty(user, &format!("/api/v1/calls/{id}/end"))
            .await
    }

    pub async fn call(&self, user: &str, id: &str) -> Resp {
        self.get(user, &format!("/api/v1/calls/{id}")).await
    }

    pub async fn active(&self, user: &str, room: &str) -> Resp {
        self.get(user, &format!("/api/v1/calls/rooms/{room}/active"))
            .await
    }

    pub async fn media_session(&self, user: &str, id: &str) -> Resp {
        self.post_empty(user, &format!("/api/v1/calls/{id}/media/session"))
            .await
    }

    pub async fn history(&self, user: &str, query: &str) -> Resp {
        self.get(user, &format!("/api/v1/calls{query}")).await
    }

    /// The internal membership API, with the internal credential.
    pub async fn internal(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let mut request = self.request(method, path).bearer_auth(INTERNAL_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        self.send(request).await
    }

    /// Makes `users` the members of `room`.
    pub async fn set_members(&self, room: &str, users: &[&str]) {
        self.internal(
            Method::PUT,
            &format!("/internal/v1/rooms/{room}/members"),
            Some(json!({"userIds": users})),
        )
        .await
        .ok(200);
    }
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts a success envelope with `status` and returns its `data`.
    #[track_caller]
    pub fn ok(&self, status: u16) -> Value {
        assert_eq!(
            self.status, status,
            "{}: expected HTTP {status}, the client got {}: {}",
            self.what, self.status, self.text
        );
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{}: a success response must be JSON, got content-type {:?}",
            self.what,
            self.header("content-type")
        );
        assert_eq!(
            self.body["statusCode"],
            json!(status),
            "{}: statusCode must repeat the HTTP status: {}",
            self.what,
            self.text
        );
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}: the envelope needs a human message: {}",
            self.what,
            self.text
        );
        let object = self.body.as_object().unwrap();
        assert!(
            object.contains_key("data"),
            "{}: the envelope has no data: {}",
            self.what,
            self.text
        );
        assert_eq!(
            object.len(),
            3,
            "{}: a success envelope is exactly statusCode, message, data: {}",
            self.what,
            self.text
        );
        self.body["data"].clone()
    }

    /// Asserts the error envelope of CONTRACT section 1 with `status` and `code`, including
    /// `requestId` equal to the `x-request-id` header.
    #[track_caller]
    pub fn err(&self, status: u16, code: &str) -> ErrorEnvelope {
        assert_eq!(
            (self.status, self.body["code"].as_str()),
            (status, Some(code)),
            "{}: expected {status} {code}, the client got {}: {}",
            self.what,
            self.status,
            self.text
        );
        assert!(
            self.header("content-type")
                .is_some_and(|c| c.starts_with("application/json")),
            "{}: an error must be a JSON envelope, got content-type {:?}: {}",
            self.what,
            self.header("content-type"),
            self.text
        );
        let envelope: ErrorEnvelope =
            serde_json::from_value(self.body.clone()).unwrap_or_else(|e| {
                panic!("{}: not the error envelope ({e}): {}", self.what, self.text)
            });
        assert_eq!(
            envelope.status_code, status,
            "{}: statusCode must repeat the HTTP status",
            self.what
        );
        let reason = http::StatusCode::from_u16(status)
            .unwrap()
            .canonical_reason()
            .unwrap();
        assert_eq!(
            envelope.error, reason,
            "{}: `error` must be the HTTP reason phrase",
            self.what
        );
        assert!(
            !envelope.message.is_empty(),
            "{}: the error needs a human message",
            self.what
        );
        let header = self.header("x-request-id");
        assert!(
            header.is_some(),
            "{}: the response has no x-request-id header",
            self.what
        );
        assert_eq!(
            envelope.request_id.as_deref(),
            header,
            "{}: the body's requestId must be the x-request-id header: {}",
            self.what,
            self.text
        );
        for key in self.body.as_object().unwrap().keys() {
            assert!(
                [
                    "statusCode",
                    "message",
                    "error",
                    "code",
                    "requestId",
                    "details"
                ]
                .contains(&key.as_str()),
                "{}: unexpected key {key:?} in the error envelope: {}",
                self.what,
                self.text
            );
        }
        if code == "VALIDATION_FAILED" {
            assert!(
                !envelope.details.is_empty(),
                "{}: a validation failure must say which field: {}",
                self.what,
                self.text
            );
        }
        envelope
    }
}

// ----- resource shapes -------------------------------------------------------------------------

const CALL_KEYS: [&str; 16] = [
    "id",
    "chatRoomId",
    "type",
    "isGroupCall",
    "status",
    "initiatorId",
    "maxParticipants",
    "createdAt",
    "startedAt",
    "endedAt",
    "endReason",
    "endedBy",
    "seq",
    "ringTimeoutSeconds",
    "mediaSeconds",
    "participants",
];

const PARTICIPANT_KEYS: [&str; 13] = [
    "userId",
    "role",
    "status",
    "isMicMuted",
    "isCameraOff",
    "isSharingScreen",
    "invitedAt",
    "joinedAt",
    "leftAt",
    "declineReason",
    "isConnected",
    "inMedia",
    "mediaSeconds",
];

/// Asserts an RFC 3339 UTC timestamp.
#[track_caller]
pub fn assert_timestamp(value: &Value, what: &str) {
    let s = value
        .as_str()
        .unwrap_or_else(|| panic!("{what} must be an RFC 3339 string, got {value}"));
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{what} is not RFC 3339 ({e}): {s}"));
    assert!(s.ends_with('Z'), "{what} must be UTC: {s}");
}

#[track_caller]
fn assert_optional_timestamp(value: &Value, what: &str) {
    if !value.is_null() {
        assert_timestamp(value, what);
    }
}

fn one_of(value: &Value, allowed: &[&str]) -> bool {
    value.as_str().is_some_and(|s| allowed.contains(&s))
}

/// Asserts the Call resource of CONTRACT section 3, exactly (no internal fields leak).
#[track_caller]
pub fn assert_call_shape(call: &Value) {
    let object = call
        .as_object()
        .unwrap_or_else(|| panic!("a Call must be an object: {call}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = CALL_KEYS.to_vec();
    expected.sort_unstable();
    assert_eq!(
        keys, expected,
        "the Call's fields differ from the contract: {call:#}"
    );
    assert!(
        uuid::Uuid::parse_str(call["id"].as_str().unwrap_or_default()).is_ok(),
        "id must be a UUID: {call}"
    );
    assert!(call["chatRoomId"].is_string() && call["initiatorId"].is_string());
    assert!(
        one_of(&call["type"], &["audio", "video"]),
        "type: {}",
        call["type"]
    );
    assert!(call["isGroupCall"].is_boolean());
    assert!(
        one_of(&call["status"], &["ringing", "active", "ended"]),
        "status: {}",
        call["status"]
    );
    assert!(call["maxParticipants"].is_u64() && call["seq"].is_u64());
    assert!(call["mediaSeconds"].is_u64(), "mediaSeconds: {call}");
    assert_timestamp(&call["createdAt"], "createdAt");
    assert_optional_timestamp(&call["startedAt"], "startedAt");
    assert_optional_timestamp(&call["endedAt"], "endedAt");
    let ended = call["status"] == "ended";
    assert_eq!(
        !call["endedAt"].is_null(),
        ended,
        "endedAt is set exactly when the call ended: {call:#}"
    );
    assert_eq!(
        !call["endReason"].is_null(),
        ended,
        "endReason is set exactly when the call ended: {call:#}"
    );
    if ended {
        assert!(
            one_of(
                &call["endReason"],
                &[
                    "completed",
                    "cancelled",
                    "declined",
                    "missed",
                    "busy",
                    "timeout",
                    "failed"
                ]
            ),
            "endReason: {}",
            call["endReason"]
        );
    }
    assert!(call["endedBy"].is_null() || call["endedBy"].is_string());
    let participants = call["participants"].as_array().unwrap();
    assert!(!participants.is_empty());
    for p in participants {
        assert_participant_shape(p);
    }
    assert_eq!(
        participants[0]["userId"], call["initiatorId"],
        "the host comes first: {call:#}"
    );
    assert_eq!(participants[0]["role"], "host");
}

/// Asserts the Participant resource of CONTRACT section 3, exactly.
#[track_caller]
pub fn assert_participant_shape(p: &Value) {
    let object = p
        .as_object()
        .unwrap_or_else(|| panic!("a Participant must be an object: {p}"));
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut expected = PARTICIPANT_KEYS.to_vec();
    expected.sort_unstable();
    assert_eq!(
        keys, expected,
        "the Participant's fields differ from the contract: {p:#}"
    );
    assert!(p["userId"].is_string());
    assert!(
        one_of(&p["role"], &["host", "participant"]),
        "role: {}",
        p["role"]
    );
    assert!(
        one_of(
            &p["status"],
            &["invited", "ringing", "joined", "left", "declined", "missed"]
        ),
        "status: {}",
        p["status"]
    );
    for flag in [
        "isMicMuted",
        "isCameraOff",
        "isSharingScreen",
        "isConnected",
        "inMedia",
    ] {
        assert!(p[flag].is_boolean(), "{flag} must be a boolean: {p}");
    }
    assert_timestamp(&p["invitedAt"], "invitedAt");
    assert_optional_timestamp(&p["joinedAt"], "joinedAt");
    assert_optional_timestamp(&p["leftAt"], "leftAt");
    assert!(p["declineReason"].is_null() || p["declineReason"].is_string());
    assert!(p["mediaSeconds"].is_u64(), "mediaSeconds: {p}");
}

/// The participant record of `user` in `call`.
#[track_caller]
pub fn participant<'a>(call: &'a Value, user: &str) -> &'a Value {
    call["participants"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["userId"] == user))
        .unwrap_or_else(|| panic!("{user} is not in the call: {call:#}"))
}

pub fn id_of(call: &Value) -> String {
    call["id"].as_str().unwrap().to_owned()
}

/// `(userId, status)` of every participant, in order.
pub fn statuses(call: &Value) -> Vec<(String, String)> {
    call["participants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["userId"].as_str().unwrap().to_owned(),
                p["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

// ----- events on the bus -----------------------------------------------------------------------

/// One message the service published.
#[derive(Clone, Debug)]
pub struct BusEvent {
    pub subject: String,
    /// `event` of the `{"event","data"}` wire message (empty if it was not that shape).
    pub name: String,
    pub data: Value,
    /// The whole message as JSON.
    pub message: Value,
    pub headers: Headers,
}

impl BusEvent {
    pub fn seq(&self) -> Option<u64> {
        self.data["seq"].as_u64()
    }
}

/// Every message on a subject (wildcards allowed), collected from before the service started.
#[derive(Clone)]
pub struct EventLog {
    seen: Arc<Mutex<Vec<BusEvent>>>,
    notify: Arc<Notify>,
    _task: Arc<AbortOnDrop>,
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl EventLog {
    pub async fn start(bus: &Bus, subject: &str) -> EventLog {
        let mut subscription = bus.subscribe(subject).await.unwrap();
        bus.flush().await.unwrap();
        let seen: Arc<Mutex<Vec<BusEvent>>> = Arc::default();
        let notify = Arc::new(Notify::new());
        let task = {
            let (seen, notify) = (seen.clone(), notify.clone());
            tokio::spawn(async move {
                while let Some(message) = subscription.next().await {
                    let parsed: Value =
                        serde_json::from_slice(&message.payload).unwrap_or(Value::Null);
                    let event = BusEvent {
                        subject: message.subject.clone(),
                        name: parsed["event"].as_str().unwrap_or_default().to_owned(),
                        data: parsed["data"].clone(),
                        message: parsed,
                        headers: message.headers.clone(),
                    };
                    seen.lock().unwrap().push(event);
                    notify.notify_waiters();
                }
            })
        };
        EventLog {
            seen,
            notify,
            _task: Arc::new(AbortOnDrop(task)),
        }
    }

    pub fn all(&self) -> Vec<BusEvent> {
        self.seen.lock().unwrap().clone()
    }

    /// The events on exactly `subject`, in arrival order.
    pub fn on(&self, subject: &str) -> Vec<BusEvent> {
        self.all()
            .into_iter()
            .filter(|e| e.subject == subject)
            .collect()
    }

    /// Waits until `found` finds something in the log.
    pub async fn wait_until<T>(&self, what: &str, found: impl Fn(&[BusEvent]) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(value) = found(&self.seen.lock().unwrap()) {
                return value;
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => {
                    let log: Vec<String> = self.all().iter().map(|e| format!("{} {} {}", e.subject, e.name, e.data)).collect();
                    panic!("{what} never reached the bus; it carried:\n{}", log.join("\n"));
                }
            }
        }
    }

    /// Waits for the first `name` event on `subject` whose data satisfies `matches`.
    pub async fn wait_for_where(
        &self,
        subject: &str,
        name: &str,
        matches: impl Fn(&Value) -> bool,
    ) -> BusEvent {
        self.wait_until(&format!("a {name} event on {subject}"), |events| {
            events
                .iter()
                .find(|e| e.subject == subject && e.name == name && matches(&e.data))
                .cloned()
        })
        .await
    }

    /// Waits for the first `name` event on `subject`.
    pub async fn wait_for(&self, subject: &str, name: &str) -> BusEvent {
        self.wait_for_where(subject, name, |_| true).await
    }

    /// Waits until `subject` carried at least `n` events, and returns them all.
    pub async fn wait_for_count(&self, subject: &str, n: usize) -> Vec<BusEvent> {
        self.wait_until(&format!("{n} events on {subject}"), |events| {
            let on: Vec<BusEvent> = events
                .iter()
                .filter(|e| e.subject == subject)
                .cloned()
                .collect();
            (on.len() >= n).then_some(on)
        })
        .await
    }
}

/// Asserts that `events` (one call's subject) carry `seq` 1, 2, … `last` in order, each once.
#[track_caller]
pub fn assert_gap_free(events: &[BusEvent], last: u64) {
    let seqs: Vec<Option<u64>> = events.iter().map(BusEvent::seq).collect();
    let expected: Vec<Option<u64>> = (1..=last).map(Some).collect();
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        seqs, expected,
        "a call's events must carry seq 1..={last} in order, each once; got {names:?}"
    );
}

// ----- other processes the tests own -----------------------------------------------------------

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn wait_for_port(port: u16, what: &str) {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < DEADLINE,
            "{what} never listened on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `nats-server` with JetStream of the test's own, on a free port, that the test may stop and
/// start again (same port, same storage).
pub struct NatsServer {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl NatsServer {
    pub async fn start() -> NatsServer {
        let dir = std::env::temp_dir().join(format!("calls_api_test_nats_{}", tag()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut server = NatsServer {
            port: free_port(),
            dir,
            child: None,
        };
        server.run().await;
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        let binary =
            std::env::var("NATS_SERVER_BIN").unwrap_or_else(|_| "/usr/sbin/nats-server".to_owned());
        let child = Command::new(&binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        self.child = Some(child);
        wait_for_port(self.port, "the test's nats-server").await;
    }

    /// Kills the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same storage.
    pub async fn restart(&mut self) {
        self.stop();
        self.run().await;
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// media-token, in process on a loopback port.
pub struct MediaTokenServer {
    pub url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl MediaTokenServer {
    /// Starts media-token with Agora's test credentials, or with none.
    pub async fn start(with_agora: bool) -> MediaTokenServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = media_token::Config {
            listen: addr,
            service_tokens: vec![Secret::new(MEDIA_CREDENTIAL)],
            agora: media_token::AgoraConfig {
                app_id: with_agora.then(|| AGORA_APP_ID.to_owned()),
                app_certificate: with_agora.then(|| Secret::new(AGORA_CERT)),
                token_ttl_seconds: 3600,
            },
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(media_token::run(config, listener, async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::builder().no_proxy().build().unwrap();
        let started = Instant::now();
        loop {
            if let Ok(resp) = http.get(format!("http://{addr}/healthz")).send().await
                && resp.status().is_success()
            {
                break;
            }
            assert!(
                started.elapsed() < DEADLINE,
                "media-token never became healthy"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        MediaTokenServer {
            url: format!("http://{addr}"),
            stop: Some(stop),
        }
    }
}

impl Drop for MediaTokenServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs each listed test body once per stack, as `mod postgres_nats` and `mod sqlite_local`
/// (declare the module with `#[macro_use] mod support;`).
#[allow(unused_macros)]
macro_rules! on_both_stacks {
    ($($name:ident),* $(,)?) => {
        mod postgres_nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Stack::PostgresNats).await;
                }
            )*
        }
        mod sqlite_local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Stack::SqliteLocal).await;
                }
            )*
        }
    };
}
