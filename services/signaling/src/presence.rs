//! Presence reports to calls-api: socket connected / disconnected (requests, retried with
//! backoff so a calls-api restart does not lose them), node heartbeats (requests: an answer
//! saying the node is unknown makes it report its sockets again), and
//! `node_down` on graceful shutdown.
//!
//! Per socket, `disconnected` is sent only after `connected` has been settled (answered or given
//! up), so calls-api never sees them in the wrong order; different sockets proceed in parallel,
//! bounded by [`MAX_IN_FLIGHT`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use calls_bus::{Ack, Bus, BusError, Headers, PresenceMessage, Subjects};
use common::backoff::Backoff;
use serde_json::Value;
use tokio::sync::{Semaphore, oneshot};

use crate::metrics;

/// Presence requests in flight at once; the rest wait their turn.
pub const MAX_IN_FLIGHT: usize = 256;

/// Retry schedule for connected/disconnected: 100 ms doubling to 5 s, jittered (every node
/// retries at once after a calls-api outage), 18 to 36 s of waiting in all plus the request
/// timeouts, which covers a calls-api rolling restart.
const RETRY_START: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
const SOCKET_ATTEMPTS: u32 = 12;
/// `node_down` is sent while shutting down, which must not hang: fewer attempts.
const NODE_DOWN_ATTEMPTS: u32 = 4;

/// Per-socket presence bookkeeping.
#[derive(Default)]
pub struct SocketPresence {
    inner: Mutex<SocketPresenceState>,
}

#[derive(Default)]
struct SocketPresenceState {
    /// Completes when the `connected` report is settled.
    connected: Option<oneshot::Receiver<()>>,
    /// Set once the socket is gone; a late `connected` is then not sent at all.
    gone: bool,
}

/// The presence reporter of one node. Cheap to clone.
#[derive(Clone)]
pub struct Presence {
    inner: Arc<Inner>,
}

struct Inner {
    bus: Bus,
    subject: String,
    node_id: String,
    timeout: Duration,
    in_flight: Semaphore,
    /// Set by `node_down`: per-socket reports still queued or retrying are moot, and must not
    /// hold `node_down` back.
    stopping: AtomicBool,
}

