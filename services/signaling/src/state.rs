//! Node-wide state shared by every handler ([`Shared`]) and per-socket state ([`SocketCtx`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use calls_bus::{Bus, Subjects};
use common::auth::JwtVerifier;
use common::ids::{CallId, UserId};
use common::ratelimit::{Rate, TokenBucket};
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tokio::sync::oneshot;

use crate::metrics;
use crate::presence::{Presence, SocketPresence};
use crate::relay::Relay;

/// What every handler of this node shares (socketioxide state, as `Arc<Shared>`).
pub struct Shared {
    /// This node's id in presence and command requests.
    pub node_id: String,
    /// The bus.
    pub bus: Bus,
    /// Subject names.
    pub subjects: Subjects,
    /// Access-token verification.
    pub verifier: JwtVerifier,
    /// Bus → sockets.
    pub relay: Relay,
    /// Presence reports.
    pub presence: Presence,
    /// Sockets of this node.
    pub sockets: Registry,
    /// Set on shutdown: not ready, and no per-socket presence (a `node_down` covers them all).
    pub draining: AtomicBool,
    /// Command round-trip limit.
    pub command_timeout: Duration,
    /// Largest client payload answered normally.
    pub max_payload_bytes: usize,
    /// Sustained client events per second per socket.
    pub events_per_second: u32,
    /// Burst above that.
    pub events_burst: u32,
}

impl Shared {
    /// Undoes everything a socket holds: its rooms, its registry entry, and (unless the node is
    /// draining) reports it gone. Safe to call more than once.
    pub fn cleanup(&self, socket: &SocketRef, ctx: &SocketCtx) {
        if ctx.cleaned.swap(true, Ordering::SeqCst) {
            return;
        }
        self.relay
            .leave(&self.subjects.user_events(ctx.user.as_str()), socket.id);
        for call in ctx.take_calls() {
            self.relay
                .leave(&self.subjects.call_events(call.as_str()), socket.id);
        }
        if self.sockets.remove(socket.id) {
            metrics::sockets(-1.0);
        }
        if !self.draining.load(Ordering::SeqCst) {
            self.presence
                .disconnected(&ctx.presence, socket.id.to_string(), ctx.user.to_string());
        }
    }

    /// Cleans up sockets that are gone without their disconnect handler having run (a client
    /// that vanished between the auth middleware and the CONNECT packet): any socket seen not
    /// connected in two consecutive sweeps.
    ///
    /// Also disconnects sockets whose access token has expired (past the verifier's leeway): a
    /// token is checked once, at the handshake, and a socket must not outlive it. The client
    /// gets an `error` event saying so, then the disconnect; it reconnects with a fresh token.
    pub fn sweep(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for (socket, ctx) in self.sockets.snapshot() {
            if socket.connected() {
                ctx.stale_sweeps.store(0, Ordering::Relaxed);
                if ctx.expires_at <= now {
                    tracing::info!(sid = %socket.id, user_id = ctx.user.as_str(), "access token expired; disconnecting the socket");
                    metrics::error(common::error::ErrorCode::Unauthorized.as_str());
                    let notice = serde_json::json!({
                        "event": "connection",
                        "code": common::error::ErrorCode::Unauthorized.as_str(),
                        "message": "The access token expired; reconnect with a fresh one",
                    });
                    if let Err(err) = socket.emit("error", &notice) {
                        tracing::debug!(sid = %socket.id, error = %err, "expiry notice not delivered");
                    }
                    // The disconnect handler does the cleanup, as for any disconnect.
                    let _ = socket.clone().disconnect();
                }
            } else if ctx.stale_sweeps.fetch_add(1, Ordering::Relaxed) >= 1 {
                tracing::debug!(sid = %socket.id, "sweeping a socket that left without a disconnect");
                self.cleanup(&socket, &ctx);
            }
        }
    }
}

