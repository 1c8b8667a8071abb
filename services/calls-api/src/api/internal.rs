//! `/internal/v1/rooms/:chatRoomId/members…`: the chat backend tells calls-api who is in each
//! room (used when `MEMBERSHIP_MODE=table`). Authenticated with `INTERNAL_API_TOKEN`; answers
//! 404 when that is unset, and the gateway never routes `/internal`. A member removed (by
//! `DELETE` or by a `PUT` without them) stops receiving the events of the room's live call on
//! every signaling node, unless they are one of its participants.

use axum::extract::State;
use axum::response::Response;
use common::error::{ApiError, ValidJson, ValidPath, ok};
use common::ids::{ChatRoomId, UserId};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::AppState;
use crate::service::store_error;

/// The complete member list of a room.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MembersBody {
    #[schema(value_type = Vec<String>)]
    pub user_ids: Vec<UserId>,
}

/// Most members a room may have in one `PUT` (keeps one statement's work bounded).
const MAX_MEMBERS: usize = 10_000;

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.internal_token else {
        return Err(ApiError::not_found());
    };
    let presented = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(common::auth::bearer_token);
    match presented {
        Some(token) if expected.matches(token) => Ok(()),
        _ => Err(ApiError::unauthorized()),
    }
}

#[utoipa::path(
    put, path = "/internal/v1/rooms/{chatRoomId}/members", tag = "internal",
    params(("chatRoomId" = String, Path)),
    request_body = MembersBody,
    responses((status = 200, description = "Members replaced", body = MembersBody),
              (status = 401, description = "UNAUTHORIZED", body = super::docs::ErrorEnvelopeDoc)),
    security(("internal" = []))
)]
pub async fn replace_members(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidPath(room): ValidPath<ChatRoomId>,
    ValidJson(body): ValidJson<MembersBody>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    if body.user_ids.len() > MAX_MEMBERS {
        return Err(ApiError::invalid_field(
            "userIds",
            format!("at most {MAX_MEMBERS} members"),
        ));
    }
    let ids: Vec<String> = body
        .user_ids
        .iter()
        .map(|u| u.as_str().to_owned())
        .collect();
    state
        .calls
        .replace_room_members(room.as_str(), &ids)
        .await?;
    Ok(ok(StatusCode::OK, "Room members replaced", body))
}

#[utoipa::path(
    post, path = "/internal/v1/rooms/{chatRoomId}/members/{userId}", tag = "internal",
    params(("chatRoomId" = String, Path), ("userId" = String, Path)),
    responses((status = 200, description = "Member added"),
              (status = 401, description = "UNAUTHORIZED", body = super::docs::ErrorEnvelopeDoc)),
    security(("internal" = []))
)]
pub async fn add_member(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidPath((room, user)): ValidPath<(ChatRoomId, UserId)>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    state
        .calls
        .store()
        .add_room_member(room.as_str(), user.as_str(), OffsetDateTime::now_utc())
        .await
        .map_err(store_error)?;
    Ok(ok(
        StatusCode::OK,
        "Room member added",
        serde_json::json!({"chatRoomId": room, "userId": user}),
    ))
}

#[utoipa::path(
    delete, path = "/internal/v1/rooms/{chatRoomId}/members/{userId}", tag = "internal",
    params(("chatRoomId" = String, Path), ("userId" = String, Path)),
    responses((status = 200, description = "Member removed"),
              (status = 401, description = "UNAUTHORIZED", body = super::docs::ErrorEnvelopeDoc)),
    security(("internal" = []))
)]
pub async fn remove_member(
    State(state): State<AppState>,
    headers: HeaderMap,
    ValidPath((room, user)): ValidPath<(ChatRoomId, UserId)>,
) -> Result<Response, ApiError> {
    authorize(&state, &headers)?;
    state
        .calls
        .remove_room_member(room.as_str(), user.as_str())
        .await?;
    Ok(ok(
        StatusCode::OK,
        "Room member removed",
        serde_json::json!({"chatRoomId": room, "userId": user}),
    ))
}
