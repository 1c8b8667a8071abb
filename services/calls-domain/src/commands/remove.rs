//! The host removing someone (`POST /calls/:id/participants/:userId/remove`, CONTRACT
//! section 10).
//!
//! Whatever their status, the removed user becomes `left` and subscribers get
//! `participant_left {reason: "removed"}` (the store then tells every signaling node to stop
//! relaying the call to that user's sockets). A user still being rung stops ringing
//! (`incoming_call_cancelled`, reason `cancelled`). From then on the call is invisible to them
//! (they cannot follow it, rejoin it, or get media for it) until someone invites them again.
//!
//! Choices the contract leaves open, made here:
//! - Only the host removes; the host cannot remove themselves (leave or end instead).
//! - Removing someone already removed is a no-op (no event).
//! - Removing someone who is not in the call is `VALIDATION_FAILED` on `userId`.
//! - The departure follows the usual end rules: a 1:1 ends, a group call left with the host
//!   alone starts the alone timer, and a call nobody answered ends `cancelled` once nobody is
//!   left to ring.

use time::OffsetDateTime;

use super::{Outcome, Step, run};
use crate::error::DomainError;
use crate::events::EventKind;
use crate::model::{Actor, Call, CancelReason, EndReason, LeftReason, ParticipantStatus, Role};

impl Call {
    /// The host removes `user_id` from the live call.
    pub fn remove(
        &mut self,
        actor: &Actor,
        user_id: &str,
        now: OffsetDateTime,
    ) -> Result<Outcome, DomainError> {
        run(self, now, true, |s| s.remove(actor, user_id))
    }
}

impl Step<'_> {
    pub(super) fn remove(&mut self, actor: &Actor, user_id: &str) -> Result<(), DomainError> {
        self.ensure_visible(actor)?;
        self.ensure_live()?;
        let is_host = self
            .call
            .participant(&actor.user_id)
            .is_some_and(|p| p.role == Role::Host);
        if !is_host {
            return Err(DomainError::Forbidden);
        }
        if user_id == actor.user_id {
            return Err(DomainError::validation(
                "userId",
                "the host cannot remove themselves; leave or end the call instead",
            ));
        }
        let Some(i) = self.index_of(user_id) else {
            return Err(DomainError::validation("userId", "is not in this call"));
        };
        if self.call.participants[i].is_removed {
            return Ok(());
        }
        let by = Some(actor.user_id.clone());
        let status = self.call.participants[i].status;
        self.call.participants[i].is_removed = true;
        if status == ParticipantStatus::Joined {
            self.depart(i, LeftReason::Removed, by);
            return Ok(());
        }

        let now = self.now;
        let p = &mut self.call.participants[i];
        p.status = ParticipantStatus::Left;
        p.left_at = Some(now);
        p.is_connected = true;
        let user_id = p.user_id.clone();
        self.call_event(EventKind::ParticipantLeft {
            user_id: user_id.clone(),
            reason: LeftReason::Removed,
        });
        // Not joined, yet in the channel by the last notice (left earlier, still there).
        self.kick_participant(i, std::time::Duration::ZERO);
        if status.is_pending() {
            self.user_event(
                &user_id,
                EventKind::IncomingCallCancelled {
                    reason: CancelReason::Cancelled,
                },
            );
            if !self.call.has_pending_invitees() && !self.call.was_answered() {
                // Nobody answered and nobody is left to ring: the host gave up on the call.
                self.finish(EndReason::Cancelled, by);
            } else if self.call.has_pending_invitees() {
                self.schedule_ring_timer();
            }
        }
        Ok(())
    }
}
