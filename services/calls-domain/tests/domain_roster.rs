//! A live call's roster (CONTRACT section 10): inviting more people, removing someone, the
//! host role passing on, groups that ring more people than fit, per-call ring timeouts and the
//! alone timeout.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use calls_domain::{
    Actor, Audience, Call, CallStatus, CallType, CancelReason, DomainError, EndReason, EventKind,
    Invitation, LeftReason, MediaPatch, NewCall, Outcome, ParticipantStatus as S, Role,
    TimerChange, TimerKind, Timing,
};
use time::OffsetDateTime;
use uuid::Uuid;

mod support;

use support::{T0, at, ended, names, status, timing};

fn new_call(group: bool, invitees: &[&str], max: u32) -> NewCall {
    NewCall {
        chat_room_id: "room-1".into(),
        call_type: CallType::Video,
        is_group_call: group,
        initiator_id: "alice".into(),
        invitee_ids: invitees.iter().map(|s| s.to_string()).collect(),
        max_participants: max,
        ring_timeout: None,
        initiator_profile: Default::default(),
    }
}

fn start_with(new: NewCall, t: &Timing) -> (Call, Outcome) {
    Call::initiate(new, &BTreeSet::new(), Uuid::from_u128(7), T0, t).expect("initiate")
}

fn one_to_one() -> Call {
    start_with(new_call(false, &["bob"], 2), &timing()).0
}

fn group(invitees: &[&str]) -> Call {
    start_with(new_call(true, invitees, 4), &timing()).0
}

fn user(name: &str) -> Actor {
    Actor::new(name, false)
}

fn join(c: &mut Call, name: &str, t: i64) -> Outcome {
    c.join(&user(name), &MediaPatch::default(), at(t))
        .expect("join")
}

fn invitation(users: &[&str]) -> Invitation {
    Invitation {
        user_ids: users.iter().map(|s| s.to_string()).collect(),
        busy: BTreeSet::new(),
        from: Default::default(),
        max_invitees: 100,
        group_capacity: 16,
    }
}

fn invite(c: &mut Call, by: &str, users: &[&str], t: i64) -> Result<Outcome, DomainError> {
    c.invite(&user(by), &invitation(users), at(t))
}

fn rung(out: &Outcome) -> Vec<(String, OffsetDateTime)> {
    out.events
        .iter()
        .filter_map(|e| match (&e.kind, e.audiences.as_slice()) {
            (EventKind::IncomingCall { ring_deadline, .. }, [Audience::User(u)]) => {
                Some((u.clone(), *ring_deadline))
            }
            _ => None,
        })
        .collect()
}

fn ring_timer(out: &Outcome) -> Option<OffsetDateTime> {
    out.timers.iter().find_map(|t| match t {
        TimerChange::Schedule {
            kind: TimerKind::RingTimeout,
            due_at,
            ..
        } => Some(*due_at),
        _ => None,
    })
}

fn schedules(out: &Outcome, kind: TimerKind) -> bool {
    out.timers
        .iter()
        .any(|t| matches!(t, TimerChange::Schedule { kind: k, .. } if *k == kind))
}

fn cancels(out: &Outcome, kind: TimerKind) -> bool {
    out.timers
        .iter()
        .any(|t| matches!(t, TimerChange::Cancel { kind: k, .. } if *k == kind))
}

/// An answered group call: alice hosts, bob and carol joined, dave still ringing.
fn busy_group() -> Call {
    let mut c = group(&["bob", "carol", "dave"]);
    join(&mut c, "bob", 1);
    join(&mut c, "carol", 2);
    c
}

// ----- invite -----

