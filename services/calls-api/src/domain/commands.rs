//! The commands of the state machine (CONTRACT section 4).
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
//! - A 1:1 always has `maxParticipants` 2.

use std::collections::BTreeSet;
use std::time::Duration;

use time::OffsetDateTime;

use super::error::DomainError;
use super::events::{Audience, DomainEvent, EventKind};
use super::model::{
    Actor, Call, CallId, CallStatus, CallType, Caller, CancelReason, EndReason, LeftReason,
    MediaPatch, NewCall, Participant, ParticipantStatus, Role, TimerKind, Timing, UserId,
};
use super::timefmt::truncate_millis;

/// The longest decline/status reason kept, in characters: the one limit signaling checks too.
pub const MAX_REASON_LEN: usize = calls_bus::wire::MAX_REASON_CHARS;

/// The reason put on `participant_status_changed` when the server marks someone missed.
pub const RING_TIMEOUT_REASON: &str = "ring_timeout";

/// The decline reason of an invitee who was in another call.
pub const BUSY_REASON: &str = "busy";

/// What a command caused, besides the change to the call itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Events, in the order they happened (call events in `seq` order).
    pub events: Vec<DomainEvent>,
    /// Timer rows to write or delete.
    pub timers: Vec<TimerChange>,
}

/// A change to the call's timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerChange {
    /// Create the timer, or move it to `due_at` if it exists (one per call, kind and user).
    Schedule {
        /// Which timer.
        kind: TimerKind,
        /// The participant it is about (`DisconnectGrace` only).
        user_id: Option<UserId>,
        /// When it fires.
        due_at: OffsetDateTime,
    },
    /// Delete the timer if it exists.
    Cancel {
        /// Which timer.
        kind: TimerKind,
        /// The participant it is about (`DisconnectGrace` only).
        user_id: Option<UserId>,
    },
    /// Delete every timer of the call (the call ended).
    CancelAll,
}

impl Call {
    /// Creates a call: the initiator is the `joined` host, invitees are `invited` and get
    /// `incoming_call`, except `busy_invitees` (users `joined` in another live call, as the
    /// store found them), who are `declined` with reason `"busy"`. A 1:1 whose callee is busy,
    /// or a group call whose invitees are all busy, ends at once (`busy`, resp. `declined`).
    /// Otherwise the ring timeout and the max-duration timer are scheduled.
    pub fn initiate(
        new: NewCall,
        busy_invitees: &BTreeSet<UserId>,
        id: CallId,
        now: OffsetDateTime,
        timing: &Timing,
    ) -> Result<(Call, Outcome), DomainError> {
        validate_new_call(&new)?;
        let now = truncate_millis(now);
        let camera_off = new.call_type == CallType::Audio;

        let mut participants = Vec::with_capacity(new.invitee_ids.len() + 1);
        participants.push(Participant {
            user_id: new.initiator_id.clone(),
            role: Role::Host,
            status: ParticipantStatus::Joined,
            is_mic_muted: false,
            is_camera_off: camera_off,
            is_sharing_screen: false,
            invited_at: now,
            joined_at: Some(now),
            left_at: None,
            decline_reason: None,
            is_connected: true,
            is_invitee: false,
            has_joined: true,
        });
        for user_id in &new.invitee_ids {
            let busy = busy_invitees.contains(user_id);
            participants.push(Participant {
                user_id: user_id.clone(),
                role: Role::Participant,
                status: if busy {
                    ParticipantStatus::Declined
                } else {
                    ParticipantStatus::Invited
                },
                is_mic_muted: false,
                is_camera_off: camera_off,
                is_sharing_screen: false,
                invited_at: now,
                joined_at: None,
                left_at: None,
                decline_reason: busy.then(|| BUSY_REASON.to_owned()),
                is_connected: true,
                is_invitee: true,
                has_joined: false,
            });
        }

        let mut call = Call {
            id,
            chat_room_id: new.chat_room_id,
            call_type: new.call_type,
            is_group_call: new.is_group_call,
            status: CallStatus::Ringing,
            initiator_id: new.initiator_id,
            max_participants: if new.is_group_call {
                new.max_participants
            } else {
                2
            },
            created_at: now,
            started_at: None,
            ended_at: None,
            end_reason: None,
            ended_by: None,
            seq: 0,
            participants,
        };

        let mut step = Step {
            call: &mut call,
            now,
            out: Outcome::default(),
        };
        if !step.call.has_pending_invitees() {
            // Nobody can be rung: everybody is busy.
            let reason = if step.call.is_group_call {
                EndReason::Declined
            } else {
                EndReason::Busy
            };
            step.finish(reason, None);
        } else {
            step.schedule(TimerKind::RingTimeout, None, timing.ring_timeout);
            if let Some(max) = timing.max_duration.filter(|d| !d.is_zero()) {
                step.schedule(TimerKind::MaxDuration, None, max);
            }
            let snapshot = step.call.clone();
            let from = Caller::new(snapshot.initiator_id.clone(), &new.initiator_profile);
            let ring_deadline = now + timing.ring_timeout;
            for p in snapshot
                .participants
                .iter()
                .filter(|p| p.status.is_pending())
            {
                step.user_event(
                    &p.user_id,
                    EventKind::IncomingCall {
                        call: Box::new(snapshot.clone()),
                        from: from.clone(),
                        ring_deadline,
                    },
                );
            }
        }
        let out = step.out;
        Ok((call, out))
    }

