//! Media flags (`PATCH /calls/:id/media`, `media_state_changed`).

use time::OffsetDateTime;

use super::{Outcome, Step, run};
use crate::error::DomainError;
use crate::events::EventKind;
use crate::model::{Actor, Call, MediaPatch, ParticipantStatus};

impl Call {
    /// Changes the actor's media flags; only while `joined`.
    pub fn update_media(
        &mut self,
        actor: &Actor,
        patch: &MediaPatch,
        now: OffsetDateTime,
    ) -> Result<Outcome, DomainError> {
        run(self, now, true, |s| s.update_media(actor, patch))
    }
}

impl Step<'_> {
    pub(super) fn update_media(
        &mut self,
        actor: &Actor,
        patch: &MediaPatch,
    ) -> Result<(), DomainError> {
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

    pub(super) fn apply_media(&mut self, i: usize, patch: &MediaPatch) {
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
}