#[test]
fn a_joined_participant_rings_someone_new_who_gets_incoming_call_and_subscribers_participant_invited()
 {
    let mut c = busy_group();
    let out = invite(&mut c, "bob", &["erin"], 10).unwrap();
    assert_eq!(names(&out.events), ["participant_invited", "incoming_call"]);
    let erin = c.participant("erin").unwrap();
    assert_eq!(
        (erin.status, erin.role, erin.invited_at),
        (S::Invited, Role::Participant, at(10))
    );
    assert!(erin.is_invitee);
    match &out.events[0].kind {
        EventKind::ParticipantInvited { participant } => assert_eq!(participant.user_id, "erin"),
        other => panic!("{other:?}"),
    }
    assert_eq!(out.events[0].audiences, [Audience::Call(c.id)]);
    assert_eq!(out.events[0].seq, Some(c.seq));
    // Rung for the call's full ring timeout from now, with bob as the caller.
    assert_eq!(rung(&out), [("erin".to_owned(), at(55))]);
    match &out.events[1].kind {
        EventKind::IncomingCall { from, call, .. } => {
            assert_eq!(from.user_id, "bob");
            assert!(call.participant("erin").is_some());
        }
        other => panic!("{other:?}"),
    }
    // dave (invited at 0) is still the earliest deadline.
    assert_eq!(ring_timer(&out), Some(at(45)));
}

#[test]
fn only_the_host_or_a_joined_participant_may_invite() {
    let mut c = group(&["bob", "carol"]);
    c.set_status(&user("bob"), S::Declined, None, at(1))
        .unwrap();
    let before = c.clone();
    assert_eq!(
        invite(&mut c, "carol", &["erin"], 2),
        Err(DomainError::Forbidden)
    );
    assert_eq!(
        invite(&mut c, "bob", &["erin"], 2),
        Err(DomainError::Forbidden)
    );
    assert_eq!(
        invite(&mut c, "mallory", &["erin"], 2),
        Err(DomainError::NotFound)
    );
    assert_eq!(c, before);
    // The host may, even while nobody answered yet.
    assert!(invite(&mut c, "alice", &["erin"], 2).is_ok());
}

#[test]
fn inviting_someone_already_ringing_or_joined_changes_nothing_so_racing_invites_ring_once() {
    let mut c = busy_group();
    invite(&mut c, "alice", &["erin"], 5).unwrap();
    let before = c.clone();
    for u in ["erin", "bob", "dave"] {
        let out = invite(&mut c, "carol", &[u], 6).unwrap();
        assert!(out.events.is_empty(), "{u}");
        assert!(out.timers.is_empty(), "{u}");
    }
    assert_eq!(c, before);
}

#[test]
fn those_who_declined_missed_or_left_are_rung_again() {
    let mut c = group(&["bob", "carol", "dave", "erin"]);
    join(&mut c, "bob", 1);
    c.set_status(&user("carol"), S::Declined, Some("later"), at(2))
        .unwrap();
    c.set_status(&user("dave"), S::Missed, None, at(2)).unwrap();
    join(&mut c, "erin", 3);
    c.leave(&user("erin"), LeftReason::Left, at(4)).unwrap();
    let out = invite(&mut c, "alice", &["carol", "dave", "erin"], 10).unwrap();
    for u in ["carol", "dave", "erin"] {
        let p = c.participant(u).unwrap();
        assert_eq!((p.status, p.invited_at), (S::Invited, at(10)), "{u}");
        assert_eq!(p.decline_reason, None, "{u}");
    }
    assert_eq!(rung(&out).len(), 3);
    assert_eq!(ring_timer(&out), Some(at(55)));
}

#[test]
fn a_one_to_one_that_rings_a_third_person_becomes_a_group_call() {
    let mut c = one_to_one();
    join(&mut c, "bob", 1);
    let out = invite(&mut c, "bob", &["carol"], 5).unwrap();
    assert_eq!(
        names(&out.events),
        ["participant_invited", "call_updated", "incoming_call"]
    );
    assert!(c.is_group_call);
    assert_eq!(c.max_participants, 16);
    match &out.events[1].kind {
        EventKind::CallUpdated { call } => {
            assert!(call.is_group_call);
            assert_eq!(call.seq, c.seq);
        }
        other => panic!("{other:?}"),
    }
    // Now a group call: bob leaving no longer ends it.
    c.leave(&user("bob"), LeftReason::Left, at(6)).unwrap();
    assert!(c.is_live());
}

