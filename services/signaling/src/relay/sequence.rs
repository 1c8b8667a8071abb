//! The ordering rules of a call's events, apart from sockets, subscriptions, tasks and locks:
//! pure functions of what arrived, and of the time, which the caller passes in.
//!
//! - **Dedupe**: a call room remembers the highest `seq` it relayed ([`HighWater`]); an event at
//!   or below it (an outbox retry, a JetStream replay of what was already live) is dropped.
//! - **Hold-back**: an event that skips ahead of the next `seq` waits in a [`HoldBack`] for the
//!   missing ones, up to a window; when they come, everything is released in order, and when the
//!   window runs out, what is held is released in order regardless of the gap.
//! - **Snapshot cut-off**: a socket joining a call is *pending* until its snapshot is sent,
//!   buffering what arrives meanwhile ([`Standing`]); it then relays only what is above the
//!   snapshot's `seq`, and from then on never anything at or below the last `seq` it was sent.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

/// Events buffered per pending socket before the oldest are dropped: a join that takes longer
/// than this many events is resynchronised by its snapshot anyway.
pub const PENDING_BUFFER: usize = 512;

/// The highest `seq` a call room has relayed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HighWater(Option<u64>);

/// What became of an event offered to a call room.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered<T> {
    /// At or below what was relayed already: drop it.
    Duplicate,
    /// Ahead of a gap: held until the gap fills or the window ends.
    Held,
    /// Relay these now, in this order: the event, then any held ones it made consecutive.
    Relay(Vec<T>),
}

/// Events that arrived ahead of a gap, and when to stop waiting for it. One per reader of a
/// room (its subscription task, a replay), all sharing the room's [`HighWater`].
#[derive(Debug)]
pub struct HoldBack<T> {
    held: BTreeMap<u64, T>,
    deadline: Option<Instant>,
}

impl<T> Default for HoldBack<T> {
    fn default() -> Self {
        Self {
            held: BTreeMap::new(),
            deadline: None,
        }
    }
}

impl<T> HoldBack<T> {
    /// When [`HoldBack::release`] is due, if anything is held.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Offers event `seq` at `now`. A zero `window` never holds anything back (a replay, which
    /// reads stored events in order and has nothing to wait for).
    pub fn offer(
        &mut self,
        high: &mut HighWater,
        seq: u64,
        event: T,
        now: Instant,
        window: Duration,
    ) -> Offered<T> {
        match high.0 {
            Some(last) if seq <= last => return Offered::Duplicate,
            Some(last) if seq > last + 1 && !window.is_zero() => {
                self.held.insert(seq, event);
                self.deadline.get_or_insert(now + window);
                return Offered::Held;
            }
            _ => {}
        }
        high.0 = Some(seq);
        let mut relay = vec![event];
        // The gap may be filled now: release what follows in order.
        while let Some(entry) = self.held.first_entry() {
            let next = *entry.key();
            if high.0.is_some_and(|h| next <= h) {
                entry.remove();
            } else if high.0.is_some_and(|h| next == h + 1) {
                high.0 = Some(next);
                relay.push(entry.remove());
            } else {
                break;
            }
        }
        if self.held.is_empty() {
            self.deadline = None;
        }
        Offered::Relay(relay)
    }

    /// The window ran out: everything held that is still news, in order, skipping the gap.
    pub fn release(&mut self, high: &mut HighWater) -> Vec<T> {
        self.deadline = None;
        let mut relay = Vec::new();
        for (seq, event) in std::mem::take(&mut self.held) {
            if high.0.is_some_and(|h| seq <= h) {
                continue;
            }
            high.0 = Some(seq);
            relay.push(event);
        }
        relay
    }
}

/// How a socket stands in a room.
#[derive(Debug)]
pub enum Standing<T> {
    /// Joining: what arrives is kept until the snapshot is sent.
    Pending(Vec<T>),
    /// Receiving; in a call room, only events above `floor` (the last `seq` it was sent, or its
    /// snapshot's).
    Active {
        /// The last `seq` this socket has (none yet: anything goes).
        floor: Option<u64>,
    },
}

