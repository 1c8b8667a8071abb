//! Every participant status × every action, for 1:1 and group calls, for the host, invitees,
//! room members and strangers: the table of CONTRACT section 4, checked exhaustively.
//!
//! Each row drives a fresh call into the wanted state through real commands (never by poking
//! fields), applies one action and compares the result with the expectation. Failures are
//! collected so one run shows every wrong cell.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use calls_domain::{
    Actor, Call, CallStatus, CallType, DomainError, Invitation, LeftReason, MediaPatch, NewCall,
    ParticipantStatus as S, Timing,
};
use time::OffsetDateTime;
use time::macros::datetime;
use uuid::Uuid;

const T0: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    OneToOne,
    Group,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Host,
    Guest,
    /// A room member who was not invited (group calls only).
    Member,
    /// Neither invited nor a room member.
    Stranger,
}

impl Who {
    fn actor(self) -> Actor {
        match self {
            Who::Host => Actor::new("host", true),
            Who::Guest => Actor::new("guest", true),
            Who::Member => Actor::new("member", true),
            // A stranger claiming room membership still must not see a 1:1.
            Who::Stranger => Actor::new("stranger", false),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Join,
    SetStatus(S),
    Leave,
    Mute,
    End,
    /// Ring "newbie" into the call.
    Invite,
    /// Remove the other side: the host removes "guest", anyone else tries to remove "host".
    Remove,
}

const ACTIONS: [Action; 12] = [
    Action::Join,
    Action::SetStatus(S::Invited),
    Action::SetStatus(S::Ringing),
    Action::SetStatus(S::Joined),
    Action::SetStatus(S::Left),
    Action::SetStatus(S::Declined),
    Action::SetStatus(S::Missed),
    Action::Leave,
    Action::Mute,
    Action::End,
    Action::Invite,
    Action::Remove,
];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Succeeds with events; the actor ends in this status and the call in that one.
    Ok(S, CallStatus),
    /// Succeeds without any change or event.
    Noop,
    /// Fails with this error and changes nothing.
    Err(DomainError),
}

use Expect::{Err as E, Noop, Ok as K};
const IT: Expect = E(DomainError::InvalidTransition);
const NJ: Expect = E(DomainError::NotJoined);
const FB: Expect = E(DomainError::Forbidden);
const NF: Expect = E(DomainError::NotFound);
const RINGING: CallStatus = CallStatus::Ringing;
const ACTIVE: CallStatus = CallStatus::Active;
const ENDED: CallStatus = CallStatus::Ended;

fn timing() -> Timing {
    Timing::default()
}

fn new_call(kind: Kind) -> Call {
    let invitees = match kind {
        Kind::OneToOne => vec!["guest".to_owned()],
        // "other" stays invited so the group call lives on whatever "guest" does.
        Kind::Group => vec!["guest".to_owned(), "other".to_owned()],
    };
    let new = NewCall {
        chat_room_id: "room-1".into(),
        call_type: CallType::Video,
        is_group_call: kind == Kind::Group,
        initiator_id: "host".into(),
        invitee_ids: invitees,
        max_participants: 8,
        ring_timeout: None,
        initiator_profile: Default::default(),
    };
    Call::initiate(new, &BTreeSet::new(), Uuid::nil(), T0, &timing())
        .expect("initiate")
        .0
}

fn ok<T>(r: Result<T, DomainError>) -> T {
    r.expect("setup step")
}

/// A call in which `who` has `status` (`None`: not a participant).
fn arrange(kind: Kind, who: Who, status: Option<S>) -> Call {
    let mut c = new_call(kind);
    let t = T0 + time::Duration::seconds(1);
    let a = who.actor();
    let none = MediaPatch::default();
    match (who, status) {
        (_, None) | (Who::Host, Some(S::Joined)) | (Who::Guest, Some(S::Invited)) => {}
        (Who::Guest, Some(S::Ringing)) => {
            ok(c.set_status(&a, S::Ringing, None, t));
        }
        (Who::Guest | Who::Member, Some(S::Joined)) => {
            ok(c.join(&a, &none, t));
        }
        (Who::Guest | Who::Member, Some(S::Left)) => {
            ok(c.join(&a, &none, t));
            ok(c.leave(&a, LeftReason::Left, t));
        }
        (Who::Guest, Some(S::Declined)) => {
            ok(c.set_status(&a, S::Declined, None, t));
        }
        (Who::Guest, Some(S::Missed)) => {
            ok(c.set_status(&a, S::Missed, None, t));
        }
        (Who::Host, Some(S::Left)) => {
            // Someone else must stay so the group call lives on.
            ok(c.join(&Who::Guest.actor(), &none, t));
            ok(c.leave(&a, LeftReason::Left, t));
        }
        other => panic!("unreachable arrangement {other:?}"),
    }
    assert!(
        c.is_live(),
        "arrangement {kind:?} {who:?} {status:?} ended the call"
    );
    if let Some(s) = status {
        assert_eq!(c.participant(&a.user_id).map(|p| p.status), Some(s));
    }
    c
}

fn act(c: &mut Call, who: Who, action: Action) -> Result<usize, DomainError> {
    let a = who.actor();
    let t = T0 + time::Duration::seconds(2);
    let out = match action {
        Action::Join => c.join(&a, &MediaPatch::default(), t),
        Action::SetStatus(s) => c.set_status(&a, s, None, t),
        Action::Leave => c.leave(&a, LeftReason::Left, t),
        Action::Mute => c.update_media(
            &a,
            &MediaPatch {
                is_mic_muted: Some(true),
                ..MediaPatch::default()
            },
            t,
        ),
        Action::End => c.end(&a, t),
        Action::Invite => c.invite(
            &a,
            &Invitation {
                user_ids: vec!["newbie".to_owned()],
                busy: BTreeSet::new(),
                from: Default::default(),
                max_invitees: 100,
                group_capacity: 16,
            },
            t,
        ),
        Action::Remove => {
            let target = if who == Who::Host { "guest" } else { "host" };
            c.remove(&a, target, t)
        }
    }?;
    Ok(out.events.len())
}

/// Runs one row: `who` in `status`, every action, against `expected` (same order as
/// [`ACTIONS`]). Returns the mismatches.
fn check_row(kind: Kind, who: Who, status: Option<S>, expected: [Expect; 12]) -> Vec<String> {
    let mut failures = Vec::new();
    for (action, want) in ACTIONS.iter().zip(expected) {
        let mut call = arrange(kind, who, status);
        let before = call.clone();
        let got = act(&mut call, who, *action);
        let actor_status = call.participant(&who.actor().user_id).map(|p| p.status);
        let cell = format!("{kind:?} {who:?} in {status:?}, {action:?}");
        match (&want, got) {
            (Expect::Ok(s, cs), Ok(n)) => {
                if n == 0 {
                    failures.push(format!("{cell}: expected events, got none"));
                }
                if actor_status != Some(*s) || call.status != *cs {
                    failures.push(format!(
                        "{cell}: expected {s:?}/{cs:?}, got {actor_status:?}/{:?}",
                        call.status
                    ));
                }
            }
            (Expect::Noop, Ok(n)) => {
                if n != 0 || call != before {
                    failures.push(format!("{cell}: expected a no-op, got {n} events"));
                }
            }
            (Expect::Err(e), Err(got)) => {
                if *e != got {
                    failures.push(format!("{cell}: expected {e:?}, got {got:?}"));
                }
                if call != before {
                    failures.push(format!("{cell}: failed command changed the call"));
                }
            }
            (want, got) => failures.push(format!("{cell}: expected {want:?}, got {got:?}")),
        }
    }
    failures
}

fn assert_rows(rows: Vec<(Kind, Who, Option<S>, [Expect; 12])>) {
    let failures: Vec<String> = rows
        .into_iter()
        .flat_map(|(k, w, s, e)| check_row(k, w, s, e))
        .collect();
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

//            Join            →invited →ringing          →joined          →left            →declined          →missed          Leave            Mute             End     Invite   Remove

#[test]
#[rustfmt::skip]
fn a_group_invitee_in_every_status_can_do_exactly_what_the_contract_allows() {
    use Kind::Group;
    use Who::Guest;
    assert_rows(vec![
        (Group, Guest, Some(S::Invited), [K(S::Joined, ACTIVE), IT, K(S::Ringing, RINGING), K(S::Joined, ACTIVE), IT, K(S::Declined, RINGING), K(S::Missed, RINGING), IT, NJ, FB, FB, FB]),
        (Group, Guest, Some(S::Ringing), [K(S::Joined, ACTIVE), IT, Noop, K(S::Joined, ACTIVE), IT, K(S::Declined, RINGING), K(S::Missed, RINGING), IT, NJ, FB, FB, FB]),
        (Group, Guest, Some(S::Joined), [Noop, IT, IT, Noop, K(S::Left, ACTIVE), IT, IT, K(S::Left, ACTIVE), K(S::Joined, ACTIVE), FB, K(S::Joined, ACTIVE), FB]),
        (Group, Guest, Some(S::Left), [K(S::Joined, ACTIVE), IT, IT, K(S::Joined, ACTIVE), Noop, IT, IT, Noop, NJ, FB, FB, FB]),
        (Group, Guest, Some(S::Declined), [K(S::Joined, ACTIVE), IT, IT, K(S::Joined, ACTIVE), IT, Noop, IT, IT, NJ, FB, FB, FB]),
        (Group, Guest, Some(S::Missed), [K(S::Joined, ACTIVE), IT, IT, K(S::Joined, ACTIVE), IT, IT, Noop, IT, NJ, FB, FB, FB]),
    ]);
}

#[test]
#[rustfmt::skip]
fn a_group_host_can_leave_rejoin_end_invite_and_remove_but_never_ring_or_decline() {
    use Kind::Group;
    use Who::Host;
    assert_rows(vec![
        // Alone in a ringing call: leaving ends it (cancelled), so the host ends `left`.
        (Group, Host, Some(S::Joined), [Noop, IT, IT, Noop, K(S::Left, ENDED), IT, IT, K(S::Left, ENDED), K(S::Joined, RINGING), K(S::Left, ENDED), K(S::Joined, RINGING), K(S::Joined, RINGING)]),
        // Left while the guest stays: the guest became host (the only one joined), so the
        // former host may rejoin but no longer end, invite or remove.
        (Group, Host, Some(S::Left), [K(S::Joined, ACTIVE), IT, IT, K(S::Joined, ACTIVE), Noop, IT, IT, Noop, NJ, FB, FB, FB]),
    ]);
}

#[test]
#[rustfmt::skip]
fn a_room_member_who_was_not_invited_can_join_a_group_call_and_nothing_more() {
    use Kind::Group;
    use Who::Member;
    assert_rows(vec![
        (Group, Member, None, [K(S::Joined, ACTIVE), IT, IT, K(S::Joined, ACTIVE), IT, IT, IT, IT, NJ, FB, FB, FB]),
        (Group, Member, Some(S::Joined), [Noop, IT, IT, Noop, K(S::Left, ACTIVE), IT, IT, K(S::Left, ACTIVE), K(S::Joined, ACTIVE), FB, K(S::Joined, ACTIVE), FB]),
        (Group, Member, Some(S::Left), [K(S::Joined, ACTIVE), IT, IT, K(S::Joined, ACTIVE), Noop, IT, IT, Noop, NJ, FB, FB, FB]),
    ]);
}

#[test]
#[rustfmt::skip]
fn a_one_to_one_callee_can_answer_ring_decline_hang_up_and_once_joined_invite() {
    use Kind::OneToOne;
    use Who::Guest;
    assert_rows(vec![
        (OneToOne, Guest, Some(S::Invited), [K(S::Joined, ACTIVE), IT, K(S::Ringing, RINGING), K(S::Joined, ACTIVE), IT, K(S::Declined, ENDED), K(S::Missed, ENDED), IT, NJ, K(S::Declined, ENDED), FB, FB]),
        (OneToOne, Guest, Some(S::Ringing), [K(S::Joined, ACTIVE), IT, Noop, K(S::Joined, ACTIVE), IT, K(S::Declined, ENDED), K(S::Missed, ENDED), IT, NJ, K(S::Declined, ENDED), FB, FB]),
        (OneToOne, Guest, Some(S::Joined), [Noop, IT, IT, Noop, K(S::Left, ENDED), IT, IT, K(S::Left, ENDED), K(S::Joined, ACTIVE), K(S::Left, ENDED), K(S::Joined, ACTIVE), FB]),
    ]);
}

#[test]
#[rustfmt::skip]
fn a_one_to_one_caller_can_only_hang_up_change_media_invite_or_remove_the_callee() {
    use Kind::OneToOne;
    use Who::Host;
    assert_rows(vec![
        (OneToOne, Host, Some(S::Joined), [Noop, IT, IT, Noop, K(S::Left, ENDED), IT, IT, K(S::Left, ENDED), K(S::Joined, RINGING), K(S::Left, ENDED), K(S::Joined, RINGING), K(S::Left, ENDED)]),
    ]);
}

#[test]
fn strangers_get_not_found_for_everything_and_room_members_cannot_see_a_one_to_one() {
    assert_rows(vec![
        (
            Kind::OneToOne,
            Who::Stranger,
            None,
            [NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF],
        ),
        (
            Kind::Group,
            Who::Stranger,
            None,
            [NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF, NF],
        ),
    ]);
    // Room membership does not open a 1:1 to a third user.
    let mut c = new_call(Kind::OneToOne);
    let member = Actor::new("member", true);
    assert_eq!(
        c.join(&member, &MediaPatch::default(), T0),
        Err(DomainError::NotFound)
    );
    assert_eq!(c.end(&member, T0), Err(DomainError::NotFound));
}

#[test]
fn every_action_on_an_ended_call_fails_with_call_ended_for_those_who_may_see_it() {
    for kind in [Kind::OneToOne, Kind::Group] {
        let mut ended = new_call(kind);
        ok(ended.end(&Who::Host.actor(), T0));
        assert_eq!(ended.status, CallStatus::Ended);
        let mut visible = vec![Who::Host, Who::Guest];
        if kind == Kind::Group {
            visible.push(Who::Member);
        }
        for who in visible {
            for action in ACTIONS {
                let mut c = ended.clone();
                let got = act(&mut c, who, action);
                assert_eq!(
                    got,
                    Err(DomainError::CallEnded),
                    "{kind:?} {who:?} {action:?}"
                );
                assert_eq!(c, ended);
            }
        }
        for action in ACTIONS {
            let mut c = ended.clone();
            assert_eq!(
                act(&mut c, Who::Stranger, action),
                Err(DomainError::NotFound)
            );
        }
    }
}
