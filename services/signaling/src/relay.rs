//! The relay: bus subjects → the sockets of this node.
//!
//! A *room* is one subscribed subject (a call's events, or a user's) and the local sockets that
//! want it. The node subscribes when the first socket enters a room and drops the subscription
//! (unsubscribing) when the last one leaves, so NATS routes by interest.
//!
//! Ordering and resynchronisation:
//!
//! - One task per room reads the subscription, so a room's events are handled one at a time in
//!   arrival order, under the room's lock.
//! - Call events carry `seq`. The room remembers the highest `seq` it relayed: an older or equal
//!   one (an outbox retry, a late duplicate) is dropped; one that skips ahead is held up to the
//!   reorder window for the missing ones, then released in order regardless.
//! - A socket enters *pending*: events are buffered for it while the `join_call` command runs.
//!   When the snapshot arrives it is emitted first, then the buffered events whose `seq` is above
//!   the snapshot's, and the socket turns *active* with the snapshot's `seq` as its floor. Since
//!   the subscription is live (subscribed and flushed) before the command is sent, no event
//!   after the snapshot can be missed, and none before it is sent.
//! - Delivery to a socket is at most once: a socket whose buffer is full loses the event (and
//!   resynchronises with `join_call`).
//! - After the bus reconnects ([`Relay::resync_on_reconnect`]), each hosted call's events are
//!   read back from JetStream and relayed like live ones: whatever was published while this
//!   node was away (calls-api may reconnect first) reaches the sockets late but in order, and
//!   what they already got is dropped by `seq`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use calls_bus::wire::HEADER_CREATED_AT;
use calls_bus::{Bus, BusError, EventMessage, Subscription};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::metrics;
use crate::state::SocketCtx;

/// Events buffered per pending socket before the oldest are dropped: a join that takes longer
/// than this many events is resynchronised by its snapshot anyway.
const PENDING_BUFFER: usize = 512;

/// What a room relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    /// A call's events: ordered and de-duplicated by `seq`.
    Call,
    /// A user's events: relayed as they come.
    User,
}

/// One event ready to emit.
#[derive(Debug)]
struct Delivery {
    event: String,
    data: Box<RawValue>,
    seq: Option<u64>,
    /// The `callId` of a `call_ended`, which reaches a socket on two subjects.
    ended_call: Option<String>,
    created_at: Option<u64>,
}

/// How a socket is in a room.
enum Mode {
    Pending(Vec<Arc<Delivery>>),
    Active { floor: Option<u64> },
}

struct Member {
    socket: SocketRef,
    mode: Mode,
}

#[derive(Default)]
struct RoomState {
    members: HashMap<Sid, Member>,
    /// Highest `seq` relayed (call rooms).
    high: Option<u64>,
    /// Set when the room left the relay's map; a subscription finishing late is then dropped.
    closed: bool,
    task: Option<AbortHandle>,
}

struct Room {
    subject: String,
    kind: RoomKind,
    ready: tokio::sync::OnceCell<()>,
    state: Mutex<RoomState>,
}

impl Room {
    fn state(&self) -> MutexGuard<'_, RoomState> {
        // Every critical section leaves the state consistent before anything that can panic
        // (emits return errors rather than panicking), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The relay of one node. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    inner: Arc<Inner>,
}

struct Inner {
    bus: Bus,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
    reorder_window: Duration,
    /// Set once [`Relay::share_user_events`] made one wildcard subscription feed every user
    /// room, so user rooms subscribe to nothing themselves.
    shared_user_feed: std::sync::atomic::AtomicBool,
}

impl Inner {
    fn rooms(&self) -> MutexGuard<'_, HashMap<String, Arc<Room>>> {
        self.rooms
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn close_room(&self, subject: &str) {
        let mut rooms = self.rooms();
        if let Some(room) = rooms.remove(subject) {
            let mut state = room.state();
            state.closed = true;
            state.members.clear();
            if let Some(task) = state.task.take() {
                task.abort();
            }
            metrics::subscriptions(-1.0);
        }
    }
}

/// The previous standing of a socket in a room, to restore it if a re-join fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Previous(Option<Option<u64>>);

