//! The application layer: what a user may do to calls, shared by the REST API and the socket
//! commands that arrive over the bus, so both answer identically.
//!
//! It decides room membership (CONTRACT section 2: `open` or `table` mode), turns requests into
//! domain commands run by [`Store::apply`] under the call's row lock, wakes the outbox relay
//! after every write, and maps every failure to the contract's error codes ([`ApiError`]).

use std::sync::Arc;

use common::error::{ApiError, ErrorCode, FieldError};
use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::config::MembershipMode;
use crate::domain::{
    Actor, Call, CallId, CallStatus, CallType, ChannelNotice, DomainError, Invitation, LeftReason,
    MediaPatch, NewCall, Participant, ParticipantStatus, Profile, Timing,
};
use crate::store::{CallPage, EventMeta, Initiated, NoticeApplied, Store, StoreError};

/// A validated initiate request.
#[derive(Clone, Debug)]
pub struct InitiateRequest {
    pub call_type: CallType,
    pub is_group_call: bool,
    pub invite_user_ids: Vec<String>,
    pub max_participants: Option<u32>,
    /// How long to ring, 5..=`CALL_RING_TIMEOUT_SECONDS` (default that).
    pub ring_timeout_seconds: Option<u32>,
    /// How the caller is shown to the people rung (their token's `name` / `picture`).
    pub profile: Profile,
}

/// The result of an initiate: a new call (201) or the room's live call (200).
#[derive(Clone, Debug)]
pub struct Initiation {
    pub created: bool,
    pub call: Call,
}

/// What `join_call` answers and `call_participants` carries (CONTRACT section 5).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub call_id: String,
    pub seq: u64,
    #[schema(example = "active")]
    pub status: CallStatus,
    pub participants: Vec<Participant>,
}

/// Calls, as a user sees them.
#[derive(Clone, Debug)]
pub struct Calls {
    store: Store,
    membership: MembershipMode,
    timing: Timing,
    max_participants: u32,
    max_invitees: u32,
    relay: Arc<Notify>,
}

/// The contract's answer for a store failure: domain refusals keep their code, transient
/// database trouble is a retryable 503, anything else a generic 500 (logged, not shown).
pub fn store_error(err: StoreError) -> ApiError {
    match err {
        StoreError::Domain(domain) => domain_error(domain),
        e if e.is_unavailable() => {
            tracing::warn!(error = %e, "database unavailable");
            ApiError::dependency_unavailable("database")
        }
        e => ApiError::internal_from(e),
    }
}

