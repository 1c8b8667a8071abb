//! The events a state change causes (CONTRACT section 5), and where they go.
//!
//! An event is produced by the state machine together with the state change, and stored in the
//! same transaction (the outbox), so the two can never disagree. Each event knows:
//! - its wire name ([`DomainEvent::name`]) and its exact wire JSON ([`DomainEvent::payload`],
//!   also its `Serialize` impl): `callId`, `seq` (call events only), `at`, then the fields of
//!   the kind;
//! - its audience: the call's subscribers and/or individual users (every device of a user).
//!   `call_ended` is one event with several audiences: the call and every invitee.
//!
//! Which status change emits what: becoming `joined` emits `participant_joined`, becoming
//! `left` emits `participant_left`, any other participant status change (`ringing`,
//! `declined`, `missed`) emits `participant_status_changed`; being rung into a live call (anew)
//! emits `participant_invited`. When a call ends, `call_ended`
//! alone stands for everything that happens to the participants at that moment (the joined
//! become `left`, the still-ringing become `missed`): no per-participant events precede it.

use serde::Serialize;
use time::OffsetDateTime;

use crate::model::{
    Call, CallId, Caller, CancelReason, EndReason, LeftReason, Participant, ParticipantStatus,
    UserId,
};
use crate::timefmt;

/// Who receives an event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Audience {
    /// Every socket subscribed to the call (`calls.v1.evt.call.<callId>`).
    Call(CallId),
    /// Every device of one user (`calls.v1.evt.user.<userKey>`).
    User(UserId),
    /// Every signaling node (`calls.v1.ctl.signaling`): not an event for clients but an
    /// instruction about sockets (`calls_bus::ControlMessage`). The state machine never
    /// addresses this audience; the store writes such rows with the changes that call for them
    /// (a participant removed, a room member removed).
    SignalingNodes,
}

/// An event, as produced by the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainEvent {
    /// The call it is about.
    pub call_id: CallId,
    /// The call's event counter after this event; `None` for user-addressed events
    /// (`incoming_call`, `incoming_call_cancelled`), which are not part of the call's stream.
    pub seq: Option<u64>,
    /// When it happened.
    pub at: OffsetDateTime,
    /// Where it goes; never empty.
    pub audiences: Vec<Audience>,
    /// What happened.
    pub kind: EventKind,
}