impl Relay {
    /// A relay reading from `bus`.
    pub fn new(bus: Bus, reorder_window: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                bus,
                rooms: Mutex::new(HashMap::new()),
                reorder_window,
                shared_user_feed: false.into(),
            }),
        }
    }

    /// Puts `socket` in the room of `subject` as pending, and returns once the node's
    /// subscription is live on the server. On error the socket is not in the room.
    pub async fn enter(
        &self,
        kind: RoomKind,
        subject: &str,
        socket: &SocketRef,
    ) -> Result<Previous, BusError> {
        let (room, previous) = {
            let mut rooms = self.inner.rooms();
            let room = rooms
                .entry(subject.to_owned())
                .or_insert_with(|| {
                    metrics::subscriptions(1.0);
                    Arc::new(Room {
                        subject: subject.to_owned(),
                        kind,
                        ready: tokio::sync::OnceCell::new(),
                        state: Mutex::new(RoomState::default()),
                    })
                })
                .clone();
            let previous = room
                .state()
                .members
                .insert(
                    socket.id,
                    Member {
                        socket: socket.clone(),
                        mode: Mode::Pending(Vec::new()),
                    },
                )
                .map(|m| match m.mode {
                    Mode::Active { floor } => floor,
                    Mode::Pending(_) => None,
                });
            (room, Previous(previous))
        };

        let ready = room
            .ready
            .get_or_try_init(|| async {
                if kind == RoomKind::User
                    && self
                        .inner
                        .shared_user_feed
                        .load(std::sync::atomic::Ordering::SeqCst)
                {
                    Ok(())
                } else {
                    self.subscribe(room.clone()).await
                }
            })
            .await;
        match ready {
            Ok(()) => Ok(previous),
            Err(err) => {
                self.leave(subject, socket.id);
                Err(err)
            }
        }
    }

    /// Feeds every user room from one subscription to `wildcard` (`{p}.evt.user.*`) instead of
    /// one subscription per connected user: each connected user then costs no NATS subscription
    /// (about 7 KB of buffers and a task), at the price of every node receiving every user
    /// event. Call before the first socket connects.
    pub async fn share_user_events(&self, wildcard: &str) -> Result<(), BusError> {
        let mut subscription = self.inner.bus.subscribe(wildcard).await?;
        self.inner.bus.flush().await?;
        self.inner
            .shared_user_feed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let relay = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while let Some(message) = subscription.next().await {
                let Some(relay) = relay.upgrade() else { break };
                let room = relay.rooms().get(&message.subject).cloned();
                if let (Some(room), Some(delivery)) = (room, parse(&message)) {
                    room.accept(delivery, &mut Reorder::default(), Duration::ZERO);
                }
            }
        });
        Ok(())
    }

    async fn subscribe(&self, room: Arc<Room>) -> Result<(), BusError> {
        let subscription = self.inner.bus.subscribe(&room.subject).await?;
        // The flush is what makes "subscribed before the command is sent" true on the server.
        self.inner.bus.flush().await?;
        let task = tokio::spawn(room_task(
            Arc::downgrade(&room),
            Arc::downgrade(&self.inner),
            subscription,
            self.inner.reorder_window,
        ));
        let mut state = room.state();
        if state.closed {
            task.abort();
        } else {
            state.task = Some(task.abort_handle());
        }
        Ok(())
    }

    /// Makes a pending socket active: emits `first` (the snapshot), then what was buffered with
    /// a `seq` above `floor`, in order. No-op if the socket left meanwhile.
    pub fn activate<T: serde::Serialize + ?Sized>(
        &self,
        subject: &str,
        sid: Sid,
        floor: Option<u64>,
        first: Option<(&str, &T)>,
    ) {
        let Some(room) = self.inner.rooms().get(subject).cloned() else {
            return;
        };
        let mut state = room.state();
        let Some(member) = state.members.get_mut(&sid) else {
            return;
        };
        if let Some((event, data)) = first {
            emit(&member.socket, event, data, None);
        }
        let buffered = match std::mem::replace(&mut member.mode, Mode::Active { floor }) {
            Mode::Pending(buffered) => buffered,
            Mode::Active { .. } => Vec::new(),
        };
        for delivery in buffered {
            deliver_to(room.kind, member, &delivery);
        }
    }

    /// Restores the standing a failed re-join replaced (or removes the socket if it was new).
    pub fn restore(&self, subject: &str, sid: Sid, previous: Previous) {
        match previous.0 {
            Some(floor) => self.activate::<()>(subject, sid, floor, None),
            None => self.leave(subject, sid),
        }
    }

    /// Takes the socket out of the room; the last one out unsubscribes.
    pub fn leave(&self, subject: &str, sid: Sid) {
        let mut rooms = self.inner.rooms();
        let Some(room) = rooms.get(subject).cloned() else {
            return;
        };
        let mut state = room.state();
        state.members.remove(&sid);
        if state.members.is_empty() {
            state.closed = true;
            if let Some(task) = state.task.take() {
                task.abort();
            }
            drop(state);
            rooms.remove(subject);
            metrics::subscriptions(-1.0);
        }
    }

    /// Resynchronises the hosted calls ([`Relay::resync_calls`]) every time the bus
    /// reconnects, for as long as the relay lives. No-op on a bus that never disconnects.
    pub fn resync_on_reconnect(&self) {
        let Some(mut connections) = self.inner.bus.connections() else {
            return;
        };
        connections.borrow_and_update();
        let relay = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            while connections.changed().await.is_ok() {
                let Some(inner) = relay.upgrade() else { break };
                Relay { inner }.resync_calls().await;
            }
        });
    }

    /// Relays, in order, every stored event of each call this node hosts that its sockets have
    /// not had yet (the room drops what it already relayed, each socket what its snapshot
    /// covers). Called after the bus reconnected: the core subscriptions missed what was
    /// published meanwhile.
    pub async fn resync_calls(&self) {
        let rooms: Vec<Arc<Room>> = self
            .inner
            .rooms()
            .values()
            .filter(|room| room.kind == RoomKind::Call)
            .cloned()
            .collect();
        if rooms.is_empty() {
            return;
        }
        // The re-sent subscriptions are live on the server once this returns, so nothing
        // published from now on is missed: the replay below covers everything before.
        if let Err(err) = self.inner.bus.flush().await {
            tracing::warn!(error = %err, "cannot resynchronise calls after a bus reconnection");
            return;
        }
        for room in rooms {
            let messages = match self.inner.bus.replay(&room.subject).await {
                Ok(messages) => messages,
                Err(err) => {
                    tracing::warn!(subject = %room.subject, error = %err, "cannot replay a call's events");
                    continue;
                }
            };
            let mut reorder = Reorder::default();
            let mut ended = false;
            for message in &messages {
                if let Some(delivery) = parse(message) {
                    ended |= room.accept(delivery, &mut reorder, Duration::ZERO);
                }
            }
            if ended {
                self.inner.close_room(&room.subject);
            }
        }
    }

    /// Whether `sid` is in the room of `subject`.
    pub fn contains(&self, subject: &str, sid: Sid) -> bool {
        self.inner
            .rooms()
            .get(subject)
            .is_some_and(|room| room.state().members.contains_key(&sid))
    }

    /// Drops every room (shutdown).
    pub fn clear(&self) {
        let subjects: Vec<String> = self.inner.rooms().keys().cloned().collect();
        for subject in subjects {
            self.inner.close_room(&subject);
        }
    }
}

