//! What signaling asks of calls-api over the bus: the socket commands (`join_call`,
//! `leave_call`, `media_state_changed`, `call_status_changed`) and socket presence.
//!
//! Both are request/reply in the `calls-api` queue group, so each request is handled by one
//! replica. Commands run through the same [`Calls`] service as REST, so a socket event and its
//! REST twin answer identically. Replies use the socket ack shape (`{ok, data}` /
//! `{ok: false, error: {code, message}}`), which signaling forwards to the client as is.

use std::sync::Arc;

use bytes::Bytes;
use calls_bus::{Ack, Bus, CommandRequest, Message, PresenceMessage, Subjects};
use common::error::{ApiError, ErrorCode};
use common::shutdown::CancellationToken;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tracing::Instrument;
use uuid::Uuid;

use crate::domain::{MediaPatch, ParticipantStatus};
use crate::service::{Calls, store_error};
use crate::store::EventMeta;

/// Requests handled at once per replica; more wait in the subscription (bounded memory).
const MAX_IN_FLIGHT: usize = 512;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallRef {
    call_id: Uuid,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaCommand {
    call_id: Uuid,
    is_mic_muted: Option<bool>,
    is_camera_off: Option<bool>,
    is_sharing_screen: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusCommand {
    call_id: Uuid,
    status: ParticipantStatus,
    reason: Option<String>,
    decline_reason: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(payload: Value) -> Result<T, ApiError> {
    let bytes = serde_json::to_vec(&payload).map_err(ApiError::internal_from)?;
    common::error::parse_json(&bytes)
}

fn to_value<T: serde::Serialize>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value).map_err(ApiError::internal_from)
}

/// Runs one command for `user`; the answer goes back as the socket ack.
pub async fn handle_command(
    calls: &Calls,
    name: &str,
    user: &str,
    payload: Value,
    meta: EventMeta<'_>,
) -> Result<Value, ApiError> {
    match name {
        "join_call" => {
            let req: CallRef = parse(payload)?;
            to_value(&calls.snapshot(user, req.call_id).await?)
        }
        "leave_call" => {
            let req: CallRef = parse(payload)?;
            to_value(&calls.leave(user, req.call_id, meta).await?)
        }
        "media_state_changed" => {
            let req: MediaCommand = parse(payload)?;
            let patch = MediaPatch {
                is_mic_muted: req.is_mic_muted,
                is_camera_off: req.is_camera_off,
                is_sharing_screen: req.is_sharing_screen,
            };
            if patch == MediaPatch::default() {
                return Err(ApiError::invalid_field(
                    "body",
                    "give at least one of isMicMuted, isCameraOff, isSharingScreen",
                ));
            }
            to_value(&calls.update_media(user, req.call_id, patch, meta).await?)
        }
        "call_status_changed" => {
            let req: StatusCommand = parse(payload)?;
            let reason = req.reason.or(req.decline_reason);
            to_value(
                &calls
                    .set_status(user, req.call_id, req.status, reason, meta)
                    .await?,
            )
        }
        "ring_state" => {
            // Not a socket event: signaling asks on behalf of a socket that just connected.
            // Calls still ringing for the user get `incoming_call` again; calls that stopped
            // ringing within the ring timeout get their `incoming_call_cancelled`, except a
            // cancel this very device caused (it answered or declined).
            let since = time::OffsetDateTime::now_utc() - calls.timing().ring_timeout;
            let rings = calls
                .store()
                .recent_rings(user, since)
                .await
                .map_err(store_error)?;
            let events: Vec<Value> = rings
                .into_iter()
                .filter(|(event, _, device)| {
                    !(event == "incoming_call_cancelled"
                        && device.is_some()
                        && device.as_deref() == meta.origin_device)
                })
                .filter_map(|(event, payload, _)| {
                    let data: Value = serde_json::from_str(&payload).ok()?;
                    Some(serde_json::json!({"event": event, "data": data}))
                })
                .collect();
            Ok(serde_json::json!({ "events": events }))
        }
        other => Err(ApiError::new(
            ErrorCode::ValidationFailed,
            format!("unknown command {other:?}"),
        )),
    }
}

fn ack_bytes(result: Result<Value, ApiError>) -> Bytes {
    let ack: Ack<Value> = match result {
        Ok(data) => Ack::Ok(data),
        Err(e) => {
            // Field errors read better in one line on a socket than as a details array.
            let message = match e.details.first() {
                Some(d) if e.code == ErrorCode::ValidationFailed => {
                    format!("{}: {}", d.field, d.message)
                }
                _ => e.message.clone(),
            };
            Ack::err(e.code.as_str(), message)
        }
    };
    Bytes::from(serde_json::to_vec(&ack).unwrap_or_else(|_| {
        br#"{"ok":false,"error":{"code":"INTERNAL","message":"Internal error"}}"#.to_vec()
    }))
}

/// Applies one presence report; returns whether events were written, and the reply's data
/// (`{"known": false}` to a heartbeat from a node this replica had expired, so it re-reports
/// its sockets).
async fn handle_presence(
    calls: &Calls,
    message: PresenceMessage,
) -> Result<(bool, Value), ApiError> {
    let store = calls.store();
    let timing = calls.timing();
    let now = OffsetDateTime::now_utc();
    let events = match message {
        PresenceMessage::Connected {
            node_id,
            socket_id,
            user_id,
        } => {
            metrics::counter!("calls_presence_reports_total", "type" => "connected").increment(1);
            store
                .socket_connected(&node_id, &socket_id, &user_id, now, timing)
                .await
        }
        PresenceMessage::Disconnected {
            node_id, socket_id, ..
        } => {
            metrics::counter!("calls_presence_reports_total", "type" => "disconnected")
                .increment(1);
            store
                .socket_disconnected(&node_id, &socket_id, now, timing)
                .await
        }
        PresenceMessage::NodeDown { node_id } => {
            tracing::info!(node = %node_id, "signaling node shut down; its sockets are gone");
            store.node_down(&node_id, now, timing).await
        }
        PresenceMessage::Heartbeat { node_id, sockets } => {
            metrics::gauge!("calls_signaling_node_sockets", "node" => node_id.clone())
                .set(sockets as f64);
            let known = store
                .node_heartbeat(&node_id, now)
                .await
                .map_err(store_error)?;
            return Ok((false, serde_json::json!({ "known": known })));
        }
    }
    .map_err(store_error)?;
    Ok((!events.is_empty(), Value::Null))
}

/// Serves commands and presence until `shutdown`.
pub async fn serve(
    bus: Bus,
    subjects: Subjects,
    calls: Calls,
    shutdown: CancellationToken,
) -> Result<(), calls_bus::BusError> {
    let group = calls_bus::subjects::CALLS_API_QUEUE_GROUP;
    let mut commands = bus.queue_subscribe(&subjects.all_commands(), group).await?;
    let mut presence = bus.queue_subscribe(&subjects.all_presence(), group).await?;
    bus.flush().await?;
    let limit = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut stop = std::pin::pin!(shutdown.cancelled_owned());
    loop {
        let (message, is_command) = tokio::select! {
            () = &mut stop => return Ok(()),
            m = commands.next() => match m { Some(m) => (m, true), None => return Ok(()) },
            m = presence.next() => match m { Some(m) => (m, false), None => return Ok(()) },
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return Ok(());
        };
        let (bus, subjects, calls) = (bus.clone(), subjects.clone(), calls.clone());
        tokio::spawn(async move {
            let _permit = permit;
            if is_command {
                answer_command(&bus, &subjects, &calls, message).await;
            } else {
                answer_presence(&bus, &calls, message).await;
            }
        });
    }
}

async fn answer_command(bus: &Bus, subjects: &Subjects, calls: &Calls, message: Message) {
    let started = std::time::Instant::now();
    let name = subjects
        .command_name(&message.subject)
        .unwrap_or("unknown")
        .to_owned();
    // The command continues the trace of the socket event that caused it; the events it
    // writes carry this span's context on to their relay and emits.
    let span = tracing::info_span!(
        "bus.command",
        otel.name = format!("command {name}"),
        otel.kind = "server",
        command = %name,
        trace_id = tracing::field::Empty,
        user_id = tracing::field::Empty,
        code = tracing::field::Empty,
    );
    common::telemetry::set_parent(
        &span,
        message.headers.get(common::telemetry::TRACEPARENT),
        message.headers.get(common::telemetry::TRACESTATE),
    );
    let trace = common::telemetry::traceparent(&span).map(|(traceparent, _)| traceparent);
    let result = match serde_json::from_slice::<CommandRequest<Value>>(&message.payload) {
        Ok(req) => {
            span.record("user_id", req.user_id.as_str());
            // The socket (and the device, when the app named it at connect) the command came
            // from: an answer or decline is not echoed back to them as "elsewhere".
            let meta = EventMeta {
                trace_context: trace.as_deref(),
                origin_socket: Some(&req.socket_id),
                origin_device: req.device_id.as_deref(),
            };
            handle_command(calls, &name, &req.user_id, req.payload, meta)
                .instrument(span.clone())
                .await
        }
        Err(e) => Err(ApiError::new(
            ErrorCode::ValidationFailed,
            format!("malformed command: {e}"),
        )),
    };
    let code = match &result {
        Ok(_) => "OK",
        Err(e) => e.code.as_str(),
    };
    span.record("code", code);
    span.in_scope(|| {
        tracing::info!(
            duration_ms = started.elapsed().as_secs_f64() * 1000.0,
            "command"
        );
    });
    if result.is_ok() && name != "join_call" {
        calls.wake_relay();
    }
    metrics::counter!("calls_commands_total", "command" => name.clone(), "code" => code)
        .increment(1);
    metrics::histogram!("calls_command_duration_seconds", "command" => name)
        .record(started.elapsed().as_secs_f64());
    if let Some(reply) = message.reply
        && let Err(e) = bus.respond(&reply, ack_bytes(result)).await
    {
        tracing::warn!(error = %e, "could not answer a command");
    }
}

async fn answer_presence(bus: &Bus, calls: &Calls, message: Message) {
    let result = match serde_json::from_slice::<PresenceMessage>(&message.payload) {
        Ok(presence) => handle_presence(calls, presence).await,
        Err(e) => Err(ApiError::new(
            ErrorCode::ValidationFailed,
            format!("malformed presence report: {e}"),
        )),
    };
    match &result {
        Ok((true, _)) => calls.wake_relay(),
        Ok((false, _)) => {}
        Err(e) => {
            tracing::warn!(code = e.code.as_str(), message = %e.message, "presence report failed")
        }
    }
    if let Some(reply) = message.reply {
        let _ = bus
            .respond(&reply, ack_bytes(result.map(|(_, data)| data)))
            .await;
    }
}
