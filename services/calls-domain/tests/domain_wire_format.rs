//! The JSON the mobile apps see: `Call`, `Participant` (CONTRACT section 3) and every event
//! payload (section 5), compared field by field with the contract.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use calls_domain::{
    Actor, Audience, Call, CallStatus, CallType, Caller, CancelReason, DomainError, DomainEvent,
    EndReason, EventKind, LeftReason, MAX_DISPLAY_NAME_CHARS, MediaPatch, MediaTime, NewCall,
    ParticipantStatus, Profile, Role, TimerKind, Timing,
};
use serde_json::{Value, json};
use time::macros::datetime;
use time::{OffsetDateTime, UtcOffset};
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);
const ID: &str = "01950000-0000-7000-8000-000000000001";

fn call() -> Call {
    let new = NewCall {
        chat_room_id: "room-42".into(),
        call_type: CallType::Video,
        is_group_call: true,
        initiator_id: "u1".into(),
        invitee_ids: vec!["u2".into()],
        max_participants: 16,
        ring_timeout: None,
        initiator_profile: Default::default(),
    };
    let id = Uuid::parse_str(ID).unwrap();
    Call::initiate(new, &BTreeSet::new(), id, T0, &Timing::default())
        .unwrap()
        .0
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_call_serializes_to_exactly_the_contract_shape() {
    let v = serde_json::to_value(call()).unwrap();
    assert_eq!(
        v,
        json!({
            "id": ID,
            "chatRoomId": "room-42",
            "type": "video",
            "isGroupCall": true,
            "status": "ringing",
            "initiatorId": "u1",
            "maxParticipants": 16,
            "createdAt": "2026-03-01T12:00:00.000Z",
            "startedAt": null,
            "endedAt": null,
            "endReason": null,
            "endedBy": null,
            "seq": 0,
            "ringTimeoutSeconds": 45,
            "mediaSeconds": 0,
            "participants": [
                {
                    "userId": "u1", "role": "host", "status": "joined",
                    "isMicMuted": false, "isCameraOff": false, "isSharingScreen": false,
                    "invitedAt": "2026-03-01T12:00:00.000Z",
                    "joinedAt": "2026-03-01T12:00:00.000Z",
                    "leftAt": null, "declineReason": null, "isConnected": true,
                    "inMedia": false, "mediaSeconds": 0
                },
                {
                    "userId": "u2", "role": "participant", "status": "invited",
                    "isMicMuted": false, "isCameraOff": false, "isSharingScreen": false,
                    "invitedAt": "2026-03-01T12:00:00.000Z",
                    "joinedAt": null, "leftAt": null, "declineReason": null,
                    "isConnected": true, "inMedia": false, "mediaSeconds": 0
                }
            ]
        })
    );
}

#[test]
fn an_ended_call_shows_its_end_fields() {
    let mut c = call();
    c.end(
        &Actor::new("u1", true),
        T0 + time::Duration::milliseconds(1500),
    )
    .unwrap();
    let v = serde_json::to_value(&c).unwrap();
    assert_eq!(v["status"], "ended");
    assert_eq!(v["endReason"], "cancelled");
    assert_eq!(v["endedBy"], "u1");
    assert_eq!(v["endedAt"], "2026-03-01T12:00:01.500Z");
    assert_eq!(v["seq"], 1);
}

#[test]
fn timestamps_are_written_in_utc_with_milliseconds_whatever_the_offset() {
    let t = datetime!(2026-03-01 14:00:00.25 +02:00);
    assert_eq!(calls_domain::timefmt::format(t), "2026-03-01T12:00:00.250Z");
    assert_eq!(
        t.to_offset(UtcOffset::UTC),
        datetime!(2026-03-01 12:00:00.25 UTC)
    );
}

#[test]
fn a_call_reads_back_from_its_json() {
    let c = call();
    let back: Call = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
    // The internal bookkeeping is not part of the wire format.
    let mut expected = c.clone();
    expected.alone_timeout_seconds = 0;
    for p in &mut expected.participants {
        p.is_invitee = false;
        p.has_joined = false;
    }
    assert_eq!(back, expected);
}

#[test]
fn every_enum_uses_the_contract_spelling() {
    let spell = |v: Value| v.as_str().unwrap().to_owned();
    let cases: Vec<(Value, &str)> = vec![
        (json!(CallType::Audio), "audio"),
        (json!(CallStatus::Active), "active"),
        (json!(ParticipantStatus::Declined), "declined"),
        (json!(Role::Host), "host"),
        (json!(EndReason::Timeout), "timeout"),
        (json!(LeftReason::ConnectionLost), "connection_lost"),
        (json!(CancelReason::AnsweredElsewhere), "answered_elsewhere"),
        (json!(CancelReason::DeclinedElsewhere), "declined_elsewhere"),
    ];
    for (v, s) in cases {
        assert_eq!(spell(v), s);
    }
    let all_end: Vec<&str> = EndReason::ALL.iter().map(|r| r.as_str()).collect();
    assert_eq!(
        all_end,
        [
            "completed",
            "cancelled",
            "declined",
            "missed",
            "busy",
            "timeout",
            "failed"
        ]
    );
    let all_status: Vec<&str> = ParticipantStatus::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        all_status,
        ["invited", "ringing", "joined", "left", "declined", "missed"]
    );
    for s in ParticipantStatus::ALL {
        assert_eq!(ParticipantStatus::parse(s.as_str()), Some(*s));
        assert_eq!(json!(s), json!(s.as_str()));
    }
    for k in TimerKind::ALL {
        assert_eq!(TimerKind::parse(k.as_str()), Some(*k));
    }
    assert_eq!(ParticipantStatus::parse("JOINED"), None);
    assert!(serde_json::from_value::<ParticipantStatus>(json!("nope")).is_err());
}