/// What to do with an event for one socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Admitted {
    /// Buffered for a pending socket; `dropped_oldest` when the buffer was full and its oldest
    /// event made room.
    Buffered {
        /// Whether the oldest buffered event was dropped.
        dropped_oldest: bool,
    },
    /// Send it.
    Send,
    /// The socket has it already (its snapshot or an earlier event covered it).
    Skip,
}

impl<T: Clone> Standing<T> {
    /// Offers an event whose `seq` matters (`None` in user rooms and for events without one).
    pub fn admit(&mut self, seq: Option<u64>, event: &T) -> Admitted {
        match self {
            Self::Pending(buffer) => {
                let dropped_oldest = buffer.len() >= PENDING_BUFFER;
                if dropped_oldest {
                    buffer.remove(0);
                }
                buffer.push(event.clone());
                Admitted::Buffered { dropped_oldest }
            }
            Self::Active { floor } => {
                if let Some(seq) = seq {
                    if floor.is_some_and(|f| seq <= f) {
                        return Admitted::Skip;
                    }
                    *floor = Some(seq);
                }
                Admitted::Send
            }
        }
    }

    /// Makes the socket active with `floor` (its snapshot's `seq`) and hands back what was
    /// buffered, to be [`Standing::admit`]ted again now that the floor is known.
    pub fn activate(&mut self, floor: Option<u64>) -> Vec<T> {
        match std::mem::replace(self, Self::Active { floor }) {
            Self::Pending(buffered) => buffered,
            Self::Active { .. } => Vec::new(),
        }
    }

