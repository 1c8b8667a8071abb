//! Agora's view of the media (CONTRACT section 11): channel join/leave notices set a
//! participant's `inMedia` and emit `participant_media_presence`, in `clientSeq` order.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use calls_domain::{
    Actor, Audience, Call, CallType, ChannelNotice, EventKind, MediaPatch, NewCall, Timing,
};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);

fn at(secs: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(secs)
}

fn timing() -> Timing {
    Timing {
        ring_timeout: Duration::from_secs(45),
        disconnect_grace: Duration::from_secs(30),
        max_duration: None,
        alone_timeout: None,
    }
}

/// A 1:1 from alice to bob, answered by bob.
fn answered_call() -> Call {
    let new = NewCall {
        chat_room_id: "room-1".into(),
        call_type: CallType::Video,
        is_group_call: false,
        initiator_id: "alice".into(),
        invitee_ids: vec!["bob".into()],
        max_participants: 2,
        ring_timeout: None,
        initiator_profile: Default::default(),
    };
    let (mut call, _) =
        Call::initiate(new, &BTreeSet::new(), Uuid::from_u128(7), T0, &timing()).unwrap();
    call.join(&Actor::new("bob", false), &MediaPatch::default(), at(1))
        .unwrap();
    call
}

fn notice(user: &str, in_media: bool, client_seq: i64) -> ChannelNotice {
    ChannelNotice {
        user_id: user.into(),
        in_media,
        client_seq,
        uid: Some(4242),
        reason: (!in_media).then_some(1),
    }
}

#[test]
fn a_join_notice_puts_the_participant_in_the_media_and_tells_the_call() {
    let mut call = answered_call();
    let seq = call.seq;
    let out = call.channel_notice(&notice("bob", true, 10), at(2));
    let bob = call.participant("bob").unwrap();
    assert!(bob.in_media);
    assert_eq!(bob.media_uid, Some(4242));
    assert_eq!(bob.media_client_seq, Some(10));
    assert_eq!(out.events.len(), 1);
    let e = &out.events[0];
    assert_eq!(e.name(), "participant_media_presence");
    assert_eq!(e.seq, Some(seq + 1));
    assert_eq!(e.audiences, vec![Audience::Call(call.id)]);
    assert_eq!(
        e.payload(),
        serde_json::json!({
            "callId": call.id, "seq": seq + 1, "at": "2026-03-01T12:00:02.000Z",
            "userId": "bob", "inMedia": true,
        })
    );
    assert!(out.timers.is_empty());
}

#[test]
fn a_leave_notice_takes_the_participant_out_with_agoras_reason() {
    let mut call = answered_call();
    call.channel_notice(&notice("bob", true, 10), at(2));
    let out = call.channel_notice(&notice("bob", false, 11), at(3));
    assert!(!call.participant("bob").unwrap().in_media);
    assert_eq!(
        out.events[0].kind,
        EventKind::ParticipantMediaPresence {
            user_id: "bob".into(),
            in_media: false,
            reason: Some(1),
        }
    );
}

#[test]
fn a_notice_older_than_the_last_applied_changes_nothing() {
    let mut call = answered_call();
    call.channel_notice(&notice("bob", false, 20), at(2));
    call.channel_notice(&notice("bob", true, 21), at(3));
    let before = call.clone();
    let out = call.channel_notice(&notice("bob", false, 20), at(4));
    assert!(out.events.is_empty());
    assert_eq!(call, before);
    let out = call.channel_notice(&notice("bob", false, 19), at(4));
    assert!(out.events.is_empty());
    assert_eq!(call, before);
}

#[test]
fn a_repeated_state_only_advances_the_order_and_emits_nothing() {
    let mut call = answered_call();
    call.channel_notice(&notice("bob", true, 10), at(2));
    let seq = call.seq;
    let out = call.channel_notice(&notice("bob", true, 12), at(3));
    assert!(out.events.is_empty());
    assert_eq!(call.seq, seq);
    assert_eq!(call.participant("bob").unwrap().media_client_seq, Some(12));
}

#[test]
fn someone_who_is_not_a_participant_changes_nothing() {
    let mut call = answered_call();
    let before = call.clone();
    let out = call.channel_notice(&notice("mallory", true, 1), at(2));
    assert!(out.events.is_empty());
    assert_eq!(call, before);
}

#[test]
fn an_ended_call_has_nobody_in_the_media_and_ignores_later_notices() {
    let mut call = answered_call();
    call.channel_notice(&notice("bob", true, 10), at(2));
    call.end(&Actor::new("alice", false), at(3)).unwrap();
    assert!(!call.participant("bob").unwrap().in_media);
    let before = call.clone();
    let out = call.channel_notice(&notice("bob", true, 11), at(4));
    assert!(out.events.is_empty());
    assert_eq!(call, before);
}

#[test]
fn media_presence_is_in_the_participant_json_but_the_uid_and_order_are_not() {
    let mut call = answered_call();
    call.channel_notice(&notice("bob", true, 10), at(2));
    let json = serde_json::to_value(call.participant("bob").unwrap()).unwrap();
    assert_eq!(json["inMedia"], true);
    assert!(json.get("mediaUid").is_none());
    assert!(json.get("mediaClientSeq").is_none());
}