#[test]
fn domain_errors_map_to_the_contract_codes() {
    let cases = [
        (DomainError::Forbidden, "FORBIDDEN", 403),
        (DomainError::NotFound, "CALL_NOT_FOUND", 404),
        (DomainError::CallFull, "CALL_FULL", 409),
        (DomainError::CallEnded, "CALL_ENDED", 409),
        (DomainError::InvalidTransition, "INVALID_TRANSITION", 409),
        (DomainError::NotJoined, "NOT_JOINED", 409),
    ];
    for (e, code, http) in cases {
        assert_eq!((e.code(), e.http_status()), (code, http));
    }
}

fn event(seq: Option<u64>, kind: EventKind) -> DomainEvent {
    let id = Uuid::parse_str(ID).unwrap();
    DomainEvent {
        call_id: id,
        seq,
        at: T0,
        audiences: vec![Audience::Call(id)],
        kind,
    }
}

#[test]
fn every_call_event_carries_call_id_seq_and_at_then_its_own_fields() {
    let c = call();
    let p = c.participants[1].clone();
    let cases: Vec<(EventKind, &str, Value)> = vec![
        (
            EventKind::ParticipantJoined {
                participant: p.clone(),
            },
            "participant_joined",
            json!({ "participant": serde_json::to_value(&p).unwrap() }),
        ),
        (
            EventKind::ParticipantLeft {
                user_id: "u2".into(),
                reason: LeftReason::ConnectionLost,
            },
            "participant_left",
            json!({ "userId": "u2", "reason": "connection_lost" }),
        ),
        (
            EventKind::ParticipantDisconnected {
                user_id: "u2".into(),
                grace_seconds: 30,
            },
            "participant_disconnected",
            json!({ "userId": "u2", "graceSeconds": 30 }),
        ),
        (
            EventKind::ParticipantReconnected {
                user_id: "u2".into(),
            },
            "participant_reconnected",
            json!({ "userId": "u2" }),
        ),
        (
            EventKind::ParticipantMediaChanged {
                user_id: "u2".into(),
                is_mic_muted: true,
                is_camera_off: false,
                is_sharing_screen: true,
            },
            "participant_media_changed",
            json!({ "userId": "u2", "isMicMuted": true, "isCameraOff": false, "isSharingScreen": true }),
        ),
        (
            EventKind::ParticipantMediaPresence {
                user_id: "u2".into(),
                in_media: false,
                reason: Some(2),
            },
            "participant_media_presence",
            json!({ "userId": "u2", "inMedia": false, "reason": 2 }),
        ),
        (
            EventKind::ParticipantStatusChanged {
                user_id: "u2".into(),
                status: ParticipantStatus::Declined,
                reason: None,
            },
            "participant_status_changed",
            json!({ "userId": "u2", "status": "declined", "reason": null }),
        ),
        (
            EventKind::CallEnded {
                reason: EndReason::Completed,
                ended_by: Some("u1".into()),
                media_seconds: 95,
                participant_media_seconds: vec![
                    MediaTime {
                        user_id: "u1".into(),
                        media_seconds: 60,
                    },
                    MediaTime {
                        user_id: "u2".into(),
                        media_seconds: 35,
                    },
                ],
            },
            "call_ended",
            json!({ "reason": "completed", "endedBy": "u1", "mediaSeconds": 95,
                    "participantMediaSeconds": [{"userId": "u1", "mediaSeconds": 60},
                                                {"userId": "u2", "mediaSeconds": 35}] }),
        ),
    ];
    for (kind, name, fields) in cases {
        let e = event(Some(7), kind);
        assert_eq!(e.name(), name);
        let mut expected = json!({ "callId": ID, "seq": 7, "at": "2026-03-01T12:00:00.000Z" });
        for (k, v) in fields.as_object().unwrap() {
            expected[k] = v.clone();
        }
        assert_eq!(e.payload(), expected, "{name}");
        assert_eq!(
            serde_json::from_str::<Value>(&e.payload_json()).unwrap(),
            expected
        );
    }
}

