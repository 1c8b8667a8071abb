//! Test harness: signaling in process, a fake calls-api on the bus, and a minimal Socket.IO
//! client over HTTP long-polling (which also exercises the polling transport; the official
//! JavaScript client covers WebSocket in tests/js).

#![allow(clippy::unwrap_used, dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use calls_bus::{Bus, EventMessage, Headers, PresenceMessage, Subjects};
use clap::Parser;
use common::shutdown::CancellationToken;
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub const SECRET: &str = "signaling-rust-tests-secret-0123456789";
pub const WAIT: Duration = Duration::from_secs(5);

pub fn token(user: &str) -> String {
    common::auth::mint_hs256(SECRET, user, Duration::from_secs(3600))
}

pub fn unique_prefix() -> String {
    format!("rtest.{}", uuid::Uuid::new_v4().simple())
}

/// A running signaling node.
pub struct Node {
    pub base: String,
    pub node_id: String,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<Result<(), signaling::ServeError>>,
}

impl Node {
    pub async fn start(bus: Bus, prefix: &str, extra: &[(&str, &str)]) -> Node {
        let node_id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let defaults = [
            ("presence-heartbeat-seconds", "1"),
            ("command-timeout-ms", "1000"),
            ("events-per-second", "1000"),
            ("events-burst", "1000"),
        ];
        let mut args = vec![
            "signaling".to_owned(),
            format!("--nats-subject-prefix={prefix}"),
            format!("--node-id={node_id}"),
            format!("--jwt-secret={SECRET}"),
        ];
        let overridden = |k: &str| extra.iter().any(|(e, _)| *e == k);
        args.extend(
            defaults
                .iter()
                .filter(|(k, _)| !overridden(k))
                .map(|(k, v)| format!("--{k}={v}")),
        );
        args.extend(extra.iter().map(|(k, v)| format!("--{k}={v}")));
        let config = signaling::Config::try_parse_from(args).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(signaling::run_with_bus(
            config,
            bus,
            listener,
            shutdown.clone().cancelled_owned(),
        ));
        let node = Node {
            base,
            node_id,
            shutdown,
            task,
        };
        node.wait_ready().await;
        node
    }

    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Ok(r) = reqwest::get(format!("{}/readyz", self.base)).await
                && r.status() == 200
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "node not ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// Plays calls-api: answers commands and presence per the bus contract, keeps calls in memory,
/// publishes the events a real calls-api would.
#[derive(Clone)]
pub struct FakeCallsApi {
    pub bus: Bus,
    pub subjects: Subjects,
    pub state: Arc<Mutex<FakeState>>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

#[derive(Default)]
pub struct FakeState {
    pub calls: HashMap<String, FakeCall>,
    pub commands: Vec<(String, Value)>,
    pub presence: Vec<PresenceMessage>,
    /// When false, commands are received but never answered (calls-api hung).
    pub silent: bool,
    /// What `ring_state` answers, per user: the ring events calls-api would replay.
    pub rings: HashMap<String, Vec<Value>>,
    /// Every `ring_state` request (kept apart from the socket commands).
    pub ring_requests: Vec<Value>,
}

#[derive(Default, Clone)]
pub struct FakeCall {
    pub seq: u64,
    pub participants: serde_json::Map<String, Value>,
}

impl FakeCallsApi {
    pub async fn start(bus: Bus, prefix: &str) -> FakeCallsApi {
        let subjects = Subjects::new(prefix);
        let fake = FakeCallsApi {
            bus: bus.clone(),
            subjects: subjects.clone(),
            state: Arc::default(),
            tasks: Arc::default(),
        };
        let mut commands = bus
            .queue_subscribe(&subjects.all_commands(), "calls-api")
            .await
            .unwrap();
        let mut presence = bus
            .queue_subscribe(&subjects.all_presence(), "calls-api")
            .await
            .unwrap();
        bus.flush().await.unwrap();
        let f = fake.clone();
        let t1 = tokio::spawn(async move {
            while let Some(m) = commands.next().await {
                f.on_command(m).await;
            }
        });
        let f = fake.clone();
        let t2 = tokio::spawn(async move {
            while let Some(m) = presence.next().await {
                let message: PresenceMessage = serde_json::from_slice(&m.payload).unwrap();
                f.state.lock().unwrap().presence.push(message);
                if let Some(reply) = m.reply {
                    f.bus
                        .respond(&reply, Bytes::from_static(br#"{"ok":true}"#))
                        .await
                        .unwrap();
                }
            }
        });
        fake.tasks.lock().unwrap().extend([t1, t2]);
        fake
    }

    /// Stops answering anything (requests then get no responders).
    pub fn stop(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    pub fn create_call(&self, users: &[&str]) -> String {
        let id = uuid::Uuid::now_v7().to_string();
        let mut call = FakeCall::default();
        for u in users {
            call.participants.insert(
                (*u).to_owned(),
                json!({"userId": u, "status": "invited", "isMicMuted": false}),
            );
        }
        self.state.lock().unwrap().calls.insert(id.clone(), call);
        id
    }

    pub fn presence(&self) -> Vec<PresenceMessage> {
        self.state.lock().unwrap().presence.clone()
    }

    pub fn commands(&self) -> Vec<(String, Value)> {
        self.state.lock().unwrap().commands.clone()
    }

    /// Publishes a call event with the next seq (or the given one).
    pub async fn publish_call_event(
        &self,
        call_id: &str,
        event: &str,
        fields: Value,
        seq: Option<u64>,
    ) -> u64 {
        let seq = {
            let mut state = self.state.lock().unwrap();
            let call = state.calls.entry(call_id.to_owned()).or_default();
            let seq = seq.unwrap_or(call.seq + 1);
            call.seq = call.seq.max(seq);
            seq
        };
        let mut data = json!({"callId": call_id, "seq": seq, "at": "2026-01-01T00:00:00Z"});
        if let (Some(d), Value::Object(extra)) = (data.as_object_mut(), fields) {
            d.extend(extra);
        }
        self.publish(&self.subjects.call_events(call_id), event, data)
            .await;
        seq
    }

    /// Publishes an event with extra headers (e.g. the origin of an `incoming_call_cancelled`).
    pub async fn publish_with(
        &self,
        subject: &str,
        event: &str,
        data: Value,
        extra: &[(&str, &str)],
    ) {
        let body = serde_json::to_vec(&EventMessage {
            event: event.to_owned(),
            data,
        })
        .unwrap();
        let mut headers = Headers::new();
        for (name, value) in extra {
            headers.insert(*name, *value);
        }
        self.bus
            .publish(subject, headers, Bytes::from(body))
            .await
            .unwrap();
    }

    pub async fn publish(&self, subject: &str, event: &str, data: Value) {
        let body = serde_json::to_vec(&EventMessage {
            event: event.to_owned(),
            data,
        })
        .unwrap();
        let headers =
            Headers::new().with("X-Created-At", calls_bus::wire::now_millis().to_string());
        self.bus
            .publish(subject, headers, Bytes::from(body))
            .await
            .unwrap();
    }

    async fn on_command(&self, m: calls_bus::Message) {
        let name = self.subjects.command_name(&m.subject).unwrap().to_owned();
        let request: Value = serde_json::from_slice(&m.payload).unwrap();
        if name == "ring_state" {
            // Asked on every connect; not a socket command.
            let events = {
                let mut state = self.state.lock().unwrap();
                let user = request["userId"].as_str().unwrap_or_default().to_owned();
                state.ring_requests.push(request.clone());
                state.rings.get(&user).cloned().unwrap_or_default()
            };
            if let Some(reply) = m.reply {
                let body = json!({"ok": true, "data": {"events": events}});
                self.bus
                    .respond(&reply, Bytes::from(body.to_string()))
                    .await
                    .unwrap();
            }
            return;
        }
        let mut publish = None;
        let reply = {
            let mut state = self.state.lock().unwrap();
            state.commands.push((name.clone(), request.clone()));
            if state.silent {
                return;
            }
            let user = request["userId"].as_str().unwrap().to_owned();
            let payload = &request["payload"];
            let call_id = payload["callId"].as_str().unwrap_or_default().to_owned();
            match state.calls.get_mut(&call_id) {
                None => {
                    json!({"ok": false, "error": {"code": "CALL_NOT_FOUND", "message": "Call not found"}})
                }
                Some(call) => match name.as_str() {
                    "join_call" => {
                        call.participants.insert(
                            user.clone(),
                            json!({"userId": user, "status": "joined", "isMicMuted": false}),
                        );
                        json!({"ok": true, "data": {"callId": call_id, "seq": call.seq, "status": "active",
                            "participants": call.participants.values().cloned().collect::<Vec<_>>()}})
                    }
                    "media_state_changed" => {
                        call.seq += 1;
                        let data = json!({"callId": call_id, "seq": call.seq, "userId": user, "isMicMuted": payload["isMicMuted"]});
                        publish = Some((self.subjects.call_events(&call_id), data));
                        json!({"ok": true, "data": {"userId": user, "isMicMuted": payload["isMicMuted"]}})
                    }
                    _ => json!({"ok": true, "data": null}),
                },
            }
        };
        if let Some((subject, data)) = publish {
            self.publish(&subject, "participant_media_changed", data)
                .await;
        }
        if let Some(r) = m.reply {
            self.bus
                .respond(&r, Bytes::from(serde_json::to_vec(&reply).unwrap()))
                .await
                .unwrap();
        }
    }
}

/// What the server sent a client.
#[derive(Debug, Clone)]
pub enum Incoming {
    Event(String, Value),
    Ack(i64, Value),
    ConnectError(Value),
    Connected,
    Disconnected,
}

/// A minimal Socket.IO v5 client over engine.io v4 long-polling.
pub struct Client {
    http: reqwest::Client,
    url: String,
    rx: mpsc::UnboundedReceiver<Incoming>,
    pub events: Vec<(String, Value)>,
    acks: HashMap<i64, Value>,
    next_ack: i64,
    poller: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

fn parse_packet(text: &str) -> Option<Incoming> {
    // engine.io: '4' message; socket.io: type digit, "/calls," namespace, optional ack id, JSON.
    let rest = text.strip_prefix('4')?;
    let (kind, rest) = rest.split_at(1);
    let rest = rest.strip_prefix("/calls,").unwrap_or(rest);
    let digits = rest.chars().take_while(char::is_ascii_digit).count();
    let (id, json_text) = rest.split_at(digits);
    let value: Value = if json_text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(json_text).ok()?
    };
    match kind {
        "0" => Some(Incoming::Connected),
        "1" => Some(Incoming::Disconnected),
        "2" => {
            let arr = value.as_array()?;
            Some(Incoming::Event(
                arr.first()?.as_str()?.to_owned(),
                arr.get(1).cloned().unwrap_or(Value::Null),
            ))
        }
        "3" => Some(Incoming::Ack(
            id.parse().ok()?,
            value.as_array()?.first().cloned().unwrap_or(Value::Null),
        )),
        "4" => Some(Incoming::ConnectError(value)),
        _ => None,
    }
}

impl Client {
    /// Opens a session and connects to /calls with `auth`; `Err(connect_error data)` if refused.
    pub async fn connect(
        base: &str,
        auth: Value,
        headers: &[(&str, &str)],
    ) -> Result<Client, Value> {
        let mut default_headers = reqwest::header::HeaderMap::new();
        for (k, v) in headers {
            default_headers.insert(
                reqwest::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                reqwest::header::HeaderValue::from_str(v).unwrap(),
            );
        }
        let http = reqwest::Client::builder()
            .default_headers(default_headers)
            .build()
            .unwrap();
        let open = http
            .get(format!("{base}/socket.io/?EIO=4&transport=polling"))
            .send()
            .await
            .unwrap();
        let body = open.text().await.unwrap();
        let handshake: Value = serde_json::from_str(body.strip_prefix('0').unwrap()).unwrap();
        let sid = handshake["sid"].as_str().unwrap().to_owned();
        let url = format!("{base}/socket.io/?EIO=4&transport=polling&sid={sid}");
        let (tx, rx) = mpsc::unbounded_channel();
        let (poll_http, poll_url) = (http.clone(), url.clone());
        let poller = tokio::spawn(async move {
            loop {
                let Ok(resp) = poll_http.get(&poll_url).send().await else {
                    break;
                };
                if resp.status() != 200 {
                    let _ = tx.send(Incoming::Disconnected);
                    break;
                }
                let Ok(body) = resp.text().await else { break };
                for packet in body.split('\u{1e}') {
                    match packet {
                        "2" => {
                            let _ = poll_http.post(&poll_url).body("3").send().await;
                        }
                        "1" => {
                            let _ = tx.send(Incoming::Disconnected);
                            return;
                        }
                        p => {
                            if let Some(incoming) = parse_packet(p) {
                                let _ = tx.send(incoming);
                            }
                        }
                    }
                }
            }
        });
        let mut client = Client {
            http,
            url,
            rx,
            events: Vec::new(),
            acks: HashMap::new(),
            next_ack: 0,
            poller,
        };
        client.post(format!("40/calls,{auth}")).await;
        loop {
            match client.recv().await {
                Incoming::Connected => return Ok(client),
                Incoming::ConnectError(data) => return Err(data),
                other => client.stash(other),
            }
        }
    }

    pub async fn connect_as(base: &str, user: &str) -> Client {
        Client::connect(base, json!({"token": token(user)}), &[])
            .await
            .unwrap()
    }

    async fn recv(&mut self) -> Incoming {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("server packet in time")
            .expect("session open")
    }

    fn stash(&mut self, incoming: Incoming) {
        match incoming {
            Incoming::Event(name, data) => self.events.push((name, data)),
            Incoming::Ack(id, data) => {
                self.acks.insert(id, data);
            }
            _ => {}
        }
    }

    pub async fn post(&self, body: String) {
        let resp = self.http.post(&self.url).body(body).send().await.unwrap();
        assert_eq!(resp.status(), 200, "POST refused");
    }

    /// Sends several packets in one HTTP request: the server reads them in one go.
    pub async fn post_batch(&self, packets: &[String]) {
        self.post(packets.join("\u{1e}")).await;
    }

    pub fn event_packet(event: &str, data: &Value, ack: Option<i64>) -> String {
        let id = ack.map(|a| a.to_string()).unwrap_or_default();
        format!("42/calls,{id}{}", json!([event, data]))
    }

    pub fn take_ack_id(&mut self) -> i64 {
        self.next_ack += 1;
        self.next_ack
    }

    pub async fn emit(&self, event: &str, data: Value) {
        self.post(Self::event_packet(event, &data, None)).await;
    }

    pub async fn emit_ack(&mut self, event: &str, data: Value) -> Value {
        let id = self.take_ack_id();
        self.post(Self::event_packet(event, &data, Some(id))).await;
        self.ack(id).await
    }

    pub async fn ack(&mut self, id: i64) -> Value {
        loop {
            if let Some(v) = self.acks.remove(&id) {
                return v;
            }
            let incoming = self.recv().await;
            self.stash(incoming);
        }
    }

    /// The next `event` (already received or arriving within [`WAIT`]).
    pub async fn event(&mut self, event: &str) -> Value {
        loop {
            if let Some(i) = self.events.iter().position(|(n, _)| n == event) {
                return self.events.remove(i).1;
            }
            let incoming = self.recv().await;
            self.stash(incoming);
        }
    }

    /// Collects what arrives for a short while: for asserting that something does not come.
    pub async fn drain_for(&mut self, duration: Duration) {
        let deadline = tokio::time::Instant::now() + duration;
        while let Ok(Some(incoming)) = tokio::time::timeout_at(deadline, self.rx.recv()).await {
            self.stash(incoming);
        }
    }

    pub async fn disconnect(self) {
        let _ = self.http.post(&self.url).body("41/calls,").send().await;
    }
}

/// Polls `check` until it holds or [`WAIT`] passes.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