impl Presence {
    /// A reporter for `node_id`.
    pub fn new(bus: Bus, subjects: &Subjects, node_id: &str, timeout: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                bus,
                subject: subjects.presence(node_id),
                node_id: node_id.to_owned(),
                timeout,
                in_flight: Semaphore::new(MAX_IN_FLIGHT),
                stopping: AtomicBool::new(false),
            }),
        }
    }

    /// Reports a socket connected (in the background).
    pub fn connected(&self, presence: &SocketPresence, socket_id: String, user_id: String) {
        let (done, settled) = oneshot::channel();
        {
            let mut state = presence
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if state.gone {
                return;
            }
            state.connected = Some(settled);
        }
        let this = self.clone();
        tokio::spawn(async move {
            this.report_connected(socket_id, user_id).await;
            drop(done);
        });
    }

    async fn report_connected(&self, socket_id: String, user_id: String) {
        let message = PresenceMessage::Connected {
            node_id: self.inner.node_id.clone(),
            socket_id,
            user_id,
        };
        self.request(&message, SOCKET_ATTEMPTS).await;
    }

    /// Reports a socket gone (in the background), after its `connected` report settled.
    pub fn disconnected(&self, presence: &SocketPresence, socket_id: String, user_id: String) {
        let connected = {
            let mut state = presence
                .inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            state.gone = true;
            state.connected.take()
        };
        let Some(connected) = connected else {
            // Never reported connected, so there is nothing to take back.
            return;
        };
        let this = self.clone();
        tokio::spawn(async move {
            let _ = connected.await;
            let message = PresenceMessage::Disconnected {
                node_id: this.inner.node_id.clone(),
                socket_id,
                user_id,
            };
            this.request(&message, SOCKET_ATTEMPTS).await;
        });
    }

    /// Reports the whole node gone; waits for the answer (a few attempts).
    /// Per-socket reports still pending are dropped: this one stands for all of them.
    pub async fn node_down(&self) -> bool {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let message = PresenceMessage::NodeDown {
            node_id: self.inner.node_id.clone(),
        };
        self.request(&message, NODE_DOWN_ATTEMPTS).await
    }

    /// Sends one heartbeat. Returns `Some(false)` when calls-api answered that it does not know
    /// this node (it expired the node after missed heartbeats, e.g. across a network partition):
    /// the caller must then report its sockets again, or their users stay disconnected.
    pub async fn heartbeat(&self, sockets: u64) -> Option<bool> {
        let message = PresenceMessage::Heartbeat {
            node_id: self.inner.node_id.clone(),
            sockets,
        };
        let payload = Bytes::from(serde_json::to_vec(&message).ok()?);
        match self
            .inner
            .bus
            .request(
                &self.inner.subject,
                Headers::new(),
                payload,
                self.inner.timeout,
            )
            .await
        {
            Ok(reply) => match serde_json::from_slice::<Ack<Value>>(&reply.payload) {
                Ok(Ack::Ok(data)) => {
                    Some(data.get("known").and_then(Value::as_bool).unwrap_or(true))
                }
                _ => None,
            },
            Err(err) => {
                tracing::warn!(error = %err, "presence heartbeat not answered");
                None
            }
        }
    }

    /// Reports an already-connected socket again (after calls-api forgot this node).
    pub fn reannounce(&self, socket_id: String, user_id: String) {
        let this = self.clone();
        tokio::spawn(async move { this.report_connected(socket_id, user_id).await });
    }

    async fn request(&self, message: &PresenceMessage, attempts: u32) -> bool {
        let kind = match message {
            PresenceMessage::Connected { .. } => "connected",
            PresenceMessage::Disconnected { .. } => "disconnected",
            PresenceMessage::NodeDown { .. } => "node_down",
            PresenceMessage::Heartbeat { .. } => "heartbeat",
        };
        let Ok(payload) = serde_json::to_vec(message) else {
            return false;
        };
        let payload = Bytes::from(payload);
        let per_socket = !matches!(message, PresenceMessage::NodeDown { .. });
        // node_down skips the queue: thousands of per-socket retries must not delay shutdown.
        let _permit = if per_socket {
            match self.inner.in_flight.acquire().await {
                Ok(permit) => Some(permit),
                Err(_) => return false,
            }
        } else {
            None
        };
        let mut backoff = Backoff::new(RETRY_START, RETRY_MAX);
        for attempt in 1..=attempts {
            if per_socket && self.inner.stopping.load(Ordering::SeqCst) {
                return false;
            }
            let result = self
                .inner
                .bus
                .request(
                    &self.inner.subject,
                    Headers::new(),
                    payload.clone(),
                    self.inner.timeout,
                )
                .await;
            match result {
                Ok(reply) => {
                    match serde_json::from_slice::<Ack<Value>>(&reply.payload) {
                        Ok(Ack::Ok(_)) => {}
                        // calls-api understood and refused: retrying will not change its mind.
                        Ok(Ack::Err(err)) => {
                            tracing::warn!(kind, code = %err.code, message = %err.message, "presence refused");
                        }
                        Err(_) => {
                            tracing::warn!(kind, "presence answered with an unreadable reply")
                        }
                    }
                    return true;
                }
                Err(err @ (BusError::InvalidSubject(_) | BusError::PayloadTooLarge)) => {
                    tracing::error!(kind, error = %err, "presence cannot be sent");
                    break;
                }
                Err(err) => {
                    tracing::debug!(kind, attempt, error = %err, "presence not answered; retrying");
                    if attempt < attempts {
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
        tracing::warn!(kind, "presence report given up after retries");
        metrics::presence_failure(kind);
        false
    }
}
