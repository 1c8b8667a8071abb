//! `/api/v1/calls…` handlers (CONTRACT section 4).

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use common::auth::Authenticated;
use common::error::{ApiError, ErrorCode, FieldError, ValidJson, ValidPath, ValidQuery, ok};
use common::ids::{ChatRoomId, DeviceId, UserId};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use crate::domain::{Call, CallType, MediaPatch, Participant, ParticipantStatus, Profile};
use crate::media::{MediaError, MediaSession};
use crate::service::{InitiateRequest, Initiation};
use crate::store::EventMeta;

/// `POST /calls/rooms/:chatRoomId/initiate` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InitiateBody {
    /// `audio` or `video`.
    #[serde(rename = "type")]
    #[schema(example = "video")]
    pub call_type: CallType,
    /// Group call (any invited user may join up to `maxParticipants`) or 1:1.
    pub is_group_call: bool,
    /// Who to ring: unique, not the caller; exactly one for a 1:1.
    #[schema(value_type = Vec<String>, example = json!(["user-id-1", "user-id-2"]))]
    pub invite_user_ids: Vec<UserId>,
    /// Optional capacity, 2..=`CALL_MAX_PARTICIPANTS` (the default). A group call may ring
    /// more people than this (up to `CALL_MAX_INVITEES`): it caps those joined at once.
    pub max_participants: Option<u32>,
    /// Optional ring timeout for this call, 5..=`CALL_RING_TIMEOUT_SECONDS` (the default).
    #[schema(example = 30, minimum = 5)]
    pub ring_timeout_seconds: Option<u32>,
}

/// `POST /calls/:id/invite` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InviteBody {
    /// Who to ring into the call: 1..=`CALL_MAX_INVITEES`, unique, not the caller. Users
    /// already ringing or joined are left as they are; those who declined, missed, left or
    /// were removed are rung again.
    #[schema(value_type = Vec<String>, example = json!(["user-id-3"]))]
    pub user_ids: Vec<UserId>,
}

/// The path of `POST /calls/:id/participants/:userId/remove`.
#[derive(Debug, Deserialize)]
pub struct RemovePath {
    id: Uuid,
    #[serde(rename = "userId")]
    user_id: UserId,
}

/// `POST /calls/:id/join` body (optional: an empty body joins with mic and camera on).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JoinBody {
    pub is_mic_muted: Option<bool>,
    pub is_camera_off: Option<bool>,
}

/// `PATCH /calls/:id/status` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusBody {
    /// `ringing`, `joined`, `left`, `declined` or `missed` (`invited` is never a valid target).
    #[schema(example = "declined")]
    pub status: ParticipantStatus,
    /// Why, for `declined` (for example `busy`); at most 200 characters, as on the socket.
    #[schema(max_length = 200)]
    pub decline_reason: Option<String>,
    /// Same as `declineReason` (the socket event's spelling).
    #[schema(max_length = 200)]
    pub reason: Option<String>,
}

/// `PATCH /calls/:id/media` body: at least one flag.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MediaBody {
    pub is_mic_muted: Option<bool>,
    pub is_camera_off: Option<bool>,
    pub is_sharing_screen: Option<bool>,
}

/// `GET /calls` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Page size, 1..=100 (default 20).
    pub limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    pub before: Option<String>,
}

/// A page of the caller's call history, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryPage {
    pub items: Vec<Call>,
    /// Pass as `before` for the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The W3C trace context of the request's span, kept with the events it causes so that their
/// publication (and every socket emit after it) joins the request's trace.
fn traceparent() -> Option<String> {
    common::telemetry::traceparent(&tracing::Span::current()).map(|(traceparent, _)| traceparent)
}

/// Parses an optional JSON body: empty means defaults (mobile HTTP clients often send no body
/// for action endpoints), anything else must be valid JSON of the right shape.
fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        common::error::parse_json(body)
    }
}

/// `X-Device-Id`: the device a request comes from, the id it registered under (CONTRACT
/// section 8). An answer or decline then reaches the user's *other* devices only.
pub const DEVICE_ID_HEADER: &str = "x-device-id";

/// Where a state-changing request comes from: its trace, and the device the app named.
pub struct RequestOrigin {
    trace: Option<String>,
    device: Option<DeviceId>,
}

