//! Leaving a call, and what a departure does to it.

use std::time::Duration;

use time::OffsetDateTime;

use super::{Outcome, Step, TimerChange, run};
use crate::error::DomainError;
use crate::events::EventKind;
use crate::model::{
    Actor, Call, EndReason, LeftReason, ParticipantStatus, Role, TimerKind, UserId,
};

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
        // Out of the media after a leave notice: the media grace may be running.
        let media_grace_running = !p.in_media && p.media_client_seq.is_some();
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
        if media_grace_running {
            self.out.timers.push(TimerChange::Cancel {
                kind: TimerKind::MediaGrace,
                user_id: Some(user_id.clone()),
            });
        }
        self.call_event(EventKind::ParticipantLeft { user_id, reason });
        // Removed: out of the media now. Otherwise their client leaves the channel itself.
        let linger = if reason == LeftReason::Removed {
            Duration::ZERO
        } else {
            super::MEDIA_LINGER
        };
        self.kick_participant(i, linger);

        // A 1:1 ends when either side leaves; a group call when nobody is left in it.
        if !self.call.is_group_call || self.call.joined_count() == 0 {
            let reason = if self.call.was_answered() {
                EndReason::Completed
            } else {
                EndReason::Cancelled
            };
            self.finish(reason, ended_by);
            return;
        }
        if self.call.participants[i].role == Role::Host {
            self.hand_over_host(i);
        }
        // The last other participant left: the one still here gets a while for someone to
        // (re)join before the call ends on its own.
        if self.call.joined_count() == 1
            && self.call.alone_timeout_seconds > 0
            && self.call.was_answered()
        {
            let after = Duration::from_secs(u64::from(self.call.alone_timeout_seconds));
            self.schedule(TimerKind::AloneTimeout, None, after);
        }
    }

    /// The host (participant `from`) left a live group call: the participant joined longest
    /// (earliest `joinedAt`, then roster order) becomes host.
    fn hand_over_host(&mut self, from: usize) {
        let Some(to) = self
            .call
            .participants
            .iter()
            .enumerate()
            .filter(|(_, p)| p.status == ParticipantStatus::Joined)
            .min_by_key(|(i, p)| (p.joined_at, *i))
            .map(|(i, _)| i)
        else {
            return;
        };
        self.call.participants[from].role = Role::Participant;
        self.call.participants[to].role = Role::Host;
        let user_id = self.call.participants[to].user_id.clone();
        self.call_event(EventKind::HostChanged { user_id });
    }
}
