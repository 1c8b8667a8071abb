//! The call resource and its vocabulary (CONTRACT section 3).
//!
//! These types serialize to exactly the JSON the contract shows (camelCase, RFC 3339
//! timestamps). A few fields exist only for the state machine (who was invited, who ever
//! answered); they are never serialized, and read back as `false` from JSON.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::timefmt;

/// A user of the host application (the JWT `sub`). Kept as a plain string inside the domain;
/// parsing and validation happen at the edge.
pub type UserId = String;
/// A chat room of the host application.
pub type ChatRoomId = String;
/// A call's id (UUID v7 when created by the store).
pub type CallId = Uuid;

/// Declares a unit enum with its wire string, used for JSON (serde) and database columns alike
/// so the two can never drift apart.
///
/// `$wire` is a `tt`, not a `literal`: macro_rules hands a `literal` fragment to derive macros
/// wrapped in an invisible group, which serde reads but utoipa does not, and the OpenAPI
/// document then showed the Rust variant names (`"Ringing"`) instead of the wire values.
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $wire:tt),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $wire)] $variant),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire (and database) spelling.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }

            /// Parses the wire spelling; `None` for anything else.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($wire => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

wire_enum!(
    /// Audio-only or video call.
    CallType { Audio => "audio", Video => "video" }
);

wire_enum!(
    /// The lifecycle of a call: `ringing` until someone other than the initiator joins.
    CallStatus { Ringing => "ringing", Active => "active", Ended => "ended" }
);

wire_enum!(
    /// A participant's state; the allowed transitions are in CONTRACT section 4.
    ParticipantStatus {
        Invited => "invited",
        Ringing => "ringing",
        Joined => "joined",
        Left => "left",
        Declined => "declined",
        Missed => "missed",
    }
);

wire_enum!(
    /// The initiator is the host; everyone else is a participant.
    Role { Host => "host", Participant => "participant" }
);

wire_enum!(
    /// Why a call ended (CONTRACT section 3).
    EndReason {
        Completed => "completed",
        Cancelled => "cancelled",
        Declined => "declined",
        Missed => "missed",
        Busy => "busy",
        Timeout => "timeout",
        Failed => "failed",
    }
);

wire_enum!(
    /// Why a participant left (`participant_left.reason`).
    LeftReason { Left => "left", ConnectionLost => "connection_lost", Removed => "removed" }
);

wire_enum!(
    /// Why a ringing device stops ringing (`incoming_call_cancelled.reason`).
    CancelReason {
        AnsweredElsewhere => "answered_elsewhere",
        DeclinedElsewhere => "declined_elsewhere",
        Cancelled => "cancelled",
        Missed => "missed",
    }
);

wire_enum!(
    /// The server-side timers of a call; stored as rows so they survive restarts.
    TimerKind {
        RingTimeout => "ring_timeout",
        DisconnectGrace => "disconnect_grace",
        MaxDuration => "max_duration",
        AloneTimeout => "alone_timeout",
        MediaGrace => "media_grace",
    }
);

impl ParticipantStatus {
    /// Still being rung: `invited` or `ringing`.
    pub fn is_pending(self) -> bool {
        matches!(
            self,
            ParticipantStatus::Invited | ParticipantStatus::Ringing
        )
    }
}

impl CallStatus {
    /// `ringing` or `active`: the call can still change.
    pub fn is_live(self) -> bool {
        !matches!(self, CallStatus::Ended)
    }
}