impl RequestOrigin {
    fn meta(&self) -> EventMeta<'_> {
        EventMeta {
            trace_context: self.trace.as_deref(),
            origin_socket: None,
            origin_device: self.device.as_ref().map(DeviceId::as_str),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for RequestOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let device = match parts.headers.get(DEVICE_ID_HEADER) {
            None => None,
            Some(value) => {
                let parsed = value
                    .to_str()
                    .map_err(|_| "may contain only letters, digits and . _ : -")
                    .and_then(DeviceId::parse);
                match parsed {
                    Ok(id) => Some(id),
                    Err(why) => {
                        return Err(ApiError::validation(vec![FieldError::new(
                            "X-Device-Id",
                            why,
                        )]));
                    }
                }
            }
        };
        Ok(RequestOrigin {
            trace: traceparent(),
            device,
        })
    }
}

fn call_path(id: Uuid) -> crate::domain::CallId {
    id
}

#[utoipa::path(
    post, path = "/api/v1/calls/rooms/{chatRoomId}/initiate", tag = "calls",
    params(("chatRoomId" = String, Path, description = "The chat room"),
           ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first response")),
    request_body = InitiateBody,
    responses(
        (status = 201, description = "Call initiated successfully", body = CallEnvelope),
        (status = 200, description = "The room already has a live call you can see (also merges two people calling each other at once)", body = CallEnvelope),
        (status = 400, description = "VALIDATION_FAILED", body = ErrorEnvelopeDoc),
        (status = 401, description = "UNAUTHORIZED", body = ErrorEnvelopeDoc),
        (status = 403, description = "FORBIDDEN (table mode: not a member of the room)", body = ErrorEnvelopeDoc),
        (status = 409, description = "CALL_ALREADY_ACTIVE", body = ErrorEnvelopeDoc),
        (status = 503, description = "DEPENDENCY_UNAVAILABLE", body = ErrorEnvelopeDoc),
    ),
    security(("bearer" = []))
)]
pub async fn initiate(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidPath(chat_room_id): ValidPath<ChatRoomId>,
    headers: HeaderMap,
    ValidJson(body): ValidJson<InitiateBody>,
) -> Result<Response, ApiError> {
    let key = match headers.get(IDEMPOTENCY_KEY) {
        None => None,
        Some(v) => match v.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY => Some(k),
            _ => {
                return Err(ApiError::validation(vec![FieldError::new(
                    "Idempotency-Key",
                    format!("must be 1..={MAX_IDEMPOTENCY_KEY} visible ASCII characters"),
                )]));
            }
        },
    };
    let request = InitiateRequest {
        call_type: body.call_type,
        is_group_call: body.is_group_call,
        invite_user_ids: body
            .invite_user_ids
            .into_iter()
            .map(UserId::into_string)
            .collect(),
        max_participants: body.max_participants,
        ring_timeout_seconds: body.ring_timeout_seconds,
        profile: Profile::from_claims(auth.0.name.as_deref(), auth.0.picture.as_deref()),
    };
    let Initiation { created, call } = state
        .calls
        .initiate(
            auth.user_id().as_str(),
            chat_room_id.as_str(),
            request,
            key,
            traceparent().as_deref(),
        )
        .await?;
    Ok(if created {
        ok(StatusCode::CREATED, "Call initiated successfully", call)
    } else {
        ok(
            StatusCode::OK,
            "An active call already exists in this room",
            call,
        )
    })
}

#[utoipa::path(
    get, path = "/api/v1/calls/rooms/{chatRoomId}/active", tag = "calls",
    params(("chatRoomId" = String, Path, description = "The chat room")),
    responses(
        (status = 200, description = "The room's live call, or `data: null` (active call recovery after an app restart)", body = CallEnvelope),
        (status = 401, description = "UNAUTHORIZED", body = ErrorEnvelopeDoc),
        (status = 403, description = "FORBIDDEN (table mode: not a member of the room)", body = ErrorEnvelopeDoc),
    ),
    security(("bearer" = []))
)]
pub async fn active(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidPath(chat_room_id): ValidPath<ChatRoomId>,
) -> Result<Response, ApiError> {
    let call = state
        .calls
        .active_in_room(auth.user_id().as_str(), chat_room_id.as_str())
        .await?;
    let message = if call.is_some() {
        "Active call retrieved successfully"
    } else {
        "No active call"
    };
    Ok(ok(StatusCode::OK, message, call))
}

