//! The commands of the state machine (CONTRACT sections 4 and 10), one module per action:
//! `initiate`, `join`, `status` (`PATCH /status`), `leave` (and what any departure does, the
//! host hand-over included), `media`, `end` (and the end rules every command shares), `invite`,
//! `remove`, `presence`, `channel` (Agora's channel join/leave notices, CONTRACT section 11),
//! and `timers` (ring, disconnect grace, max duration, alone).
//!
//! Each command takes the call as it is, the acting user and the current time (never read
//! from a clock here, so tests can drive time), mutates the call and returns an [`Outcome`]:
//! the events to publish and the timer changes to persist. On error the call is left exactly
//! as it was.
//!
//! Checks run in a fixed order so the answer never leaks more than the caller may know:
//! visibility (`NotFound`) first, then `CallEnded`, then permission (`Forbidden`), then the
//! transition itself.
//!
//! Choices the contract leaves open, made here:
//! - Setting the status a participant already has is an idempotent no-op (no event), for every
//!   status but `invited`, which is never a valid target. Joining while joined is the same,
//!   except that media flags given with the join are applied (`participant_media_changed`).
//! - A (re)join resets the media flags to the ones given with the join, defaulting to mic on,
//!   no screen share, camera off exactly for audio calls.
//! - The callee "ending" an unanswered 1:1 declines it (the call ends `declined`).
//! - When a call ends, participants still `invited`/`ringing` become `missed`.
//! - `endedBy` is the user whose action ended the call; `null` for timers and lost
//!   connections.
//! - A 1:1 always has `maxParticipants` 2 (until an invitation makes it a group call).

mod channel;
mod end;
mod initiate;
mod invite;
mod join;
mod leave;
mod media;
mod presence;
mod remove;
mod status;
mod timers;

use std::time::Duration;

use time::OffsetDateTime;

use crate::error::DomainError;
use crate::events::{Audience, DomainEvent, EventKind};
use crate::model::{Actor, Call, ParticipantStatus, TimerKind, UserId};

use crate::timefmt::truncate_millis;

/// The longest decline/status reason kept, in characters. Signaling checks the same limit
/// (`calls_bus::wire::MAX_REASON_CHARS`, pinned equal by a calls-api test) so a socket and a
/// REST call are refused alike.
pub const MAX_REASON_LEN: usize = 200;

/// Checks a status reason against [`MAX_REASON_LEN`]; the error is the sentence both paths
/// answer with (`VALIDATION_FAILED`, field `reason`).
pub fn check_reason(reason: &str) -> Result<(), String> {
    if reason.chars().count() > MAX_REASON_LEN {
        Err(format!("must be at most {MAX_REASON_LEN} characters"))
    } else {
        Ok(())
    }
}

/// The reason put on `participant_status_changed` when the server marks someone missed.
pub const RING_TIMEOUT_REASON: &str = "ring_timeout";

/// The decline reason of an invitee who was in another call.
pub const BUSY_REASON: &str = "busy";

pub use channel::ChannelNotice;
pub use invite::Invitation;

/// What a command caused, besides the change to the call itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Events, in the order they happened (call events in `seq` order).
    pub events: Vec<DomainEvent>,
    /// Timer rows to write or delete.
    pub timers: Vec<TimerChange>,
    /// People to take out of the call's Agora channel (CONTRACT section 11).
    pub kicks: Vec<MediaKick>,
}

/// How long someone who stopped being a joined participant (they left, or the call ended) may
/// stay in the call's Agora channel before they are kicked: their client leaves the channel
/// on its own right after leaving the call, and Agora's leave notice takes a moment to come.
pub const MEDIA_LINGER: Duration = Duration::from_secs(15);

/// Someone in the call's Agora channel who may not be there (CONTRACT section 11): a user who
/// is not a joined participant, or a participant who left or was removed. The store keeps it
/// until it is sent, through Agora's kicking-rule API, or no longer needed
/// ([`Call::kick_still_needed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaKick {
    /// Who (the Agora account).
    pub user_id: UserId,
    /// Their Agora uid, which the kicking rule names.
    pub uid: u32,
    /// The participant's last channel notice (`clientSeq`) when the kick was decided; `None`
    /// for someone who is not a participant. A newer notice makes this kick moot: a leave
    /// means they are out already, a join decides again.
    pub client_seq: Option<i64>,
    /// When to kick: at once, or after [`MEDIA_LINGER`].
    pub due_at: OffsetDateTime,
}

/// A change to the call's timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerChange {
    /// Create the timer, or move it to `due_at` if it exists (one per call, kind and user).
    Schedule {
        /// Which timer.
        kind: TimerKind,
        /// The participant it is about (`DisconnectGrace` and `MediaGrace`).
        user_id: Option<UserId>,
        /// When it fires.
        due_at: OffsetDateTime,
    },
    /// Delete the timer if it exists.
    Cancel {
        /// Which timer.
        kind: TimerKind,
        /// The participant it is about (`DisconnectGrace` and `MediaGrace`).
        user_id: Option<UserId>,
    },
    /// Delete every timer of the call (the call ended).
    CancelAll,
}