#[test]
fn a_busy_invitee_is_declined_busy_and_not_rung() {
    let mut c = busy_group();
    let mut inv = invitation(&["erin", "frank"]);
    inv.busy.insert("frank".to_owned());
    let out = c.invite(&user("alice"), &inv, at(5)).unwrap();
    assert_eq!(
        names(&out.events),
        [
            "participant_invited",
            "participant_invited",
            "incoming_call"
        ]
    );
    let frank = c.participant("frank").unwrap();
    assert_eq!(frank.status, S::Declined);
    assert_eq!(frank.decline_reason.as_deref(), Some("busy"));
    assert_eq!(rung(&out), [("erin".to_owned(), at(50))]);
}

#[test]
fn a_roster_never_grows_beyond_the_invitee_limit() {
    let mut c = busy_group();
    let mut inv = invitation(&["erin", "frank"]);
    inv.max_invitees = 4; // bob, carol, dave + one more
    let before = c.clone();
    match c.invite(&user("alice"), &inv, at(5)) {
        Err(DomainError::Validation(v)) => assert_eq!(v.field, "userIds"),
        other => panic!("{other:?}"),
    }
    assert_eq!(c, before);
    inv.user_ids.pop();
    assert!(c.invite(&user("alice"), &inv, at(5)).is_ok());
}

#[test]
fn an_invitation_must_name_unique_other_users() {
    let mut c = busy_group();
    for users in [vec![], vec!["erin", "erin"], vec!["alice"], vec![""]] {
        match invite(&mut c, "alice", &users, 5) {
            Err(DomainError::Validation(v)) => assert_eq!(v.field, "userIds", "{users:?}"),
            other => panic!("{users:?}: {other:?}"),
        }
    }
}

#[test]
fn nobody_can_be_invited_into_an_ended_call() {
    let mut c = busy_group();
    c.end(&user("alice"), at(5)).unwrap();
    assert_eq!(
        invite(&mut c, "alice", &["erin"], 6),
        Err(DomainError::CallEnded)
    );
}

#[test]
fn a_ringing_group_call_rings_late_invitees_for_their_own_full_timeout() {
    let mut c = group(&["bob"]);
    let out = invite(&mut c, "alice", &["carol"], 40).unwrap();
    assert_eq!(ring_timer(&out), Some(at(45)));
    // The first deadline: bob is missed, carol keeps ringing, the call goes on.
    let out = c.ring_timeout(at(45));
    assert_eq!(status(&c, "bob"), Some(S::Missed));
    assert_eq!(status(&c, "carol"), Some(S::Invited));
    assert!(c.is_live());
    assert_eq!(ring_timer(&out), Some(at(85)));
    assert_eq!(ended(&out), None);
    // Carol's deadline: nobody ever answered, the call ends missed.
    let out = c.ring_timeout(at(85));
    assert_eq!(status(&c, "carol"), Some(S::Missed));
    assert_eq!(ended(&out), Some((EndReason::Missed, None)));
}

#[test]
fn a_ring_timer_that_fires_before_anyone_is_due_changes_nothing() {
    let mut c = group(&["bob"]);
    invite(&mut c, "alice", &["carol"], 40).unwrap();
    c.ring_timeout(at(45));
    let before = c.clone();
    let out = c.ring_timeout(at(60));
    assert!(out.events.is_empty());
    assert_eq!(c.participants, before.participants);
    assert_eq!(ring_timer(&out), Some(at(85)));
}

// ----- remove -----

