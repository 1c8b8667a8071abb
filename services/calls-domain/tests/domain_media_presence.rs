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
    notice_at(user, in_media, client_seq, T0)
}

/// A notice whose Agora `ts` is `ts` (media time is counted by these, not by arrival).
fn notice_at(user: &str, in_media: bool, client_seq: i64, ts: OffsetDateTime) -> ChannelNotice {
    ChannelNotice {
        user_id: user.into(),
        in_media,
        client_seq,
        uid: Some(4242),
        reason: (!in_media).then_some(1),
        at: ts,
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
    assert!(json.get("mediaSince").is_none());
    assert_eq!(json["mediaSeconds"], 0);
}

#[test]
fn media_seconds_add_up_each_stay_by_the_notices_own_times_not_their_arrival() {
    let mut call = answered_call();
    // Delivered at 500 s and 900 s, but Agora says bob was in from 10 s to 70 s: 60 s.
    call.channel_notice(&notice_at("bob", true, 1, at(10)), at(500));
    call.channel_notice(&notice_at("bob", false, 2, at(70)), at(900));
    assert_eq!(call.participant("bob").unwrap().media_seconds, 60);
    // A second stay adds to the first; alice's stay counts for the call too.
    call.channel_notice(&notice_at("bob", true, 3, at(100)), at(901));
    call.channel_notice(&notice_at("bob", false, 4, at(125)), at(902));
    call.channel_notice(&notice_at("alice", true, 1, at(5)), at(903));
    call.channel_notice(&notice_at("alice", false, 2, at(45)), at(904));
    assert_eq!(call.participant("bob").unwrap().media_seconds, 85);
    assert_eq!(call.participant("alice").unwrap().media_seconds, 40);
    assert_eq!(call.media_seconds, 125);
    let json = serde_json::to_value(&call).unwrap();
    assert_eq!(json["mediaSeconds"], 125);
}

#[test]
fn a_stay_still_open_counts_when_the_call_ends_and_is_reported_in_call_ended() {
    let mut call = answered_call();
    call.channel_notice(&notice_at("bob", true, 1, at(10)), at(11));
    call.channel_notice(&notice_at("alice", true, 1, at(20)), at(21));
    call.channel_notice(&notice_at("alice", false, 2, at(30)), at(31));
    // Still open: not counted while the call is live.
    assert_eq!(call.participant("bob").unwrap().media_seconds, 0);
    assert_eq!(call.media_seconds, 10);
    let out = call.end(&Actor::new("alice", false), at(100)).unwrap();
    assert_eq!(call.participant("bob").unwrap().media_seconds, 90);
    assert_eq!(call.media_seconds, 100);
    let ended = out
        .events
        .iter()
        .find(|e| e.name() == "call_ended")
        .unwrap();
    assert_eq!(ended.payload()["mediaSeconds"], 100);
    assert_eq!(
        ended.payload()["participantMediaSeconds"],
        serde_json::json!([{"userId": "alice", "mediaSeconds": 10},
                           {"userId": "bob", "mediaSeconds": 90}])
    );
}

#[test]
fn a_leave_that_agora_dates_before_its_join_adds_nothing() {
    let mut call = answered_call();
    call.channel_notice(&notice_at("bob", true, 1, at(50)), at(51));
    call.channel_notice(&notice_at("bob", false, 2, at(40)), at(52));
    assert_eq!(call.participant("bob").unwrap().media_seconds, 0);
    assert!(!call.participant("bob").unwrap().in_media);
}

#[test]
fn a_repeated_join_keeps_the_stay_running_from_the_first() {
    let mut call = answered_call();
    call.channel_notice(&notice_at("bob", true, 1, at(10)), at(11));
    call.channel_notice(&notice_at("bob", true, 2, at(30)), at(31));
    call.channel_notice(&notice_at("bob", false, 3, at(40)), at(41));
    assert_eq!(call.participant("bob").unwrap().media_seconds, 30);
}

#[test]
fn a_leave_without_a_join_seen_adds_nothing() {
    let mut call = answered_call();
    call.channel_notice(&notice_at("bob", false, 5, at(40)), at(41));
    assert_eq!(call.participant("bob").unwrap().media_seconds, 0);
    assert_eq!(call.media_seconds, 0);
}
