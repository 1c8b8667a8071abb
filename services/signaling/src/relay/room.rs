//! A room: one subscribed subject and the local sockets that want it; the task that reads its
//! subscription; and turning bus messages into emits. What is relayed, and in which order, is
//! decided by [`super::sequence`]; this module applies it under the room's lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use calls_bus::wire::{HEADER_CREATED_AT, HEADER_ORIGIN_DEVICE, HEADER_ORIGIN_SOCKET};
use calls_bus::{EventMessage, Subscription};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::sequence::{Admitted, HighWater, HoldBack, Offered, Standing};
use super::{Inner, RoomKind};
use crate::metrics;
use crate::state::SocketCtx;

/// One event ready to emit.
#[derive(Debug)]
pub(super) struct Delivery {
    event: String,
    data: Box<RawValue>,
    seq: Option<u64>,
    /// The `callId` of a `call_ended`, which reaches a socket on two subjects.
    ended_call: Option<String>,
    created_at: Option<u64>,
    /// For `incoming_call_cancelled`: the socket and the device that answered or declined,
    /// which must not be told it happened "elsewhere".
    origin: Option<Origin>,
}

#[derive(Debug)]
struct Origin {
    socket: Option<String>,
    device: Option<String>,
}

impl Origin {
    fn is(&self, socket: &SocketRef) -> bool {
        if self
            .socket
            .as_deref()
            .is_some_and(|sid| sid == socket.id.as_str())
        {
            return true;
        }
        let Some(device) = self.device.as_deref() else {
            return false;
        };
        socket
            .extensions
            .get::<Arc<SocketCtx>>()
            .is_some_and(|ctx| ctx.device.as_ref().is_some_and(|d| d.as_str() == device))
    }
}

/// What a reader of a room holds back while it waits for a gap to fill.
pub(super) type Reorder = HoldBack<Arc<Delivery>>;

pub(super) struct Member {
    pub(super) socket: SocketRef,
    pub(super) standing: Standing<Arc<Delivery>>,
    /// Set by [`super::Relay::end_after`]: the socket leaves the room once it has been relayed
    /// this `seq` (or anything after it).
    pub(super) ends_after: Option<u64>,
}

impl Member {
    pub(super) fn new(socket: SocketRef) -> Self {
        Self {
            socket,
            standing: Standing::Pending(Vec::new()),
            ends_after: None,
        }
    }

    /// Whether an ending socket has had the event it was waiting for.
    fn ending_reached(&self) -> bool {
        self.ends_after.is_some_and(|seq| {
            self.standing
                .floor()
                .flatten()
                .is_some_and(|floor| floor >= seq)
        })
    }
}

/// What relaying an event did to its room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Nothing that changes the room.
    Continue,
    /// Its last sockets left (they were ending): the room can close if nobody joined meanwhile.
    Emptied,
    /// The call ended: nothing more will come.
    Ended,
}

impl Outcome {
    /// The stronger of two outcomes (a replay relays many events).
    pub(super) fn and(self, other: Self) -> Self {
        match (self, other) {
            (Self::Ended, _) | (_, Self::Ended) => Self::Ended,
            (Self::Emptied, _) | (_, Self::Emptied) => Self::Emptied,
            _ => Self::Continue,
        }
    }
}

#[derive(Default)]
pub(super) struct RoomState {
    pub(super) members: HashMap<Sid, Member>,
    /// Highest `seq` relayed (call rooms).
    high: HighWater,
    /// Set when the room left the relay's map; a subscription finishing late is then dropped.
    pub(super) closed: bool,
    /// How many members are ending ([`Member::ends_after`]), so that relaying looks for them
    /// only when there are some.
    pub(super) endings: usize,
    pub(super) task: Option<AbortHandle>,
}

pub(super) struct Room {
    pub(super) subject: String,
    pub(super) kind: RoomKind,
    pub(super) ready: tokio::sync::OnceCell<()>,
    state: Mutex<RoomState>,
}

impl RoomState {
    /// Marks the room closed and stops its subscription task; the caller takes it out of the
    /// relay's map (under the map's lock, so nobody enters it meanwhile).
    pub(super) fn shut(&mut self) {
        self.closed = true;
        if let Some(task) = self.task.take() {
            task.abort();
        }
        metrics::subscriptions(-1.0);
    }
}

impl Room {
    pub(super) fn new(subject: &str, kind: RoomKind) -> Self {
        Self {
            subject: subject.to_owned(),
            kind,
            ready: tokio::sync::OnceCell::new(),
            state: Mutex::new(RoomState::default()),
        }
    }