/// Every status a removed user may be in, for both kinds of call: they end `left` (reason
/// `removed`), lose sight of the call, and stop ringing if they were rung.
#[test]
fn the_host_removes_someone_in_any_status_from_either_kind_of_call() {
    for kind_group in [false, true] {
        for target in [
            S::Invited,
            S::Ringing,
            S::Joined,
            S::Left,
            S::Declined,
            S::Missed,
        ] {
            if !kind_group && target == S::Left {
                // A 1:1 ends when its callee leaves: nobody is left to remove.
                continue;
            }
            let mut c = if kind_group {
                group(&["bob", "carol"])
            } else {
                one_to_one()
            };
            if kind_group {
                join(&mut c, "carol", 1);
            }
            match target {
                S::Invited => {}
                S::Ringing | S::Declined | S::Missed => {
                    c.set_status(&user("bob"), target, None, at(2)).unwrap();
                }
                S::Joined => {
                    join(&mut c, "bob", 2);
                }
                S::Left => {
                    join(&mut c, "bob", 2);
                    c.leave(&user("bob"), LeftReason::Left, at(3)).unwrap();
                }
            }
            if !c.is_live() {
                // A 1:1 callee declining or missing ends it.
                assert_eq!(
                    c.remove(&user("alice"), "bob", at(4)),
                    Err(DomainError::CallEnded)
                );
                continue;
            }
            let cell = format!("group={kind_group} bob {target:?}");
            let out = c.remove(&user("alice"), "bob", at(4)).expect(&cell);
            let left = out
                .events
                .iter()
                .find(|e| e.name() == "participant_left")
                .expect(&cell);
            assert!(
                matches!(&left.kind, EventKind::ParticipantLeft { user_id, reason: LeftReason::Removed } if user_id == "bob"),
                "{cell}"
            );
            let bob = c.participant("bob").unwrap();
            assert_eq!(bob.status, S::Left, "{cell}");
            assert!(bob.is_removed, "{cell}");
            assert!(!c.is_visible_to("bob", true), "{cell}");
            let stopped_ringing = out.events.iter().any(|e| {
                matches!(
                    e.kind,
                    EventKind::IncomingCallCancelled {
                        reason: CancelReason::Cancelled
                    }
                ) && e.audiences == [Audience::User("bob".into())]
            });
            assert_eq!(stopped_ringing, target.is_pending(), "{cell}");
            // A 1:1 is over once its only callee is removed.
            assert_eq!(c.is_live(), kind_group, "{cell}");
            if let Some((_, by)) = ended(&out) {
                assert_eq!(by.as_deref(), Some("alice"), "{cell}");
                // A removed user hears nothing more of the call, not even that it ended.
                let to_bob = out
                    .events
                    .iter()
                    .filter(|e| e.name() == "call_ended")
                    .any(|e| e.audiences.contains(&Audience::User("bob".into())));
                assert!(!to_bob, "{cell}");
            }
        }
    }
}

#[test]
fn a_removed_user_cannot_rejoin_follow_or_act_until_invited_again() {
    let mut c = busy_group();
    c.remove(&user("alice"), "bob", at(5)).unwrap();
    let before = c.clone();
    assert_eq!(
        c.join(&user("bob"), &MediaPatch::default(), at(6)),
        Err(DomainError::NotFound)
    );
    // Not even as a member of the room.
    assert_eq!(
        c.join(&Actor::new("bob", true), &MediaPatch::default(), at(6)),
        Err(DomainError::NotFound)
    );
    assert_eq!(
        c.set_status(&user("bob"), S::Declined, None, at(6)),
        Err(DomainError::NotFound)
    );
    assert_eq!(c, before);
    // Invited again: rung, visible, may join.
    let out = invite(&mut c, "carol", &["bob"], 7).unwrap();
    assert_eq!(rung(&out).len(), 1);
    assert!(!c.participant("bob").unwrap().is_removed);
    join(&mut c, "bob", 8);
    assert_eq!(status(&c, "bob"), Some(S::Joined));
}

