//! Leaving a call, and what a departure does to it.

use time::OffsetDateTime;

use super::{Outcome, Step, TimerChange, run};
use crate::error::DomainError;
use crate::events::EventKind;
use crate::model::{Actor, Call, EndReason, LeftReason, ParticipantStatus, TimerKind, UserId};

impl Call {
    /// Leaves the call (`joined → left`).
    pub fn leave(
        &mut self,
        actor: &Actor,
        reason: LeftReason,
        now: OffsetDateTime,
    ) -> Result<Outcome, DomainError> {
        run(self, now, true, |s| s.leave(actor, reason))
    }
}

impl Step<'_> {
    pub(super) fn leave(&mut self, actor: &Actor, reason: LeftReason) -> Result<(), DomainError> {
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

    /// Participant `i` (joined) leaves; then the end rules for leaving.
    pub(super) fn depart(&mut self, i: usize, reason: LeftReason, ended_by: Option<UserId>) {
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
}
