//! Agora's view of the media (CONTRACT section 11): channel join/leave notices set a
//! participant's `inMedia` and emit `participant_media_presence`, in `clientSeq` order.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use calls_domain::{
    Actor, Audience, Call, CallStatus, CallType, ChannelNotice, EventKind, LeftReason,
    MEDIA_LINGER, MediaKick, MediaPatch, NewCall, Outcome, ParticipantStatus, TimerChange,
    TimerKind, Timing,
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
        media_grace: None,
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
    let out = call.channel_notice(&notice("bob", true, 10), at(2), &timing());
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
    call.channel_notice(&notice("bob", true, 10), at(2), &timing());
    let out = call.channel_notice(&notice("bob", false, 11), at(3), &timing());
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
    call.channel_notice(&notice("bob", false, 20), at(2), &timing());
    call.channel_notice(&notice("bob", true, 21), at(3), &timing());
    let before = call.clone();
    let out = call.channel_notice(&notice("bob", false, 20), at(4), &timing());
    assert!(out.events.is_empty());
    assert_eq!(call, before);
    let out = call.channel_notice(&notice("bob", false, 19), at(4), &timing());
    assert!(out.events.is_empty());
    assert_eq!(call, before);
}

#[test]
fn a_repeated_state_only_advances_the_order_and_emits_nothing() {
    let mut call = answered_call();
    call.channel_notice(&notice("bob", true, 10), at(2), &timing());
    let seq = call.seq;
    let out = call.channel_notice(&notice("bob", true, 12), at(3), &timing());
    assert!(out.events.is_empty());
    assert_eq!(call.seq, seq);
    assert_eq!(call.participant("bob").unwrap().media_client_seq, Some(12));
}

/// The kick of `user` (uid 4242, as in every notice here) decided at their `client_seq`.
fn kick(user: &str, client_seq: Option<i64>, due_at: OffsetDateTime) -> MediaKick {
    MediaKick {
        user_id: user.into(),
        uid: 4242,
        client_seq,
        due_at,
    }
}

#[test]
fn someone_who_is_not_a_participant_changes_nothing_but_is_kicked_out_of_the_channel() {
    let mut call = answered_call();
    let before = call.clone();
    let out = call.channel_notice(&notice("mallory", true, 1), at(2), &timing());
    assert!(out.events.is_empty());
    assert_eq!(call, before);
    assert_eq!(out.kicks, vec![kick("mallory", None, at(2))]);
    let out = call.channel_notice(&notice("mallory", false, 2), at(3), &timing());
    assert!(out.kicks.is_empty(), "leaving is what a kick wants");
}

#[test]
fn an_ended_call_has_nobody_in_the_media_and_kicks_whoever_joins_its_channel_later() {
    let mut call = answered_call();
    call.channel_notice(&notice("bob", true, 10), at(2), &timing());
    call.end(&Actor::new("alice", false), at(3)).unwrap();
    assert!(!call.participant("bob").unwrap().in_media);
    let out = call.channel_notice(&notice("bob", true, 11), at(4), &timing());
    assert!(out.events.is_empty());
    assert!(!call.participant("bob").unwrap().in_media);
    assert_eq!(out.kicks.len(), 1);
    assert_eq!((out.kicks[0].uid, out.kicks[0].due_at), (4242, at(4)));
    // A leave only records the order: it makes the kicks decided before it moot.
    let out = call.channel_notice(&notice("bob", false, 12), at(5), &timing());
    assert!(out.events.is_empty() && out.kicks.is_empty());
    assert!(!call.kick_still_needed("bob", Some(11)));
}

