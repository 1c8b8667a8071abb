//! A minimal Socket.IO v5 client over the engine.io v4 WebSocket transport, enough to play an
//! app on the `/calls` namespace: connect with a token, receive events, emit with an ack,
//! answer pings.
//!
//! Written here rather than taken from a crate so that the driver costs little CPU per socket
//! (one reader and one writer task, no polling fallback) and builds from the workspace's own
//! dependencies. The wire format (engine.io packet type digit, then socket.io packet type digit,
//! namespace, optional ack id, JSON array): `0{…}` open, `40/calls,{auth}` connect,
//! `42/calls,[name,data]` event, `42/calls,7[name,data]` event wanting ack 7, `43/calls,7[data]`
//! ack, `2`/`3` ping/pong.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

/// The namespace the apps use.
const NAMESPACE: &str = "/calls";

/// One text frame, decoded as far as the driver needs.
#[derive(Debug, Clone, PartialEq)]
pub enum Packet {
    /// engine.io open (`0{…}`).
    Open,
    /// engine.io ping (`2`): answer with a pong.
    Ping,
    /// The namespace accepted the socket (`40/calls,{sid}`).
    Connected,
    /// The namespace refused it (`44/calls,{message}`).
    ConnectError(String),
    /// The server closed the namespace (`41/calls,`).
    Disconnected,
    /// An event (`42/calls,[name, data]`).
    Event { name: String, data: Value },
    /// The answer to an emit (`43/calls,<id>[data]`).
    Ack { id: u64, data: Value },
    /// Anything else (other namespaces, binary placeholders, noop).
    Other,
}

/// Decodes one text frame.
pub fn parse(frame: &str) -> Packet {
    let Some(first) = frame.chars().next() else {
        return Packet::Other;
    };
    match first {
        '0' => return Packet::Open,
        '2' if frame.len() == 1 => return Packet::Ping,
        '4' => {}
        _ => return Packet::Other,
    }
    let rest = &frame[1..];
    let Some(kind) = rest.chars().next() else {
        return Packet::Other;
    };
    let Some(after_ns) = rest[1..]
        .strip_prefix(NAMESPACE)
        .and_then(|r| r.strip_prefix(','))
    else {
        return if kind == '1' && &rest[1..] == NAMESPACE {
            Packet::Disconnected
        } else {
            Packet::Other
        };
    };
    let digits = after_ns.bytes().take_while(u8::is_ascii_digit).count();
    let ack_id = after_ns[..digits].parse::<u64>().ok();
    let json = &after_ns[digits..];
    match kind {
        '0' => Packet::Connected,
        '1' => Packet::Disconnected,
        '4' => {
            let message = serde_json::from_str::<Value>(json)
                .ok()
                .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| json.to_owned());
            Packet::ConnectError(message)
        }
        '2' => match serde_json::from_str::<Value>(json) {
            Ok(Value::Array(mut items)) if !items.is_empty() => {
                let data = if items.len() > 1 {
                    items.swap_remove(1)
                } else {
                    Value::Null
                };
                match items.swap_remove(0) {
                    Value::String(name) => Packet::Event { name, data },
                    _ => Packet::Other,
                }
            }
            _ => Packet::Other,
        },
        '3' => match (ack_id, serde_json::from_str::<Value>(json)) {
            (Some(id), Ok(Value::Array(mut items))) if !items.is_empty() => Packet::Ack {
                id,
                data: items.swap_remove(0),
            },
            _ => Packet::Other,
        },
        _ => Packet::Other,
    }
}

/// The frame of an emit: `42/calls,<ack>[name,data]`.
pub fn emit_frame(name: &str, data: &Value, ack: Option<u64>) -> String {
    let ack = ack.map(|a| a.to_string()).unwrap_or_default();
    format!(
        "42{NAMESPACE},{ack}{}",
        Value::Array(vec![Value::String(name.to_owned()), data.clone()])
    )
}

/// What a waiter on a socket matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The next event of this name, whatever it is about.
    Any,
    /// An event about this call.
    Call(String),
    /// `participant_joined` of this user in this call.
    Joined { call_id: String, user_id: String },
}

