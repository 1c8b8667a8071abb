//! The call events webhooks are built from, decoded from the bus (pure code).
//!
//! Two kinds of message matter:
//! - `incoming_call` on a user's subject carries the whole call as it was created (its `seq`
//!   is 0): the starting point of what notifier knows of the call. A call with several
//!   invitees publishes one per invitee; the first one consumed is used.
//! - every event on the call's subject (`participant_joined`, `participant_left`,
//!   `participant_status_changed`, `call_ended`, …) carries the call's `seq`, gap-free, and is
//!   applied in that order.
//!
//! The other user-addressed events (`incoming_call_cancelled`, the invitees' copies of
//! `call_ended`) say nothing the call's own stream does not, and are skipped.

use std::collections::BTreeMap;

use calls_bus::subjects::EventTarget;
use calls_bus::{Message, Subjects};
use serde::Deserialize;

use super::projection::{CallView, ParticipantView};
use crate::events::Caller;

/// A call event, as applied to the projection.
#[derive(Debug, Clone, PartialEq)]
pub enum CallEvent {
    /// `participant_joined`.
    Joined {
        /// The participant after joining (boxed like `Invited`'s: the largest variant sets
        /// every event's size).
        participant: Box<ParticipantView>,
    },
    /// `participant_left`.
    Left {
        /// Who.
        user_id: String,
        /// `left`, `connection_lost`, `removed`.
        reason: String,
    },
    /// `participant_status_changed` (`ringing`, `declined`, `missed`).
    StatusChanged {
        /// Who.
        user_id: String,
        /// The new status.
        status: String,
        /// The decline reason, or `ring_timeout`.
        reason: Option<String>,
    },
    /// `participant_media_changed`.
    Media {
        /// Who.
        user_id: String,
        /// Microphone muted.
        is_mic_muted: bool,
        /// Camera off.
        is_camera_off: bool,
        /// Sharing the screen.
        is_sharing_screen: bool,
    },
    /// `participant_disconnected` / `participant_reconnected`.
    Connection {
        /// Who.
        user_id: String,
        /// Whether they have a socket again.
        connected: bool,
    },
    /// `participant_invited`: someone rung into the live call (CONTRACT section 10).
    Invited {
        /// The participant after the invitation (boxed: a second unboxed participant would
        /// cost every event of the stream a tag word).
        participant: Box<ParticipantView>,
    },
    /// `call_updated`: the call itself changed (a 1:1 became a group call).
    Updated {
        /// Group or 1:1, after the change.
        is_group_call: bool,
        /// The capacity after the change.
        max_participants: u32,
    },
    /// `host_changed`: the host left a live group call.
    HostChanged {
        /// The new host.
        user_id: String,
    },
    /// `call_ended`.
    Ended {
        /// The end reason.
        reason: String,
        /// Whose action ended it.
        ended_by: Option<String>,
        /// The media time it reports (boxed: every event of the stream would otherwise pay
        /// for it).
        media: Box<MediaSeconds>,
    },
    /// An event of a kind this version does not know: it only moves the call's `seq` on.
    Other,
}

/// One event of a call's stream.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqEvent {
    /// The call's counter.
    pub seq: u64,
    /// When it happened (RFC 3339, as published).
    pub at: String,
    /// The same, unix milliseconds.
    pub at_ms: i64,
    /// What happened.
    pub event: CallEvent,
}

/// What a message of the stream is to webhooks.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// `incoming_call`: the call as created.
    Snapshot {
        /// The call.
        call: Box<CallView>,
        /// Who is calling, with the display name of their token.
        from: Caller,
        /// When it was published, unix milliseconds.
        at_ms: i64,
    },
    /// An event of the call's own stream; `raw` is the message payload, kept when the event
    /// has to wait for an earlier one.
    Event {
        /// The call.
        call_id: String,
        /// The decoded event.
        event: SeqEvent,
        /// The payload as published.
        raw: String,
    },
    /// Not for webhooks.
    Skip,
    /// Undecodable (a bug or a newer publisher): acknowledged and counted.
    Invalid(String),
}

