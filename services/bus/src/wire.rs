//! The JSON payloads and headers that cross the bus.
//!
//! Events (calls-api → signaling), commands (signaling → calls-api, request/reply) and presence
//! (signaling → calls-api). The command reply has the very shape of the Socket.IO ack
//! (`{ok: true, data}` / `{ok: false, error: {code, message}}`), so signaling forwards it to the
//! client untouched.
//!
//! Besides the headers below, messages carry the W3C `traceparent` of the operation that sent
//! them, when it has one (the services read and write it through `common::telemetry`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserializer};
use serde::ser::{SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The longest status reason (`declineReason` on REST, `reason` in `call_status_changed`), in
/// characters. One limit for both paths: signaling refuses a longer one at once, calls-api's
/// state machine (which both paths reach) enforces it.
pub const MAX_REASON_CHARS: usize = 200;

/// Checks a status reason against [`MAX_REASON_CHARS`]; the error is the sentence both paths
/// answer with (`VALIDATION_FAILED`, field `reason`).
pub fn check_reason(reason: &str) -> Result<(), String> {
    if reason.chars().count() > MAX_REASON_CHARS {
        Err(format!("must be at most {MAX_REASON_CHARS} characters"))
    } else {
        Ok(())
    }
}

/// JetStream de-duplication id: the outbox event id, so the outbox's retries are stored once.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Unix milliseconds at which the event was created (for relay-latency metrics).
pub const HEADER_CREATED_AT: &str = "X-Created-At";

/// The Socket.IO socket whose command caused the event, when a socket did: an
/// `incoming_call_cancelled` (`answered_elsewhere`, `declined_elsewhere`) is not sent back to it.
pub const HEADER_ORIGIN_SOCKET: &str = "Calls-Origin-Socket";
/// The device (the app's `deviceId`, as in the device registry) that caused the event, when the
/// app said (`X-Device-Id` on REST, `auth.deviceId` on the socket): an `incoming_call_cancelled`
/// is not sent back to it, neither on its sockets nor as a push.
pub const HEADER_ORIGIN_DEVICE: &str = "Calls-Origin-Device";

/// The outbox id of an event from its [`HEADER_MSG_ID`] (`evt-<id>`): increasing with commit
/// order within a call, so consumers can tell which of two events of a call is newer.
pub fn event_id(msg_id: &str) -> Option<i64> {
    msg_id.strip_prefix("evt-")?.parse().ok()
}

/// The message id calls-api publishes event `id` with (see [`event_id`]).
pub fn event_msg_id(id: i64) -> String {
    format!("evt-{id}")
}

/// Milliseconds since the Unix epoch, for [`HEADER_CREATED_AT`].
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// An event on `{p}.evt.call.<id>` or `{p}.evt.user.<key>`: `{"event": "participant_joined",
/// "data": {...}}`, where `data` is the CONTRACT section 5 payload (with `callId`, `seq`, `at`).
///
/// Generic over the data so a relay can keep it as `Box<serde_json::value::RawValue>` and emit
/// it without re-encoding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventMessage<T = Value> {
    /// The Socket.IO event name.
    pub event: String,
    /// The event payload.
    pub data: T,
}

/// A command request on `{p}.cmd.<name>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandRequest<P = Value> {
    /// The authenticated user who sent it.
    pub user_id: String,
    /// The Socket.IO socket id it came from.
    pub socket_id: String,
    /// The signaling node that holds the socket.
    pub node_id: String,
    /// The device the socket belongs to, when the app named it at connect (`auth.deviceId`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Exactly what the client sent.
    pub payload: P,
}

/// The error half of an [`Ack`]: `{"code": "CALL_NOT_FOUND", "message": "Call not found"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A stable code from CONTRACT section 1 (`VALIDATION_FAILED`, `DEPENDENCY_UNAVAILABLE`, ...).
    pub code: String,
    /// A short human sentence.
    pub message: String,
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The reply to a command and the Socket.IO ack: `{"ok": true, "data": …}` or
/// `{"ok": false, "error": {"code", "message"}}`.
///
/// A success always carries `data` on the wire (`null` when there is nothing to say), so clients
/// can read `res.data` uniformly.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack<T = Value> {
    /// Success, with the command's result.
    Ok(T),
    /// Failure.
    Err(ErrorBody),
}