#[test]
fn only_the_host_removes_and_never_themselves_or_a_stranger() {
    let mut c = busy_group();
    let before = c.clone();
    assert_eq!(
        c.remove(&user("bob"), "carol", at(5)),
        Err(DomainError::Forbidden)
    );
    for target in ["alice", "zed"] {
        match c.remove(&user("alice"), target, at(5)) {
            Err(DomainError::Validation(v)) => assert_eq!(v.field, "userId"),
            other => panic!("{target}: {other:?}"),
        }
    }
    assert_eq!(c, before);
}

#[test]
fn removing_someone_twice_is_a_no_op() {
    let mut c = busy_group();
    c.remove(&user("alice"), "bob", at(5)).unwrap();
    let before = c.clone();
    let out = c.remove(&user("alice"), "bob", at(6)).unwrap();
    assert!(out.events.is_empty());
    assert_eq!(c, before);
}

#[test]
fn removing_a_disconnected_participant_stops_their_grace_timer() {
    let mut c = busy_group();
    c.presence("bob", false, at(5), &timing());
    let out = c.remove(&user("alice"), "bob", at(6)).unwrap();
    assert!(cancels(&out, TimerKind::DisconnectGrace));
}

#[test]
fn removing_the_last_invitee_of_an_unanswered_group_call_cancels_it() {
    let mut c = group(&["bob"]);
    let out = c.remove(&user("alice"), "bob", at(5)).unwrap();
    assert_eq!(
        ended(&out),
        Some((EndReason::Cancelled, Some("alice".into())))
    );
}

// ----- host hand-over -----

#[test]
fn when_the_host_leaves_the_longest_joined_participant_becomes_host() {
    let mut c = group(&["bob", "carol", "dave"]);
    join(&mut c, "carol", 1);
    join(&mut c, "bob", 2);
    let out = c.leave(&user("alice"), LeftReason::Left, at(3)).unwrap();
    assert_eq!(names(&out.events), ["participant_left", "host_changed"]);
    assert!(
        matches!(&out.events[1].kind, EventKind::HostChanged { user_id } if user_id == "carol")
    );
    assert_eq!(c.host().map(|p| p.user_id.as_str()), Some("carol"));
    assert_eq!(c.participant("alice").unwrap().role, Role::Participant);
    // The new host runs the call: removes, invites, ends.
    c.remove(&user("carol"), "bob", at(4)).unwrap();
    assert_eq!(
        c.remove(&user("alice"), "dave", at(4)),
        Err(DomainError::Forbidden)
    );
    let out = c.end(&user("carol"), at(5)).unwrap();
    assert_eq!(
        ended(&out),
        Some((EndReason::Completed, Some("carol".into())))
    );
}

#[test]
fn a_host_whose_connection_is_lost_hands_over_too() {
    let mut c = busy_group();
    c.presence("alice", false, at(3), &timing());
    let out = c.disconnect_grace_expired("alice", at(33));
    assert!(names(&out.events).contains(&"host_changed"));
    assert_eq!(c.host().map(|p| p.user_id.as_str()), Some("bob"));
}

#[test]
fn a_host_rejoining_comes_back_as_a_participant() {
    let mut c = busy_group();
    c.leave(&user("alice"), LeftReason::Left, at(3)).unwrap();
    join(&mut c, "alice", 4);
    assert_eq!(c.participant("alice").unwrap().role, Role::Participant);
    assert_eq!(c.end(&user("alice"), at(5)), Err(DomainError::Forbidden));
}

// ----- big groups -----

#[test]
fn a_group_may_ring_more_people_than_fit_but_joins_stop_at_capacity() {
    let invitees: Vec<String> = (1..=29).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = invitees.iter().map(String::as_str).collect();
    let (mut c, out) = start_with(new_call(true, &refs, 16), &timing());
    assert_eq!(rung(&out).len(), 29);
    for (i, u) in refs.iter().enumerate() {
        let got = c.join(&user(u), &MediaPatch::default(), at(1));
        if i < 15 {
            assert!(got.is_ok(), "{u}");
        } else {
            assert_eq!(got, Err(DomainError::CallFull), "{u}");
        }
    }
    assert_eq!(c.joined_count(), 16);
}