/// A call (CONTRACT section 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Call {
    /// The call's id.
    #[schema(value_type = String, format = Uuid)]
    pub id: CallId,
    /// The chat room the call belongs to; at most one live call per room.
    pub chat_room_id: ChatRoomId,
    /// Audio or video.
    #[serde(rename = "type")]
    pub call_type: CallType,
    /// Group calls admit any room member; 1:1 calls only the two sides.
    pub is_group_call: bool,
    /// Ringing, active or ended.
    pub status: CallStatus,
    /// Who started the call; the host.
    pub initiator_id: UserId,
    /// The most participants that may be `joined` at once.
    pub max_participants: u32,
    /// When the call was initiated.
    #[serde(with = "timefmt")]
    #[schema(value_type = String, format = DateTime, example = "2026-02-24T12:00:00.000Z")]
    pub created_at: OffsetDateTime,
    /// When someone other than the initiator first joined.
    #[serde(with = "timefmt::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub started_at: Option<OffsetDateTime>,
    /// When the call ended.
    #[serde(with = "timefmt::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<OffsetDateTime>,
    /// Why the call ended.
    pub end_reason: Option<EndReason>,
    /// Whose action ended the call; `null` when a timer or a lost connection did.
    pub ended_by: Option<UserId>,
    /// The call's event counter: the `seq` of the last call event.
    pub seq: u64,
    /// How long each invitee is rung before becoming `missed` (CONTRACT section 10): the
    /// initiate request's `ringTimeoutSeconds`, else `CALL_RING_TIMEOUT_SECONDS`. Counted from
    /// each invitee's `invitedAt`, so people invited into a live call ring as long.
    #[serde(default)]
    #[schema(example = 45)]
    pub ring_timeout_seconds: u32,
    /// `CALL_ALONE_TIMEOUT_SECONDS` when the call began (0 = never): how long a group call
    /// goes on once its last other participant left. Fixed per call so a restart with another
    /// setting does not change running calls.
    #[serde(skip_serializing, default)]
    #[schema(ignore)]
    pub alone_timeout_seconds: u32,
    /// The participants' `mediaSeconds` summed: participant-seconds in the call's Agora
    /// channel (two people in it for a minute make 120, as in a bill). 0 where NCS is not
    /// configured.
    #[serde(default)]
    #[schema(required = true, example = 0)]
    pub media_seconds: u64,
    /// Host first, then invitees in invitation order, then those who joined uninvited.
    pub participants: Vec<Participant>,
}

/// One user's place in a call (CONTRACT section 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    /// The user.
    pub user_id: UserId,
    /// Host or participant.
    pub role: Role,
    /// Where the user stands in the call.
    pub status: ParticipantStatus,
    /// Microphone muted.
    pub is_mic_muted: bool,
    /// Camera off.
    pub is_camera_off: bool,
    /// Sharing the screen.
    pub is_sharing_screen: bool,
    /// When the user was invited (for users who joined a group call uninvited: when they
    /// first joined).
    #[serde(with = "timefmt")]
    #[schema(value_type = String, format = DateTime, example = "2026-02-24T12:00:00.000Z")]
    pub invited_at: OffsetDateTime,
    /// When the user last joined.
    #[serde(with = "timefmt::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub joined_at: Option<OffsetDateTime>,
    /// When the user last left; cleared on rejoin.
    #[serde(with = "timefmt::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub left_at: Option<OffsetDateTime>,
    /// Why the user declined (`"busy"` when the server declined for them).
    pub decline_reason: Option<String>,
    /// `false` while a joined participant has no socket (the disconnect grace is running).
    pub is_connected: bool,
    /// Invited by the initiator (as opposed to joining a group call uninvited). Invitees get
    /// `call_ended` on their user subject and count for the "everybody declined" rule.
    #[serde(skip_serializing, default)]
    #[schema(ignore)]
    pub is_invitee: bool,
    /// Has been `joined` at least once: the call was answered by this user.
    #[serde(skip_serializing, default)]
    #[schema(ignore)]
    pub has_joined: bool,
    /// Removed by the host: may no longer see, follow or rejoin the call until invited again.
    #[serde(skip_serializing, default)]
    #[schema(ignore)]
    pub is_removed: bool,
    /// In the call's Agora channel, as Agora's Notification Center last reported (CONTRACT
    /// section 11); `false` until a notice says otherwise, and always `false` where NCS is not
    /// configured.
    #[serde(default)]
    #[schema(required = true)]
    pub in_media: bool,
    /// The Agora uid the user's client joined the channel with, learnt from the notices (what
    /// Agora's kicking-rule API needs).
    #[serde(skip_serializing, default)]
    #[schema(ignore)]
    pub media_uid: Option<u32>,
    /// The `clientSeq` of the last channel notice applied for this user: Agora may deliver
    /// notices out of order, and one older than this is ignored.
    #[serde(skip_serializing, default)]
    #[schema(ignore)]
    pub media_client_seq: Option<i64>,
    /// Whole seconds in the call's Agora channel over every stay that has ended (CONTRACT
    /// section 11): from each join notice to the matching leave, by the notices' own `ts`, or
    /// to the call's end for a stay still open then. A stay still open in a live call is not
    /// counted yet.
    #[serde(default)]
    #[schema(required = true, example = 0)]
    pub media_seconds: u64,
    /// When the open stay in the channel began (the join notice's `ts`), while `inMedia`.
    #[serde(skip_serializing, default)]
    #[schema(ignore)]
    pub media_since: Option<OffsetDateTime>,
}

