//! A participant changing their own status (`PATCH /calls/:id/status`, `call_status_changed`).

use time::OffsetDateTime;

use super::{Outcome, Step, run};
use crate::error::DomainError;
use crate::events::EventKind;
use crate::model::{Actor, Call, CancelReason, LeftReason, MediaPatch, ParticipantStatus};

impl Call {
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
}

impl Step<'_> {
    pub(super) fn set_status(
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
        if let Some(Err(message)) = reason.map(super::check_reason) {
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
}