/// What happened, with the payload fields of the wire event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged, rename_all_fields = "camelCase")]
pub enum EventKind {
    /// `participant_joined`
    ParticipantJoined {
        /// The participant as it is after joining.
        participant: Participant,
    },
    /// `participant_invited`: someone was rung into the live call (CONTRACT section 10).
    ParticipantInvited {
        /// The participant as it is after the invitation (`invited`, or `declined` with
        /// reason `busy` when they were in another call).
        participant: Participant,
    },
    /// `call_updated`: the call itself changed (a 1:1 became a group call).
    CallUpdated {
        /// The call as it is after the change.
        call: Box<Call>,
    },
    /// `host_changed`: the host left a live group call and this participant took over.
    HostChanged {
        /// The new host.
        user_id: UserId,
    },
    /// `participant_left`
    ParticipantLeft {
        /// Who left.
        user_id: UserId,
        /// Why.
        reason: LeftReason,
    },
    /// `participant_disconnected`: a joined participant lost all sockets; they become `left`
    /// unless one comes back within `graceSeconds`.
    ParticipantDisconnected {
        /// Who.
        user_id: UserId,
        /// The disconnect grace, whole seconds.
        grace_seconds: u64,
    },
    /// `participant_reconnected`
    ParticipantReconnected {
        /// Who.
        user_id: UserId,
    },
    /// `participant_media_changed`: the full set of flags after the change.
    ParticipantMediaChanged {
        /// Who.
        user_id: UserId,
        /// Microphone muted.
        is_mic_muted: bool,
        /// Camera off.
        is_camera_off: bool,
        /// Sharing the screen.
        is_sharing_screen: bool,
    },
    /// `participant_media_presence`: Agora reported the participant's client joining or
    /// leaving the call's channel (CONTRACT section 11).
    ParticipantMediaPresence {
        /// Who.
        user_id: UserId,
        /// In the channel now.
        in_media: bool,
        /// Agora's reason code of a leave (1 left normally, 2 timed out, …); absent on a join.
        #[serde(skip_serializing_if = "Option::is_none")]
        reason: Option<i64>,
    },
    /// `participant_status_changed`: `ringing`, `declined` or `missed`.
    ParticipantStatusChanged {
        /// Who.
        user_id: UserId,
        /// The new status.
        status: ParticipantStatus,
        /// The decline reason, `"ring_timeout"` for a server-side miss, else `null`.
        reason: Option<String>,
    },
    /// `call_ended`
    CallEnded {
        /// Why.
        reason: EndReason,
        /// Whose action ended it; `null` for timers and lost connections.
        ended_by: Option<UserId>,
        /// The call's `mediaSeconds` (CONTRACT section 11): what the `call.ended` webhook
        /// reports, which notifier cannot work out from the other events.
        media_seconds: u64,
        /// Each participant's `mediaSeconds`, for those with any.
        participant_media_seconds: Vec<MediaTime>,
    },
    /// `incoming_call`: ring this user's devices.
    IncomingCall {
        /// The call as it is once initiated (or once this user was invited into it).
        call: Box<Call>,
        /// Who is calling: user id, and the display name and avatar of their access token.
        from: Caller,
        /// When the ring times out unless answered (the ring-timeout timer's due time).
        #[serde(with = "timefmt")]
        ring_deadline: OffsetDateTime,
    },
    /// `incoming_call_cancelled`: stop ringing this user's devices.
    IncomingCallCancelled {
        /// Why.
        reason: CancelReason,
    },
}

impl EventKind {
    /// The Socket.IO event name.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::ParticipantJoined { .. } => "participant_joined",
            EventKind::ParticipantInvited { .. } => "participant_invited",
            EventKind::CallUpdated { .. } => "call_updated",
            EventKind::HostChanged { .. } => "host_changed",
            EventKind::ParticipantLeft { .. } => "participant_left",
            EventKind::ParticipantDisconnected { .. } => "participant_disconnected",
            EventKind::ParticipantReconnected { .. } => "participant_reconnected",
            EventKind::ParticipantMediaChanged { .. } => "participant_media_changed",
            EventKind::ParticipantMediaPresence { .. } => "participant_media_presence",
            EventKind::ParticipantStatusChanged { .. } => "participant_status_changed",
            EventKind::CallEnded { .. } => "call_ended",
            EventKind::IncomingCall { .. } => "incoming_call",
            EventKind::IncomingCallCancelled { .. } => "incoming_call_cancelled",
        }
    }
}

/// One participant's time in the call's Agora channel, in `call_ended`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaTime {
    /// The participant.
    pub user_id: UserId,
    /// Their `mediaSeconds`.
    pub media_seconds: u64,
}

/// The wire shape: common fields first, then the kind's fields.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Wire<'a> {
    call_id: &'a CallId,
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(with = "timefmt")]
    at: OffsetDateTime,
    #[serde(flatten)]
    kind: &'a EventKind,
}

impl Serialize for DomainEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        Wire {
            call_id: &self.call_id,
            seq: self.seq,
            at: self.at,
            kind: &self.kind,
        }
        .serialize(s)
    }
}

impl DomainEvent {
    /// The Socket.IO event name.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The exact wire payload, as a JSON value.
    pub fn payload(&self) -> serde_json::Value {
        // Serializing these plain structs into a Value cannot fail (no maps with non-string
        // keys, no failing custom impls).
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The exact wire payload, as JSON text (what the outbox stores and the relay publishes).
    pub fn payload_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