#[derive(Deserialize)]
struct Envelope {
    event: String,
    data: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Incoming {
    at: String,
    call: CallView,
    from: Caller,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Common {
    seq: u64,
    at: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JoinedData {
    participant: ParticipantView,
}

#[derive(Deserialize)]
struct UpdatedData {
    call: UpdatedCall,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdatedCall {
    is_group_call: bool,
    max_participants: u32,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeftData {
    user_id: String,
    reason: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct StatusData {
    user_id: String,
    status: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaData {
    user_id: String,
    is_mic_muted: bool,
    is_camera_off: bool,
    is_sharing_screen: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserData {
    user_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EndedData {
    reason: String,
    #[serde(default)]
    ended_by: Option<String>,
    #[serde(default)]
    media_seconds: u64,
    #[serde(default)]
    participant_media_seconds: Vec<MediaTimeData>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MediaTimeData {
    user_id: String,
    media_seconds: u64,
}

/// Unix milliseconds of an RFC 3339 time.
pub fn millis(rfc3339: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    Some(calls_db::to_millis(t))
}

/// The media time `call_ended` reports (CONTRACT section 11).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MediaSeconds {
    /// The call's `mediaSeconds` (0 from a calls-api that did not report it).
    pub call: u64,
    /// Each participant's `mediaSeconds`, by user, for those with any.
    pub by_user: BTreeMap<String, u64>,
}

/// Decodes a message of the event stream.
pub fn decode(subjects: &Subjects, message: &Message) -> Decoded {
    match subjects.event_target(&message.subject) {
        Some(EventTarget::Call(call_id)) => {
            let Ok(raw) = std::str::from_utf8(&message.payload) else {
                return Decoded::Invalid("payload is not UTF-8".into());
            };
            match decode_call_event(raw) {
                Ok(event) => Decoded::Event {
                    call_id,
                    event,
                    raw: raw.to_owned(),
                },
                Err(why) => Decoded::Invalid(why),
            }
        }
        Some(EventTarget::User(_)) => {
            let Ok(envelope) = serde_json::from_slice::<Envelope>(&message.payload) else {
                return Decoded::Invalid("payload is not an event envelope".into());
            };
            if envelope.event != "incoming_call" {
                return Decoded::Skip;
            }
            let Ok(d) = serde_json::from_value::<Incoming>(envelope.data) else {
                return Decoded::Invalid("incoming_call without the documented fields".into());
            };
            let Some(at_ms) = millis(&d.at) else {
                return Decoded::Invalid("incoming_call with a bad time".into());
            };
            Decoded::Snapshot {
                call: Box::new(d.call),
                from: d.from,
                at_ms,
            }
        }
        None => Decoded::Skip,
    }
}

/// Decodes the payload of an event on a call's subject (also what the wait table holds).
pub fn decode_call_event(raw: &str) -> Result<SeqEvent, String> {
    let envelope: Envelope =
        serde_json::from_str(raw).map_err(|_| "payload is not an event envelope".to_owned())?;
    let common: Common = serde_json::from_value(envelope.data.clone())
        .map_err(|_| format!("{} without seq and at", envelope.event))?;
    let at_ms = millis(&common.at).ok_or_else(|| format!("{} with a bad time", envelope.event))?;
    let bad = |_| format!("{} without the documented fields", envelope.event);
    let data = envelope.data;
    let event = match envelope.event.as_str() {
        "participant_joined" => CallEvent::Joined {
            participant: Box::new(
                serde_json::from_value::<JoinedData>(data)
                    .map_err(bad)?
                    .participant,
            ),
        },
        "participant_invited" => CallEvent::Invited {
            participant: Box::new(
                serde_json::from_value::<JoinedData>(data)
                    .map_err(bad)?
                    .participant,
            ),
        },
        "call_updated" => {
            let d: UpdatedData = serde_json::from_value(data).map_err(bad)?;
            CallEvent::Updated {
                is_group_call: d.call.is_group_call,
                max_participants: d.call.max_participants,
            }
        }
        "host_changed" => {
            let d: UserData = serde_json::from_value(data).map_err(bad)?;
            CallEvent::HostChanged { user_id: d.user_id }
        }
        "participant_left" => {
            let d: LeftData = serde_json::from_value(data).map_err(bad)?;
            CallEvent::Left {
                user_id: d.user_id,
                reason: d.reason,
            }
        }
        "participant_status_changed" => {
            let d: StatusData = serde_json::from_value(data).map_err(bad)?;
            CallEvent::StatusChanged {
                user_id: d.user_id,
                status: d.status,
                reason: d.reason,
            }
        }
        "participant_media_changed" => {
            let d: MediaData = serde_json::from_value(data).map_err(bad)?;
            CallEvent::Media {
                user_id: d.user_id,
                is_mic_muted: d.is_mic_muted,
                is_camera_off: d.is_camera_off,
                is_sharing_screen: d.is_sharing_screen,
            }
        }
        "participant_disconnected" | "participant_reconnected" => {
            let d: UserData = serde_json::from_value(data).map_err(bad)?;
            CallEvent::Connection {
                user_id: d.user_id,
                connected: envelope.event == "participant_reconnected",
            }
        }
        "call_ended" => {
            let d: EndedData = serde_json::from_value(data).map_err(bad)?;
            CallEvent::Ended {
                reason: d.reason,
                ended_by: d.ended_by,
                media: Box::new(MediaSeconds {
                    call: d.media_seconds,
                    by_user: d
                        .participant_media_seconds
                        .into_iter()
                        .map(|m| (m.user_id, m.media_seconds))
                        .collect(),
                }),
            }
        }
        _ => CallEvent::Other,
    };
    Ok(SeqEvent {
        seq: common.seq,
        at: common.at,
        at_ms,
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

    fn message(subject: String, body: serde_json::Value) -> Message {
        Message {
            subject,
            reply: None,
            headers: Headers::new(),
            payload: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn an_incoming_call_is_the_calls_snapshot() {
        let s = Subjects::new("t");
        let m = message(
            s.user_events("bob"),
            json!({"event": "incoming_call", "data": {"callId": "c1", "at": "2026-01-01T00:00:00.000Z",
                "call": {"id": "c1", "chatRoomId": "room", "type": "audio", "isGroupCall": false,
                    "status": "ringing", "initiatorId": "alice", "maxParticipants": 2,
                    "createdAt": "2026-01-01T00:00:00.000Z", "startedAt": null, "endedAt": null,
                    "endReason": null, "endedBy": null, "seq": 0, "participants": []},
                "from": {"userId": "alice"}, "ringDeadline": "2026-01-01T00:00:45.000Z"}}),
        );
        let Decoded::Snapshot { call, from, at_ms } = decode(&s, &m) else {
            panic!("not a snapshot")
        };
        assert_eq!((call.id.as_str(), call.seq), ("c1", 0));
        assert_eq!(from.user_id, "alice");
        assert_eq!(at_ms, 1_767_225_600_000);
    }

    #[test]
    fn call_events_decode_with_their_seq_and_unknown_ones_only_move_it() {
        let s = Subjects::new("t");
        let m = message(
            s.call_events("c1"),
            json!({"event": "participant_left", "data": {"callId": "c1", "seq": 3,
                "at": "2026-01-01T00:01:00.000Z", "userId": "bob", "reason": "left"}}),
        );
        let Decoded::Event { call_id, event, .. } = decode(&s, &m) else {
            panic!()
        };
        assert_eq!(call_id, "c1");
        assert_eq!(event.seq, 3);
        assert_eq!(
            event.event,
            CallEvent::Left {
                user_id: "bob".into(),
                reason: "left".into()
            }
        );
        let future = decode_call_event(
            &json!({"event": "participant_raised_hand", "data": {"callId": "c1", "seq": 4, "at": "2026-01-01T00:01:00Z"}})
                .to_string(),
        )
        .unwrap();
        assert_eq!((future.seq, future.event), (4, CallEvent::Other));
    }

    #[test]
    fn other_user_events_are_skipped_and_garbage_is_invalid() {
        let s = Subjects::new("t");
        let cancel = message(
            s.user_events("bob"),
            json!({"event": "incoming_call_cancelled", "data": {}}),
        );
        assert_eq!(decode(&s, &cancel), Decoded::Skip);
        let ended = message(
            s.user_events("bob"),
            json!({"event": "call_ended", "data": {}}),
        );
        assert_eq!(decode(&s, &ended), Decoded::Skip);
        let no_seq = message(
            s.call_events("c1"),
            json!({"event": "call_ended", "data": {"callId": "c1", "at": "2026-01-01T00:00:00Z"}}),
        );
        assert!(matches!(decode(&s, &no_seq), Decoded::Invalid(_)));
        let garbage = message(s.call_events("c1"), json!([1, 2]));
        assert!(matches!(decode(&s, &garbage), Decoded::Invalid(_)));
    }
}