#[utoipa::path(
    get, path = "/api/v1/calls", tag = "calls",
    params(HistoryQuery),
    responses(
        (status = 200, description = "Your calls, newest first", body = HistoryEnvelope),
        (status = 400, description = "VALIDATION_FAILED (bad limit or cursor)", body = ErrorEnvelopeDoc),
        (status = 401, description = "UNAUTHORIZED", body = ErrorEnvelopeDoc),
    ),
    security(("bearer" = []))
)]
pub async fn history(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidQuery(query): ValidQuery<HistoryQuery>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(20);
    if !(1..=crate::store::MAX_PAGE).contains(&limit) {
        return Err(ApiError::validation(vec![FieldError::new(
            "limit",
            format!("must be between 1 and {}", crate::store::MAX_PAGE),
        )]));
    }
    let page = state
        .calls
        .history(auth.user_id().as_str(), limit, query.before.as_deref())
        .await?;
    Ok(ok(
        StatusCode::OK,
        "Call history retrieved successfully",
        HistoryPage {
            items: page.items,
            next_cursor: page.next_cursor,
        },
    ))
}

#[utoipa::path(
    get, path = "/api/v1/calls/{id}", tag = "calls",
    params(("id" = Uuid, Path, description = "The call")),
    responses(
        (status = 200, description = "The call", body = CallEnvelope),
        (status = 401, description = "UNAUTHORIZED", body = ErrorEnvelopeDoc),
        (status = 404, description = "CALL_NOT_FOUND (also when you may not see it)", body = ErrorEnvelopeDoc),
    ),
    security(("bearer" = []))
)]
pub async fn get_call(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Response, ApiError> {
    let call = state
        .calls
        .get(auth.user_id().as_str(), call_path(id))
        .await?;
    Ok(ok(StatusCode::OK, "Call retrieved successfully", call))
}

#[utoipa::path(
    post, path = "/api/v1/calls/{id}/join", tag = "calls",
    params(("id" = Uuid, Path, description = "The call"),
           ("X-Device-Id" = Option<String>, Header, description = "The answering device's id (as registered in /devices): its other devices stop ringing, this one gets no `incoming_call_cancelled`")),
    request_body(content = Option<JoinBody>, description = "Optional initial media state"),
    responses(
        (status = 200, description = "Call joined successfully", body = CallEnvelope),
        (status = 401, description = "UNAUTHORIZED", body = ErrorEnvelopeDoc),
        (status = 404, description = "CALL_NOT_FOUND", body = ErrorEnvelopeDoc),
        (status = 409, description = "CALL_FULL, CALL_ENDED or INVALID_TRANSITION", body = ErrorEnvelopeDoc),
    ),
    security(("bearer" = []))
)]
pub async fn join(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidPath(id): ValidPath<Uuid>,
    origin: RequestOrigin,
    body: Bytes,
) -> Result<Response, ApiError> {
    let body: JoinBody = optional_json(&body)?;
    let media = MediaPatch {
        is_mic_muted: body.is_mic_muted,
        is_camera_off: body.is_camera_off,
        is_sharing_screen: None,
    };
    let call = state
        .calls
        .join(auth.user_id().as_str(), call_path(id), media, origin.meta())
        .await?;
    metrics::counter!("calls_joins_total").increment(1);
    Ok(ok(StatusCode::OK, "Call joined successfully", call))
}

#[utoipa::path(
    post, path = "/api/v1/calls/{id}/media/session", tag = "calls",
    params(("id" = Uuid, Path, description = "The call")),
    responses(
        (status = 200, description = "Media session created successfully: join Agora with appId + channelName + userAccount + rtcToken. Call again to renew the token.", body = MediaSessionEnvelope),
        (status = 401, description = "UNAUTHORIZED", body = ErrorEnvelopeDoc),
        (status = 404, description = "CALL_NOT_FOUND", body = ErrorEnvelopeDoc),
        (status = 409, description = "NOT_JOINED or CALL_ENDED", body = ErrorEnvelopeDoc),
        (status = 503, description = "MEDIA_PROVIDER_NOT_CONFIGURED or DEPENDENCY_UNAVAILABLE", body = ErrorEnvelopeDoc),
    ),
    security(("bearer" = []))
)]
pub async fn media_session(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidPath(id): ValidPath<Uuid>,
) -> Result<Response, ApiError> {
    let user = auth.user_id().as_str();
    let call = state.calls.media_session_call(user, call_path(id)).await?;
    let channel = format!("call_{}", call.id);
    let session = state
        .media
        .session(&channel, user)
        .await
        .map_err(|e| match e {
            MediaError::NotConfigured => ApiError::new(
                ErrorCode::MediaProviderNotConfigured,
                "Media sessions are disabled until AGORA_APP_ID and AGORA_APP_CERTIFICATE are set",
            ),
            MediaError::Unavailable(why) => {
                tracing::warn!(error = %why, "media-token unavailable");
                ApiError::dependency_unavailable("media-token")
            }
            MediaError::Rejected(why) => {
                ApiError::internal_from(format!("media-token refused: {why}"))
            }
        })?;
    Ok(ok(
        StatusCode::OK,
        "Media session created successfully",
        session,
    ))
}