#[test]
fn a_participant_who_is_not_joined_is_kicked_when_they_join_the_channel() {
    let mut group = group_call();
    group
        .leave(&Actor::new("carol", false), LeftReason::Left, at(2))
        .unwrap();
    let out = group.channel_notice(&notice("carol", true, 5), at(3), &timing());
    assert_eq!(out.kicks, vec![kick("carol", Some(5), at(3))]);
    assert!(
        group.participant("carol").unwrap().in_media,
        "what Agora says"
    );
    assert!(group.kick_still_needed("carol", Some(5)));

    let out = group.channel_notice(&notice("bob", true, 1), at(3), &timing());
    assert!(out.kicks.is_empty(), "bob is a joined participant");
}

#[test]
fn a_removed_participant_in_the_channel_is_kicked_at_once() {
    let mut group = group_call();
    group.channel_notice(&notice("carol", true, 7), at(2), &timing());
    let out = group
        .remove(&Actor::new("alice", false), "carol", at(3))
        .unwrap();
    assert_eq!(out.kicks, vec![kick("carol", Some(7), at(3))]);
    assert!(group.kick_still_needed("carol", Some(7)));
}

#[test]
fn a_removed_participant_out_of_the_channel_or_of_unknown_uid_is_not_kicked() {
    let mut group = group_call();
    group.channel_notice(&notice("carol", true, 7), at(2), &timing());
    group.channel_notice(&notice("carol", false, 8), at(3), &timing());
    let out = group
        .remove(&Actor::new("alice", false), "carol", at(4))
        .unwrap();
    assert!(out.kicks.is_empty(), "out of the channel already");

    let mut group = group_call();
    let mut joined_without_uid = notice("carol", true, 7);
    joined_without_uid.uid = None;
    group.channel_notice(&joined_without_uid, at(2), &timing());
    let out = group
        .remove(&Actor::new("alice", false), "carol", at(3))
        .unwrap();
    assert!(out.kicks.is_empty(), "a rule needs the uid");
}

#[test]
fn leaving_the_call_while_in_the_channel_kicks_after_the_linger_unless_they_leave_it() {
    let mut group = group_call();
    group.channel_notice(&notice("carol", true, 7), at(2), &timing());
    let out = group
        .leave(&Actor::new("carol", false), LeftReason::Left, at(3))
        .unwrap();
    let linger = time::Duration::try_from(MEDIA_LINGER).unwrap();
    assert_eq!(out.kicks, vec![kick("carol", Some(7), at(3) + linger)]);
    assert!(group.kick_still_needed("carol", Some(7)));
    group.channel_notice(&notice("carol", false, 8), at(4), &timing());
    assert!(
        !group.kick_still_needed("carol", Some(7)),
        "she left the channel"
    );
}

#[test]
fn a_kick_is_moot_once_the_user_is_a_joined_participant_again() {
    let mut group = group_call();
    group.channel_notice(&notice("carol", true, 7), at(2), &timing());
    group
        .leave(&Actor::new("carol", false), LeftReason::Left, at(3))
        .unwrap();
    group
        .join(&Actor::new("carol", false), &MediaPatch::default(), at(4))
        .unwrap();
    assert!(!group.kick_still_needed("carol", Some(7)));
    assert!(group.kick_still_needed("mallory", None), "strangers always");
}

#[test]
fn the_end_of_a_call_kicks_everyone_still_in_its_channel_after_the_linger() {
    let mut group = group_call();
    group.channel_notice(&notice("bob", true, 3), at(2), &timing());
    group.channel_notice(&notice("carol", true, 4), at(2), &timing());
    group.channel_notice(&notice("carol", false, 5), at(3), &timing());
    let out = group.end(&Actor::new("alice", false), at(4)).unwrap();
    let linger = time::Duration::try_from(MEDIA_LINGER).unwrap();
    assert_eq!(
        out.kicks,
        vec![kick("bob", Some(3), at(4) + linger)],
        "carol had left the channel"
    );
    assert!(group.kick_still_needed("bob", Some(3)));
    group.channel_notice(&notice("bob", false, 6), at(5), &timing());
    assert!(!group.kick_still_needed("bob", Some(3)));
}

