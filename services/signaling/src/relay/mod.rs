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
//!
//! The ordering rules (dedupe, hold-back, snapshot cut-off) are pure and unit-tested in
//! `sequence`; the rooms, their subscription tasks and the emits are in `room`; this module is
//! the relay's API: entering and leaving rooms, activating a joined socket, resynchronising.

mod room;
mod sequence;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use calls_bus::{Bus, BusError};
use futures::StreamExt;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;

use crate::metrics;
use room::{Member, Reorder, Room, deliver_to, emit, parse, room_task};
use sequence::Standing;

/// What a room relays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomKind {
    /// A call's events: ordered and de-duplicated by `seq`.
    Call,
    /// A user's events: relayed as they come.
    User,
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
                    Arc::new(Room::new(subject, kind))
                })
                .clone();
            let previous = room
                .state()
                .members
                .insert(
                    socket.id,
                    Member {
                        socket: socket.clone(),
                        standing: Standing::Pending(Vec::new()),
                    },
                )
                .map(|m| m.standing.floor().flatten());
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
        for delivery in member.standing.activate(floor) {
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