impl Match {
    fn matches(&self, data: &Value) -> bool {
        let call = || data.get("callId").and_then(Value::as_str);
        match self {
            Match::Any => true,
            Match::Call(id) => call() == Some(id.as_str()),
            Match::Joined { call_id, user_id } => {
                call() == Some(call_id.as_str())
                    && data
                        .pointer("/participant/userId")
                        .and_then(Value::as_str)
                        .is_some_and(|u| u == user_id)
            }
        }
    }
}

struct Waiter {
    event: &'static str,
    matching: Match,
    tx: oneshot::Sender<(Instant, Value)>,
}

/// Why a socket could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error("websocket: {0}")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("refused: {0}")]
    Refused(String),
    #[error("closed")]
    Closed,
    #[error("timed out")]
    Timeout,
}

/// One user's socket on `/calls`: what arrives is handed to whoever waits for it.
pub struct Socket {
    out: mpsc::UnboundedSender<Message>,
    waiters: Mutex<Vec<Waiter>>,
    acks: Mutex<HashMap<u64, oneshot::Sender<Value>>>,
    next_ack: AtomicU64,
    /// Events received (whether or not anyone waited for them).
    pub events: AtomicU64,
    /// Whether the connection is gone.
    pub closed: AtomicBool,
}

impl Socket {
    /// Opens `ws_url` (`ws://host/socket.io/?EIO=4&transport=websocket`) and connects `/calls`
    /// with `token`; answers once the namespace accepted it.
    pub async fn connect(
        ws_url: &str,
        token: &str,
        timeout: Duration,
    ) -> Result<Arc<Socket>, SocketError> {
        tokio::time::timeout(timeout, Self::open(ws_url, token))
            .await
            .map_err(|_| SocketError::Timeout)?
    }