impl Call {
    /// The sum of the participants' `media_seconds`, kept in `media_seconds`: the domain calls
    /// this after each change, the store after loading.
    pub fn sum_media_seconds(&mut self) {
        self.media_seconds = self.participants.iter().map(|p| p.media_seconds).sum();
    }
}

impl Participant {
    /// Ends the open stay in the channel (if any) at `at`, adding its whole seconds. A stay
    /// that would end before it began (the clocks of Agora and this server disagree) adds 0.
    pub(crate) fn close_media_stay(&mut self, at: OffsetDateTime) {
        if let Some(since) = self.media_since.take() {
            let secs = (at - since).whole_seconds().max(0);
            self.media_seconds += u64::try_from(secs).unwrap_or(0);
        }
    }
}

/// What a user asks for when initiating a call (already validated for shape by the API;
/// [`Call::initiate`] checks the rules that belong to the state machine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCall {
    /// The room.
    pub chat_room_id: ChatRoomId,
    /// Audio or video.
    pub call_type: CallType,
    /// Group or 1:1.
    pub is_group_call: bool,
    /// The caller.
    pub initiator_id: UserId,
    /// Who to ring, in order; exactly one for a 1:1.
    pub invitee_ids: Vec<UserId>,
    /// Capacity for a group call (at least 2). A 1:1 always gets 2.
    pub max_participants: u32,
    /// How long to ring, when the caller chose (at least [`MIN_RING_TIMEOUT`], at most the
    /// configured ring timeout); `None` for the configured one.
    pub ring_timeout: Option<Duration>,
    /// How the caller introduces themselves to the people rung (from their access token).
    pub initiator_profile: Profile,
}

/// How a user is shown to the people they ring: the standard `name` and `picture` claims of
/// their access token, when present (CONTRACT section 8).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    /// Display name.
    pub display_name: Option<String>,
    /// Avatar URL.
    pub avatar_url: Option<String>,
}

/// The shortest ring timeout a caller may ask for (CONTRACT section 10).
pub const MIN_RING_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest display name carried into events and pushes, in characters; longer names are
/// cut (a push payload is at most 4–5 KB, and a name that long is not a name).
pub const MAX_DISPLAY_NAME_CHARS: usize = 128;
/// The longest avatar URL carried, in bytes; longer ones are dropped (a cut URL is useless).
pub const MAX_AVATAR_URL_BYTES: usize = 1024;

impl Profile {
    /// A profile from untrusted claims: blank values dropped, names cut to
    /// [`MAX_DISPLAY_NAME_CHARS`], avatar URLs kept only when `http(s)://` and at most
    /// [`MAX_AVATAR_URL_BYTES`].
    pub fn from_claims(name: Option<&str>, picture: Option<&str>) -> Profile {
        let display_name = name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| n.chars().take(MAX_DISPLAY_NAME_CHARS).collect());
        let avatar_url = picture
            .map(str::trim)
            .filter(|u| {
                u.len() <= MAX_AVATAR_URL_BYTES
                    && (u.starts_with("https://") || u.starts_with("http://"))
                    && !u.chars().any(char::is_whitespace)
            })
            .map(str::to_owned);
        Profile {
            display_name,
            avatar_url,
        }
    }
}

/// Who is calling, as `incoming_call.from` and the incoming-call pushes show them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Caller {
    /// The caller's user id.
    pub user_id: UserId,
    /// Their `name` claim, when their access token has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Their `picture` claim, when their access token has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

impl Caller {
    /// `user_id` shown with `profile`.
    pub fn new(user_id: UserId, profile: &Profile) -> Caller {
        Caller {
            user_id,
            display_name: profile.display_name.clone(),
            avatar_url: profile.avatar_url.clone(),
        }
    }
}