    /// Joins the call (`POST /calls/:id/join`): an invitee in any status, or any room member
    /// for a group call (added as a `participant`). Capacity counts `joined` participants. The
    /// first join by someone other than the initiator makes the call `active`.
    pub fn join(
        &mut self,
        actor: &Actor,
        media: &MediaPatch,
        now: OffsetDateTime,
    ) -> Result<Outcome, DomainError> {
        run(self, now, true, |s| s.join(actor, media))
    }

    /// Changes the actor's own status (`PATCH /calls/:id/status`). `joined` behaves exactly
    /// like [`Call::join`], `left` like [`Call::leave`]. `reason` becomes the decline reason.
    pub fn set_status(
        &mut self,
        actor: &Actor,
        status: ParticipantStatus,
        reason: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Outcome, DomainError> {
        run(self, now, true, |s| s.set_status(actor, status, reason))
    }

    /// Leaves the call (`joined → left`).
    pub fn leave(
        &mut self,
        actor: &Actor,
        reason: LeftReason,
        now: OffsetDateTime,
    ) -> Result<Outcome, DomainError> {
        run(self, now, true, |s| s.leave(actor, reason))
    }

    /// Changes the actor's media flags; only while `joined`.
    pub fn update_media(
        &mut self,
        actor: &Actor,
        patch: &MediaPatch,
        now: OffsetDateTime,
    ) -> Result<Outcome, DomainError> {
        run(self, now, true, |s| s.update_media(actor, patch))
    }

    /// Ends the call (`POST /calls/:id/end`): the host of a group call, either side of a 1:1.
    pub fn end(&mut self, actor: &Actor, now: OffsetDateTime) -> Result<Outcome, DomainError> {
        run(self, now, true, |s| s.end(actor))
    }

    /// The ring timer fired: everyone still `invited`/`ringing` becomes `missed`; if nobody but
    /// the initiator ever joined, the call ends `missed`. A no-op on an ended call.
    pub fn ring_timeout(&mut self, now: OffsetDateTime) -> Outcome {
        run(self, now, false, |s| {
            s.ring_timeout();
            Ok(())
        })
        .unwrap_or_default()
    }

    /// `user` has some socket (`connected`) or none left. A joined participant losing the last
    /// one becomes `isConnected: false` and the disconnect grace starts; getting one back
    /// within the grace cancels it. A no-op for anyone not joined.
    pub fn presence(
        &mut self,
        user_id: &str,
        connected: bool,
        now: OffsetDateTime,
        timing: &Timing,
    ) -> Outcome {
        run(self, now, true, |s| {
            s.presence(user_id, connected, timing.disconnect_grace);
            Ok(())
        })
        .unwrap_or_default()
    }

    /// The disconnect grace of `user` ran out: if still disconnected they leave with reason
    /// `connection_lost` (which may end the call).
    pub fn disconnect_grace_expired(&mut self, user_id: &str, now: OffsetDateTime) -> Outcome {
        run(self, now, true, |s| {
            s.disconnect_grace_expired(user_id);
            Ok(())
        })
        .unwrap_or_default()
    }

    /// The max-duration timer fired: the call ends `timeout`.
    pub fn max_duration_reached(&mut self, now: OffsetDateTime) -> Outcome {
        run(self, now, true, |s| {
            if s.call.is_live() {
                s.finish(EndReason::Timeout, None);
            }
            Ok(())
        })
        .unwrap_or_default()
    }

    /// Runs the command a fired timer stands for.
    pub fn fire_timer(
        &mut self,
        kind: TimerKind,
        user_id: Option<&str>,
        now: OffsetDateTime,
    ) -> Outcome {
        match (kind, user_id) {
            (TimerKind::RingTimeout, _) => self.ring_timeout(now),
            (TimerKind::MaxDuration, _) => self.max_duration_reached(now),
            (TimerKind::DisconnectGrace, Some(user_id)) => {
                self.disconnect_grace_expired(user_id, now)
            }
            // A grace timer without a user cannot be acted on.
            (TimerKind::DisconnectGrace, None) => Outcome::default(),
        }
    }
}

fn validate_new_call(new: &NewCall) -> Result<(), DomainError> {
    if new.chat_room_id.is_empty() {
        return Err(DomainError::validation("chatRoomId", "must not be empty"));
    }
    if new.initiator_id.is_empty() {
        return Err(DomainError::validation("userId", "must not be empty"));
    }
    if new.invitee_ids.is_empty() {
        return Err(DomainError::validation(
            "inviteUserIds",
            "at least one user must be invited",
        ));
    }
    if new.invitee_ids.iter().any(String::is_empty) {
        return Err(DomainError::validation(
            "inviteUserIds",
            "user ids must not be empty",
        ));
    }
    let unique: BTreeSet<&String> = new.invitee_ids.iter().collect();
    if unique.len() != new.invitee_ids.len() {
        return Err(DomainError::validation("inviteUserIds", "must be unique"));
    }
    if unique.contains(&new.initiator_id) {
        return Err(DomainError::validation(
            "inviteUserIds",
            "must not include the caller",
        ));
    }
    if !new.is_group_call && new.invitee_ids.len() != 1 {
        return Err(DomainError::validation(
            "inviteUserIds",
            "a 1:1 call invites exactly one user",
        ));
    }
    if new.is_group_call && new.max_participants < 2 {
        return Err(DomainError::validation(
            "maxParticipants",
            "must be at least 2",
        ));
    }
    Ok(())
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

    // ----- commands -----

    fn join(&mut self, actor: &Actor, media: &MediaPatch) -> Result<(), DomainError> {
        self.ensure_visible(actor)?;
        self.ensure_live()?;
        let index = self.index_of(&actor.user_id);
        if let Some(i) = index
            && self.call.participants[i].status == ParticipantStatus::Joined
        {
            self.apply_media(i, media);
            return Ok(());
        }
        if self.call.joined_count() >= self.call.max_participants as usize {
            return Err(DomainError::CallFull);
        }

        let now = self.now;
        let camera_off = self.call.call_type == CallType::Audio;
        let flags = (
            media.is_mic_muted.unwrap_or(false),
            media.is_camera_off.unwrap_or(camera_off),
            media.is_sharing_screen.unwrap_or(false),
        );
        let (i, was_pending) = match index {
            Some(i) => {
                let p = &mut self.call.participants[i];
                let was_pending = p.status.is_pending();
                p.status = ParticipantStatus::Joined;
                p.joined_at = Some(now);
                p.left_at = None;
                p.decline_reason = None;
                p.is_connected = true;
                p.has_joined = true;
                (p.is_mic_muted, p.is_camera_off, p.is_sharing_screen) = flags;
                (i, was_pending)
            }
            None => {
                self.call.participants.push(Participant {
                    user_id: actor.user_id.clone(),
                    role: Role::Participant,
                    status: ParticipantStatus::Joined,
                    is_mic_muted: flags.0,
                    is_camera_off: flags.1,
                    is_sharing_screen: flags.2,
                    invited_at: now,
                    joined_at: Some(now),
                    left_at: None,
                    decline_reason: None,
                    is_connected: true,
                    is_invitee: false,
                    has_joined: true,
                });
                (self.call.participants.len() - 1, false)
            }
        };

        if self.call.status == CallStatus::Ringing && actor.user_id != self.call.initiator_id {
            self.call.status = CallStatus::Active;
            self.call.started_at = Some(now);
        }
        let participant = self.call.participants[i].clone();
        self.call_event(EventKind::ParticipantJoined { participant });
        if was_pending {
            self.user_event(
                &actor.user_id,
                EventKind::IncomingCallCancelled {
                    reason: CancelReason::AnsweredElsewhere,
                },
            );
        }
        Ok(())
    }

    fn set_status(
        &mut self,
        actor: &Actor,
        target: ParticipantStatus,
        reason: Option<&str>,
    ) -> Result<(), DomainError> {
        match target {
            ParticipantStatus::Joined => return self.join(actor, &MediaPatch::default()),
            ParticipantStatus::Left => return self.leave(actor, LeftReason::Left),
            _ => {}
        }
        self.ensure_visible(actor)?;
        self.ensure_live()?;
        let reason = reason.filter(|r| !r.is_empty());
        if let Some(Err(message)) = reason.map(calls_bus::wire::check_reason) {
            return Err(DomainError::validation("reason", message));
        }
        let Some(i) = self.index_of(&actor.user_id) else {
            // A room member who is not in the call has no status to change.
            return Err(DomainError::InvalidTransition);
        };
        let current = self.call.participants[i].status;
        if target == ParticipantStatus::Invited {
            return Err(DomainError::InvalidTransition);
        }
        if current == target {
            return Ok(());
        }
        if !current.is_pending() {
            return Err(DomainError::InvalidTransition);
        }
        let reason = reason.map(str::to_owned);
        let user_id = actor.user_id.clone();
        match target {
            ParticipantStatus::Ringing => {
                self.call.participants[i].status = ParticipantStatus::Ringing;
                self.status_changed(&user_id, ParticipantStatus::Ringing, reason);
            }
            ParticipantStatus::Declined => {
                let p = &mut self.call.participants[i];
                p.status = ParticipantStatus::Declined;
                p.decline_reason = reason.clone();
                self.status_changed(&user_id, ParticipantStatus::Declined, reason);
                self.user_event(
                    &user_id,
                    EventKind::IncomingCallCancelled {
                        reason: CancelReason::DeclinedElsewhere,
                    },
                );
                self.end_if_nobody_answers(Some(user_id));
            }
            ParticipantStatus::Missed => {
                self.call.participants[i].status = ParticipantStatus::Missed;
                self.status_changed(&user_id, ParticipantStatus::Missed, reason);
                self.user_event(
                    &user_id,
                    EventKind::IncomingCallCancelled {
                        reason: CancelReason::Missed,
                    },
                );
                self.end_if_nobody_answers(Some(user_id));
            }
            // Handled above.
            ParticipantStatus::Invited | ParticipantStatus::Joined | ParticipantStatus::Left => {
                return Err(DomainError::InvalidTransition);
            }
        }
        Ok(())
    }

    fn leave(&mut self, actor: &Actor, reason: LeftReason) -> Result<(), DomainError> {
        self.ensure_visible(actor)?;
        self.ensure_live()?;
        let Some(i) = self.index_of(&actor.user_id) else {
            return Err(DomainError::InvalidTransition);
        };
        match self.call.participants[i].status {
            ParticipantStatus::Joined => {}
            ParticipantStatus::Left => return Ok(()),
            _ => return Err(DomainError::InvalidTransition),
        }
        let ended_by = (reason != LeftReason::ConnectionLost).then(|| actor.user_id.clone());
        self.depart(i, reason, ended_by);
        Ok(())
    }

    fn update_media(&mut self, actor: &Actor, patch: &MediaPatch) -> Result<(), DomainError> {
        self.ensure_visible(actor)?;
        self.ensure_live()?;
        match self.index_of(&actor.user_id) {
            Some(i) if self.call.participants[i].status == ParticipantStatus::Joined => {
                self.apply_media(i, patch);
                Ok(())
            }
            _ => Err(DomainError::NotJoined),
        }
    }

    fn end(&mut self, actor: &Actor) -> Result<(), DomainError> {
        self.ensure_visible(actor)?;
        self.ensure_live()?;
        let by = Some(actor.user_id.clone());
        if self.call.is_group_call {
            let is_host = self
                .call
                .participant(&actor.user_id)
                .is_some_and(|p| p.role == Role::Host);
            if !is_host {
                return Err(DomainError::Forbidden);
            }
            let reason = if self.call.was_answered() {
                EndReason::Completed
            } else {
                EndReason::Cancelled
            };
            self.finish(reason, by);
            return Ok(());
        }
        if self.call.was_answered() {
            self.finish(EndReason::Completed, by);
        } else if actor.user_id == self.call.initiator_id {
            self.finish(EndReason::Cancelled, by);
        } else {
            // The callee hanging up a ringing 1:1 is declining it.
            let pending = self
                .call
                .participant(&actor.user_id)
                .is_some_and(|p| p.status.is_pending());
            if pending {
                return self.set_status(actor, ParticipantStatus::Declined, None);
            }
            self.finish(EndReason::Declined, by);
        }
        Ok(())
    }

    fn ring_timeout(&mut self) {
        if !self.call.is_live() {
            return;
        }
        let pending: Vec<usize> = (0..self.call.participants.len())
            .filter(|&i| self.call.participants[i].status.is_pending())
            .collect();
        for i in pending {
            self.call.participants[i].status = ParticipantStatus::Missed;
            let user_id = self.call.participants[i].user_id.clone();
            self.status_changed(
                &user_id,
                ParticipantStatus::Missed,
                Some(RING_TIMEOUT_REASON.to_owned()),
            );
            self.user_event(
                &user_id,
                EventKind::IncomingCallCancelled {
                    reason: CancelReason::Missed,
                },
            );
        }
        if !self.call.was_answered() {
            self.finish(EndReason::Missed, None);
        }
    }

    fn presence(&mut self, user_id: &str, connected: bool, grace: Duration) {
        if !self.call.is_live() {
            return;
        }
        let Some(i) = self.index_of(user_id) else {
            return;
        };
        let p = &mut self.call.participants[i];
        if p.status != ParticipantStatus::Joined || p.is_connected == connected {
            return;
        }
        p.is_connected = connected;
        let user_id = user_id.to_owned();
        if connected {
            self.call_event(EventKind::ParticipantReconnected {
                user_id: user_id.clone(),
            });
            self.out.timers.push(TimerChange::Cancel {
                kind: TimerKind::DisconnectGrace,
                user_id: Some(user_id),
            });
        } else {
            self.call_event(EventKind::ParticipantDisconnected {
                user_id: user_id.clone(),
                grace_seconds: grace.as_secs(),
            });
            self.schedule(TimerKind::DisconnectGrace, Some(user_id), grace);
        }
    }

    fn disconnect_grace_expired(&mut self, user_id: &str) {
        if !self.call.is_live() {
            return;
        }
        if let Some(i) = self.index_of(user_id) {
            let p = &self.call.participants[i];
            if p.status == ParticipantStatus::Joined && !p.is_connected {
                self.depart(i, LeftReason::ConnectionLost, None);
            }
        }
    }

    // ----- shared transitions -----

    /// Participant `i` (joined) leaves; then the end rules for leaving.
    fn depart(&mut self, i: usize, reason: LeftReason, ended_by: Option<UserId>) {
        let now = self.now;
        let p = &mut self.call.participants[i];
        let was_disconnected = !p.is_connected;
        p.status = ParticipantStatus::Left;
        p.left_at = Some(now);
        p.is_connected = true;
        let user_id = p.user_id.clone();
        if was_disconnected {
            self.out.timers.push(TimerChange::Cancel {
                kind: TimerKind::DisconnectGrace,
                user_id: Some(user_id.clone()),
            });
        }
        self.call_event(EventKind::ParticipantLeft { user_id, reason });

        // A 1:1 ends when either side leaves; a group call when nobody is left in it.
        if !self.call.is_group_call || self.call.joined_count() == 0 {
            let reason = if self.call.was_answered() {
                EndReason::Completed
            } else {
                EndReason::Cancelled
            };
            self.finish(reason, ended_by);
        }
    }

    /// After an invitee declined or missed: if nobody is left to ring and nobody answered,
    /// the call is over: `declined` if every invitee declined, `missed` otherwise.
    fn end_if_nobody_answers(&mut self, by: Option<UserId>) {
        if self.call.has_pending_invitees() || self.call.was_answered() {
            return;
        }
        let all_declined = self
            .call
            .participants
            .iter()
            .filter(|p| p.is_invitee)
            .all(|p| p.status == ParticipantStatus::Declined);
        let reason = if all_declined {
            EndReason::Declined
        } else {
            EndReason::Missed
        };
        self.finish(reason, by);
    }

    /// Ends the call: the joined become `left`, the still-ringing `missed` (and their devices
    /// stop ringing), every timer is cancelled, and `call_ended` goes to the call and to every
    /// invitee.
    fn finish(&mut self, reason: EndReason, ended_by: Option<UserId>) {
        let now = self.now;
        self.call.status = CallStatus::Ended;
        self.call.ended_at = Some(now);
        self.call.end_reason = Some(reason);
        self.call.ended_by = ended_by.clone();
        let cancel_reason = if reason == EndReason::Missed {
            CancelReason::Missed
        } else {
            CancelReason::Cancelled
        };
        let mut stop_ringing = Vec::new();
        for p in &mut self.call.participants {
            match p.status {
                ParticipantStatus::Joined => {
                    p.status = ParticipantStatus::Left;
                    p.left_at = Some(now);
                    p.is_connected = true;
                }
                ParticipantStatus::Invited | ParticipantStatus::Ringing => {
                    p.status = ParticipantStatus::Missed;
                    stop_ringing.push(p.user_id.clone());
                }
                _ => {}
            }
        }
        for user_id in stop_ringing {
            self.user_event(
                &user_id,
                EventKind::IncomingCallCancelled {
                    reason: cancel_reason,
                },
            );
        }
        self.out.timers.push(TimerChange::CancelAll);

        let mut audiences = vec![Audience::Call(self.call.id)];
        audiences.extend(
            self.call
                .participants
                .iter()
                .filter(|p| p.is_invitee)
                .map(|p| Audience::User(p.user_id.clone())),
        );
        self.call.seq += 1;
        self.out.events.push(DomainEvent {
            call_id: self.call.id,
            seq: Some(self.call.seq),
            at: now,
            audiences,
            kind: EventKind::CallEnded { reason, ended_by },
        });
    }

    fn apply_media(&mut self, i: usize, patch: &MediaPatch) {
        let p = &mut self.call.participants[i];
        let before = (p.is_mic_muted, p.is_camera_off, p.is_sharing_screen);
        p.is_mic_muted = patch.is_mic_muted.unwrap_or(p.is_mic_muted);
        p.is_camera_off = patch.is_camera_off.unwrap_or(p.is_camera_off);
        p.is_sharing_screen = patch.is_sharing_screen.unwrap_or(p.is_sharing_screen);
        let after = (p.is_mic_muted, p.is_camera_off, p.is_sharing_screen);
        if before != after {
            let user_id = p.user_id.clone();
            self.call_event(EventKind::ParticipantMediaChanged {
                user_id,
                is_mic_muted: after.0,
                is_camera_off: after.1,
                is_sharing_screen: after.2,
            });
        }
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

    fn schedule(&mut self, kind: TimerKind, user_id: Option<UserId>, after: Duration) {
        self.out.timers.push(TimerChange::Schedule {
            kind,
            user_id,
            due_at: add_duration(self.now, after),
        });
    }
}

/// `now + d`, saturating instead of overflowing for absurd configured durations.
fn add_duration(now: OffsetDateTime, d: Duration) -> OffsetDateTime {
    // A century is far beyond any sensible timer and far from the calendar's end.
    const CENTURY: Duration = Duration::from_secs(100 * 366 * 24 * 3600);
    let d = d.min(CENTURY);
    let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let millis = i64::from(d.subsec_millis());
    now.checked_add(time::Duration::seconds(secs) + time::Duration::milliseconds(millis))
        .unwrap_or(now)
}