    async fn open(ws_url: &str, token: &str) -> Result<Arc<Socket>, SocketError> {
        let (ws, _) = tokio_tungstenite::connect_async(ws_url).await?;
        let (mut sink, mut stream) = ws.split();
        let auth = serde_json::json!({ "token": token });
        let mut sent_connect = false;
        // The handshake: open, then our connect, then the namespace's answer.
        loop {
            let Some(msg) = stream.next().await else {
                return Err(SocketError::Closed);
            };
            let Message::Text(text) = msg? else { continue };
            match parse(text.as_str()) {
                Packet::Open if !sent_connect => {
                    sink.send(Message::Text(format!("40{NAMESPACE},{auth}").into()))
                        .await?;
                    sent_connect = true;
                }
                Packet::Ping => sink.send(Message::Text("3".into())).await?,
                Packet::Connected => break,
                Packet::ConnectError(message) => return Err(SocketError::Refused(message)),
                _ => {}
            }
        }
        let (out, mut rx) = mpsc::unbounded_channel::<Message>();
        let socket = Arc::new(Socket {
            out,
            waiters: Mutex::new(Vec::new()),
            acks: Mutex::new(HashMap::new()),
            next_ack: AtomicU64::new(1),
            events: AtomicU64::new(0),
            closed: AtomicBool::new(false),
        });
        tokio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if sink.send(msg).await.is_err() {
                    break;
                }
            }
        });
        let reader = Arc::clone(&socket);
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Text(text) = msg else { continue };
                if !reader.handle(parse(text.as_str())) {
                    break;
                }
            }
            reader.closed.store(true, Ordering::SeqCst);
            // Wake everyone waiting: their receivers see the sender dropped.
            reader.lock_waiters().clear();
            reader.lock_acks().clear();
        });
        Ok(socket)
    }

    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, Vec<Waiter>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_acks(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Value>>> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Handles one packet; `false` when the socket is over.
    fn handle(&self, packet: Packet) -> bool {
        match packet {
            Packet::Ping => self.out.send(Message::Text("3".into())).is_ok(),
            Packet::Event { name, data } => {
                let at = Instant::now();
                self.events.fetch_add(1, Ordering::Relaxed);
                let mut waiters = self.lock_waiters();
                if let Some(i) = waiters
                    .iter()
                    .position(|w| w.event == name && w.matching.matches(&data))
                {
                    let w = waiters.swap_remove(i);
                    let _ = w.tx.send((at, data));
                }
                true
            }
            Packet::Ack { id, data } => {
                if let Some(tx) = self.lock_acks().remove(&id) {
                    let _ = tx.send(data);
                }
                true
            }
            Packet::Disconnected => false,
            _ => true,
        }
    }

    /// Registers interest in the next `event` matching `matching`; the receiver gets the time
    /// it arrived and its data, or an error if the socket closes first.
    pub fn expect(
        &self,
        event: &'static str,
        matching: Match,
    ) -> oneshot::Receiver<(Instant, Value)> {
        let (tx, rx) = oneshot::channel();
        self.lock_waiters().push(Waiter {
            event,
            matching,
            tx,
        });
        rx
    }

    /// Drops the waiters of a call (a call that failed half-way must not leave them behind).
    pub fn forget(&self, call_id: &str) {
        self.lock_waiters().retain(|w| {
            !w.matching
                .matches(&serde_json::json!({ "callId": call_id }))
        });
    }

    /// Drops the waiters that match anything (an `incoming_call` that never came).
    pub fn forget_any(&self) {
        self.lock_waiters().retain(|w| w.matching != Match::Any);
    }

    /// Emits `name` with `data` and waits for the ack.
    pub async fn emit(
        &self,
        name: &str,
        data: &Value,
        timeout: Duration,
    ) -> Result<Value, SocketError> {
        let id = self.next_ack.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.lock_acks().insert(id, tx);
        if self
            .out
            .send(Message::Text(emit_frame(name, data, Some(id)).into()))
            .is_err()
        {
            self.lock_acks().remove(&id);
            return Err(SocketError::Closed);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(_)) => Err(SocketError::Closed),
            Err(_) => {
                self.lock_acks().remove(&id);
                Err(SocketError::Timeout)
            }
        }
    }

    /// Closes the connection.
    pub fn close(&self) {
        let _ = self.out.send(Message::Close(None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_of_the_calls_namespace_are_decoded() {
        assert_eq!(parse("0{\"sid\":\"x\"}"), Packet::Open);
        assert_eq!(parse("2"), Packet::Ping);
        assert_eq!(parse("40/calls,{\"sid\":\"a\"}"), Packet::Connected);
        assert_eq!(
            parse("44/calls,{\"message\":\"unauthorized\"}"),
            Packet::ConnectError("unauthorized".into())
        );
        assert_eq!(parse("41/calls,"), Packet::Disconnected);
        assert_eq!(
            parse("42/calls,[\"incoming_call\",{\"callId\":\"c1\"}]"),
            Packet::Event {
                name: "incoming_call".into(),
                data: json!({"callId": "c1"})
            }
        );
        assert_eq!(
            parse("43/calls,17[{\"ok\":true}]"),
            Packet::Ack {
                id: 17,
                data: json!({"ok": true})
            }
        );
        assert_eq!(parse("42[\"other\",1]"), Packet::Other);
        assert_eq!(parse(""), Packet::Other);
    }

    #[test]
    fn an_emit_carries_its_ack_id_before_the_array() {
        let frame = emit_frame("join_call", &json!({"callId": "c"}), Some(3));
        assert_eq!(frame, "42/calls,3[\"join_call\",{\"callId\":\"c\"}]");
        assert_eq!(
            parse(&frame),
            Packet::Event {
                name: "join_call".into(),
                data: json!({"callId": "c"})
            }
        );
    }

    #[test]
    fn a_participant_joined_waiter_matches_only_its_user_and_call() {
        let m = Match::Joined {
            call_id: "c".into(),
            user_id: "bob".into(),
        };
        assert!(m.matches(&json!({"callId": "c", "participant": {"userId": "bob"}})));
        assert!(!m.matches(&json!({"callId": "c", "participant": {"userId": "carol"}})));
        assert!(!m.matches(&json!({"callId": "d", "participant": {"userId": "bob"}})));
        assert!(Match::Call("c".into()).matches(&json!({"callId": "c"})));
        assert!(Match::Any.matches(&json!(null)));
    }
}
