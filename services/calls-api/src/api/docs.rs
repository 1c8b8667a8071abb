//! The OpenAPI 3 document (generated from the handlers' annotations) and Swagger UI, served at
//! `/api/docs` and `/api/docs/openapi.json` (through the gateway too: apps read them there).

use axum::Router;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_swagger_ui::SwaggerUi;

use super::{calls, internal, webhooks};
use crate::domain::{Call, CallStatus, CallType, EndReason, Participant, ParticipantStatus, Role};
use crate::media::MediaSession;
use crate::service::Snapshot;

/// The error envelope (CONTRACT section 1).
#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct ErrorEnvelopeDoc {
    #[schema(example = 409)]
    status_code: u16,
    #[schema(example = "Call is full")]
    message: String,
    /// The HTTP reason phrase.
    #[schema(example = "Conflict")]
    error: String,
    /// `VALIDATION_FAILED`, `UNAUTHORIZED`, `FORBIDDEN`, `CALL_NOT_FOUND`, `CALL_FULL`,
    /// `CALL_ENDED`, `INVALID_TRANSITION`, `CALL_ALREADY_ACTIVE`, `NOT_JOINED`,
    /// `PAYLOAD_TOO_LARGE`, `RATE_LIMITED`, `MEDIA_PROVIDER_NOT_CONFIGURED`,
    /// `DEPENDENCY_UNAVAILABLE`, `NOT_FOUND`, `METHOD_NOT_ALLOWED`, `INTERNAL`.
    #[schema(example = "CALL_FULL")]
    code: String,
    /// Echoes the `X-Request-Id` header (generated when the request had none).
    request_id: Option<String>,
    /// Field errors of `VALIDATION_FAILED`.
    details: Option<Vec<FieldErrorDoc>>,
}

/// One invalid field.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct FieldErrorDoc {
    #[schema(example = "inviteUserIds[1]")]
    field: String,
    #[schema(example = "must not include the caller")]
    message: String,
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "internal",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "INTERNAL_API_TOKEN (calls-api only; never exposed by the gateway)",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Calls API",
        description = "Voice and video calls for chat apps: ring people in a chat room, join 1:1 and group calls, keep mic/camera state in sync, and get Agora tokens for the media. Real-time events come over Socket.IO (`/calls` namespace); see the README.",
        version = "1.0.0"
    ),
    paths(
        calls::initiate, calls::join, calls::media_session, calls::update_status, calls::update_media,
        calls::end, calls::invite, calls::remove_participant, calls::get_call, calls::active, calls::history,
        internal::replace_members, internal::add_member, internal::remove_member,
        webhooks::agora,
    ),
    components(schemas(
        Call, Participant, CallType, CallStatus, ParticipantStatus, Role, EndReason, MediaSession, Snapshot,
        calls::InitiateBody, calls::InviteBody, calls::JoinBody, calls::StatusBody, calls::MediaBody, calls::HistoryPage,
        calls::CallEnvelope, calls::ParticipantEnvelope, calls::MediaSessionEnvelope, calls::HistoryEnvelope,
        internal::MembersBody, ErrorEnvelopeDoc, FieldErrorDoc,
        webhooks::AgoraNotice, webhooks::NoticeReceipt, webhooks::NoticeReceiptEnvelope,
    )),
    modifiers(&BearerAuth),
    tags((name = "calls", description = "Calls, as the apps use them"), (name = "internal", description = "Room membership, for the chat backend"), (name = "webhooks", description = "Notices from the media provider (Agora NCS), signed instead of authenticated"))
)]
pub struct ApiDoc;

/// The document served at `/api/docs/openapi.json`. `calls-backend openapi` prints this very
/// value, so clients can generate their types from it without a running server.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Swagger UI at `/api/docs`, the document at `/api/docs/openapi.json`.
pub fn router() -> Router {
    SwaggerUi::new("/api/docs")
        .url("/api/docs/openapi.json", document())
        .into()
}
