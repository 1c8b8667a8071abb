//! How calls begin and end, the timers, presence, capacity and the event stream: the rules of
//! CONTRACT sections 4 and 5 beyond the single-transition table.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use calls_domain::{
    Actor, Audience, Call, CallStatus, CallType, CancelReason, DomainError, DomainEvent, EndReason,
    EventKind, LeftReason, MediaPatch, NewCall, Outcome, ParticipantStatus as S, TimerChange,
    TimerKind, Timing,
};
use time::macros::datetime;
use uuid::Uuid;

mod support;

use support::{T0, at, ended, names, status, timing};

fn id() -> Uuid {
    Uuid::from_u128(42)
}

fn new_call(group: bool, invitees: &[&str]) -> NewCall {
    NewCall {
        chat_room_id: "room-1".into(),
        call_type: CallType::Video,
        is_group_call: group,
        initiator_id: "alice".into(),
        invitee_ids: invitees.iter().map(|s| s.to_string()).collect(),
        max_participants: 4,
        ring_timeout: None,
        initiator_profile: Default::default(),
    }
}

fn start(group: bool, invitees: &[&str]) -> (Call, Outcome) {
    Call::initiate(
        new_call(group, invitees),
        &BTreeSet::new(),
        id(),
        T0,
        &timing(),
    )
    .expect("initiate")
}

fn one_to_one() -> Call {
    start(false, &["bob"]).0
}

fn group(invitees: &[&str]) -> Call {
    start(true, invitees).0
}

fn user(name: &str) -> Actor {
    Actor::new(name, true)
}

fn join(c: &mut Call, name: &str, t: i64) -> Outcome {
    c.join(&user(name), &MediaPatch::default(), at(t))
        .expect("join")
}

fn leave(c: &mut Call, name: &str, t: i64) -> Outcome {
    c.leave(&user(name), LeftReason::Left, at(t))
        .expect("leave")
}

fn cancellations(out: &Outcome) -> Vec<(String, CancelReason)> {
    out.events
        .iter()
        .filter_map(|e| match (&e.kind, e.audiences.as_slice()) {
            (EventKind::IncomingCallCancelled { reason }, [Audience::User(u)]) => {
                Some((u.clone(), *reason))
            }
            _ => None,
        })
        .collect()
}

// ----- initiate -----