    pub(super) fn state(&self) -> MutexGuard<'_, RoomState> {
        // Every critical section leaves the state consistent before anything that can panic
        // (emits return errors rather than panicking), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Relays one event.
    pub(super) fn accept(
        &self,
        delivery: Delivery,
        reorder: &mut Reorder,
        window: Duration,
    ) -> Outcome {
        let delivery = Arc::new(delivery);
        let mut state = self.state();
        let state = &mut *state;
        let seq = match (self.kind, delivery.seq) {
            (RoomKind::Call, Some(seq)) => seq,
            _ => {
                deliver_all(self.kind, state, &delivery);
                let ended = self.kind == RoomKind::Call && delivery.event == "call_ended";
                return outcome(ended, state);
            }
        };
        match reorder.offer(&mut state.high, seq, delivery, Instant::now(), window) {
            Offered::Duplicate => {
                metrics::event_dropped("duplicate_seq");
                Outcome::Continue
            }
            Offered::Held => Outcome::Continue,
            Offered::Relay(deliveries) => {
                let mut ended = false;
                for delivery in deliveries {
                    ended |= delivery.event == "call_ended";
                    deliver_all(self.kind, state, &delivery);
                }
                outcome(ended, state)
            }
        }
    }

    /// The reorder window ran out: relay everything held, in order, skipping the gap.
    fn release(&self, reorder: &mut Reorder) -> Outcome {
        let mut state = self.state();
        let state = &mut *state;
        let mut ended = false;
        for held in reorder.release(&mut state.high) {
            metrics::event_dropped("seq_gap_skipped");
            ended |= held.event == "call_ended";
            deliver_all(self.kind, state, &held);
        }
        outcome(ended, state)
    }
}

/// Lets the ending sockets that have had their last event go, and says what became of the room.
fn outcome(ended: bool, state: &mut RoomState) -> Outcome {
    if ended {
        return Outcome::Ended;
    }
    if state.endings == 0 {
        return Outcome::Continue;
    }
    let before = state.members.len();
    state.members.retain(|_, member| !member.ending_reached());
    state.endings = state.endings.saturating_sub(before - state.members.len());
    if state.members.is_empty() {
        Outcome::Emptied
    } else {
        Outcome::Continue
    }
}

pub(super) fn emit<T: serde::Serialize + ?Sized>(
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

pub(super) fn deliver_to(kind: RoomKind, member: &mut Member, delivery: &Arc<Delivery>) {
    let seq = delivery.seq.filter(|_| kind == RoomKind::Call);
    match member.standing.admit(seq, delivery) {
        Admitted::Buffered { dropped_oldest } => {
            if dropped_oldest {
                metrics::event_dropped("pending_overflow");
            }
        }
        Admitted::Skip => {}
        Admitted::Send => {
            if delivery
                .origin
                .as_ref()
                .is_some_and(|origin| origin.is(&member.socket))
            {
                return;
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

#[derive(Deserialize)]
struct SeqOnly {
    seq: Option<u64>,
}

#[derive(Deserialize)]
struct CallIdOnly {
    #[serde(rename = "callId")]
    call_id: String,
}

/// Reads what the relay needs of a bus message; an undecodable one is counted and skipped.
pub(super) fn parse(message: &calls_bus::Message) -> Option<Delivery> {
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
    let origin = (parsed.event == "incoming_call_cancelled")
        .then(|| Origin {
            socket: message.headers.get(HEADER_ORIGIN_SOCKET).map(str::to_owned),
            device: message.headers.get(HEADER_ORIGIN_DEVICE).map(str::to_owned),
        })
        .filter(|o| o.socket.is_some() || o.device.is_some());
    Some(Delivery {
        event: parsed.event,
        data: parsed.data,
        seq,
        ended_call,
        created_at,
        origin,
    })
}

pub(super) async fn room_task(
    room: Weak<Room>,
    relay: Weak<Inner>,
    mut subscription: Subscription,
    window: Duration,
) {
    let mut reorder = Reorder::default();
    loop {
        let deadline = reorder.deadline();
        let message = tokio::select! {
            message = subscription.next() => match message {
                Some(message) => Some(message),
                None => break,
            },
            () = sleep_until(deadline) => None,
        };
        let Some(room) = room.upgrade() else { break };
        let outcome = match message {
            Some(message) => match parse(&message) {
                Some(delivery) if !traced() => room.accept(delivery, &mut reorder, window),
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
                None => Outcome::Continue,
            },
            None => room.release(&mut reorder),
        };
        match outcome {
            Outcome::Continue => {}
            // The call is over: nothing more will come, so stop holding the subscription.
            Outcome::Ended => {
                if let Some(relay) = relay.upgrade() {
                    relay.close_room(&room.subject);
                }
                break;
            }
            // The last sockets following it were removed from the call.
            Outcome::Emptied => {
                if relay
                    .upgrade()
                    .is_none_or(|relay| relay.close_room_if_empty(&room.subject))
                {
                    break;
                }
            }
        }
    }
}

/// Whether an event's span would be read: by an exporter, or by the debug lines written inside
/// it (a socket that could not take an event). Otherwise the span (its ids, the parent's
/// `traceparent` parsed, its trace id formatted) is made per event and room for nobody.
fn traced() -> bool {
    common::telemetry::exporting() || tracing::enabled!(tracing::Level::DEBUG)
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