#[test]
fn media_presence_is_in_the_participant_json_but_the_uid_and_order_are_not() {
    let mut call = answered_call();
    call.channel_notice(&notice("bob", true, 10), at(2), &timing());
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
    call.channel_notice(&notice_at("bob", true, 1, at(10)), at(500), &timing());
    call.channel_notice(&notice_at("bob", false, 2, at(70)), at(900), &timing());
    assert_eq!(call.participant("bob").unwrap().media_seconds, 60);
    // A second stay adds to the first; alice's stay counts for the call too.
    call.channel_notice(&notice_at("bob", true, 3, at(100)), at(901), &timing());
    call.channel_notice(&notice_at("bob", false, 4, at(125)), at(902), &timing());
    call.channel_notice(&notice_at("alice", true, 1, at(5)), at(903), &timing());
    call.channel_notice(&notice_at("alice", false, 2, at(45)), at(904), &timing());
    assert_eq!(call.participant("bob").unwrap().media_seconds, 85);
    assert_eq!(call.participant("alice").unwrap().media_seconds, 40);
    assert_eq!(call.media_seconds, 125);
    let json = serde_json::to_value(&call).unwrap();
    assert_eq!(json["mediaSeconds"], 125);
}

#[test]
fn a_stay_still_open_counts_when_the_call_ends_and_is_reported_in_call_ended() {
    let mut call = answered_call();
    call.channel_notice(&notice_at("bob", true, 1, at(10)), at(11), &timing());
    call.channel_notice(&notice_at("alice", true, 1, at(20)), at(21), &timing());
    call.channel_notice(&notice_at("alice", false, 2, at(30)), at(31), &timing());
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
    call.channel_notice(&notice_at("bob", true, 1, at(50)), at(51), &timing());
    call.channel_notice(&notice_at("bob", false, 2, at(40)), at(52), &timing());
    assert_eq!(call.participant("bob").unwrap().media_seconds, 0);
    assert!(!call.participant("bob").unwrap().in_media);
}

#[test]
fn a_repeated_join_keeps_the_stay_running_from_the_first() {
    let mut call = answered_call();
    call.channel_notice(&notice_at("bob", true, 1, at(10)), at(11), &timing());
    call.channel_notice(&notice_at("bob", true, 2, at(30)), at(31), &timing());
    call.channel_notice(&notice_at("bob", false, 3, at(40)), at(41), &timing());
    assert_eq!(call.participant("bob").unwrap().media_seconds, 30);
}

#[test]
fn a_leave_without_a_join_seen_adds_nothing() {
    let mut call = answered_call();
    call.channel_notice(&notice_at("bob", false, 5, at(40)), at(41), &timing());
    assert_eq!(call.participant("bob").unwrap().media_seconds, 0);
    assert_eq!(call.media_seconds, 0);
}

/// As [`timing`], with the media grace on (30 s).
fn ghost_timing() -> Timing {
    Timing {
        media_grace: Some(Duration::from_secs(30)),
        ..timing()
    }
}

fn left_reason(out: &Outcome, user: &str) -> Option<LeftReason> {
    out.events.iter().find_map(|e| match &e.kind {
        EventKind::ParticipantLeft { user_id, reason } if user_id == user => Some(*reason),
        _ => None,
    })
}

#[test]
fn a_joined_participant_leaving_the_media_starts_the_media_grace_and_coming_back_cancels_it() {
    let mut call = answered_call();
    call.channel_notice(&notice("bob", true, 1), at(2), &ghost_timing());
    let out = call.channel_notice(&notice("bob", false, 2), at(3), &ghost_timing());
    assert_eq!(
        out.timers,
        vec![TimerChange::Schedule {
            kind: TimerKind::MediaGrace,
            user_id: Some("bob".into()),
            due_at: at(33),
        }]
    );
    let out = call.channel_notice(&notice("bob", true, 3), at(10), &ghost_timing());
    assert_eq!(
        out.timers,
        vec![TimerChange::Cancel {
            kind: TimerKind::MediaGrace,
            user_id: Some("bob".into()),
        }]
    );
}