// ----- per-call ring timeout -----

#[test]
fn a_caller_may_ring_for_less_than_the_configured_timeout() {
    let mut new = new_call(true, &["bob"], 4);
    new.ring_timeout = Some(Duration::from_secs(10));
    let (c, out) = start_with(new, &timing());
    assert_eq!(c.ring_timeout_seconds, 10);
    assert_eq!(ring_timer(&out), Some(at(10)));
    assert_eq!(rung(&out), [("bob".to_owned(), at(10))]);
}

#[test]
fn a_ring_timeout_outside_five_seconds_to_the_configured_one_is_refused() {
    for secs in [0, 4, 46, 3600] {
        let mut new = new_call(true, &["bob"], 4);
        new.ring_timeout = Some(Duration::from_secs(secs));
        match Call::initiate(new, &BTreeSet::new(), Uuid::nil(), T0, &timing()) {
            Err(DomainError::Validation(v)) => assert_eq!(v.field, "ringTimeoutSeconds"),
            other => panic!("{secs}: {other:?}"),
        }
    }
}

// ----- alone timeout -----

#[test]
fn a_group_call_whose_last_other_participant_left_ends_after_the_alone_timeout() {
    let mut c = group(&["bob"]);
    join(&mut c, "bob", 1);
    let out = c.leave(&user("bob"), LeftReason::Left, at(10)).unwrap();
    assert!(c.is_live());
    let due = out.timers.iter().find_map(|t| match t {
        TimerChange::Schedule {
            kind: TimerKind::AloneTimeout,
            due_at,
            ..
        } => Some(*due_at),
        _ => None,
    });
    assert_eq!(due, Some(at(130)));
    let out = c.fire_timer(TimerKind::AloneTimeout, None, at(130));
    assert_eq!(ended(&out), Some((EndReason::Completed, None)));
}

#[test]
fn someone_joining_the_one_left_alone_stops_the_alone_timer() {
    let mut c = group(&["bob", "carol"]);
    join(&mut c, "bob", 1);
    c.leave(&user("bob"), LeftReason::Left, at(10)).unwrap();
    let out = join(&mut c, "carol", 20);
    assert!(cancels(&out, TimerKind::AloneTimeout));
    // Had the cancellation been lost, the timer would still find company and do nothing.
    let out = c.fire_timer(TimerKind::AloneTimeout, None, at(130));
    assert!(out.events.is_empty());
    assert!(c.is_live());
}

#[test]
fn a_host_left_alone_after_removing_everyone_gets_the_alone_timeout_too() {
    let mut c = group(&["bob"]);
    join(&mut c, "bob", 1);
    let out = c.remove(&user("alice"), "bob", at(5)).unwrap();
    assert!(schedules(&out, TimerKind::AloneTimeout));
}

#[test]
fn without_an_alone_timeout_a_lone_participant_stays_as_long_as_they_like() {
    let t = Timing {
        alone_timeout: None,
        media_grace: None,
        ..timing()
    };
    let (mut c, _) = start_with(new_call(true, &["bob"], 4), &t);
    join(&mut c, "bob", 1);
    let out = c.leave(&user("bob"), LeftReason::Left, at(10)).unwrap();
    assert!(!schedules(&out, TimerKind::AloneTimeout));
    let out = join(&mut c, "bob", 11);
    assert!(!cancels(&out, TimerKind::AloneTimeout));
}

#[test]
fn the_alone_timer_is_not_started_before_anyone_answered() {
    let mut c = group(&["bob", "carol"]);
    let out = c
        .set_status(&user("bob"), S::Declined, None, at(1))
        .unwrap();
    assert!(!schedules(&out, TimerKind::AloneTimeout));
    // And a one-to-one never has one: it ends when either side leaves.
    let mut c = one_to_one();
    join(&mut c, "bob", 1);
    let out = c.leave(&user("bob"), LeftReason::Left, at(2)).unwrap();
    assert!(!schedules(&out, TimerKind::AloneTimeout));
    assert!(!c.is_live());
}