#[test]
fn initiating_makes_the_caller_a_joined_host_and_rings_every_invitee() {
    let (c, out) = start(true, &["bob", "carol"]);
    assert_eq!(c.status, CallStatus::Ringing);
    assert_eq!(c.seq, 0);
    assert_eq!(c.max_participants, 4);
    assert_eq!(c.created_at, T0);
    assert_eq!(c.participants.len(), 3);
    let host = &c.participants[0];
    assert_eq!(
        (host.user_id.as_str(), host.role, host.status),
        ("alice", calls_domain::Role::Host, S::Joined)
    );
    assert_eq!(host.joined_at, Some(T0));
    for p in &c.participants[1..] {
        assert_eq!(p.status, S::Invited);
        assert_eq!(p.role, calls_domain::Role::Participant);
        assert_eq!(p.invited_at, T0);
        assert!(p.joined_at.is_none());
    }
    assert_eq!(names(&out.events), ["incoming_call", "incoming_call"]);
    for (e, who) in out.events.iter().zip(["bob", "carol"]) {
        assert_eq!(e.audiences, [Audience::User(who.into())]);
        assert_eq!(e.seq, None);
        match &e.kind {
            EventKind::IncomingCall {
                call,
                from,
                ring_deadline,
            } => {
                assert_eq!(from.user_id, "alice");
                assert_eq!(**call, c);
                assert_eq!(*ring_deadline, T0 + Duration::from_secs(45));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        out.timers,
        [
            TimerChange::Schedule {
                kind: TimerKind::RingTimeout,
                user_id: None,
                due_at: at(45)
            },
            TimerChange::Schedule {
                kind: TimerKind::MaxDuration,
                user_id: None,
                due_at: at(3600)
            },
        ]
    );
}

#[test]
fn without_a_max_duration_only_the_ring_timer_is_scheduled() {
    for max in [None, Some(Duration::ZERO)] {
        let t = Timing {
            max_duration: max,
            ..timing()
        };
        let (_, out) =
            Call::initiate(new_call(false, &["bob"]), &BTreeSet::new(), id(), T0, &t).unwrap();
        assert_eq!(out.timers.len(), 1);
        assert!(matches!(
            out.timers[0],
            TimerChange::Schedule {
                kind: TimerKind::RingTimeout,
                ..
            }
        ));
    }
}

#[test]
fn a_one_to_one_always_has_room_for_exactly_two() {
    let c = one_to_one();
    assert_eq!(c.max_participants, 2);
}

#[test]
fn an_audio_call_starts_everyone_with_the_camera_off() {
    let mut n = new_call(true, &["bob"]);
    n.call_type = CallType::Audio;
    let (mut c, _) = Call::initiate(n, &BTreeSet::new(), id(), T0, &timing()).unwrap();
    assert!(c.participants.iter().all(|p| p.is_camera_off));
    join(&mut c, "bob", 1);
    assert!(c.participant("bob").unwrap().is_camera_off);
}

#[test]
fn initiate_rejects_malformed_requests_with_the_offending_field() {
    let cases: Vec<(NewCall, &str)> = vec![
        (new_call(true, &[]), "inviteUserIds"),
        (new_call(true, &["bob", "bob"]), "inviteUserIds"),
        (new_call(true, &["bob", "alice"]), "inviteUserIds"),
        (new_call(true, &["bob", ""]), "inviteUserIds"),
        (new_call(false, &["bob", "carol"]), "inviteUserIds"),
        (
            NewCall {
                max_participants: 1,
                ..new_call(true, &["bob"])
            },
            "maxParticipants",
        ),
        (
            NewCall {
                chat_room_id: String::new(),
                ..new_call(true, &["bob"])
            },
            "chatRoomId",
        ),
    ];
    for (n, field) in cases {
        match Call::initiate(n.clone(), &BTreeSet::new(), id(), T0, &timing()) {
            Err(DomainError::Validation(v)) => assert_eq!(v.field, field, "{n:?}"),
            other => panic!("{n:?}: expected a validation error, got {other:?}"),
        }
    }
}

#[test]
fn calling_a_busy_user_one_to_one_ends_at_once_as_busy() {
    let busy: BTreeSet<String> = ["bob".to_string()].into();
    let (c, out) = Call::initiate(new_call(false, &["bob"]), &busy, id(), T0, &timing()).unwrap();
    assert_eq!(c.status, CallStatus::Ended);
    assert_eq!(c.end_reason, Some(EndReason::Busy));
    assert_eq!(c.ended_by, None);
    let bob = c.participant("bob").unwrap();
    assert_eq!(bob.status, S::Declined);
    assert_eq!(bob.decline_reason.as_deref(), Some("busy"));
    assert_eq!(status(&c, "alice"), Some(S::Left));
    assert_eq!(names(&out.events), ["call_ended"]);
    assert_eq!(
        out.events[0].audiences,
        [Audience::Call(id()), Audience::User("bob".into())]
    );
    assert_eq!(out.timers, [TimerChange::CancelAll]);
}

#[test]
fn busy_invitees_of_a_group_call_are_declined_and_the_rest_still_ring() {
    let busy: BTreeSet<String> = ["bob".to_string()].into();
    let (c, out) = Call::initiate(
        new_call(true, &["bob", "carol"]),
        &busy,
        id(),
        T0,
        &timing(),
    )
    .unwrap();
    assert_eq!(c.status, CallStatus::Ringing);
    assert_eq!(status(&c, "bob"), Some(S::Declined));
    assert_eq!(status(&c, "carol"), Some(S::Invited));
    assert_eq!(names(&out.events), ["incoming_call"]);
    assert_eq!(out.events[0].audiences, [Audience::User("carol".into())]);
}

#[test]
fn a_group_call_whose_invitees_are_all_busy_ends_declined() {
    let busy: BTreeSet<String> = ["bob".to_string(), "carol".to_string()].into();
    let (c, _) = Call::initiate(
        new_call(true, &["bob", "carol"]),
        &busy,
        id(),
        T0,
        &timing(),
    )
    .unwrap();
    assert_eq!(c.end_reason, Some(EndReason::Declined));
}

#[test]
fn timestamps_are_kept_to_the_millisecond() {
    let now = datetime!(2026-03-01 12:00:00.123456789 UTC);
    let (c, _) = Call::initiate(
        new_call(false, &["bob"]),
        &BTreeSet::new(),
        id(),
        now,
        &timing(),
    )
    .unwrap();
    assert_eq!(c.created_at, datetime!(2026-03-01 12:00:00.123 UTC));
}

// ----- answering -----

#[test]
fn the_callee_answering_starts_the_call_stops_other_devices_ringing_and_the_ring_timer() {
    let mut c = one_to_one();
    let out = join(&mut c, "bob", 5);
    assert_eq!(c.status, CallStatus::Active);
    assert_eq!(c.started_at, Some(at(5)));
    assert_eq!(
        names(&out.events),
        ["participant_joined", "incoming_call_cancelled"]
    );
    assert_eq!(
        cancellations(&out),
        [("bob".to_string(), CancelReason::AnsweredElsewhere)]
    );
    assert_eq!(
        out.timers,
        [TimerChange::Cancel {
            kind: TimerKind::RingTimeout,
            user_id: None
        }]
    );
    let bob = c.participant("bob").unwrap();
    assert_eq!(bob.joined_at, Some(at(5)));
    assert!(bob.has_joined);
}

#[test]
fn the_ring_timer_keeps_running_while_someone_in_a_group_is_still_being_rung() {
    let mut c = group(&["bob", "carol"]);
    let out = join(&mut c, "bob", 5);
    assert!(out.timers.is_empty());
    let out = c
        .set_status(&user("carol"), S::Declined, None, at(6))
        .unwrap();
    assert_eq!(
        out.timers,
        [TimerChange::Cancel {
            kind: TimerKind::RingTimeout,
            user_id: None
        }]
    );
}

#[test]
fn the_initiator_joining_again_does_not_start_the_call() {
    let mut c = one_to_one();
    let out = join(&mut c, "alice", 1);
    assert!(out.events.is_empty());
    assert_eq!(c.status, CallStatus::Ringing);
    assert_eq!(c.started_at, None);
}

#[test]
fn joining_while_joined_only_applies_changed_media_flags() {
    let mut c = one_to_one();
    let patch = MediaPatch {
        is_camera_off: Some(true),
        ..MediaPatch::default()
    };
    let out = c.join(&user("alice"), &patch, at(1)).unwrap();
    assert_eq!(names(&out.events), ["participant_media_changed"]);
    let out = c.join(&user("alice"), &patch, at(2)).unwrap();
    assert!(out.events.is_empty());
}

#[test]
fn the_first_room_member_joining_a_group_call_starts_it_and_is_added_as_a_participant() {
    let mut c = group(&["bob"]);
    let out = join(&mut c, "dave", 3);
    assert_eq!(c.status, CallStatus::Active);
    let dave = c.participant("dave").unwrap();
    assert_eq!(dave.role, calls_domain::Role::Participant);
    assert_eq!(dave.invited_at, at(3));
    assert!(!dave.is_invitee);
    assert_eq!(names(&out.events), ["participant_joined"]);
    assert_eq!(c.participants.last().unwrap().user_id, "dave");
}

#[test]
fn rejoining_resets_the_session_fields_and_media_flags() {
    let mut c = group(&["bob", "carol"]);
    join(&mut c, "bob", 1);
    c.update_media(
        &user("bob"),
        &MediaPatch {
            is_sharing_screen: Some(true),
            is_mic_muted: Some(true),
            ..MediaPatch::default()
        },
        at(2),
    )
    .unwrap();
    leave(&mut c, "bob", 3);
    assert_eq!(c.participant("bob").unwrap().left_at, Some(at(3)));
    let patch = MediaPatch {
        is_mic_muted: Some(true),
        ..MediaPatch::default()
    };
    c.join(&user("bob"), &patch, at(4)).unwrap();
    let bob = c.participant("bob").unwrap();
    assert_eq!(bob.left_at, None);
    assert_eq!(bob.joined_at, Some(at(4)));
    assert!(bob.is_mic_muted);
    assert!(!bob.is_sharing_screen);
}

#[test]
fn a_declined_or_missed_invitee_may_still_join_a_live_group_call() {
    let mut c = group(&["bob", "carol", "erin"]);
    c.set_status(&user("bob"), S::Declined, Some("in a meeting"), at(1))
        .unwrap();
    assert_eq!(
        c.participant("bob").unwrap().decline_reason.as_deref(),
        Some("in a meeting")
    );
    c.set_status(&user("carol"), S::Missed, None, at(1))
        .unwrap();
    let out = join(&mut c, "bob", 2);
    assert_eq!(names(&out.events), ["participant_joined"]);
    assert_eq!(c.participant("bob").unwrap().decline_reason, None);
    join(&mut c, "carol", 3);
    assert_eq!(c.joined_count(), 3);
}

// ----- capacity -----

#[test]
fn capacity_counts_only_joined_participants_and_is_never_exceeded() {
    let mut n = new_call(true, &["b", "c", "d", "e"]);
    n.max_participants = 3;
    let (mut c, _) = Call::initiate(n, &BTreeSet::new(), id(), T0, &timing()).unwrap();
    join(&mut c, "b", 1);
    join(&mut c, "c", 2);
    let before = c.clone();
    assert_eq!(
        c.join(&user("d"), &MediaPatch::default(), at(3)),
        Err(DomainError::CallFull)
    );
    assert_eq!(
        c.set_status(&user("d"), S::Joined, None, at(3)),
        Err(DomainError::CallFull)
    );
    assert_eq!(
        c.join(&user("stranger-member"), &MediaPatch::default(), at(3)),
        Err(DomainError::CallFull)
    );
    assert_eq!(c, before);
    // Already joined: idempotent even when full.
    assert!(join(&mut c, "b", 4).events.is_empty());
    leave(&mut c, "c", 5);
    join(&mut c, "d", 6);
    assert_eq!(c.joined_count(), 3);
}

// ----- ending -----

#[test]
fn a_one_to_one_declined_by_the_callee_ends_declined_by_them() {
    let mut c = one_to_one();
    let out = c
        .set_status(&user("bob"), S::Declined, Some("busy"), at(3))
        .unwrap();
    assert_eq!(
        names(&out.events),
        [
            "participant_status_changed",
            "incoming_call_cancelled",
            "call_ended"
        ]
    );
    assert_eq!(
        cancellations(&out),
        [("bob".to_string(), CancelReason::DeclinedElsewhere)]
    );
    assert_eq!(ended(&out), Some((EndReason::Declined, Some("bob".into()))));
    assert_eq!(c.ended_at, Some(at(3)));
    assert_eq!(status(&c, "alice"), Some(S::Left));
    assert_eq!(c.participant("alice").unwrap().left_at, Some(at(3)));
    assert_eq!(out.timers, [TimerChange::CancelAll]);
}

#[test]
fn a_one_to_one_ended_or_left_by_the_caller_before_an_answer_is_cancelled() {
    for by_leaving in [false, true] {
        let mut c = one_to_one();
        let out = if by_leaving {
            leave(&mut c, "alice", 2)
        } else {
            c.end(&user("alice"), at(2)).unwrap()
        };
        assert_eq!(
            ended(&out),
            Some((EndReason::Cancelled, Some("alice".into())))
        );
        assert_eq!(
            cancellations(&out),
            [("bob".to_string(), CancelReason::Cancelled)]
        );
        assert_eq!(status(&c, "bob"), Some(S::Missed));
        assert_eq!(status(&c, "alice"), Some(S::Left));
    }
}

#[test]
fn a_one_to_one_hung_up_by_either_side_after_answering_is_completed() {
    for who in ["alice", "bob"] {
        for by_leaving in [false, true] {
            let mut c = one_to_one();
            join(&mut c, "bob", 1);
            let out = if by_leaving {
                leave(&mut c, who, 9)
            } else {
                c.end(&user(who), at(9)).unwrap()
            };
            assert_eq!(ended(&out), Some((EndReason::Completed, Some(who.into()))));
            assert_eq!(status(&c, "alice"), Some(S::Left));
            assert_eq!(status(&c, "bob"), Some(S::Left));
            assert!(cancellations(&out).is_empty());
        }
    }
}

#[test]
fn the_callee_hanging_up_a_ringing_one_to_one_declines_it() {
    let mut c = one_to_one();
    let out = c.end(&user("bob"), at(2)).unwrap();
    assert_eq!(ended(&out), Some((EndReason::Declined, Some("bob".into()))));
    assert_eq!(status(&c, "bob"), Some(S::Declined));
}

#[test]
fn only_the_host_may_end_a_group_call() {
    let mut c = group(&["bob", "carol"]);
    join(&mut c, "bob", 1);
    join(&mut c, "dave", 1);
    for who in ["bob", "carol", "dave"] {
        assert_eq!(c.end(&user(who), at(2)), Err(DomainError::Forbidden));
    }
    let out = c.end(&user("alice"), at(3)).unwrap();
    assert_eq!(
        ended(&out),
        Some((EndReason::Completed, Some("alice".into())))
    );
    // carol was still ringing: her devices stop, she counts as missed.
    assert_eq!(
        cancellations(&out),
        [("carol".to_string(), CancelReason::Cancelled)]
    );
    assert_eq!(status(&c, "carol"), Some(S::Missed));
    assert_eq!(status(&c, "dave"), Some(S::Left));
}

#[test]
fn a_group_call_ended_by_its_host_before_anyone_answered_is_cancelled() {
    let mut c = group(&["bob", "carol"]);
    let out = c.end(&user("alice"), at(3)).unwrap();
    assert_eq!(
        ended(&out),
        Some((EndReason::Cancelled, Some("alice".into())))
    );
    assert_eq!(cancellations(&out).len(), 2);
}

#[test]
fn a_group_call_ends_completed_when_its_last_joined_participant_leaves() {
    let mut c = group(&["bob", "carol"]);
    join(&mut c, "bob", 1);
    assert!(ended(&leave(&mut c, "alice", 2)).is_none());
    assert!(c.is_live());
    let out = leave(&mut c, "bob", 3);
    assert_eq!(
        ended(&out),
        Some((EndReason::Completed, Some("bob".into())))
    );
    assert_eq!(status(&c, "carol"), Some(S::Missed));
}

#[test]
fn a_group_host_leaving_before_anyone_answered_cancels_the_call() {
    let mut c = group(&["bob", "carol"]);
    let out = leave(&mut c, "alice", 2);
    assert_eq!(
        names(&out.events),
        [
            "participant_left",
            "incoming_call_cancelled",
            "incoming_call_cancelled",
            "call_ended"
        ]
    );
    assert_eq!(
        ended(&out),
        Some((EndReason::Cancelled, Some("alice".into())))
    );
}

#[test]
fn a_group_call_every_invitee_declined_ends_declined() {
    let mut c = group(&["bob", "carol"]);
    let out = c
        .set_status(&user("bob"), S::Declined, None, at(1))
        .unwrap();
    assert!(ended(&out).is_none());
    let out = c
        .set_status(&user("carol"), S::Declined, None, at(2))
        .unwrap();
    assert_eq!(
        ended(&out),
        Some((EndReason::Declined, Some("carol".into())))
    );
    assert_eq!(status(&c, "alice"), Some(S::Left));
}

#[test]
fn a_group_call_nobody_answered_ends_missed_once_nobody_is_left_to_ring() {
    let mut c = group(&["bob", "carol"]);
    c.set_status(&user("bob"), S::Declined, None, at(1))
        .unwrap();
    let out = c
        .set_status(&user("carol"), S::Missed, None, at(2))
        .unwrap();
    assert_eq!(ended(&out).map(|e| e.0), Some(EndReason::Missed));
}

#[test]
fn declines_after_someone_answered_do_not_end_a_group_call() {
    let mut c = group(&["bob", "carol"]);
    join(&mut c, "bob", 1);
    leave(&mut c, "bob", 2);
    let out = c
        .set_status(&user("carol"), S::Declined, None, at(3))
        .unwrap();
    assert!(ended(&out).is_none());
    assert!(c.is_live());
}

#[test]
fn call_ended_goes_to_the_call_and_to_every_invitee_whatever_their_status() {
    let mut c = group(&["bob", "carol", "erin"]);
    c.set_status(&user("bob"), S::Declined, None, at(1))
        .unwrap();
    join(&mut c, "carol", 2);
    join(&mut c, "dave", 2);
    let out = c.end(&user("alice"), at(3)).unwrap();
    let e = out
        .events
        .iter()
        .find(|e| e.name() == "call_ended")
        .unwrap();
    assert_eq!(
        e.audiences,
        [
            Audience::Call(id()),
            Audience::User("bob".into()),
            Audience::User("carol".into()),
            Audience::User("erin".into()),
        ]
    );
}

// ----- ring timeout -----

#[test]
fn the_ring_timeout_marks_unanswered_invitees_missed_and_ends_an_unanswered_call() {
    let mut c = group(&["bob", "carol"]);
    c.set_status(&user("bob"), S::Ringing, None, at(1)).unwrap();
    let out = c.ring_timeout(at(45));
    assert_eq!(status(&c, "bob"), Some(S::Missed));
    assert_eq!(status(&c, "carol"), Some(S::Missed));
    assert_eq!(
        names(&out.events),
        [
            "participant_status_changed",
            "incoming_call_cancelled",
            "participant_status_changed",
            "incoming_call_cancelled",
            "call_ended"
        ]
    );
    match &out.events[0].kind {
        EventKind::ParticipantStatusChanged { reason, status, .. } => {
            assert_eq!(*status, S::Missed);
            assert_eq!(reason.as_deref(), Some("ring_timeout"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(ended(&out), Some((EndReason::Missed, None)));
    assert_eq!(
        cancellations(&out),
        [
            ("bob".to_string(), CancelReason::Missed),
            ("carol".to_string(), CancelReason::Missed)
        ]
    );
    assert_eq!(out.timers, [TimerChange::CancelAll]);
}

#[test]
fn the_ring_timeout_leaves_an_answered_group_call_running() {
    let mut c = group(&["bob", "carol"]);
    join(&mut c, "bob", 1);
    let out = c.ring_timeout(at(45));
    assert_eq!(status(&c, "carol"), Some(S::Missed));
    assert!(ended(&out).is_none());
    assert!(out.timers.is_empty());
    assert_eq!(c.status, CallStatus::Active);
}

#[test]
fn timers_that_fire_on_an_ended_call_do_nothing() {
    let mut c = one_to_one();
    c.end(&user("alice"), at(1)).unwrap();
    let before = c.clone();
    assert_eq!(c.ring_timeout(at(45)), Outcome::default());
    assert_eq!(c.max_duration_reached(at(99)), Outcome::default());
    assert_eq!(
        c.disconnect_grace_expired("alice", at(99)),
        Outcome::default()
    );
    assert_eq!(
        c.presence("alice", false, at(99), &timing()),
        Outcome::default()
    );
    assert_eq!(c, before);
}

#[test]
fn the_max_duration_ends_the_call_as_timeout() {
    let mut c = one_to_one();
    join(&mut c, "bob", 1);
    let out = c.max_duration_reached(at(3600));
    assert_eq!(ended(&out), Some((EndReason::Timeout, None)));
    assert_eq!(c.ended_by, None);
    assert_eq!(out.timers, [TimerChange::CancelAll]);
}

#[test]
fn fire_timer_runs_the_command_each_timer_kind_stands_for() {
    let mut c = one_to_one();
    join(&mut c, "bob", 1);
    c.presence("bob", false, at(2), &timing());
    assert!(
        c.fire_timer(TimerKind::DisconnectGrace, None, at(40))
            .events
            .is_empty()
    );
    let out = c.fire_timer(TimerKind::DisconnectGrace, Some("bob"), at(40));
    assert_eq!(ended(&out).map(|e| e.0), Some(EndReason::Completed));

    let mut c = one_to_one();
    let out = c.fire_timer(TimerKind::RingTimeout, None, at(45));
    assert_eq!(ended(&out).map(|e| e.0), Some(EndReason::Missed));

    let mut c = one_to_one();
    let out = c.fire_timer(TimerKind::MaxDuration, None, at(45));
    assert_eq!(ended(&out).map(|e| e.0), Some(EndReason::Timeout));
}

// ----- presence -----

#[test]
fn a_joined_participant_losing_every_socket_is_disconnected_with_a_grace_timer() {
    let mut c = one_to_one();
    join(&mut c, "bob", 1);
    let out = c.presence("bob", false, at(10), &timing());
    assert!(!c.participant("bob").unwrap().is_connected);
    assert_eq!(names(&out.events), ["participant_disconnected"]);
    match &out.events[0].kind {
        EventKind::ParticipantDisconnected {
            user_id,
            grace_seconds,
        } => {
            assert_eq!(user_id, "bob");
            assert_eq!(*grace_seconds, 30);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        out.timers,
        [TimerChange::Schedule {
            kind: TimerKind::DisconnectGrace,
            user_id: Some("bob".into()),
            due_at: at(40)
        }]
    );
    // Reported twice: nothing new.
    assert_eq!(
        c.presence("bob", false, at(11), &timing()),
        Outcome::default()
    );
}

#[test]
fn reconnecting_within_the_grace_cancels_the_timer() {
    let mut c = one_to_one();
    join(&mut c, "bob", 1);
    c.presence("bob", false, at(10), &timing());
    let out = c.presence("bob", true, at(20), &timing());
    assert!(c.participant("bob").unwrap().is_connected);
    assert_eq!(names(&out.events), ["participant_reconnected"]);
    assert_eq!(
        out.timers,
        [TimerChange::Cancel {
            kind: TimerKind::DisconnectGrace,
            user_id: Some("bob".into())
        }]
    );
    // The timer firing late anyway changes nothing.
    assert_eq!(
        c.disconnect_grace_expired("bob", at(40)),
        Outcome::default()
    );
    assert_eq!(
        c.presence("bob", true, at(21), &timing()),
        Outcome::default()
    );
}

#[test]
fn a_participant_still_disconnected_after_the_grace_leaves_with_connection_lost() {
    let mut c = group(&["bob", "carol"]);
    join(&mut c, "bob", 1);
    c.presence("bob", false, at(10), &timing());
    let out = c.disconnect_grace_expired("bob", at(40));
    assert_eq!(status(&c, "bob"), Some(S::Left));
    assert!(c.participant("bob").unwrap().is_connected);
    match &out.events[0].kind {
        EventKind::ParticipantLeft { user_id, reason } => {
            assert_eq!(user_id, "bob");
            assert_eq!(*reason, LeftReason::ConnectionLost);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(c.is_live());

    // The last one to lose the connection ends the call, by nobody.
    c.presence("alice", false, at(50), &timing());
    let out = c.disconnect_grace_expired("alice", at(80));
    assert_eq!(ended(&out), Some((EndReason::Completed, None)));
}

#[test]
fn presence_only_concerns_joined_participants() {
    let mut c = group(&["bob"]);
    assert_eq!(
        c.presence("bob", false, at(1), &timing()),
        Outcome::default()
    );
    assert_eq!(
        c.presence("nobody", false, at(1), &timing()),
        Outcome::default()
    );
    assert!(c.participant("bob").unwrap().is_connected);
}

#[test]
fn leaving_while_disconnected_cancels_the_grace_timer() {
    let mut c = group(&["bob", "carol"]);
    join(&mut c, "bob", 1);
    c.presence("bob", false, at(2), &timing());
    let out = leave(&mut c, "bob", 3);
    assert!(out.timers.contains(&TimerChange::Cancel {
        kind: TimerKind::DisconnectGrace,
        user_id: Some("bob".into())
    }));
}

#[test]
fn a_rejoin_after_a_lost_connection_is_connected_again() {
    let mut c = group(&["bob", "carol"]);
    join(&mut c, "bob", 1);
    c.presence("bob", false, at(2), &timing());
    c.disconnect_grace_expired("bob", at(32));
    join(&mut c, "bob", 33);
    assert!(c.participant("bob").unwrap().is_connected);
}

// ----- media -----

#[test]
fn media_updates_change_only_the_given_flags_and_announce_all_three() {
    let mut c = one_to_one();
    let out = c
        .update_media(
            &user("alice"),
            &MediaPatch {
                is_sharing_screen: Some(true),
                ..MediaPatch::default()
            },
            at(1),
        )
        .unwrap();
    let p = c.participant("alice").unwrap();
    assert_eq!(
        (p.is_mic_muted, p.is_camera_off, p.is_sharing_screen),
        (false, false, true)
    );
    assert_eq!(
        out.events[0].kind,
        EventKind::ParticipantMediaChanged {
            user_id: "alice".into(),
            is_mic_muted: false,
            is_camera_off: false,
            is_sharing_screen: true
        }
    );
    // Same values again: no event.
    let out = c
        .update_media(
            &user("alice"),
            &MediaPatch {
                is_sharing_screen: Some(true),
                ..MediaPatch::default()
            },
            at(2),
        )
        .unwrap();
    assert!(out.events.is_empty());
}

#[test]
fn status_reasons_longer_than_the_limit_are_rejected() {
    let mut c = group(&["bob", "carol"]);
    // The socket path's limit, 200 characters: one rule for REST and the socket.
    let long = "x".repeat(201);
    assert!(matches!(
        c.set_status(&user("bob"), S::Declined, Some(&long), at(1)),
        Err(DomainError::Validation(_))
    ));
    let longest = "x".repeat(200);
    c.set_status(&user("carol"), S::Declined, Some(&longest), at(1))
        .unwrap();
    assert_eq!(
        c.participant("carol").unwrap().decline_reason.as_deref(),
        Some(longest.as_str())
    );
    // An empty reason counts as none.
    c.set_status(&user("bob"), S::Declined, Some(""), at(1))
        .unwrap();
    assert_eq!(c.participant("bob").unwrap().decline_reason, None);
}

// ----- the event stream -----

#[test]
fn call_events_are_numbered_one_by_one_without_gaps_and_user_events_carry_no_seq() {
    let mut c = group(&["bob", "carol", "erin"]);
    let mut all: Vec<DomainEvent> = Vec::new();
    let mut steps: Vec<Outcome> = vec![
        c.set_status(&user("bob"), S::Ringing, None, at(1)).unwrap(),
        join(&mut c, "bob", 2),
        c.update_media(
            &user("bob"),
            &MediaPatch {
                is_mic_muted: Some(true),
                ..MediaPatch::default()
            },
            at(3),
        )
        .unwrap(),
        c.set_status(&user("carol"), S::Declined, None, at(4))
            .unwrap(),
        join(&mut c, "dave", 5),
        c.presence("dave", false, at(6), &timing()),
        c.presence("dave", true, at(7), &timing()),
        leave(&mut c, "dave", 8),
    ];
    // Failed commands take no number.
    assert!(c.end(&user("bob"), at(9)).is_err());
    steps.push(c.ring_timeout(at(45)));
    steps.push(c.end(&user("alice"), at(50)).unwrap());
    for s in steps {
        all.extend(s.events);
    }
    let seqs: Vec<u64> = all.iter().filter_map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, expected);
    assert_eq!(c.seq, seqs.len() as u64);
    for e in &all {
        let is_call_event = e.audiences.contains(&Audience::Call(id()));
        assert_eq!(e.seq.is_some(), is_call_event, "{}", e.name());
        assert!(!e.audiences.is_empty());
    }
    assert_eq!(all.last().unwrap().name(), "call_ended");
}

#[test]
fn a_failed_command_leaves_the_call_exactly_as_it_was() {
    let mut c = group(&["bob"]);
    join(&mut c, "bob", 1);
    let before = c.clone();
    assert!(
        c.set_status(&user("bob"), S::Declined, None, at(2))
            .is_err()
    );
    assert!(
        c.update_media(&user("zed"), &MediaPatch::default(), at(2))
            .is_err()
    );
    assert!(c.end(&user("bob"), at(2)).is_err());
    assert_eq!(c, before);
}