#[utoipa::path(
    patch, path = "/api/v1/calls/{id}/status", tag = "calls",
    params(("id" = Uuid, Path, description = "The call"),
           ("X-Device-Id" = Option<String>, Header, description = "The device answering or declining: it gets no `incoming_call_cancelled`")),
    request_body = StatusBody,
    responses(
        (status = 200, description = "Participant status updated successfully", body = CallEnvelope),
        (status = 400, description = "VALIDATION_FAILED (unknown status)", body = ErrorEnvelopeDoc),
        (status = 404, description = "CALL_NOT_FOUND", body = ErrorEnvelopeDoc),
        (status = 409, description = "INVALID_TRANSITION, CALL_ENDED or CALL_FULL", body = ErrorEnvelopeDoc),
    ),
    security(("bearer" = []))
)]
pub async fn update_status(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidPath(id): ValidPath<Uuid>,
    origin: RequestOrigin,
    ValidJson(body): ValidJson<StatusBody>,
) -> Result<Response, ApiError> {
    let reason = body.decline_reason.or(body.reason);
    let call = state
        .calls
        .set_status(
            auth.user_id().as_str(),
            call_path(id),
            body.status,
            reason,
            origin.meta(),
        )
        .await?;
    Ok(ok(
        StatusCode::OK,
        "Participant status updated successfully",
        call,
    ))
}

#[utoipa::path(
    patch, path = "/api/v1/calls/{id}/media", tag = "calls",
    params(("id" = Uuid, Path, description = "The call")),
    request_body = MediaBody,
    responses(
        (status = 200, description = "Media state updated successfully", body = ParticipantEnvelope),
        (status = 400, description = "VALIDATION_FAILED (no flag given, or not a boolean)", body = ErrorEnvelopeDoc),
        (status = 404, description = "CALL_NOT_FOUND", body = ErrorEnvelopeDoc),
        (status = 409, description = "NOT_JOINED or CALL_ENDED", body = ErrorEnvelopeDoc),
    ),
    security(("bearer" = []))
)]
pub async fn update_media(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidPath(id): ValidPath<Uuid>,
    ValidJson(body): ValidJson<MediaBody>,
) -> Result<Response, ApiError> {
    let patch = MediaPatch {
        is_mic_muted: body.is_mic_muted,
        is_camera_off: body.is_camera_off,
        is_sharing_screen: body.is_sharing_screen,
    };
    if patch == MediaPatch::default() {
        return Err(ApiError::validation(vec![FieldError::new(
            "body",
            "give at least one of isMicMuted, isCameraOff, isSharingScreen",
        )]));
    }
    let participant: Participant = state
        .calls
        .update_media(
            auth.user_id().as_str(),
            call_path(id),
            patch,
            traceparent().as_deref().into(),
        )
        .await?;
    Ok(ok(
        StatusCode::OK,
        "Media state updated successfully",
        participant,
    ))
}

#[utoipa::path(
    post, path = "/api/v1/calls/{id}/end", tag = "calls",
    params(("id" = Uuid, Path, description = "The call"),
           ("X-Device-Id" = Option<String>, Header, description = "The device hanging up (a callee ending an unanswered 1:1 declines it)")),
    responses(
        (status = 200, description = "Call ended successfully", body = CallEnvelope),
        (status = 403, description = "FORBIDDEN (only the host ends a group call)", body = ErrorEnvelopeDoc),
        (status = 404, description = "CALL_NOT_FOUND", body = ErrorEnvelopeDoc),
        (status = 409, description = "CALL_ENDED", body = ErrorEnvelopeDoc),
    ),
    security(("bearer" = []))
)]
pub async fn end(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidPath(id): ValidPath<Uuid>,
    origin: RequestOrigin,
) -> Result<Response, ApiError> {
    let call = state
        .calls
        .end(auth.user_id().as_str(), call_path(id), origin.meta())
        .await?;
    Ok(ok(StatusCode::OK, "Call ended successfully", call))
}

