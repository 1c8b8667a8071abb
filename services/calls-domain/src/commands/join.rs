//! Joining (`POST /calls/:id/join`, `joined` through `PATCH /status`, `join_call` is only a
//! subscription).

use time::OffsetDateTime;

use super::{Outcome, Step, TimerChange, run};
use crate::error::DomainError;
use crate::events::EventKind;
use crate::model::{
    Actor, Call, CallStatus, CallType, CancelReason, MediaPatch, Participant, ParticipantStatus,
    Role, TimerKind,
};

impl Call {
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
}

impl Step<'_> {
    pub(super) fn join(&mut self, actor: &Actor, media: &MediaPatch) -> Result<(), DomainError> {
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
                    is_removed: false,
                    in_media: false,
                    media_uid: None,
                    media_client_seq: None,
                    media_seconds: 0,
                    media_since: None,
                });
                (self.call.participants.len() - 1, false)
            }
        };

        // Only an answered call can have an alone timer running (see `depart`).
        let was_active = self.call.status == CallStatus::Active;
        if self.call.status == CallStatus::Ringing && actor.user_id != self.call.initiator_id {
            self.call.status = CallStatus::Active;
            self.call.started_at = Some(now);
        }
        let participant = self.call.participants[i].clone();
        self.call_event(EventKind::ParticipantJoined { participant });
        if was_active
            && self.call.is_group_call
            && self.call.alone_timeout_seconds > 0
            && self.call.joined_count() == 2
        {
            // Someone came back to the one who was alone: the call goes on.
            self.out.timers.push(TimerChange::Cancel {
                kind: TimerKind::AloneTimeout,
                user_id: None,
            });
        }
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
}