/// The name calls-api's code uses for [`Ack`] on the bus.
pub type CommandReply<T = Value> = Ack<T>;

impl<T> Ack<T> {
    /// A failure.
    pub fn err(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Err(ErrorBody::new(code, message))
    }

    /// Whether this is a success.
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok(_))
    }

    /// The result as a `Result`.
    pub fn into_result(self) -> Result<T, ErrorBody> {
        match self {
            Self::Ok(data) => Ok(data),
            Self::Err(err) => Err(err),
        }
    }
}

impl<T: Serialize> Serialize for Ack<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Ack", 2)?;
        match self {
            Self::Ok(data) => {
                s.serialize_field("ok", &true)?;
                s.serialize_field("data", data)?;
            }
            Self::Err(error) => {
                s.serialize_field("ok", &false)?;
                s.serialize_field("error", error)?;
            }
        }
        s.end()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ack<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw<T> {
            ok: bool,
            data: Option<T>,
            error: Option<ErrorBody>,
        }
        let raw = Raw::<T>::deserialize(deserializer)?;
        match (raw.ok, raw.data, raw.error) {
            (true, Some(data), _) => Ok(Self::Ok(data)),
            // `{"ok": true}` and `{"ok": true, "data": null}` mean "done, nothing to report";
            // only a `T` that accepts null (Value, Option) can stand for that.
            (true, None, _) => T::deserialize(de::value::UnitDeserializer::<D::Error>::new())
                .map(Self::Ok)
                .map_err(|_| de::Error::missing_field("data")),
            (false, _, Some(error)) => Ok(Self::Err(error)),
            (false, _, None) => Err(de::Error::missing_field("error")),
        }
    }
}

/// An instruction to every signaling node, on `{p}.ctl.signaling`
/// ([`crate::Subjects::signaling_control`]), written to calls-api's outbox with the change that
/// causes it and published after the commit. A node acts on the sockets it holds and ignores
/// the rest (and any type it does not know, so new instructions can be added without a
/// lock-step upgrade).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum ControlMessage {
    /// Every socket of `user_id` stops following `call_id` (as if it had emitted `leave_call`,
    /// without changing the participant's status): the user may no longer see the call (removed
    /// from its room in `MEMBERSHIP_MODE=table`, or removed from the call by its host).
    EndSubscription {
        /// The call.
        call_id: String,
        /// The user whose sockets stop following it.
        user_id: String,
        /// The `seq` of the call event this instruction follows (the user's own
        /// `participant_left {reason: "removed"}`): a socket stops following the call only once
        /// it has been relayed that event, which reaches the node on another subscription and
        /// may come later than this instruction. `None` (a membership change, which has no
        /// event of its own): at once.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after_seq: Option<u64>,
    },
}

/// Presence, on `{p}.presence.<node_key>`. `connected`, `disconnected` and `node_down` are
/// requests that calls-api answers with `{"ok": true}` once persisted; `heartbeat` is a plain
/// publish every `PRESENCE_HEARTBEAT_SECONDS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
pub enum PresenceMessage {
    /// A socket of `user_id` connected to `node_id`.
    Connected {
        /// The signaling node.
        node_id: String,
        /// The Socket.IO socket id.
        socket_id: String,
        /// The user.
        user_id: String,
    },
    /// That socket is gone.
    Disconnected {
        /// The signaling node.
        node_id: String,
        /// The Socket.IO socket id.
        socket_id: String,
        /// The user.
        user_id: String,
    },
    /// The node shut down gracefully: all its sockets are gone.
    NodeDown {
        /// The signaling node.
        node_id: String,
    },
    /// The node is alive and holds `sockets` sockets.
    Heartbeat {
        /// The signaling node.
        node_id: String,
        /// How many sockets it holds.
        sockets: u64,
    },
}