/// Per-socket state, stored in the socket's extensions as `Arc<SocketCtx>`.
pub struct SocketCtx {
    /// The authenticated user.
    pub user: UserId,
    /// The device the app said this socket belongs to (`auth.deviceId`, as registered with
    /// notifier): answering or declining on it is not echoed back as "elsewhere".
    pub device: Option<common::ids::DeviceId>,
    /// Event rate limit.
    pub limiter: Mutex<TokenBucket>,
    /// The completion of the last event queued; the next waits for it, so events are applied in
    /// the order the client sent them.
    pub tail: Mutex<Option<oneshot::Receiver<()>>>,
    /// Calls this socket joined (to leave them on disconnect).
    pub calls: Mutex<HashSet<CallId>>,
    /// Presence bookkeeping.
    pub presence: SocketPresence,
    /// When the socket's access token stops being valid (its `exp` plus the verifier's
    /// leeway), in seconds since the epoch.
    pub expires_at: u64,
    /// Calls whose `call_ended` this socket was sent: it comes on the call's subject and on
    /// each invitee's, and a socket that is both gets it once.
    ended: Mutex<HashSet<String>>,
    cleaned: AtomicBool,
    stale_sweeps: AtomicU8,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // These locks guard plain data updated in one step; poisoning cannot leave them torn.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Ended calls a socket remembers, to send each `call_ended` once; a socket that outlives more
/// calls than this forgets the oldest batch (a duplicate then is still harmless).
const ENDED_CALLS_REMEMBERED: usize = 256;

impl SocketCtx {
    /// Records that `call_ended` of `call_id` goes to this socket; false if it already went.
    pub fn first_call_ended(&self, call_id: &str) -> bool {
        let mut ended = lock(&self.ended);
        if ended.contains(call_id) {
            return false;
        }
        if ended.len() >= ENDED_CALLS_REMEMBERED {
            ended.clear();
        }
        ended.insert(call_id.to_owned());
        true
    }

    /// State for a socket of `user`.
    pub fn new(
        user: UserId,
        device: Option<common::ids::DeviceId>,
        expires_at: u64,
        events_per_second: u32,
        burst: u32,
    ) -> Self {
        Self {
            user,
            device,
            expires_at,
            limiter: Mutex::new(TokenBucket::new(
                Rate::per_second(events_per_second, burst),
                Instant::now(),
            )),
            tail: Mutex::new(None),
            calls: Mutex::new(HashSet::new()),
            presence: SocketPresence::default(),
            ended: Mutex::new(HashSet::new()),
            cleaned: AtomicBool::new(false),
            stale_sweeps: AtomicU8::new(0),
        }
    }

    /// Takes a rate-limit token; false when over the limit.
    pub fn allow_event(&self) -> bool {
        lock(&self.limiter).try_take(Instant::now())
    }

    /// Queues an event behind the previous one: returns what to wait for and what to complete.
    pub fn next_in_line(&self) -> (Option<oneshot::Receiver<()>>, oneshot::Sender<()>) {
        let (done, next) = oneshot::channel();
        let previous = lock(&self.tail).replace(next);
        (previous, done)
    }

    /// Records a joined call.
    pub fn add_call(&self, call: CallId) {
        lock(&self.calls).insert(call);
    }

    /// Forgets a call.
    pub fn remove_call(&self, call: &CallId) {
        lock(&self.calls).remove(call);
    }

    fn take_calls(&self) -> HashSet<CallId> {
        std::mem::take(&mut *lock(&self.calls))
    }

    /// Whether cleanup already ran.
    pub fn is_cleaned(&self) -> bool {
        self.cleaned.load(Ordering::SeqCst)
    }
}

/// The sockets of this node.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<HashMap<Sid, (SocketRef, std::sync::Arc<SocketCtx>)>>,
}

impl Registry {
    /// Adds a socket.
    pub fn insert(&self, socket: SocketRef, ctx: std::sync::Arc<SocketCtx>) {
        lock(&self.inner).insert(socket.id, (socket, ctx));
    }

    /// Removes a socket; true if it was there.
    pub fn remove(&self, sid: Sid) -> bool {
        lock(&self.inner).remove(&sid).is_some()
    }

    /// How many sockets.
    pub fn len(&self) -> usize {
        lock(&self.inner).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy of the entries, to work on without holding the lock.
    pub fn snapshot(&self) -> Vec<(SocketRef, std::sync::Arc<SocketCtx>)> {
        lock(&self.inner).values().cloned().collect()
    }
}
