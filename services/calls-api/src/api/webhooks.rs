//! `POST /webhooks/agora`: Agora's Notification Center (NCS) reporting RTC channel events
//! (CONTRACT section 11). The gateway routes it without an access token; each notice is
//! authenticated by `Agora-Signature-V2`, the hex HMAC-SHA256 of the raw body keyed with
//! `AGORA_NCS_SECRET`, checked in constant time before the body is even parsed.
//!
//! What a notice does:
//! - 103–108 (a broadcaster, audience member or communication-profile user joining or leaving)
//!   on a channel `call_<callId>` with `account` = a participant's user id: sets that
//!   participant's `inMedia` and emits `participant_media_presence`, once per `noticeId`, in
//!   `clientSeq` order per user (see `calls_domain::commands::channel` and `store::ncs`).
//!   Each participant's `mediaSeconds` is counted between the notices' own times (`ts`).
//! - 101/102 (channel created/destroyed): logged and counted only; the call's own lifecycle
//!   does not depend on them.
//! - A join of someone who may not be in the channel (not a joined participant of the live
//!   call, a user who is not a participant included) also writes a kick, which the workers
//!   send through Agora's kicking-rule API (`crate::kicks`).
//! - Anything else (other event types, channels that are not a call's, notices without an
//!   account or `clientSeq`): answered 200 and ignored, so Agora does not retry what will
//!   never apply.
//!
//! Agora waits at most a few seconds for the answer; the work is one short transaction.

use axum::extract::State;
use axum::response::Response;
use bytes::Bytes;
use common::error::{ApiError, ErrorCode, ok, parse_json};
use hmac::{Hmac, Mac};
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::AppState;
use crate::domain::{CallId, ChannelNotice};
use crate::store::NoticeApplied;

/// The header carrying the HMAC-SHA256 signature (Agora also sends an HMAC-SHA1
/// `Agora-Signature`, which is not used).
pub const SIGNATURE_HEADER: &str = "agora-signature-v2";

/// An NCS notice, as Agora posts it. Only the fields used are read; others are ignored.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgoraNotice {
    /// Identifies the notice; a redelivery has the same id.
    #[schema(example = "2000001428:4330:107")]
    pub notice_id: String,
    /// 1 for RTC.
    #[serde(default)]
    #[schema(example = 1)]
    pub product_id: Option<i64>,
    /// 101 channel created, 102 destroyed, 103/104 broadcaster join/leave, 105/106 audience
    /// join/leave, 107/108 communication-profile user join/leave, 111/112 role changes.
    #[schema(example = 103)]
    pub event_type: i64,
    /// When Agora sent it (Unix milliseconds).
    #[serde(default)]
    pub notify_ms: Option<i64>,
    /// The event's details.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
}

/// The `payload` fields of the join/leave events.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChannelPayload {
    channel_name: String,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    client_seq: Option<i64>,
    #[serde(default)]
    account: Option<String>,
    #[serde(default)]
    reason: Option<i64>,
    /// When the event happened in the channel (Unix seconds, Agora's clock).
    #[serde(default)]
    ts: Option<i64>,
}

/// What was done with a notice (`data` of the 200).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NoticeReceipt {
    /// `applied` (a participant's `inMedia` changed, or someone who may not be in the channel
    /// is to be kicked), `duplicate` (this `noticeId` was applied before) or `ignored`
    /// (nothing to change).
    #[schema(example = "applied")]
    pub outcome: &'static str,
}

/// Envelope of the 200.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct NoticeReceiptEnvelope {
    #[schema(example = 200)]
    status_code: u16,
    message: String,
    data: NoticeReceipt,
}

#[utoipa::path(
    post, path = "/webhooks/agora", tag = "webhooks",
    operation_id = "receiveAgoraNotice",
    request_body = AgoraNotice,
    params(("Agora-Signature-V2" = String, Header, description = "Hex HMAC-SHA256 of the raw body, keyed with AGORA_NCS_SECRET")),
    responses((status = 200, description = "Received (applied, duplicate or ignored)", body = NoticeReceiptEnvelope),
              (status = 400, description = "VALIDATION_FAILED: signed, but not a notice", body = super::docs::ErrorEnvelopeDoc),
              (status = 401, description = "UNAUTHORIZED: missing or wrong signature", body = super::docs::ErrorEnvelopeDoc),
              (status = 404, description = "NOT_FOUND: AGORA_NCS_SECRET is not set", body = super::docs::ErrorEnvelopeDoc)),
    security(())
)]
pub async fn agora(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let Some(secret) = &state.ncs_secret else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            "Agora notifications are not configured on this deployment (AGORA_NCS_SECRET)",
        ));
    };
    if !signature_matches(secret.expose().as_bytes(), &headers, &body) {
        metrics::counter!("calls_ncs_signature_failures_total").increment(1);
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "Agora-Signature-V2 is missing or does not match the body",
        ));
    }
    let notice: AgoraNotice = parse_json(&body)?;
    metrics::counter!("calls_ncs_events_total", "type" => type_label(notice.event_type))
        .increment(1);
    let outcome = handle(&state, &notice).await?;
    if outcome == "duplicate" {
        metrics::counter!("calls_ncs_duplicates_total").increment(1);
    }
    Ok(ok(
        StatusCode::OK,
        "Notice received",
        NoticeReceipt { outcome },
    ))
}