#[test]
fn every_new_event_has_its_wire_name_and_camel_case_fields() {
    let mut c = busy_group();
    let out = invite(&mut c, "alice", &["erin"], 5).unwrap();
    let v = out.events[0].payload();
    assert_eq!(v["participant"]["userId"], "erin");
    assert_eq!(v["seq"], c.seq);
    let out = c.leave(&user("alice"), LeftReason::Left, at(6)).unwrap();
    let v = out.events[1].payload();
    assert_eq!(out.events[1].name(), "host_changed");
    assert_eq!(v["userId"], "bob");
    let mut c = one_to_one();
    join(&mut c, "bob", 1);
    let out = invite(&mut c, "alice", &["carol"], 2).unwrap();
    let v = out.events[1].payload();
    assert_eq!(v["call"]["isGroupCall"], true);
    assert_eq!(v["call"]["ringTimeoutSeconds"], 45);
    assert_eq!(c.status, CallStatus::Active);
}

/// Inviting someone in every status they may have, in both kinds of call: those still rung or
/// in the call are left alone; everyone else is rung again.
#[test]
fn an_invitation_rings_exactly_those_not_already_ringing_or_in_the_call() {
    #[derive(Debug, Clone, Copy)]
    enum Target {
        Status(S),
        Removed,
        Stranger,
    }
    let targets = [
        Target::Status(S::Invited),
        Target::Status(S::Ringing),
        Target::Status(S::Joined),
        Target::Status(S::Left),
        Target::Status(S::Declined),
        Target::Status(S::Missed),
        Target::Removed,
        Target::Stranger,
    ];
    for group_call in [false, true] {
        for target in targets {
            let cell = format!("group={group_call} target {target:?}");
            // alice hosts; carol answered (so the call lives whatever bob does); bob is the target.
            let mut c = if group_call {
                group(&["bob", "carol"])
            } else {
                one_to_one()
            };
            if group_call {
                join(&mut c, "carol", 1);
            }
            let who = match target {
                Target::Stranger => "zoe",
                _ => "bob",
            };
            match target {
                Target::Status(S::Invited) | Target::Stranger => {}
                Target::Status(S::Joined) => {
                    join(&mut c, "bob", 2);
                }
                Target::Status(S::Left) => {
                    join(&mut c, "bob", 2);
                    c.leave(&user("bob"), LeftReason::Left, at(3)).unwrap();
                }
                Target::Status(s) => {
                    c.set_status(&user("bob"), s, None, at(2)).unwrap();
                }
                Target::Removed => {
                    c.remove(&user("alice"), "bob", at(3)).unwrap();
                }
            }
            if !c.is_live() {
                // A 1:1 ends when its only callee leaves, declines or misses it, or is removed.
                assert_eq!(
                    invite(&mut c, "alice", &[who], 5),
                    Err(DomainError::CallEnded),
                    "{cell}"
                );
                continue;
            }
            let before = c.clone();
            let out = invite(&mut c, "alice", &[who], 5).expect(&cell);
            let expect_ring =
                !matches!(target, Target::Status(S::Invited | S::Ringing | S::Joined));
            if expect_ring {
                assert_eq!(rung(&out), [(who.to_owned(), at(50))], "{cell}");
                let p = c.participant(who).unwrap();
                assert_eq!((p.status, p.is_removed), (S::Invited, false), "{cell}");
                assert!(c.is_visible_to(who, false), "{cell}");
                assert!(
                    names(&out.events).contains(&"participant_invited"),
                    "{cell}"
                );
                assert_eq!(
                    names(&out.events).contains(&"call_updated"),
                    !group_call,
                    "{cell}"
                );
            } else {
                assert!(out.events.is_empty(), "{cell}");
                assert_eq!(c, before, "{cell}");
            }
        }
    }
}