fn emit<T: serde::Serialize + ?Sized>(
    socket: &SocketRef,
    event: &str,
    data: &T,
    created_at: Option<u64>,
) {
    match socket.emit(event, data) {
        Ok(()) => {
            metrics::event_out(event);
            if let Some(created_at) = created_at {
                metrics::relay_latency(created_at);
            }
        }
        Err(err) => {
            tracing::debug!(sid = %socket.id, event, error = %err, "event not delivered to socket");
            metrics::event_dropped("socket_unavailable");
        }
    }
}

fn deliver_to(kind: RoomKind, member: &mut Member, delivery: &Arc<Delivery>) {
    match &mut member.mode {
        Mode::Pending(buffer) => {
            if buffer.len() >= PENDING_BUFFER {
                buffer.remove(0);
                metrics::event_dropped("pending_overflow");
            }
            buffer.push(delivery.clone());
        }
        Mode::Active { floor } => {
            if kind == RoomKind::Call
                && let Some(seq) = delivery.seq
            {
                if floor.is_some_and(|f| seq <= f) {
                    return;
                }
                *floor = Some(seq);
            }
            if let Some(call_id) = &delivery.ended_call
                && member
                    .socket
                    .extensions
                    .get::<Arc<SocketCtx>>()
                    .is_some_and(|ctx| !ctx.first_call_ended(call_id))
            {
                metrics::event_dropped("duplicate_call_ended");
                return;
            }
            emit(
                &member.socket,
                &delivery.event,
                &*delivery.data,
                delivery.created_at,
            );
        }
    }
}

fn deliver_all(kind: RoomKind, state: &mut RoomState, delivery: &Arc<Delivery>) {
    for member in state.members.values_mut() {
        deliver_to(kind, member, delivery);
    }
}

/// Events that arrived ahead of a gap, and when to stop waiting for it.
#[derive(Default)]
struct Reorder {
    held: BTreeMap<u64, Arc<Delivery>>,
    deadline: Option<Instant>,
}