#[test]
fn the_caller_s_name_and_picture_claims_introduce_them_and_junk_is_dropped() {
    let p = Profile::from_claims(Some("  Alice Liddell "), Some("https://img.example/a.png"));
    let from = serde_json::to_value(Caller::new("u1".into(), &p)).unwrap();
    assert_eq!(
        from,
        serde_json::json!({"userId": "u1", "displayName": "Alice Liddell", "avatarUrl": "https://img.example/a.png"})
    );
    let long = "x".repeat(500);
    let p = Profile::from_claims(Some(&long), Some("javascript:alert(1)"));
    assert_eq!(
        p.display_name.map(|n| n.chars().count()),
        Some(MAX_DISPLAY_NAME_CHARS)
    );
    assert_eq!(p.avatar_url, None);
    let p = Profile::from_claims(
        Some("   "),
        Some(&format!("https://x/{}", "a".repeat(2000))),
    );
    assert_eq!(p, Profile::default());
}

#[test]
fn user_events_have_no_seq() {
    let c = call();
    let e = event(
        None,
        EventKind::IncomingCall {
            call: Box::new(c.clone()),
            from: Caller::new("u1".into(), &Profile::default()),
            ring_deadline: T0 + std::time::Duration::from_secs(45),
        },
    );
    assert_eq!(e.name(), "incoming_call");
    let v = e.payload();
    assert_eq!(
        keys(&v),
        set(&["callId", "at", "call", "from", "ringDeadline"])
    );
    assert_eq!(v["call"], serde_json::to_value(&c).unwrap());
    // Without `name` / `picture` claims the caller is just their id.
    assert_eq!(v["from"], serde_json::json!({"userId": "u1"}));
    assert_eq!(v["ringDeadline"], "2026-03-01T12:00:45.000Z");

    let e = event(
        None,
        EventKind::IncomingCallCancelled {
            reason: CancelReason::Missed,
        },
    );
    assert_eq!(e.name(), "incoming_call_cancelled");
    assert_eq!(
        e.payload(),
        json!({ "callId": ID, "at": "2026-03-01T12:00:00.000Z", "reason": "missed" })
    );
}

#[test]
fn the_events_of_a_real_answer_serialize_as_the_contract_says() {
    let mut c = call();
    let out = c
        .join(
            &Actor::new("u2", false),
            &MediaPatch {
                is_mic_muted: Some(true),
                ..MediaPatch::default()
            },
            T0 + time::Duration::seconds(2),
        )
        .unwrap();
    let joined = out.events[0].payload();
    assert_eq!(keys(&joined), set(&["callId", "seq", "at", "participant"]));
    assert_eq!(joined["seq"], 1);
    assert_eq!(joined["participant"]["status"], "joined");
    assert_eq!(joined["participant"]["isMicMuted"], true);
    assert_eq!(
        joined["participant"]["joinedAt"],
        "2026-03-01T12:00:02.000Z"
    );
    let cancelled = out.events[1].payload();
    assert_eq!(cancelled["reason"], "answered_elsewhere");
    assert!(cancelled.get("seq").is_none());
}