#[utoipa::path(
    post, path = "/api/v1/calls/{id}/invite", tag = "calls",
    operation_id = "inviteToCall",
    params(("id" = Uuid, Path, description = "The call")),
    request_body(content = InviteBody, example = json!({"userIds": ["user-id-3", "user-id-4"]})),
    responses(
        (status = 200, description = "Users invited successfully: each new invitee gets `incoming_call` (and pushes), subscribers get `participant_invited` (and `call_updated` when a 1:1 becomes a group call)", body = CallEnvelope),
        (status = 400, description = "VALIDATION_FAILED (empty, duplicates, yourself, over `CALL_MAX_INVITEES`, or in table mode not a room member)", body = ErrorEnvelopeDoc),
        (status = 401, description = "UNAUTHORIZED", body = ErrorEnvelopeDoc),
        (status = 403, description = "FORBIDDEN (only the host or a joined participant invites)", body = ErrorEnvelopeDoc),
        (status = 404, description = "CALL_NOT_FOUND", body = ErrorEnvelopeDoc),
        (status = 409, description = "CALL_ENDED", body = ErrorEnvelopeDoc),
    ),
    security(("bearer" = []))
)]
pub async fn invite(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidPath(id): ValidPath<Uuid>,
    origin: RequestOrigin,
    ValidJson(body): ValidJson<InviteBody>,
) -> Result<Response, ApiError> {
    let from = Profile::from_claims(auth.0.name.as_deref(), auth.0.picture.as_deref());
    let user_ids = body.user_ids.into_iter().map(UserId::into_string).collect();
    let call = state
        .calls
        .invite(
            auth.user_id().as_str(),
            call_path(id),
            user_ids,
            from,
            origin.meta(),
        )
        .await?;
    Ok(ok(StatusCode::OK, "Users invited successfully", call))
}

#[utoipa::path(
    post, path = "/api/v1/calls/{id}/participants/{userId}/remove", tag = "calls",
    operation_id = "removeCallParticipant",
    params(("id" = Uuid, Path, description = "The call"),
           ("userId" = String, Path, description = "The participant to remove")),
    responses(
        (status = 200, description = "Participant removed successfully: they are `left` (reason `removed`), their sockets stop getting the call's events, and they cannot rejoin or get media until invited again", body = CallEnvelope),
        (status = 400, description = "VALIDATION_FAILED (yourself, or not in the call)", body = ErrorEnvelopeDoc),
        (status = 401, description = "UNAUTHORIZED", body = ErrorEnvelopeDoc),
        (status = 403, description = "FORBIDDEN (only the host removes)", body = ErrorEnvelopeDoc),
        (status = 404, description = "CALL_NOT_FOUND", body = ErrorEnvelopeDoc),
        (status = 409, description = "CALL_ENDED", body = ErrorEnvelopeDoc),
    ),
    security(("bearer" = []))
)]
pub async fn remove_participant(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidPath(path): ValidPath<RemovePath>,
    origin: RequestOrigin,
) -> Result<Response, ApiError> {
    let call = state
        .calls
        .remove(
            auth.user_id().as_str(),
            call_path(path.id),
            path.user_id.as_str(),
            origin.meta(),
        )
        .await?;
    Ok(ok(StatusCode::OK, "Participant removed successfully", call))
}

// Envelope shapes for the OpenAPI document.
use super::docs::ErrorEnvelopeDoc;

/// `{"statusCode","message","data": Call}`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct CallEnvelope {
    #[schema(example = 200)]
    status_code: u16,
    #[schema(example = "Call joined successfully")]
    message: String,
    data: Call,
}

/// `{"statusCode","message","data": Participant}`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ParticipantEnvelope {
    status_code: u16,
    message: String,
    data: Participant,
}

/// `{"statusCode","message","data": MediaSession}`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct MediaSessionEnvelope {
    status_code: u16,
    message: String,
    data: MediaSession,
}

/// `{"statusCode","message","data": {items, nextCursor}}`.
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct HistoryEnvelope {
    status_code: u16,
    message: String,
    data: HistoryPage,
}
