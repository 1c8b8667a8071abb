//! The call events notifier acts on, decoded from the bus (pure code).
//!
//! calls-api publishes every event once per audience (CONTRACT section 5, DESIGN "NATS
//! subjects"). For pushes only the user-addressed ring events matter:
//! `incoming_call` (ring this user's devices) and `incoming_call_cancelled` (stop ringing them;
//! for `missed` / `cancelled`, tell them about the missed call). Everything else is
//! acknowledged and skipped.

use calls_bus::subjects::EventTarget;
use calls_bus::wire::{HEADER_CREATED_AT, HEADER_MSG_ID, HEADER_ORIGIN_DEVICE, event_id};
use calls_bus::{Message, Subjects};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Who is calling (`incoming_call.from`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Caller {
    /// The caller's user id.
    pub user_id: String,
    /// Their display name, when their token had a `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Their avatar, when their token had a `picture`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

impl Caller {
    /// How a notification names the caller: the display name, else the user id.
    pub fn shown_as(&self) -> &str {
        self.display_name.as_deref().unwrap_or(&self.user_id)
    }
}

/// The call, as much of it as a push needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingInfo {
    /// The chat room.
    pub chat_room_id: String,
    /// `audio` or `video`.
    pub call_type: String,
    /// Group or 1:1.
    pub is_group_call: bool,
    /// Who is calling.
    pub caller: Caller,
    /// When the ring times out, unix milliseconds.
    pub ring_deadline_ms: i64,
}

/// A ring event for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingEvent {
    /// `incoming_call`: ring the user's devices until the deadline.
    Incoming(RingInfo),
    /// `incoming_call_cancelled`: stop ringing.
    Stopped {
        /// `answered_elsewhere`, `declined_elsewhere`, `cancelled` or `missed`.
        reason: String,
        /// The device that answered or declined, when the app said which.
        origin_device: Option<String>,
    },
}

impl RingEvent {
    /// Whether the user should hear about a missed call: the ring timed out, or the caller
    /// gave up (or the call ended) while it was ringing.
    pub fn is_missed(&self) -> bool {
        matches!(self, RingEvent::Stopped { reason, .. } if reason == "missed" || reason == "cancelled")
    }
}

/// A decoded event: whose ring, which event, when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRingEvent {
    /// The outbox id (from `Nats-Msg-Id`): newer events of a call have larger ids.
    pub event_id: i64,
    /// When calls-api created it, unix milliseconds.
    pub created_at_ms: i64,
    /// The call.
    pub call_id: String,
    /// The user rung.
    pub user_id: String,
    /// What happened.
    pub event: RingEvent,
}

