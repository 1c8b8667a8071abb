//! Starting a call (`POST /calls/rooms/:chatRoomId/initiate`).

use std::collections::BTreeSet;

use time::OffsetDateTime;

use super::{BUSY_REASON, Outcome, Step};
use crate::error::DomainError;
use crate::events::EventKind;
use crate::model::{
    Call, CallId, CallStatus, CallType, Caller, EndReason, MIN_RING_TIMEOUT, NewCall, Participant,
    ParticipantStatus, Role, TimerKind, Timing, UserId,
};
use crate::timefmt::truncate_millis;

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
        validate_new_call(&new, timing)?;
        let ring_timeout = new.ring_timeout.unwrap_or(timing.ring_timeout);
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
            is_removed: false,
            in_media: false,
            media_uid: None,
            media_client_seq: None,
            media_seconds: 0,
            media_since: None,
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
                is_removed: false,
                in_media: false,
                media_uid: None,
                media_client_seq: None,
                media_seconds: 0,
                media_since: None,
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
            ring_timeout_seconds: u32::try_from(ring_timeout.as_secs()).unwrap_or(u32::MAX),
            alone_timeout_seconds: timing
                .alone_timeout
                .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
            media_seconds: 0,
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
            step.schedule(TimerKind::RingTimeout, None, ring_timeout);
            if let Some(max) = timing.max_duration.filter(|d| !d.is_zero()) {
                step.schedule(TimerKind::MaxDuration, None, max);
            }
            let snapshot = step.call.clone();
            let from = Caller::new(snapshot.initiator_id.clone(), &new.initiator_profile);
            let ring_deadline = now + ring_timeout;
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
}

fn validate_new_call(new: &NewCall, timing: &Timing) -> Result<(), DomainError> {
    if let Some(ring) = new.ring_timeout
        && !(MIN_RING_TIMEOUT..=timing.ring_timeout.max(MIN_RING_TIMEOUT)).contains(&ring)
    {
        return Err(DomainError::validation(
            "ringTimeoutSeconds",
            format!(
                "must be between {} and {}",
                MIN_RING_TIMEOUT.as_secs(),
                timing.ring_timeout.max(MIN_RING_TIMEOUT).as_secs()
            ),
        ));
    }
    if new.chat_room_id.is_empty() {
        return Err(DomainError::validation("chatRoomId", "must not be empty"));
    }
    if new.initiator_id.is_empty() {
        return Err(DomainError::validation("userId", "must not be empty"));
    }
    super::check_invitees("inviteUserIds", &new.invitee_ids, &new.initiator_id)?;
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