impl Room {
    /// Relays one event; returns true when it ended the call.
    fn accept(&self, delivery: Delivery, reorder: &mut Reorder, window: Duration) -> bool {
        let ends_call = self.kind == RoomKind::Call && delivery.event == "call_ended";
        let delivery = Arc::new(delivery);
        let mut state = self.state();
        let seq = match (self.kind, delivery.seq) {
            (RoomKind::Call, Some(seq)) => seq,
            _ => {
                deliver_all(self.kind, &mut state, &delivery);
                return ends_call;
            }
        };
        match state.high {
            Some(high) if seq <= high => {
                metrics::event_dropped("duplicate_seq");
                return false;
            }
            Some(high) if seq > high + 1 && !window.is_zero() => {
                reorder.held.insert(seq, delivery);
                reorder
                    .deadline
                    .get_or_insert_with(|| Instant::now() + window);
                return false;
            }
            _ => {}
        }
        state.high = Some(seq);
        deliver_all(self.kind, &mut state, &delivery);
        let mut ended = ends_call;
        // The gap may be filled now: release what follows in order.
        while let Some(entry) = reorder.held.first_entry() {
            let next = *entry.key();
            if state.high.is_some_and(|h| next <= h) {
                entry.remove();
            } else if state.high.is_some_and(|h| next == h + 1) {
                let held = entry.remove();
                state.high = Some(next);
                ended |= held.event == "call_ended";
                deliver_all(self.kind, &mut state, &held);
            } else {
                break;
            }
        }
        if reorder.held.is_empty() {
            reorder.deadline = None;
        }
        ended
    }

    /// The reorder window ran out: release everything held, in order, skipping the gap.
    fn release(&self, reorder: &mut Reorder) -> bool {
        let mut state = self.state();
        let mut ended = false;
        for (seq, held) in std::mem::take(&mut reorder.held) {
            if state.high.is_some_and(|h| seq <= h) {
                continue;
            }
            metrics::event_dropped("seq_gap_skipped");
            state.high = Some(seq);
            ended |= held.event == "call_ended";
            deliver_all(self.kind, &mut state, &held);
        }
        reorder.deadline = None;
        ended
    }
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: Option<u64>,
}

#[derive(Deserialize)]
struct CallIdOnly {
    #[serde(rename = "callId")]
    call_id: String,
}

fn parse(message: &calls_bus::Message) -> Option<Delivery> {
    let parsed: EventMessage<Box<RawValue>> = match serde_json::from_slice(&message.payload) {
        Ok(parsed) => parsed,
        Err(err) => {
            tracing::warn!(subject = %message.subject, error = %err, "undecodable event on the bus; skipped");
            metrics::event_dropped("undecodable");
            return None;
        }
    };
    let seq = serde_json::from_str::<SeqOnly>(parsed.data.get())
        .ok()
        .and_then(|s| s.seq);
    let ended_call = (parsed.event == "call_ended")
        .then(|| serde_json::from_str::<CallIdOnly>(parsed.data.get()).ok())
        .flatten()
        .map(|c| c.call_id);
    let created_at = message
        .headers
        .get(HEADER_CREATED_AT)
        .and_then(|v| v.parse().ok());
    Some(Delivery {
        event: parsed.event,
        data: parsed.data,
        seq,
        ended_call,
        created_at,
    })
}

async fn room_task(
    room: Weak<Room>,
    relay: Weak<Inner>,
    mut subscription: Subscription,
    window: Duration,
) {
    let mut reorder = Reorder::default();
    loop {
        let deadline = reorder.deadline;
        let message = tokio::select! {
            message = subscription.next() => match message {
                Some(message) => Some(message),
                None => break,
            },
            () = sleep_until(deadline) => None,
        };
        let Some(room) = room.upgrade() else { break };
        let ended = match message {
            Some(message) => match parse(&message) {
                Some(delivery) => {
                    // The emits continue the trace of the state change that caused the event.
                    let span = tracing::info_span!(
                        "bus.deliver",
                        otel.name = format!("emit {}", delivery.event),
                        otel.kind = "consumer",
                        messaging.system = "nats",
                        messaging.destination.name = %message.subject,
                        event = %delivery.event,
                        seq = delivery.seq,
                        trace_id = tracing::field::Empty,
                    );
                    common::telemetry::set_parent(
                        &span,
                        message.headers.get(common::telemetry::TRACEPARENT),
                        message.headers.get(common::telemetry::TRACESTATE),
                    );
                    span.in_scope(|| room.accept(delivery, &mut reorder, window))
                }
                None => false,
            },
            None => room.release(&mut reorder),
        };
        if ended {
            // The call is over: nothing more will come, so stop holding the subscription.
            if let Some(relay) = relay.upgrade() {
                relay.close_room(&room.subject);
            }
            break;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