async fn handle(state: &AppState, notice: &AgoraNotice) -> Result<&'static str, ApiError> {
    let in_media = match notice.event_type {
        103 | 105 | 107 => true,
        104 | 106 | 108 => false,
        101 | 102 => {
            let channel = notice.payload.get("channelName").and_then(|c| c.as_str());
            tracing::info!(
                notice_id = notice.notice_id,
                event_type = notice.event_type,
                channel,
                "Agora channel {}",
                if notice.event_type == 101 {
                    "created"
                } else {
                    "destroyed"
                }
            );
            return Ok("ignored");
        }
        _ => return Ok("ignored"),
    };
    let payload: ChannelPayload = match serde_json::from_value(notice.payload.clone()) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(notice_id = notice.notice_id, error = %e, "Agora notice with an unreadable payload ignored");
            return Ok("ignored");
        }
    };
    let (Some(call_id), Some(account), Some(client_seq)) = (
        call_of_channel(&payload.channel_name),
        payload.account.filter(|a| !a.is_empty()),
        payload.client_seq,
    ) else {
        return Ok("ignored");
    };
    let channel_notice = ChannelNotice {
        user_id: account,
        in_media,
        client_seq,
        uid: payload.uid,
        reason: payload.reason,
        at: event_time(payload.ts, notice.notify_ms),
    };
    let applied = state
        .calls
        .channel_notice(
            &notice.notice_id,
            notice.event_type,
            call_id,
            &channel_notice,
        )
        .await?;
    Ok(match &applied {
        NoticeApplied::Duplicate => "duplicate",
        NoticeApplied::Applied { events, kicks } if !events.is_empty() || *kicks > 0 => "applied",
        NoticeApplied::Applied { .. } | NoticeApplied::UnknownCall => "ignored",
    })
}

/// When a join or leave happened, which media time is counted by: the payload's `ts` (when
/// it happened in the channel), else `notifyMs` (when Agora sent the notice), else now. Not
/// the arrival time when Agora says otherwise: a notice retried minutes later must not stretch
/// the stay it closes.
fn event_time(ts: Option<i64>, notify_ms: Option<i64>) -> OffsetDateTime {
    ts.and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .or_else(|| {
            notify_ms.and_then(|ms| {
                OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
            })
        })
        .unwrap_or_else(OffsetDateTime::now_utc)
}

/// `call_<callId>`, exactly as media sessions name the channel (a lowercase hyphenated UUID):
/// any other spelling is not one of ours.
fn call_of_channel(channel: &str) -> Option<CallId> {
    let id = CallId::parse_str(channel.strip_prefix("call_")?).ok()?;
    (id.hyphenated().to_string() == channel["call_".len()..]).then_some(id)
}

/// Compares the header with the body's HMAC in constant time (`verify_slice`).
fn signature_matches(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let Some(signature) = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| hex::decode(v.trim()).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&signature).is_ok()
}

/// The `type` label: Agora's RTC channel event types by number, anything else `other` (the
/// label stays bounded whatever is posted).
fn type_label(event_type: i64) -> &'static str {
    match event_type {
        101 => "101",
        102 => "102",
        103 => "103",
        104 => "104",
        105 => "105",
        106 => "106",
        107 => "107",
        108 => "108",
        111 => "111",
        112 => "112",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_canonical_call_channel_name_is_a_call() {
        let id = "0193a2b4-7c1d-7f00-8000-000000000001";
        assert_eq!(
            call_of_channel(&format!("call_{id}")).map(|c| c.to_string()),
            Some(id.to_owned())
        );
        assert_eq!(
            call_of_channel(&format!("call_{}", id.to_uppercase())),
            None
        );
        assert_eq!(call_of_channel(&format!("room_{id}")), None);
        assert_eq!(call_of_channel("call_"), None);
        assert_eq!(call_of_channel("test_webhook"), None);
    }

    #[test]
    fn a_signature_is_the_hex_hmac_sha256_of_the_exact_body() {
        let body = br#"{"noticeId":"n1"}"#;
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap_or_else(|_| unreachable!());
        mac.update(body);
        let good = hex::encode(mac.finalize().into_bytes());
        let mut headers = HeaderMap::new();
        headers.insert(
            SIGNATURE_HEADER,
            good.parse().unwrap_or_else(|_| unreachable!()),
        );
        assert!(signature_matches(b"secret", &headers, body));
        assert!(!signature_matches(b"other", &headers, body));
        assert!(!signature_matches(
            b"secret",
            &headers,
            br#"{"noticeId":"n2"}"#
        ));
        assert!(!signature_matches(b"secret", &HeaderMap::new(), body));
        headers.insert(
            SIGNATURE_HEADER,
            "zz".parse().unwrap_or_else(|_| unreachable!()),
        );
        assert!(!signature_matches(b"secret", &headers, body));
    }
}
