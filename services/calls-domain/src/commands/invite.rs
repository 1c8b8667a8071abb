//! Ringing more people into a live call (`POST /calls/:id/invite`, CONTRACT section 10).
//!
//! Choices the contract leaves open, made here:
//! - Users already `invited`, `ringing` or `joined` are left as they are (no event): two
//!   invites of one user at once ring them once.
//! - Users `declined`, `missed` or `left` (and those the host removed) are rung again: status
//!   `invited`, a fresh `invitedAt` (their ring deadline counts from it), removal lifted.
//! - A user `joined` in another live call is not rung: they are `declined` with reason
//!   `busy`, as at initiation, and subscribers still learn of the invitation.
//! - The roster (everyone but the initiator) may not grow beyond `max_invitees`.
//! - A 1:1 that rings a third person becomes a group call whose capacity is
//!   `group_capacity` (`CALL_MAX_PARTICIPANTS`); `call_updated` follows the invitations.

use std::collections::BTreeSet;

use time::OffsetDateTime;

use super::{BUSY_REASON, Outcome, Step, TimerChange, run};
use crate::error::DomainError;
use crate::events::EventKind;
use crate::model::{
    Actor, Call, CallType, Caller, Participant, ParticipantStatus, Profile, Role, TimerKind, UserId,
};

/// An invitation into a live call, as the API validated it for shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invitation {
    /// Who to ring, in order: unique, not empty, not the inviter.
    pub user_ids: Vec<UserId>,
    /// Of those, the users `joined` in another live call (found by the store in the same
    /// transaction).
    pub busy: BTreeSet<UserId>,
    /// How the inviter introduces themselves to the people rung (their access token).
    pub from: Profile,
    /// `CALL_MAX_INVITEES`: the most people a call's roster holds besides its initiator.
    pub max_invitees: usize,
    /// The capacity a 1:1 gets when it becomes a group call (`CALL_MAX_PARTICIPANTS`).
    pub group_capacity: u32,
}

impl Call {
    /// The host or any joined participant rings `invitation.user_ids` into the live call.
    pub fn invite(
        &mut self,
        actor: &Actor,
        invitation: &Invitation,
        now: OffsetDateTime,
    ) -> Result<Outcome, DomainError> {
        run(self, now, true, |s| s.invite(actor, invitation))
    }
}

impl Step<'_> {
    pub(super) fn invite(
        &mut self,
        actor: &Actor,
        invitation: &Invitation,
    ) -> Result<(), DomainError> {
        self.ensure_visible(actor)?;
        self.ensure_live()?;
        let may_invite = self
            .call
            .participant(&actor.user_id)
            .is_some_and(|p| p.role == Role::Host || p.status == ParticipantStatus::Joined);
        if !may_invite {
            return Err(DomainError::Forbidden);
        }
        super::check_invitees("userIds", &invitation.user_ids, &actor.user_id)?;

        let to_ring: Vec<&UserId> = invitation
            .user_ids
            .iter()
            .filter(|u| {
                self.call.participant(u).is_none_or(|p| {
                    p.is_removed
                        || !(p.status.is_pending() || p.status == ParticipantStatus::Joined)
                })
            })
            .collect();
        if to_ring.is_empty() {
            return Ok(());
        }
        let newcomers = to_ring
            .iter()
            .filter(|u| self.call.participant(u).is_none())
            .count();
        let roster = self.call.participants.len().saturating_sub(1);
        if roster + newcomers > invitation.max_invitees {
            return Err(DomainError::validation(
                "userIds",
                format!(
                    "a call rings at most {} people; it has {roster}",
                    invitation.max_invitees
                ),
            ));
        }

        let now = self.now;
        let camera_off = self.call.call_type == CallType::Audio;
        let became_group = !self.call.is_group_call;
        if became_group {
            self.call.is_group_call = true;
            self.call.max_participants = invitation.group_capacity.max(2);
        }
        let mut rung = Vec::new();
        for user_id in to_ring {
            let busy = invitation.busy.contains(user_id);
            let (status, decline_reason) = if busy {
                (ParticipantStatus::Declined, Some(BUSY_REASON.to_owned()))
            } else {
                (ParticipantStatus::Invited, None)
            };
            let i = match self.index_of(user_id) {
                Some(i) => {
                    let p = &mut self.call.participants[i];
                    p.status = status;
                    p.decline_reason = decline_reason;
                    p.invited_at = now;
                    p.is_invitee = true;
                    p.is_removed = false;
                    p.is_connected = true;
                    i
                }
                None => {
                    self.call.participants.push(Participant {
                        user_id: user_id.clone(),
                        role: Role::Participant,
                        status,
                        is_mic_muted: false,
                        is_camera_off: camera_off,
                        is_sharing_screen: false,
                        invited_at: now,
                        joined_at: None,
                        left_at: None,
                        decline_reason,
                        is_connected: true,
                        is_invitee: true,
                        has_joined: false,
                        is_removed: false,
                        in_media: false,
                        media_uid: None,
                        media_client_seq: None,
                        media_seconds: 0,
                        media_since: None,
                    });
                    self.call.participants.len() - 1
                }
            };
            let participant = self.call.participants[i].clone();
            self.call_event(EventKind::ParticipantInvited { participant });
            if !busy {
                rung.push(user_id.clone());
            }
        }
        if became_group {
            // The snapshot is the call as of this event, its own `seq` included.
            let mut call = Box::new(self.call.clone());
            call.seq += 1;
            self.call_event(EventKind::CallUpdated { call });
        }
        if !rung.is_empty() {
            let snapshot = self.call.clone();
            let from = Caller::new(actor.user_id.clone(), &invitation.from);
            for user_id in rung {
                let ring_deadline = snapshot
                    .participant(&user_id)
                    .map_or(now, |p| snapshot.ring_deadline(p));
                self.user_event(
                    &user_id,
                    EventKind::IncomingCall {
                        call: Box::new(snapshot.clone()),
                        from: from.clone(),
                        ring_deadline,
                    },
                );
            }
            self.schedule_ring_timer();
        }
        Ok(())
    }

    /// Points the call's one ring timer at the earliest deadline of those still being rung,
    /// or cancels it when nobody is.
    pub(super) fn schedule_ring_timer(&mut self) {
        match self.call.next_ring_deadline() {
            Some(due_at) => self.out.timers.push(TimerChange::Schedule {
                kind: TimerKind::RingTimeout,
                user_id: None,
                due_at,
            }),
            None => self.out.timers.push(TimerChange::Cancel {
                kind: TimerKind::RingTimeout,
                user_id: None,
            }),
        }
    }
}
