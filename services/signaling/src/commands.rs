//! Client events: validation of what the client sent, and the calls-api command it becomes.
//!
//! Validation here is only what signaling itself needs (a well-formed `callId` to subscribe to)
//! plus cheap shape checks, so a malformed event is answered at once instead of costing a bus
//! round trip; calls-api stays the authority on everything else. The payload goes to calls-api
//! exactly as the client sent it.

use std::time::Instant;

use bytes::Bytes;
use calls_bus::{Ack, BusError, CommandRequest, ErrorBody, Headers};
use common::error::ErrorCode;
use common::ids::{CallId, DeviceId};
use serde_json::{Map, Value};

use crate::metrics;
use crate::state::{Shared, SocketCtx};

/// The client events of CONTRACT section 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent {
    /// `join_call {callId}`
    JoinCall,
    /// `leave_call {callId}`
    LeaveCall,
    /// `media_state_changed {callId, isMicMuted?, isCameraOff?, isSharingScreen?}`
    MediaStateChanged,
    /// `call_status_changed {callId, status, reason?}`
    CallStatusChanged,
}

impl ClientEvent {
    /// Recognises an event name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "join_call" => Some(Self::JoinCall),
            "leave_call" => Some(Self::LeaveCall),
            "media_state_changed" => Some(Self::MediaStateChanged),
            "call_status_changed" => Some(Self::CallStatusChanged),
            _ => None,
        }
    }

    /// The event (and command) name.
    pub fn name(self) -> &'static str {
        match self {
            Self::JoinCall => "join_call",
            Self::LeaveCall => "leave_call",
            Self::MediaStateChanged => "media_state_changed",
            Self::CallStatusChanged => "call_status_changed",
        }
    }
}

const MEDIA_FIELDS: [&str; 3] = ["isMicMuted", "isCameraOff", "isSharingScreen"];
const STATUSES: [&str; 6] = ["invited", "ringing", "joined", "left", "declined", "missed"];

/// An error answer.
pub fn failure(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code.as_str(), message)
}

fn invalid(message: impl Into<String>) -> ErrorBody {
    failure(ErrorCode::ValidationFailed, message)
}

/// The `callId` of a payload, if it has a readable one (for the `error` event's `callId`).
pub fn call_id_hint(payload: &Value) -> Option<String> {
    let id = payload.get("callId")?.as_str()?;
    id.parse::<CallId>().ok().map(|id| id.to_string())
}

/// Checks a payload for `event`; returns its call id.
pub fn validate(event: ClientEvent, payload: &Value) -> Result<CallId, ErrorBody> {
    let Value::Object(fields) = payload else {
        return Err(invalid(format!(
            "{} expects an object payload",
            event.name()
        )));
    };
    let call_id = match fields.get("callId") {
        None | Some(Value::Null) => return Err(invalid("callId is required")),
        Some(Value::String(s)) => s
            .parse::<CallId>()
            .map_err(|_| invalid("callId must be a UUID"))?,
        Some(_) => return Err(invalid("callId must be a string")),
    };
    match event {
        ClientEvent::JoinCall | ClientEvent::LeaveCall => {}
        ClientEvent::MediaStateChanged => validate_media(fields)?,
        ClientEvent::CallStatusChanged => validate_status(fields)?,
    }
    Ok(call_id)
}

fn validate_media(fields: &Map<String, Value>) -> Result<(), ErrorBody> {
    let mut present = 0;
    for name in MEDIA_FIELDS {
        match fields.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::Bool(_)) => present += 1,
            Some(_) => return Err(invalid(format!("{name} must be a boolean"))),
        }
    }
    if present == 0 {
        return Err(invalid(
            "at least one of isMicMuted, isCameraOff, isSharingScreen is required",
        ));
    }
    Ok(())
}

fn validate_status(fields: &Map<String, Value>) -> Result<(), ErrorBody> {
    match fields.get("status") {
        Some(Value::String(s)) if STATUSES.contains(&s.as_str()) => {}
        Some(Value::String(_)) => {
            return Err(invalid(format!(
                "status must be one of {}",
                STATUSES.join(", ")
            )));
        }
        None | Some(Value::Null) => return Err(invalid("status is required")),
        Some(_) => return Err(invalid("status must be a string")),
    }
    match fields.get("reason") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) => {
            calls_bus::wire::check_reason(s).map_err(|message| invalid(format!("reason {message}")))
        }
        Some(_) => Err(invalid("reason must be a string")),
    }
}

