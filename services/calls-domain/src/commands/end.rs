//! Ending a call (`POST /calls/:id/end`) and the end rules every command shares.

use time::OffsetDateTime;

use super::{Outcome, Step, TimerChange, run};
use crate::error::DomainError;
use crate::events::{Audience, DomainEvent, EventKind, MediaTime};
use crate::model::{
    Actor, Call, CallStatus, CancelReason, EndReason, ParticipantStatus, Role, UserId,
};

impl Call {
    /// Ends the call (`POST /calls/:id/end`): the host of a group call, either side of a 1:1.
    pub fn end(&mut self, actor: &Actor, now: OffsetDateTime) -> Result<Outcome, DomainError> {
        run(self, now, true, |s| s.end(actor))
    }
}

impl Step<'_> {
    pub(super) fn end(&mut self, actor: &Actor) -> Result<(), DomainError> {
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

    /// After an invitee declined or missed: if nobody is left to ring and nobody answered,
    /// the call is over: `declined` if every invitee declined, `missed` otherwise.
    pub(super) fn end_if_nobody_answers(&mut self, by: Option<UserId>) {
        if self.call.has_pending_invitees() || self.call.was_answered() {
            return;
        }
        let all_declined = self
            .call
            .participants
            .iter()
            .filter(|p| p.is_invitee && !p.is_removed)
            .all(|p| p.status == ParticipantStatus::Declined);
        let reason = if all_declined {
            EndReason::Declined
        } else {
            EndReason::Missed
        };
        self.finish(reason, by);
    }

    /// Ends the call: the joined become `left`, the still-ringing `missed` (and their devices
    /// stop ringing), nobody is `inMedia` any more (open stays in the channel end now), every timer is cancelled, and `call_ended` goes to the call and to every
    /// invitee.
    pub(super) fn finish(&mut self, reason: EndReason, ended_by: Option<UserId>) {
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
        // Whoever is in the channel by the last notices leaves it on `call_ended`; one still
        // there after the linger is kicked (a leave notice meanwhile makes the kick moot).
        for i in 0..self.call.participants.len() {
            self.kick_participant(i, super::MEDIA_LINGER);
        }
        let mut stop_ringing = Vec::new();
        for p in &mut self.call.participants {
            // An ended call has no media: notices still arriving for its channel are ignored,
            // so the flag would otherwise keep whatever it was when the call ended.
            p.in_media = false;
            p.close_media_stay(now);
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
        self.call.sum_media_seconds();
        self.out.timers.push(TimerChange::CancelAll);

        let mut audiences = vec![Audience::Call(self.call.id)];
        audiences.extend(
            self.call
                .participants
                .iter()
                .filter(|p| p.is_invitee && !p.is_removed)
                .map(|p| Audience::User(p.user_id.clone())),
        );
        self.call.seq += 1;
        self.out.events.push(DomainEvent {
            call_id: self.call.id,
            seq: Some(self.call.seq),
            at: now,
            audiences,
            kind: EventKind::CallEnded {
                reason,
                ended_by,
                media_seconds: self.call.media_seconds,
                participant_media_seconds: self
                    .call
                    .participants
                    .iter()
                    .filter(|p| p.media_seconds > 0)
                    .map(|p| MediaTime {
                        user_id: p.user_id.clone(),
                        media_seconds: p.media_seconds,
                    })
                    .collect(),
            },
        });
    }
}