/// What to do with a bus message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A ring event to act on.
    Ring(UserRingEvent),
    /// Not ours (call events, `call_ended` to invitees, other events): acknowledge.
    Skip,
    /// Not decodable: a bug or a newer publisher. Acknowledged (retrying cannot help) and
    /// counted.
    Invalid(String),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    data: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct IncomingData {
    call_id: String,
    at: String,
    call: CallData,
    from: Caller,
    ring_deadline: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CallData {
    chat_room_id: String,
    #[serde(rename = "type")]
    call_type: String,
    is_group_call: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CancelledData {
    call_id: String,
    at: String,
    reason: String,
}

fn millis(rfc3339: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(rfc3339, &Rfc3339).ok()?;
    Some(calls_db::to_millis(t))
}

/// Decodes a message of the event stream.
pub fn decode(subjects: &Subjects, message: &Message) -> Decoded {
    let Some(EventTarget::User(user_id)) = subjects.event_target(&message.subject) else {
        return Decoded::Skip;
    };
    let Ok(envelope) = serde_json::from_slice::<Envelope<'_>>(&message.payload) else {
        return Decoded::Invalid("payload is not an event envelope".into());
    };
    let event_id = match message.headers.get(HEADER_MSG_ID).and_then(event_id) {
        Some(id) => id,
        None => return Decoded::Invalid("no event id in Nats-Msg-Id".into()),
    };
    let header_created = message
        .headers
        .get(HEADER_CREATED_AT)
        .and_then(|v| v.parse::<i64>().ok());
    let (call_id, at, event) = match envelope.event.as_ref() {
        "incoming_call" => {
            let Ok(d) = serde_json::from_value::<IncomingData>(envelope.data) else {
                return Decoded::Invalid("incoming_call without the documented fields".into());
            };
            let Some(ring_deadline_ms) = millis(&d.ring_deadline) else {
                return Decoded::Invalid("incoming_call with a bad ringDeadline".into());
            };
            (
                d.call_id,
                d.at,
                RingEvent::Incoming(RingInfo {
                    chat_room_id: d.call.chat_room_id,
                    call_type: d.call.call_type,
                    is_group_call: d.call.is_group_call,
                    caller: d.from,
                    ring_deadline_ms,
                }),
            )
        }
        "incoming_call_cancelled" => {
            let Ok(d) = serde_json::from_value::<CancelledData>(envelope.data) else {
                return Decoded::Invalid(
                    "incoming_call_cancelled without the documented fields".into(),
                );
            };
            (
                d.call_id,
                d.at,
                RingEvent::Stopped {
                    reason: d.reason,
                    origin_device: message.headers.get(HEADER_ORIGIN_DEVICE).map(str::to_owned),
                },
            )
        }
        _ => return Decoded::Skip,
    };
    let Some(created_at_ms) = header_created.or_else(|| millis(&at)) else {
        return Decoded::Invalid("event without a valid time".into());
    };
    Decoded::Ring(UserRingEvent {
        event_id,
        created_at_ms,
        call_id,
        user_id,
        event,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use bytes::Bytes;
    use calls_bus::Headers;
    use serde_json::json;

    use super::*;

    fn message(s: &Subjects, user: &str, id: i64, body: serde_json::Value) -> Message {
        Message {
            subject: s.user_events(user),
            reply: None,
            headers: Headers::new()
                .with(HEADER_MSG_ID, format!("evt-{id}"))
                .with(HEADER_CREATED_AT, "1767225600000"),
            payload: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn an_incoming_call_decodes_with_its_caller_and_deadline() {
        let s = Subjects::new("t");
        let m = message(
            &s,
            "bob",
            7,
            json!({"event": "incoming_call", "data": {
                "callId": "c1", "at": "2026-01-01T00:00:00.000Z",
                "call": {"id": "c1", "chatRoomId": "room", "type": "video", "isGroupCall": false},
                "from": {"userId": "alice", "displayName": "Alice"},
                "ringDeadline": "2026-01-01T00:00:45.000Z"}}),
        );
        let Decoded::Ring(e) = decode(&s, &m) else {
            panic!("not a ring")
        };
        assert_eq!(e.event_id, 7);
        assert_eq!(e.user_id, "bob");
        assert_eq!(e.created_at_ms, 1_767_225_600_000);
        let RingEvent::Incoming(info) = e.event else {
            panic!()
        };
        assert_eq!(info.caller.shown_as(), "Alice");
        assert_eq!(info.ring_deadline_ms, 1_767_225_645_000);
    }

    #[test]
    fn a_cancel_carries_the_device_that_answered() {
        let s = Subjects::new("t");
        let mut m = message(
            &s,
            "bob",
            9,
            json!({"event": "incoming_call_cancelled", "data": {
                "callId": "c1", "at": "2026-01-01T00:00:03.000Z", "reason": "answered_elsewhere"}}),
        );
        m.headers.insert(HEADER_ORIGIN_DEVICE, "pixel-1");
        let Decoded::Ring(e) = decode(&s, &m) else {
            panic!()
        };
        assert_eq!(
            e.event,
            RingEvent::Stopped {
                reason: "answered_elsewhere".into(),
                origin_device: Some("pixel-1".into())
            }
        );
        assert!(!e.event.is_missed());
    }

    #[test]
    fn call_events_and_other_user_events_are_skipped_and_garbage_is_invalid() {
        let s = Subjects::new("t");
        let mut m = message(&s, "bob", 1, json!({"event": "call_ended", "data": {}}));
        assert_eq!(decode(&s, &m), Decoded::Skip);
        m.subject = s.call_events("c1");
        assert_eq!(decode(&s, &m), Decoded::Skip);
        let m = message(&s, "bob", 1, json!({"event": "incoming_call", "data": {}}));
        assert!(matches!(decode(&s, &m), Decoded::Invalid(_)));
        let mut m = message(
            &s,
            "bob",
            1,
            json!({"event": "incoming_call_cancelled", "data": {"callId": "c", "at": "2026-01-01T00:00:00Z", "reason": "missed"}}),
        );
        m.headers = Headers::new();
        assert!(matches!(decode(&s, &m), Decoded::Invalid(_)));
    }
}