/// Runs a command against `call`, restoring it if the command fails, and cancels the ring
/// timer once nobody is left to ring (unless the command is the ring timer itself).
fn run(
    call: &mut Call,
    now: OffsetDateTime,
    cancel_ring_when_settled: bool,
    command: impl FnOnce(&mut Step<'_>) -> Result<(), DomainError>,
) -> Result<Outcome, DomainError> {
    let backup = call.clone();
    let had_pending = call.has_pending_invitees();
    let mut step = Step {
        call,
        now: truncate_millis(now),
        out: Outcome::default(),
    };
    match command(&mut step) {
        Ok(()) => {
            if cancel_ring_when_settled
                && had_pending
                && step.call.is_live()
                && !step.call.has_pending_invitees()
            {
                step.out.timers.push(TimerChange::Cancel {
                    kind: TimerKind::RingTimeout,
                    user_id: None,
                });
            }
            Ok(step.out)
        }
        Err(e) => {
            *step.call = backup;
            Err(e)
        }
    }
}

/// One command in progress: the call being changed and what it caused so far.
struct Step<'a> {
    call: &'a mut Call,
    now: OffsetDateTime,
    out: Outcome,
}

impl Step<'_> {
    // ----- checks -----

    fn ensure_visible(&self, actor: &Actor) -> Result<(), DomainError> {
        if self
            .call
            .is_visible_to(&actor.user_id, actor.is_room_member)
        {
            Ok(())
        } else {
            Err(DomainError::NotFound)
        }
    }

    fn ensure_live(&self) -> Result<(), DomainError> {
        if self.call.is_live() {
            Ok(())
        } else {
            Err(DomainError::CallEnded)
        }
    }

    fn index_of(&self, user_id: &str) -> Option<usize> {
        self.call
            .participants
            .iter()
            .position(|p| p.user_id == user_id)
    }

    // ----- outputs -----

    fn status_changed(&mut self, user_id: &str, status: ParticipantStatus, reason: Option<String>) {
        self.call_event(EventKind::ParticipantStatusChanged {
            user_id: user_id.to_owned(),
            status,
            reason,
        });
    }

    /// An event in the call's stream: takes the next `seq`.
    fn call_event(&mut self, kind: EventKind) {
        self.call.seq += 1;
        self.out.events.push(DomainEvent {
            call_id: self.call.id,
            seq: Some(self.call.seq),
            at: self.now,
            audiences: vec![Audience::Call(self.call.id)],
            kind,
        });
    }

    /// An event for every device of one user; not part of the call's stream (no `seq`).
    fn user_event(&mut self, user_id: &str, kind: EventKind) {
        self.out.events.push(DomainEvent {
            call_id: self.call.id,
            seq: None,
            at: self.now,
            audiences: vec![Audience::User(user_id.to_owned())],
            kind,
        });
    }

    /// Kicks participant `i` out of the channel after `after` if their client is in it by the
    /// last notice and their uid is known; someone already being kicked keeps the earlier kick.
    fn kick_participant(&mut self, i: usize, after: Duration) {
        let p = &self.call.participants[i];
        if !p.in_media {
            return;
        }
        if let Some(uid) = p.media_uid {
            let (user_id, client_seq) = (p.user_id.clone(), p.media_client_seq);
            self.kick(user_id, uid, client_seq, after);
        }
    }

    fn kick(&mut self, user_id: UserId, uid: u32, client_seq: Option<i64>, after: Duration) {
        if self.out.kicks.iter().any(|k| k.user_id == user_id) {
            return;
        }
        let due_at = add_duration(self.now, after);
        self.out.kicks.push(MediaKick {
            user_id,
            uid,
            client_seq,
            due_at,
        });
    }

    fn schedule(&mut self, kind: TimerKind, user_id: Option<UserId>, after: Duration) {
        self.out.timers.push(TimerChange::Schedule {
            kind,
            user_id,
            due_at: add_duration(self.now, after),
        });
    }
}

/// `now + d`, saturating instead of overflowing for absurd configured durations.
/// The rules of a list of people to ring, shared by initiate (`inviteUserIds`) and invite
/// (`userIds`): not empty, no empty id, no one twice, not the caller.
fn check_invitees(field: &'static str, ids: &[String], caller: &str) -> Result<(), DomainError> {
    if ids.is_empty() {
        return Err(DomainError::validation(
            field,
            "at least one user must be invited",
        ));
    }
    if ids.iter().any(String::is_empty) {
        return Err(DomainError::validation(field, "user ids must not be empty"));
    }
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    if unique.len() != ids.len() {
        return Err(DomainError::validation(field, "must be unique"));
    }
    if ids.iter().any(|u| u == caller) {
        return Err(DomainError::validation(
            field,
            "must not include the caller",
        ));
    }
    Ok(())
}

fn add_duration(now: OffsetDateTime, d: Duration) -> OffsetDateTime {
    // A century is far beyond any sensible timer and far from the calendar's end.
    const CENTURY: Duration = Duration::from_secs(100 * 366 * 24 * 3600);
    let d = d.min(CENTURY);
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let millis = i64::from(d.subsec_millis());
    now.checked_add(time::Duration::seconds(secs) + time::Duration::milliseconds(millis))
        .unwrap_or(now)
}