/// Sends a command to calls-api and returns its answer; a bus failure becomes
/// `DEPENDENCY_UNAVAILABLE`.
pub async fn send(
    state: &Shared,
    event: ClientEvent,
    user_id: &str,
    device_id: Option<&DeviceId>,
    socket_id: &str,
    payload: &Value,
) -> Result<Value, ErrorBody> {
    let request = CommandRequest {
        user_id: user_id.to_owned(),
        socket_id: socket_id.to_owned(),
        node_id: state.node_id.clone(),
        device_id: device_id.map(|d| d.as_str().to_owned()),
        payload,
    };
    let body = serde_json::to_vec(&request)
        .map_err(|_| failure(ErrorCode::Internal, "Could not encode the command"))?;
    let started = Instant::now();
    let subject = state.subjects.command(event.name());
    // The command joins the trace of the socket event being handled.
    let mut headers = Headers::new();
    if let Some((traceparent, tracestate)) =
        common::telemetry::traceparent(&tracing::Span::current())
    {
        headers.insert(common::telemetry::TRACEPARENT, traceparent);
        if let Some(tracestate) = tracestate {
            headers.insert(common::telemetry::TRACESTATE, tracestate);
        }
    }
    let result = state
        .bus
        .request(&subject, headers, Bytes::from(body), state.command_timeout)
        .await;
    let (outcome, answer) = match result {
        Ok(reply) => match serde_json::from_slice::<Ack<Value>>(&reply.payload) {
            Ok(Ack::Ok(data)) => ("ok", Ok(data)),
            Ok(Ack::Err(err)) => ("refused", Err(err)),
            Err(err) => {
                tracing::error!(command = event.name(), error = %err, "calls-api sent an unreadable reply");
                (
                    "bad_reply",
                    Err(failure(
                        ErrorCode::Internal,
                        ErrorCode::Internal.default_message(),
                    )),
                )
            }
        },
        Err(err) if err.is_unavailable() => {
            tracing::warn!(command = event.name(), error = %err, "calls-api did not answer");
            let outcome = if err == BusError::Timeout {
                "timeout"
            } else {
                "unavailable"
            };
            (
                outcome,
                Err(failure(
                    ErrorCode::DependencyUnavailable,
                    "The calls service is unavailable; retry shortly",
                )),
            )
        }
        Err(err) => {
            tracing::error!(command = event.name(), error = %err, "command could not be sent");
            (
                "error",
                Err(failure(
                    ErrorCode::Internal,
                    ErrorCode::Internal.default_message(),
                )),
            )
        }
    };
    metrics::command(event.name(), outcome, started.elapsed());
    answer
}

/// The `ring_state` command: the ring events calls-api replays to a socket that just connected
/// (`incoming_call` for calls still ringing its user, `incoming_call_cancelled` for calls that
/// stopped ringing within the ring timeout), as `(event, data)` pairs in order.
pub async fn ring_state(
    state: &Shared,
    ctx: &SocketCtx,
    socket_id: &str,
) -> Result<Vec<(String, Value)>, ErrorBody> {
    #[derive(serde::Deserialize)]
    struct Replay {
        events: Vec<calls_bus::EventMessage>,
    }
    let request = CommandRequest {
        user_id: ctx.user.to_string(),
        socket_id: socket_id.to_owned(),
        node_id: state.node_id.clone(),
        device_id: ctx.device.as_ref().map(|d| d.as_str().to_owned()),
        payload: Value::Null,
    };
    let body = serde_json::to_vec(&request)
        .map_err(|_| failure(ErrorCode::Internal, "Could not encode the command"))?;
    let reply = state
        .bus
        .request(
            &state.subjects.command(RING_STATE),
            Headers::new(),
            Bytes::from(body),
            state.command_timeout,
        )
        .await
        .map_err(|_| {
            failure(
                ErrorCode::DependencyUnavailable,
                "The calls service is unavailable",
            )
        })?;
    match serde_json::from_slice::<Ack<Replay>>(&reply.payload) {
        Ok(Ack::Ok(replay)) => Ok(replay
            .events
            .into_iter()
            .map(|e| (e.event, e.data))
            .collect()),
        Ok(Ack::Err(err)) => Err(err),
        Err(_) => Err(failure(
            ErrorCode::Internal,
            ErrorCode::Internal.default_message(),
        )),
    }
}

/// The command (not a client event) that asks calls-api for a user's recent rings.
pub const RING_STATE: &str = "ring_state";

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    const ID: &str = "0193a2b4-0000-7000-8000-000000000001";

    fn code(r: Result<CallId, ErrorBody>) -> String {
        r.unwrap_err().message
    }

    #[test]
    fn a_payload_that_is_not_an_object_is_invalid() {
        for p in [json!(null), json!("x"), json!(1), json!([ID])] {
            assert!(validate(ClientEvent::JoinCall, &p).is_err(), "{p}");
        }
    }

    #[test]
    fn call_id_must_be_a_uuid_string() {
        assert_eq!(
            code(validate(ClientEvent::JoinCall, &json!({}))),
            "callId is required"
        );
        assert_eq!(
            code(validate(ClientEvent::JoinCall, &json!({"callId": 5}))),
            "callId must be a string"
        );
        assert_eq!(
            code(validate(ClientEvent::JoinCall, &json!({"callId": "x"}))),
            "callId must be a UUID"
        );
        assert_eq!(
            validate(ClientEvent::JoinCall, &json!({"callId": ID}))
                .unwrap()
                .to_string(),
            ID
        );
    }

    #[test]
    fn media_changes_need_at_least_one_boolean_flag() {
        assert!(validate(ClientEvent::MediaStateChanged, &json!({"callId": ID})).is_err());
        assert!(
            validate(
                ClientEvent::MediaStateChanged,
                &json!({"callId": ID, "isMicMuted": "yes"})
            )
            .is_err()
        );
        assert!(
            validate(
                ClientEvent::MediaStateChanged,
                &json!({"callId": ID, "isCameraOff": true})
            )
            .is_ok()
        );
    }

    #[test]
    fn status_changes_need_a_known_status_and_a_short_reason() {
        assert!(validate(ClientEvent::CallStatusChanged, &json!({"callId": ID})).is_err());
        assert!(
            validate(
                ClientEvent::CallStatusChanged,
                &json!({"callId": ID, "status": "gone"})
            )
            .is_err()
        );
        assert!(
            validate(
                ClientEvent::CallStatusChanged,
                &json!({"callId": ID, "status": "declined", "reason": 3})
            )
            .is_err()
        );
        let long = "r".repeat(201);
        assert!(
            validate(
                ClientEvent::CallStatusChanged,
                &json!({"callId": ID, "status": "left", "reason": long})
            )
            .is_err()
        );
        assert!(
            validate(
                ClientEvent::CallStatusChanged,
                &json!({"callId": ID, "status": "declined", "reason": "busy"})
            )
            .is_ok()
        );
    }
}