/// Media flags to change; `None` leaves a flag as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaPatch {
    /// New microphone state.
    pub is_mic_muted: Option<bool>,
    /// New camera state.
    pub is_camera_off: Option<bool>,
    /// New screen-share state.
    pub is_sharing_screen: Option<bool>,
}

/// Who is acting, and whether they belong to the call's chat room (decided by the caller of
/// the state machine from the membership mode). Room membership is what lets someone see and
/// join a group call without having been invited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The acting user.
    pub user_id: UserId,
    /// Member of the call's chat room.
    pub is_room_member: bool,
}

impl Actor {
    /// An actor.
    pub fn new(user_id: impl Into<UserId>, is_room_member: bool) -> Self {
        Actor {
            user_id: user_id.into(),
            is_room_member,
        }
    }
}

/// The configured durations of the server-side timers (CONTRACT section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// `CALL_RING_TIMEOUT_SECONDS` (default 45 s).
    pub ring_timeout: Duration,
    /// `CALL_DISCONNECT_GRACE_SECONDS` (default 30 s).
    pub disconnect_grace: Duration,
    /// `CALL_MAX_DURATION_SECONDS` (default 4 h); `None` for no limit.
    pub max_duration: Option<Duration>,
    /// `CALL_ALONE_TIMEOUT_SECONDS` (default 120 s): a group call whose last other participant
    /// left ends after this; `None` for never.
    pub alone_timeout: Option<Duration>,
    /// `CALL_MEDIA_GRACE_SECONDS` (default 30 s): a joined participant Agora reports out of the
    /// call's channel this long, with no socket either, becomes `left` (`connection_lost`);
    /// `None` for never (CONTRACT section 11).
    pub media_grace: Option<Duration>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            ring_timeout: Duration::from_secs(45),
            disconnect_grace: Duration::from_secs(30),
            max_duration: Some(Duration::from_secs(14_400)),
            alone_timeout: Some(Duration::from_secs(120)),
            media_grace: Some(Duration::from_secs(30)),
        }
    }
}

impl Call {
    /// `ringing` or `active`.
    pub fn is_live(&self) -> bool {
        self.status.is_live()
    }

    /// The participant record of `user_id`, if any.
    pub fn participant(&self, user_id: &str) -> Option<&Participant> {
        self.participants.iter().find(|p| p.user_id == user_id)
    }

    /// Whether `user_id` may see the call at all: a participant in any status, or a member of
    /// the room for group calls. Everyone else gets "not found", never "forbidden", so a
    /// call's existence is not revealed. Someone the host removed sees it no more (not even as
    /// a room member) until invited again: they may not follow it or join it.
    pub fn is_visible_to(&self, user_id: &str, is_room_member: bool) -> bool {
        match self.participant(user_id) {
            Some(p) => !p.is_removed,
            None => self.is_group_call && is_room_member,
        }
    }

    /// The participant who holds the host role, if any (a live call always has one).
    pub fn host(&self) -> Option<&Participant> {
        self.participants.iter().find(|p| p.role == Role::Host)
    }

    /// When `p` stops being rung: `invitedAt` plus the call's ring timeout.
    pub fn ring_deadline(&self, p: &Participant) -> OffsetDateTime {
        let secs = i64::from(self.ring_timeout_seconds);
        p.invited_at
            .checked_add(time::Duration::seconds(secs))
            .unwrap_or(p.invited_at)
    }

    /// The earliest ring deadline of those still being rung: when the ring timer is due.
    pub fn next_ring_deadline(&self) -> Option<OffsetDateTime> {
        self.participants
            .iter()
            .filter(|p| p.status.is_pending())
            .map(|p| self.ring_deadline(p))
            .min()
    }

    /// How many participants are `joined` now (what `maxParticipants` limits).
    pub fn joined_count(&self) -> usize {
        self.participants
            .iter()
            .filter(|p| p.status == ParticipantStatus::Joined)
            .count()
    }

    /// Someone is still being rung.
    pub fn has_pending_invitees(&self) -> bool {
        self.participants.iter().any(|p| p.status.is_pending())
    }

    /// Someone other than the initiator has joined at some point: the call was answered.
    pub fn was_answered(&self) -> bool {
        self.participants
            .iter()
            .any(|p| p.has_joined && p.user_id != self.initiator_id)
    }
}