    /// The floor an active socket had, to restore it if a re-join fails; `None` if pending.
    pub fn floor(&self) -> Option<Option<u64>> {
        match self {
            Self::Active { floor } => Some(*floor),
            Self::Pending(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_millis(500);

    fn relayed(offered: Offered<u64>) -> Vec<u64> {
        match offered {
            Offered::Relay(events) => events,
            other => panic!("expected a relay, got {other:?}"),
        }
    }

    #[test]
    fn events_in_order_are_relayed_at_once() {
        let (mut high, mut hold, now) = (HighWater::default(), HoldBack::default(), Instant::now());
        for seq in [1, 2, 3] {
            assert_eq!(
                relayed(hold.offer(&mut high, seq, seq, now, WINDOW)),
                vec![seq]
            );
        }
        assert_eq!(hold.deadline(), None);
    }

    #[test]
    fn an_event_at_or_below_the_last_relayed_is_a_duplicate() {
        let (mut high, mut hold, now) = (HighWater::default(), HoldBack::default(), Instant::now());
        relayed(hold.offer(&mut high, 5, 5, now, WINDOW));
        assert_eq!(hold.offer(&mut high, 5, 5, now, WINDOW), Offered::Duplicate);
        assert_eq!(hold.offer(&mut high, 3, 3, now, WINDOW), Offered::Duplicate);
    }

    #[test]
    fn the_first_event_a_room_sees_is_relayed_whatever_its_seq() {
        let (mut high, mut hold, now) = (HighWater::default(), HoldBack::default(), Instant::now());
        assert_eq!(
            relayed(hold.offer(&mut high, 42, 42, now, WINDOW)),
            vec![42]
        );
    }

    #[test]
    fn an_event_ahead_of_a_gap_waits_and_follows_the_missing_one_in_order() {
        let (mut high, mut hold, now) = (HighWater::default(), HoldBack::default(), Instant::now());
        relayed(hold.offer(&mut high, 1, 1, now, WINDOW));
        assert_eq!(hold.offer(&mut high, 4, 4, now, WINDOW), Offered::Held);
        assert_eq!(hold.offer(&mut high, 3, 3, now, WINDOW), Offered::Held);
        assert_eq!(hold.deadline(), Some(now + WINDOW));
        assert_eq!(
            relayed(hold.offer(&mut high, 2, 2, now, WINDOW)),
            vec![2, 3, 4]
        );
        assert_eq!(hold.deadline(), None);
    }

    #[test]
    fn the_deadline_is_set_by_the_first_event_held_not_the_last() {
        let (mut high, mut hold, now) = (HighWater::default(), HoldBack::default(), Instant::now());
        relayed(hold.offer(&mut high, 1, 1, now, WINDOW));
        hold.offer(&mut high, 3, 3, now, WINDOW);
        hold.offer(&mut high, 4, 4, now + Duration::from_millis(100), WINDOW);
        assert_eq!(hold.deadline(), Some(now + WINDOW));
    }

    #[test]
    fn when_the_window_ends_what_is_held_is_released_in_order_past_the_gap() {
        let (mut high, mut hold, now) = (HighWater::default(), HoldBack::default(), Instant::now());
        relayed(hold.offer(&mut high, 1, 1, now, WINDOW));
        hold.offer(&mut high, 5, 5, now, WINDOW);
        hold.offer(&mut high, 3, 3, now, WINDOW);
        assert_eq!(hold.release(&mut high), vec![3, 5]);
        assert_eq!(hold.deadline(), None);
        // The gap's events are late now: the room has moved past them.
        assert_eq!(hold.offer(&mut high, 2, 2, now, WINDOW), Offered::Duplicate);
        assert_eq!(hold.offer(&mut high, 4, 4, now, WINDOW), Offered::Duplicate);
        assert_eq!(relayed(hold.offer(&mut high, 6, 6, now, WINDOW)), vec![6]);
    }

    #[test]
    fn a_release_skips_what_another_reader_of_the_room_relayed_meanwhile() {
        let (mut high, now) = (HighWater::default(), Instant::now());
        let (mut live, mut replay) = (HoldBack::default(), HoldBack::default());
        relayed(live.offer(&mut high, 1, 1, now, WINDOW));
        live.offer(&mut high, 3, 3, now, WINDOW);
        // A replay reads the stored events in order, without a window.
        assert_eq!(
            relayed(replay.offer(&mut high, 2, 2, now, Duration::ZERO)),
            vec![2]
        );
        assert_eq!(
            relayed(replay.offer(&mut high, 3, 3, now, Duration::ZERO)),
            vec![3]
        );
        assert!(live.release(&mut high).is_empty());
    }

    #[test]
    fn without_a_window_nothing_is_held() {
        let (mut high, mut hold, now) = (HighWater::default(), HoldBack::default(), Instant::now());
        relayed(hold.offer(&mut high, 1, 1, now, Duration::ZERO));
        assert_eq!(
            relayed(hold.offer(&mut high, 7, 7, now, Duration::ZERO)),
            vec![7]
        );
        assert_eq!(hold.deadline(), None);
    }

    #[test]
    fn a_joining_socket_gets_only_what_is_above_its_snapshot() {
        let mut standing = Standing::Pending(Vec::new());
        for seq in [3, 4, 5] {
            assert_eq!(
                standing.admit(Some(seq), &seq),
                Admitted::Buffered {
                    dropped_oldest: false
                }
            );
        }
        // The snapshot was taken at seq 4.
        let buffered = standing.activate(Some(4));
        let sent: Vec<u64> = buffered
            .into_iter()
            .filter(|seq| standing.admit(Some(*seq), seq) == Admitted::Send)
            .collect();
        assert_eq!(sent, vec![5]);
        assert_eq!(standing.admit(Some(5), &5), Admitted::Skip);
        assert_eq!(standing.admit(Some(6), &6), Admitted::Send);
        assert_eq!(standing.floor(), Some(Some(6)));
    }

    #[test]
    fn events_without_a_seq_are_always_sent_to_an_active_socket() {
        let mut standing = Standing::<&str>::Active { floor: Some(9) };
        assert_eq!(standing.admit(None, &"user event"), Admitted::Send);
        assert_eq!(standing.floor(), Some(Some(9)));
    }

    #[test]
    fn a_pending_socket_keeps_the_newest_events_when_its_buffer_is_full() {
        let mut standing = Standing::Pending(Vec::new());
        for seq in 0..PENDING_BUFFER as u64 {
            standing.admit(Some(seq), &seq);
        }
        assert_eq!(
            standing.admit(Some(9999), &9999),
            Admitted::Buffered {
                dropped_oldest: true
            }
        );
        assert_eq!(standing.floor(), None);
        let buffered = standing.activate(None);
        assert_eq!(buffered.len(), PENDING_BUFFER);
        assert_eq!(buffered.first(), Some(&1));
        assert_eq!(buffered.last(), Some(&9999));
    }
}
