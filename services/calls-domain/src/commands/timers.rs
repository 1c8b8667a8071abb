//! The server-side timers: ring timeout, disconnect grace, max duration, alone timeout (and
//! the media grace, in `channel`).
//!
//! A call has one ring timer, due at the earliest ring deadline of those still being rung
//! (each invitee's `invitedAt` plus the call's ring timeout): people invited into a live call
//! ring as long as the first ones did, and each firing reschedules it for the next.

use time::OffsetDateTime;

use super::{Outcome, RING_TIMEOUT_REASON, Step, run};
use crate::events::EventKind;
use crate::model::{Call, CancelReason, EndReason, LeftReason, ParticipantStatus, TimerKind};

impl Call {
    /// The ring timer fired: everyone still `invited`/`ringing` whose ring deadline has passed
    /// becomes `missed`; if then nobody is being rung and nobody but the initiator ever
    /// joined, the call ends `missed`. The timer moves to the next deadline of those still
    /// rung. A no-op on an ended call.
    pub fn ring_timeout(&mut self, now: OffsetDateTime) -> Outcome {
        run(self, now, false, |s| {
            s.ring_timeout();
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

    /// The alone timer fired: a group call still down to one joined participant (or none)
    /// ends `completed` (`cancelled` if it was never answered).
    pub fn alone_timeout(&mut self, now: OffsetDateTime) -> Outcome {
        run(self, now, true, |s| {
            if s.call.is_live() && s.call.is_group_call && s.call.joined_count() <= 1 {
                let reason = if s.call.was_answered() {
                    EndReason::Completed
                } else {
                    EndReason::Cancelled
                };
                s.finish(reason, None);
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
            (TimerKind::AloneTimeout, _) => self.alone_timeout(now),
            (TimerKind::DisconnectGrace, Some(user_id)) => {
                self.disconnect_grace_expired(user_id, now)
            }
            (TimerKind::MediaGrace, Some(user_id)) => self.media_grace_expired(user_id, now),
            // A grace timer without a user cannot be acted on.
            (TimerKind::DisconnectGrace | TimerKind::MediaGrace, None) => Outcome::default(),
        }
    }
}

impl Step<'_> {
    pub(super) fn ring_timeout(&mut self) {
        if !self.call.is_live() {
            return;
        }
        let now = self.now;
        let pending: Vec<usize> = (0..self.call.participants.len())
            .filter(|&i| {
                let p = &self.call.participants[i];
                p.status.is_pending() && self.call.ring_deadline(p) <= now
            })
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
        if self.call.has_pending_invitees() {
            self.schedule_ring_timer();
        } else if !self.call.was_answered() {
            self.finish(EndReason::Missed, None);
        }
    }

    pub(super) fn disconnect_grace_expired(&mut self, user_id: &str) {
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
}