impl PresenceMessage {
    /// The node the message is about.
    pub fn node_id(&self) -> &str {
        match self {
            Self::Connected { node_id, .. }
            | Self::Disconnected { node_id, .. }
            | Self::NodeDown { node_id }
            | Self::Heartbeat { node_id, .. } => node_id,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn acks_have_the_socket_ack_shape() {
        let ok: Ack = Ack::Ok(json!({"callId": "c"}));
        assert_eq!(
            serde_json::to_value(&ok).unwrap(),
            json!({"ok": true, "data": {"callId": "c"}})
        );
        let err: Ack = Ack::err("CALL_NOT_FOUND", "Call not found");
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({"ok": false, "error": {"code": "CALL_NOT_FOUND", "message": "Call not found"}})
        );
        let unit: Ack = Ack::Ok(Value::Null);
        assert_eq!(
            serde_json::to_value(&unit).unwrap(),
            json!({"ok": true, "data": null})
        );
    }

    #[test]
    fn acks_round_trip_and_accept_a_missing_data() {
        let back: Ack = serde_json::from_value(json!({"ok": true})).unwrap();
        assert_eq!(back, Ack::Ok(Value::Null));
        let back: Ack =
            serde_json::from_value(json!({"ok": false, "error": {"code": "X", "message": "m"}}))
                .unwrap();
        assert_eq!(back.into_result().unwrap_err().code, "X");
        assert!(serde_json::from_value::<Ack>(json!({"ok": false})).is_err());
        assert!(serde_json::from_value::<Ack<u32>>(json!({"ok": true})).is_err());
    }

    #[test]
    fn presence_messages_are_tagged_by_type_with_camel_case_fields() {
        let m = PresenceMessage::Connected {
            node_id: "n".into(),
            socket_id: "s".into(),
            user_id: "u".into(),
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type": "connected", "nodeId": "n", "socketId": "s", "userId": "u"})
        );
        let hb: PresenceMessage =
            serde_json::from_value(json!({"type": "heartbeat", "nodeId": "n", "sockets": 3}))
                .unwrap();
        assert_eq!(
            hb,
            PresenceMessage::Heartbeat {
                node_id: "n".into(),
                sockets: 3
            }
        );
        let down: PresenceMessage =
            serde_json::from_value(json!({"type": "node_down", "nodeId": "n"})).unwrap();
        assert_eq!(down.node_id(), "n");
    }

    #[test]
    fn a_reason_of_200_characters_passes_and_201_do_not_whatever_the_bytes() {
        assert!(check_reason(&"r".repeat(MAX_REASON_CHARS)).is_ok());
        assert!(check_reason(&"é".repeat(MAX_REASON_CHARS)).is_ok());
        let err = check_reason(&"r".repeat(MAX_REASON_CHARS + 1)).unwrap_err();
        assert_eq!(err, "must be at most 200 characters");
    }

    #[test]
    fn control_messages_are_tagged_by_type_with_camel_case_fields() {
        let m = ControlMessage::EndSubscription {
            call_id: "c".into(),
            user_id: "u".into(),
            after_seq: None,
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type": "end_subscription", "callId": "c", "userId": "u"})
        );
        let m = ControlMessage::EndSubscription {
            call_id: "c".into(),
            user_id: "u".into(),
            after_seq: Some(7),
        };
        assert_eq!(
            serde_json::to_value(&m).unwrap(),
            json!({"type": "end_subscription", "callId": "c", "userId": "u", "afterSeq": 7})
        );
        assert!(serde_json::from_value::<ControlMessage>(json!({"type": "reboot"})).is_err());
    }

    #[test]
    fn command_requests_use_camel_case() {
        let r = CommandRequest {
            user_id: "u".into(),
            socket_id: "s".into(),
            node_id: "n".into(),
            device_id: None,
            payload: json!({"callId": "c"}),
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"userId": "u", "socketId": "s", "nodeId": "n", "payload": {"callId": "c"}})
        );
        let with_device = CommandRequest {
            device_id: Some("pixel-1".into()),
            ..r
        };
        assert_eq!(
            serde_json::to_value(&with_device).unwrap()["deviceId"],
            "pixel-1"
        );
    }
}