#[test]
fn a_ghost_out_of_the_media_and_without_a_socket_leaves_when_the_media_grace_runs_out() {
    let mut call = answered_call();
    call.channel_notice(&notice("bob", true, 1), at(2), &ghost_timing());
    call.channel_notice(&notice("bob", false, 2), at(3), &ghost_timing());
    call.presence("bob", false, at(4), &ghost_timing());
    let out = call.fire_timer(TimerKind::MediaGrace, Some("bob"), at(33));
    assert_eq!(left_reason(&out, "bob"), Some(LeftReason::ConnectionLost));
    assert_eq!(
        call.participant("bob").unwrap().status,
        ParticipantStatus::Left
    );
    // A 1:1 ends when either side leaves; nobody is to blame for a lost connection.
    assert_eq!(call.status, CallStatus::Ended);
    assert_eq!(call.ended_by, None);
}

#[test]
fn someone_whose_media_dropped_but_whose_socket_lives_stays_joined() {
    let mut call = answered_call();
    call.channel_notice(&notice("bob", true, 1), at(2), &ghost_timing());
    call.channel_notice(&notice("bob", false, 2), at(3), &ghost_timing());
    let before = call.clone();
    let out = call.fire_timer(TimerKind::MediaGrace, Some("bob"), at(33));
    assert!(out.events.is_empty());
    assert_eq!(call, before);
    assert_eq!(
        call.participant("bob").unwrap().status,
        ParticipantStatus::Joined
    );
}

#[test]
fn someone_back_in_the_media_when_the_media_grace_runs_out_stays_joined() {
    let mut call = answered_call();
    call.channel_notice(&notice("bob", false, 2), at(3), &ghost_timing());
    call.presence("bob", false, at(4), &ghost_timing());
    call.channel_notice(&notice("bob", true, 3), at(5), &ghost_timing());
    let out = call.fire_timer(TimerKind::MediaGrace, Some("bob"), at(33));
    assert!(out.events.is_empty());
    assert_eq!(
        call.participant("bob").unwrap().status,
        ParticipantStatus::Joined
    );
}

/// A group call from alice that bob and carol joined.
fn group_call() -> Call {
    let new = NewCall {
        chat_room_id: "room-1".into(),
        call_type: CallType::Video,
        is_group_call: true,
        initiator_id: "alice".into(),
        invitee_ids: vec!["bob".into(), "carol".into()],
        max_participants: 8,
        ring_timeout: None,
        initiator_profile: Default::default(),
    };
    let (mut call, _) =
        Call::initiate(new, &BTreeSet::new(), Uuid::from_u128(8), T0, &timing()).unwrap();
    for user in ["bob", "carol"] {
        call.join(&Actor::new(user, false), &MediaPatch::default(), at(1))
            .unwrap();
    }
    call
}

#[test]
fn with_the_media_grace_off_or_for_someone_not_joined_a_leave_starts_no_timer() {
    let mut call = answered_call();
    let out = call.channel_notice(&notice("bob", false, 2), at(3), &timing());
    assert!(out.timers.is_empty());

    let mut group = group_call();
    group
        .leave(&Actor::new("carol", false), LeftReason::Left, at(2))
        .unwrap();
    let out = group.channel_notice(&notice("carol", false, 1), at(3), &ghost_timing());
    assert!(out.timers.is_empty(), "carol left the call already");
}

#[test]
fn a_ghost_who_leaves_the_call_first_has_the_media_grace_cancelled() {
    let mut call = group_call();
    call.channel_notice(&notice("bob", false, 2), at(3), &ghost_timing());
    let out = call
        .leave(&Actor::new("bob", false), LeftReason::Left, at(4))
        .unwrap();
    assert!(out.timers.contains(&TimerChange::Cancel {
        kind: TimerKind::MediaGrace,
        user_id: Some("bob".into()),
    }));
    assert_eq!(call.status, CallStatus::Active);
}