pub fn domain_error(err: DomainError) -> ApiError {
    match err {
        DomainError::Forbidden => ApiError::new(
            ErrorCode::Forbidden,
            "You are not allowed to do this to this call",
        ),
        DomainError::NotFound => ApiError::new(ErrorCode::CallNotFound, "Call not found"),
        DomainError::CallFull => ApiError::new(ErrorCode::CallFull, "Call is full"),
        DomainError::CallEnded => ApiError::new(ErrorCode::CallEnded, "Call has ended"),
        DomainError::InvalidTransition => ApiError::new(
            ErrorCode::InvalidTransition,
            "This status change is not allowed",
        ),
        DomainError::NotJoined => ApiError::new(ErrorCode::NotJoined, "Join the call first"),
        DomainError::Validation(v) => {
            ApiError::validation(vec![FieldError::new(v.field, v.message)])
        }
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

impl Calls {
    pub fn new(
        store: Store,
        membership: MembershipMode,
        timing: Timing,
        max_participants: u32,
        max_invitees: u32,
        relay: Arc<Notify>,
    ) -> Self {
        Self {
            store,
            membership,
            timing,
            max_participants,
            max_invitees,
            relay,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn timing(&self) -> &Timing {
        &self.timing
    }

    pub fn max_participants(&self) -> u32 {
        self.max_participants
    }

    /// Applies one of Agora's channel notices (CONTRACT section 11), once per `notice_id`, and
    /// wakes the relay for the events it caused.
    pub async fn channel_notice(
        &self,
        notice_id: &str,
        event_type: i64,
        call_id: CallId,
        notice: &ChannelNotice,
    ) -> Result<NoticeApplied, ApiError> {
        let applied = self
            .store
            .apply_channel_notice(notice_id, event_type, call_id, notice, now(), &self.timing)
            .await
            .map_err(store_error)?;
        if let NoticeApplied::Applied { events, .. } = &applied
            && !events.is_empty()
        {
            self.wake_relay();
        }
        Ok(applied)
    }

    /// Wakes the outbox relay: this replica just wrote events.
    pub fn wake_relay(&self) {
        self.relay.notify_one();
    }

    /// The chat backend replaced a room's members. In `table` mode, those removed stop
    /// following the room's live call unless they are in it (CONTRACT section 10).
    pub async fn replace_room_members(&self, room: &str, users: &[String]) -> Result<(), ApiError> {
        let ended = self
            .store
            .replace_room_members(room, users, now(), self.membership == MembershipMode::Table)
            .await
            .map_err(store_error)?;
        if ended > 0 {
            self.wake_relay();
        }
        Ok(())
    }

    /// The chat backend removed a room member; as [`Calls::replace_room_members`] for them.
    pub async fn remove_room_member(&self, room: &str, user: &str) -> Result<(), ApiError> {
        let ended = self
            .store
            .remove_room_member(room, user, now(), self.membership == MembershipMode::Table)
            .await
            .map_err(store_error)?;
        if ended > 0 {
            self.wake_relay();
        }
        Ok(())
    }

    async fn is_room_member(&self, room: &str, user: &str) -> Result<bool, ApiError> {
        match self.membership {
            // In open mode a call's room members are its participants, which the domain
            // already checks; nobody else counts.
            MembershipMode::Open => Ok(false),
            MembershipMode::Table => self
                .store
                .is_room_member(room, user)
                .await
                .map_err(store_error),
        }
    }

    /// Loads the call and builds the actor; a call the user may not see is "not found".
    async fn actor_for(&self, user: &str, call_id: CallId) -> Result<(Call, Actor), ApiError> {
        let call = self
            .store
            .get_call(call_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| domain_error(DomainError::NotFound))?;
        let member = if call.participant(user).is_some() {
            // Participants see the call whatever the room says; skip the lookup.
            false
        } else {
            self.is_room_member(&call.chat_room_id, user).await?
        };
        if !call.is_visible_to(user, member) {
            return Err(domain_error(DomainError::NotFound));
        }
        Ok((call, Actor::new(user, member)))
    }

    async fn apply<T>(
        &self,
        user: &str,
        call_id: CallId,
        meta: EventMeta<'_>,
        command: impl FnOnce(
            &mut Call,
            &Actor,
            OffsetDateTime,
        ) -> Result<crate::domain::Outcome, DomainError>
        + Send,
        pick: impl FnOnce(Call) -> T,
    ) -> Result<T, ApiError> {
        let (_, actor) = self.actor_for(user, call_id).await?;
        let result = self
            .store
            .apply_traced(call_id, meta, |call| command(call, &actor, now()))
            .await;
        match result {
            Ok((call, events)) => {
                if !events.is_empty() {
                    self.wake_relay();
                }
                Ok(pick(call))
            }
            Err(e) => Err(store_error(e)),
        }
    }

    /// `POST /calls/rooms/:chatRoomId/initiate`.
    pub async fn initiate(
        &self,
        user: &str,
        room: &str,
        request: InitiateRequest,
        idempotency_key: Option<&str>,
        trace: Option<&str>,
    ) -> Result<Initiation, ApiError> {
        let max = request.max_participants.unwrap_or(self.max_participants);
        let mut details = Vec::new();
        if request.max_participants.is_some() && !(2..=self.max_participants).contains(&max) {
            details.push(FieldError::new(
                "maxParticipants",
                format!("must be between 2 and {}", self.max_participants),
            ));
        }
        // A group call may ring more people than fit (CONTRACT section 10): joins, not
        // invitations, are capped by maxParticipants.
        if request.invite_user_ids.len() > self.max_invitees as usize {
            details.push(FieldError::new(
                "inviteUserIds",
                format!("at most {} users can be invited", self.max_invitees),
            ));
        }
        if !details.is_empty() {
            return Err(ApiError::validation(details));
        }
        if self.membership == MembershipMode::Table {
            if !self.is_room_member(room, user).await? {
                return Err(ApiError::forbidden(
                    "Only members of this chat room can start a call in it",
                ));
            }
            let mut not_members = Vec::new();
            for (i, invitee) in request.invite_user_ids.iter().enumerate() {
                if !self.is_room_member(room, invitee).await? {
                    not_members.push(FieldError::new(
                        format!("inviteUserIds[{i}]"),
                        "is not a member of this chat room",
                    ));
                }
            }
            if !not_members.is_empty() {
                return Err(ApiError::validation(not_members));
            }
        }
        let new = NewCall {
            chat_room_id: room.to_owned(),
            call_type: request.call_type,
            is_group_call: request.is_group_call,
            initiator_id: user.to_owned(),
            invitee_ids: request.invite_user_ids,
            max_participants: max,
            ring_timeout: request
                .ring_timeout_seconds
                .map(|s| std::time::Duration::from_secs(u64::from(s))),
            initiator_profile: request.profile,
        };
        // Who may see the room's existing live call: its participants, and in table mode the
        // room's members for group calls (the caller is a member, checked above).
        let member = self.membership == MembershipMode::Table;
        let initiated = self
            .store
            .initiate(
                new,
                now(),
                &self.timing,
                idempotency_key.map(|k| (user, k)),
                trace,
                |call| call.is_visible_to(user, member),
            )
            .await
            .map_err(store_error)?;
        match initiated {
            Initiated::Created { call, events } => {
                if !events.is_empty() {
                    self.wake_relay();
                }
                metrics::counter!("calls_started_total", "type" => call.call_type.as_str(), "group" => if call.is_group_call { "true" } else { "false" }).increment(1);
                Ok(Initiation {
                    created: true,
                    call,
                })
            }
            Initiated::Existing { call } => Ok(Initiation {
                created: false,
                call,
            }),
            Initiated::Replayed { created, call } => Ok(Initiation { created, call }),
            Initiated::AlreadyActiveHidden => Err(ApiError::new(
                ErrorCode::CallAlreadyActive,
                "This chat room already has a call in progress",
            )),
        }
    }

    /// `GET /calls/:id`.
    pub async fn get(&self, user: &str, call_id: CallId) -> Result<Call, ApiError> {
        self.actor_for(user, call_id).await.map(|(call, _)| call)
    }

    /// `GET /calls/rooms/:chatRoomId/active`: the live call the user may see, or `None`.
    pub async fn active_in_room(&self, user: &str, room: &str) -> Result<Option<Call>, ApiError> {
        let member = self.is_room_member(room, user).await?;
        if self.membership == MembershipMode::Table && !member {
            return Err(ApiError::forbidden(
                "Only members of this chat room can see its calls",
            ));
        }
        let call = self
            .store
            .active_call_in_room(room)
            .await
            .map_err(store_error)?;
        Ok(call.filter(|c| c.is_visible_to(user, member)))
    }

    /// `GET /calls`: the user's own call history, newest first.
    pub async fn history(
        &self,
        user: &str,
        limit: u32,
        before: Option<&str>,
    ) -> Result<CallPage, ApiError> {
        self.store
            .calls_for_user(user, limit, before)
            .await
            .map_err(store_error)
    }

    /// `POST /calls/:id/join`.
    pub async fn join(
        &self,
        user: &str,
        call_id: CallId,
        media: MediaPatch,
        meta: EventMeta<'_>,
    ) -> Result<Call, ApiError> {
        let started = std::time::Instant::now();
        let joined = self
            .apply(
                user,
                call_id,
                meta,
                |call, actor, now| call.join(actor, &media, now),
                |call| call,
            )
            .await;
        // Join latency as the user waits for it: authorization, the row lock (joins of one call
        // queue behind each other) and the write.
        metrics::histogram!("calls_join_duration_seconds", "outcome" => if joined.is_ok() { "joined" } else { "refused" })
            .record(started.elapsed().as_secs_f64());
        joined
    }

    /// `PATCH /calls/:id/status` and the socket's `call_status_changed`.
    pub async fn set_status(
        &self,
        user: &str,
        call_id: CallId,
        status: ParticipantStatus,
        reason: Option<String>,
        meta: EventMeta<'_>,
    ) -> Result<Call, ApiError> {
        self.apply(
            user,
            call_id,
            meta,
            |call, actor, now| call.set_status(actor, status, reason.as_deref(), now),
            |call| call,
        )
        .await
    }

    /// The socket's `leave_call`.
    pub async fn leave(
        &self,
        user: &str,
        call_id: CallId,
        meta: EventMeta<'_>,
    ) -> Result<Call, ApiError> {
        self.apply(
            user,
            call_id,
            meta,
            |call, actor, now| call.leave(actor, LeftReason::Left, now),
            |call| call,
        )
        .await
    }

    /// `PATCH /calls/:id/media` and the socket's `media_state_changed`.
    pub async fn update_media(
        &self,
        user: &str,
        call_id: CallId,
        patch: MediaPatch,
        meta: EventMeta<'_>,
    ) -> Result<Participant, ApiError> {
        let owner = user.to_owned();
        self.apply(
            user,
            call_id,
            meta,
            |call, actor, now| call.update_media(actor, &patch, now),
            move |call| call.participants.into_iter().find(|p| p.user_id == owner),
        )
        .await?
        .ok_or_else(|| domain_error(DomainError::NotJoined))
    }

    /// `POST /calls/:id/end`.
    pub async fn end(
        &self,
        user: &str,
        call_id: CallId,
        meta: EventMeta<'_>,
    ) -> Result<Call, ApiError> {
        let call = self
            .apply(
                user,
                call_id,
                meta,
                |call, actor, now| call.end(actor, now),
                |call| call,
            )
            .await?;
        Ok(call)
    }

    /// `POST /calls/:id/invite`: the host or a joined participant rings `user_ids` into the
    /// live call. In `table` mode every invitee must be a member of the call's room.
    pub async fn invite(
        &self,
        user: &str,
        call_id: CallId,
        user_ids: Vec<String>,
        from: Profile,
        meta: EventMeta<'_>,
    ) -> Result<Call, ApiError> {
        if user_ids.len() > self.max_invitees as usize {
            return Err(ApiError::validation(vec![FieldError::new(
                "userIds",
                format!("at most {} users can be invited", self.max_invitees),
            )]));
        }
        let (call, actor) = self.actor_for(user, call_id).await?;
        if self.membership == MembershipMode::Table {
            let mut not_members = Vec::new();
            for (i, invitee) in user_ids.iter().enumerate() {
                if !self.is_room_member(&call.chat_room_id, invitee).await? {
                    not_members.push(FieldError::new(
                        format!("userIds[{i}]"),
                        "is not a member of this chat room",
                    ));
                }
            }
            if !not_members.is_empty() {
                return Err(ApiError::validation(not_members));
            }
        }
        let users = user_ids.clone();
        let max_invitees = self.max_invitees as usize;
        let group_capacity = self.max_participants;
        let (call, events) = self
            .store
            .apply_with_busy(call_id, meta, &users, |call, busy| {
                let invitation = Invitation {
                    user_ids,
                    busy,
                    from,
                    max_invitees,
                    group_capacity,
                };
                call.invite(&actor, &invitation, now())
            })
            .await
            .map_err(store_error)?;
        if !events.is_empty() {
            self.wake_relay();
        }
        Ok(call)
    }

    /// `POST /calls/:id/participants/:userId/remove`: the host removes `target`.
    pub async fn remove(
        &self,
        user: &str,
        call_id: CallId,
        target: &str,
        meta: EventMeta<'_>,
    ) -> Result<Call, ApiError> {
        self.apply(
            user,
            call_id,
            meta,
            |call, actor, now| call.remove(actor, target, now),
            |call| call,
        )
        .await
    }

    /// The call a joined participant may get a media token for (`POST /calls/:id/media/session`).
    pub async fn media_session_call(&self, user: &str, call_id: CallId) -> Result<Call, ApiError> {
        let (call, _) = self.actor_for(user, call_id).await?;
        if call.status == CallStatus::Ended {
            return Err(domain_error(DomainError::CallEnded));
        }
        match call.participant(user) {
            Some(p) if p.status == ParticipantStatus::Joined => Ok(call),
            _ => Err(domain_error(DomainError::NotJoined)),
        }
    }

    /// The socket's `join_call`: may the user follow this call, and its state right now.
    pub async fn snapshot(&self, user: &str, call_id: CallId) -> Result<Snapshot, ApiError> {
        let (call, _) = self.actor_for(user, call_id).await?;
        Ok(Snapshot {
            call_id: call.id.to_string(),
            seq: call.seq,
            status: call.status,
            participants: call.participants,
        })
    }
}
