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
use room::{Member, Outcome, Reorder, Room, deliver_to, emit, parse, room_task};

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

    /// Closes the room of `subject` if it has no sockets (its last ones ended); false when
    /// somebody entered it meanwhile.
    fn close_room_if_empty(&self, subject: &str) -> bool {
        let mut rooms = self.rooms();
        let Some(room) = rooms.get(subject).cloned() else {
            return true;
        };
        let mut state = room.state();
        if !state.members.is_empty() {
            return false;
        }
        state.shut();
        drop(state);
        rooms.remove(subject);
        true
    }

    fn close_room(&self, subject: &str) {
        let mut rooms = self.rooms();
        if let Some(room) = rooms.remove(subject) {
            let mut state = room.state();
            state.members.clear();
            state.shut();
        }
    }
}

/// What [`Relay::end_after`] did with a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// It was not in the room.
    NotFollowing,
    /// It left the room.
    Ended,
    /// It leaves once the event it waits for is relayed.
    Deferred,
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
            let mut state = room.state();
            let replaced = state.members.insert(socket.id, Member::new(socket.clone()));
            if replaced.as_ref().is_some_and(|m| m.ends_after.is_some()) {
                // Joining again cancels an ending: the new join's snapshot decides.
                state.endings -= 1;
            }
            let previous = replaced.map(|m| m.standing.floor().flatten());
            drop(state);
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
                    // User rooms have no ending sockets: the outcome is always to go on.
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
        self.leave_when(subject, sid, |_| true);
    }

    /// Takes the socket out of the call room of `subject` once it has been relayed event
    /// `after_seq`: at once if it has had it already (or no `seq` is given, or it is still
    /// joining and will get a snapshot without the call), otherwise when the room relays it or
    /// anything after it. Events after that one are not relayed to it.
    ///
    /// The event reaches the node on the call's subscription, the instruction to end on
    /// another: either may be handled first. See [`Relay::end_if_still_ending`] for an event
    /// that never comes.
    pub fn end_after(&self, subject: &str, sid: Sid, after_seq: Option<u64>) -> Ending {
        let mut ending = Ending::NotFollowing;
        self.leave_when(subject, sid, |member| {
            let floor = member.standing.floor();
            let waiting = match (after_seq, floor) {
                (Some(seq), Some(floor)) => floor.is_none_or(|floor| floor < seq),
                _ => false,
            };
            if waiting {
                member.ends_after = after_seq;
                ending = Ending::Deferred;
                false
            } else {
                ending = Ending::Ended;
                true
            }
        });
        ending
    }

    /// Takes out a socket [`Relay::end_after`] deferred if it is still waiting (its event was
    /// lost: the relay is at most once). A socket that re-joined meanwhile is not ending.
    pub fn end_if_still_ending(&self, subject: &str, sid: Sid) {
        self.leave_when(subject, sid, |member| member.ends_after.is_some());
    }

    /// The time the relay waits for a gap in a call's events to fill.
    pub fn reorder_window(&self) -> Duration {
        self.inner.reorder_window
    }

    /// Takes the socket out of the room if `decide` says so (it may change the member instead);
    /// the last one out unsubscribes.
    fn leave_when(&self, subject: &str, sid: Sid, decide: impl FnOnce(&mut Member) -> bool) {
        let mut rooms = self.inner.rooms();
        let Some(room) = rooms.get(subject).cloned() else {
            return;
        };
        let mut state = room.state();
        let Some(member) = state.members.get_mut(&sid) else {
            return;
        };
        let was_ending = member.ends_after.is_some();
        if !decide(member) {
            if !was_ending && member.ends_after.is_some() {
                state.endings += 1;
            }
            return;
        }
        if was_ending {
            state.endings -= 1;
        }
        state.members.remove(&sid);
        if state.members.is_empty() {
            state.shut();
            drop(state);
            rooms.remove(subject);
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
            let mut outcome = Outcome::Continue;
            for message in &messages {
                if let Some(delivery) = parse(message) {
                    outcome = outcome.and(room.accept(delivery, &mut reorder, Duration::ZERO));
                }
            }
            match outcome {
                Outcome::Continue => {}
                Outcome::Ended => self.inner.close_room(&room.subject),
                Outcome::Emptied => {
                    self.inner.close_room_if_empty(&room.subject);
                }
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
