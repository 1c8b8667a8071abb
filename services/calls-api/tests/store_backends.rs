//! The store, against both backends: every test body below runs once on SQLite (a temporary
//! file) and once on PostgreSQL (a fresh database, dropped afterwards), through the
//! `backend_tests!` macro at the bottom.
//!
//! PostgreSQL is reached at `CALLS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`, the maintenance database used to create and
//! drop the per-test databases).

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use calls_api::domain::{
    Actor, Audience, Call, CallId, CallStatus, CallType, ChannelNotice, DomainError, EndReason,
    Invitation, LeftReason, MediaPatch, NewCall, ParticipantStatus, TimerKind, Timing,
};
use calls_api::store::{Backend, Initiated, Store, StoreError};
use futures::FutureExt;
use sqlx::Connection;
use time::OffsetDateTime;
use time::macros::datetime;
use tokio::sync::Barrier;

// ----- harness -----

const T0: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);

fn at(secs: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(secs)
}

fn timing() -> Timing {
    Timing {
        ring_timeout: Duration::from_secs(45),
        disconnect_grace: Duration::from_secs(30),
        max_duration: Some(Duration::from_secs(3600)),
        alone_timeout: Some(Duration::from_secs(120)),
        media_grace: None,
    }
}

fn admin_url() -> String {
    std::env::var("CALLS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A database of its own for one test.
#[derive(Clone)]
struct TestDb {
    url: String,
    cleanup: Cleanup,
}

#[derive(Clone)]
enum Cleanup {
    Postgres { name: String },
    Sqlite { path: PathBuf },
}

impl TestDb {
    async fn create(backend: Backend) -> TestDb {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        match backend {
            Backend::Postgres => {
                let name = format!("calls_test_{tag}");
                let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .unwrap();
                admin.close().await.ok();
                let admin = admin_url();
                let (base, _) = admin.rsplit_once('/').unwrap();
                TestDb {
                    url: format!("{base}/{name}"),
                    cleanup: Cleanup::Postgres { name },
                }
            }
            Backend::Sqlite => {
                let path = std::env::temp_dir().join(format!("calls_test_{tag}.db"));
                TestDb {
                    url: format!("sqlite://{}", path.display()),
                    cleanup: Cleanup::Sqlite { path },
                }
            }
        }
    }

    /// A new store (its own pool: a replica of its own), migrated.
    async fn store(&self) -> Store {
        let store = Store::connect(&self.url, 8).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    async fn destroy(&self) {
        match &self.cleanup {
            Cleanup::Postgres { name } => {
                let mut admin = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .unwrap();
                admin.close().await.ok();
            }
            Cleanup::Sqlite { path } => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    std::fs::remove_file(p).ok();
                }
            }
        }
    }
}

/// Runs `test` on a fresh database of `backend` and drops the database afterwards, also when
/// the test fails.
async fn with_db<F, Fut>(backend: Backend, test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = TestDb::create(backend).await;
    let result = AssertUnwindSafe(test(db.clone())).catch_unwind().await;
    db.destroy().await;
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
}

macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::with_db(calls_api::store::Backend::Sqlite, super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::with_db(calls_api::store::Backend::Postgres, super::$name).await;
                }
            )*
        }
    };
}

// ----- helpers -----

fn new_call(room: &str, group: bool, from: &str, to: &[&str]) -> NewCall {
    NewCall {
        chat_room_id: room.into(),
        call_type: CallType::Video,
        is_group_call: group,
        initiator_id: from.into(),
        invitee_ids: to.iter().map(|s| s.to_string()).collect(),
        max_participants: 8,
        ring_timeout: None,
        initiator_profile: Default::default(),
    }
}

async fn create(store: &Store, new: NewCall, now: OffsetDateTime) -> Call {
    match store
        .initiate(new, now, &timing(), None, None, |_| true)
        .await
        .unwrap()
    {
        Initiated::Created { call, .. } => call,
        other => panic!("expected a new call, got {other:?}"),
    }
}

fn user(name: &str) -> Actor {
    Actor::new(name, true)
}

async fn join(store: &Store, id: CallId, name: &str, now: OffsetDateTime) -> Call {
    let actor = user(name);
    store
        .apply(id, move |c| c.join(&actor, &MediaPatch::default(), now))
        .await
        .unwrap()
        .0
}

// ----- tests -----

async fn migrations_apply_twice_and_the_database_answers_pings(db: TestDb) {
    let store = db.store().await;
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
    assert!(store.unpublished_events(10).await.unwrap().is_empty());
}

async fn an_initiated_call_reads_back_exactly_as_it_was_returned(db: TestDb) {
    let store = db.store().await;
    let result = store
        .initiate(
            new_call("room-1", true, "alice", &["bob", "carol"]),
            T0,
            &timing(),
            None,
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            |_| true,
        )
        .await
        .unwrap();
    let Initiated::Created { call, events } = result else {
        panic!("expected a new call");
    };
    assert_eq!(call.id.get_version_num(), 7);
    assert_eq!(store.get_call(call.id).await.unwrap(), Some(call.clone()));
    assert_eq!(
        store.active_call_in_room("room-1").await.unwrap(),
        Some(call.clone())
    );
    assert_eq!(store.active_call_in_room("room-2").await.unwrap(), None);

    let outbox = store.unpublished_events(10).await.unwrap();
    assert_eq!(outbox.len(), 2);
    for (row, (event, who)) in outbox.iter().zip(events.iter().zip(["bob", "carol"])) {
        assert_eq!(row.event, "incoming_call");
        assert_eq!(row.audience, Audience::User(who.into()));
        assert_eq!(row.seq, None);
        assert_eq!(row.call_id, call.id);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&row.payload).unwrap(),
            event.payload()
        );
        assert_eq!(
            row.trace_context.as_deref(),
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        );
    }
    // The ring timer (45 s) comes before the max duration (1 h).
    assert_eq!(store.next_timer_due().await.unwrap(), Some(at(45)));
}

async fn initiating_in_a_room_with_a_live_call_returns_it_to_those_who_may_see_it(db: TestDb) {
    let store = db.store().await;
    let first = create(&store, new_call("room-1", true, "alice", &["bob"]), T0).await;

    let again = store
        .initiate(
            new_call("room-1", true, "bob", &["alice"]),
            at(1),
            &timing(),
            None,
            None,
            |c| c.participant("bob").is_some(),
        )
        .await
        .unwrap();
    assert_eq!(
        again,
        Initiated::Existing {
            call: first.clone()
        }
    );

    let hidden = store
        .initiate(
            new_call("room-1", true, "mallory", &["alice"]),
            at(1),
            &timing(),
            None,
            None,
            |c| c.participant("mallory").is_some(),
        )
        .await
        .unwrap();
    assert_eq!(hidden, Initiated::AlreadyActiveHidden);

    // Once it ended, the room is free again.
    let alice = user("alice");
    store
        .apply(first.id, move |c| c.end(&alice, at(2)))
        .await
        .unwrap();
    let second = create(&store, new_call("room-1", true, "bob", &["alice"]), at(3)).await;
    assert_ne!(second.id, first.id);
}

async fn simultaneous_initiates_from_both_sides_of_a_one_to_one_yield_one_call(db: TestDb) {
    let (s1, s2) = (db.store().await, db.store().await);
    for round in 0..8 {
        // New people each round: the callers of earlier rounds are still in their (ringing)
        // calls, and so would be busy.
        let room = format!("glare-{round}");
        let (alice, bob) = (format!("alice-{round}"), format!("bob-{round}"));
        let barrier = Arc::new(Barrier::new(2));
        let tasks = [
            (s1.clone(), alice.clone(), bob.clone()),
            (s2.clone(), bob.clone(), alice.clone()),
        ]
        .map(|(store, from, to)| {
            let barrier = barrier.clone();
            let new = new_call(&room, false, &from, &[&to]);
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .initiate(new, at(round), &timing(), None, None, |_| true)
                    .await
                    .unwrap()
            })
        });
        let mut created = Vec::new();
        let mut existing = Vec::new();
        for t in tasks {
            match t.await.unwrap() {
                Initiated::Created { call, .. } => created.push(call),
                Initiated::Existing { call } => existing.push(call),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((created.len(), existing.len()), (1, 1), "round {round}");
        assert_eq!(created[0].id, existing[0].id);
        let in_room: Vec<_> = s1
            .calls_for_user(&alice, 100, None)
            .await
            .unwrap()
            .items
            .into_iter()
            .filter(|c| c.chat_room_id == room)
            .collect();
        assert_eq!(in_room.len(), 1);
    }
}

async fn a_repeated_idempotency_key_replays_the_first_response(db: TestDb) {
    let store = db.store().await;
    let init = |room: &str, from: &str, to: &str, key: Option<(&'static str, &'static str)>| {
        let store = store.clone();
        let new = new_call(room, true, from, &[to]);
        async move {
            store
                .initiate(new, T0, &timing(), key, None, |_| true)
                .await
                .unwrap()
        }
    };
    let Initiated::Created { call, .. } =
        init("room-1", "alice", "bob", Some(("alice", "k1"))).await
    else {
        panic!("expected a new call");
    };
    assert_eq!(
        init("room-1", "alice", "bob", Some(("alice", "k1"))).await,
        Initiated::Replayed {
            created: true,
            call: serde_json::from_value(serde_json::to_value(&call).unwrap()).unwrap()
        }
    );
    // Another key in the same room finds the call (200), and replays that answer.
    assert!(matches!(
        init("room-1", "alice", "bob", Some(("alice", "k2"))).await,
        Initiated::Existing { .. }
    ));
    assert!(matches!(
        init("room-1", "alice", "bob", Some(("alice", "k2"))).await,
        Initiated::Replayed { created: false, .. }
    ));
    // Keys belong to a user.
    assert!(matches!(
        init("room-2", "bob", "carol", Some(("bob", "k1"))).await,
        Initiated::Created { .. }
    ));

    // Concurrent retries with one key: one call, every other answer a replay of it.
    let s2 = db.store().await;
    let barrier = Arc::new(Barrier::new(6));
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let store = if i % 2 == 0 {
                store.clone()
            } else {
                s2.clone()
            };
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .initiate(
                        new_call("room-3", true, "dave", &["erin"]),
                        T0,
                        &timing(),
                        Some(("dave", "race")),
                        None,
                        |_| true,
                    )
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut ids = BTreeSet::new();
    let mut created = 0;
    for t in tasks {
        match t.await.unwrap() {
            Initiated::Created { call, .. } => {
                created += 1;
                ids.insert(call.id);
            }
            Initiated::Replayed {
                created: true,
                call,
            } => {
                ids.insert(call.id);
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 1);
    assert_eq!(ids.len(), 1);
    assert_eq!(store.purge_idempotency_keys(at(1)).await.unwrap(), 4);
}

async fn invitees_joined_in_another_live_call_are_busy(db: TestDb) {
    let store = db.store().await;
    let a = create(&store, new_call("room-a", false, "alice", &["bob"]), T0).await;
    join(&store, a.id, "bob", at(1)).await;

    let b = create(&store, new_call("room-b", false, "carol", &["bob"]), at(2)).await;
    assert_eq!(b.status, CallStatus::Ended);
    assert_eq!(b.end_reason, Some(EndReason::Busy));
    assert_eq!(
        b.participant("bob").unwrap().decline_reason.as_deref(),
        Some("busy")
    );
    // Ended at birth: the room is not held.
    assert_eq!(store.active_call_in_room("room-b").await.unwrap(), None);

    let c = create(
        &store,
        new_call("room-c", true, "carol", &["bob", "dave"]),
        at(3),
    )
    .await;
    assert_eq!(
        c.participant("bob").unwrap().status,
        ParticipantStatus::Declined
    );
    assert_eq!(
        c.participant("dave").unwrap().status,
        ParticipantStatus::Invited
    );

    assert!(store.user_joined_elsewhere("bob", None).await.unwrap());
    assert!(
        !store
            .user_joined_elsewhere("bob", Some(a.id))
            .await
            .unwrap()
    );
    assert!(!store.user_joined_elsewhere("dave", None).await.unwrap());
}

async fn thirty_simultaneous_joins_never_exceed_max_participants(db: TestDb) {
    let (s1, s2) = (db.store().await, db.store().await);
    let names: Vec<String> = (0..30).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut new = new_call("room-1", true, "host", &refs);
    new.max_participants = 4;
    let call = create(&s1, new, T0).await;

    let barrier = Arc::new(Barrier::new(names.len()));
    let tasks: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let store = if i % 2 == 0 { s1.clone() } else { s2.clone() };
            let barrier = barrier.clone();
            let actor = user(name);
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .apply(call.id, move |c| {
                        c.join(&actor, &MediaPatch::default(), at(1))
                    })
                    .await
            })
        })
        .collect();
    let (mut joined, mut full) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => joined += 1,
            Err(StoreError::Domain(DomainError::CallFull)) => full += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((joined, full), (3, 27));
    let stored = s1.get_call(call.id).await.unwrap().unwrap();
    assert_eq!(stored.joined_count(), 4);
    // One participant_joined per successful join, numbered without gaps.
    assert_eq!(stored.seq, 3);
    let seqs: Vec<u64> = s1
        .unpublished_events(200)
        .await
        .unwrap()
        .iter()
        .filter_map(|e| e.seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3]);
}

async fn apply_writes_state_events_and_timers_together_and_a_refusal_writes_nothing(db: TestDb) {
    let store = db.store().await;
    let call = create(&store, new_call("room-1", false, "alice", &["bob"]), T0).await;
    assert_eq!(store.unpublished_events(50).await.unwrap().len(), 1);

    let (after, events) = store
        .apply(call.id, |c| {
            c.join(
                &user("bob"),
                &MediaPatch {
                    is_mic_muted: Some(true),
                    ..MediaPatch::default()
                },
                at(5),
            )
        })
        .await
        .unwrap();
    assert_eq!(after.status, CallStatus::Active);
    assert_eq!(store.get_call(call.id).await.unwrap(), Some(after.clone()));
    let names: Vec<&str> = events.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["participant_joined", "incoming_call_cancelled"]);
    assert_eq!(store.unpublished_events(50).await.unwrap().len(), 3);
    // Answering cancelled the ring timer; the max duration remains.
    assert_eq!(store.next_timer_due().await.unwrap(), Some(at(3600)));

    let refused = store
        .apply(call.id, |c| c.end(&Actor::new("mallory", false), at(6)))
        .await;
    assert!(matches!(
        refused,
        Err(StoreError::Domain(DomainError::NotFound))
    ));
    let refused = store
        .apply(call.id, |c| {
            c.set_status(&user("bob"), ParticipantStatus::Declined, None, at(6))
        })
        .await;
    assert!(matches!(
        refused,
        Err(StoreError::Domain(DomainError::InvalidTransition))
    ));
    assert_eq!(store.get_call(call.id).await.unwrap(), Some(after));
    assert_eq!(store.unpublished_events(50).await.unwrap().len(), 3);

    let missing = store
        .apply(CallId::now_v7(), |c| c.end(&user("alice"), at(7)))
        .await;
    assert!(matches!(
        missing,
        Err(StoreError::Domain(DomainError::NotFound))
    ));
    assert_eq!(store.get_call(CallId::now_v7()).await.unwrap(), None);
}

async fn the_outbox_hands_out_events_in_seq_order_until_marked_published(db: TestDb) {
    let store = db.store().await;
    let call = create(&store, new_call("room-1", false, "alice", &["bob"]), T0).await;
    join(&store, call.id, "bob", at(1)).await;
    store
        .apply_traced(call.id, Some("trace-1"), |c| {
            c.update_media(
                &user("alice"),
                &MediaPatch {
                    is_camera_off: Some(true),
                    ..MediaPatch::default()
                },
                at(2),
            )
        })
        .await
        .unwrap();
    store
        .apply(call.id, |c| c.leave(&user("bob"), LeftReason::Left, at(3)))
        .await
        .unwrap();

    let outbox = store.unpublished_events(100).await.unwrap();
    let ids: Vec<i64> = outbox.iter().map(|e| e.id).collect();
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    assert_eq!(ids, sorted);
    let stream: Vec<(u64, &str)> = outbox
        .iter()
        .filter(|e| e.audience == Audience::Call(call.id))
        .map(|e| (e.seq.unwrap(), e.event.as_str()))
        .collect();
    assert_eq!(
        stream,
        [
            (1, "participant_joined"),
            (2, "participant_media_changed"),
            (3, "participant_left"),
            (4, "call_ended")
        ]
    );
    // call_ended also goes to the invitee, with the same seq.
    assert!(outbox.iter().any(|e| e.event == "call_ended"
        && e.audience == Audience::User("bob".into())
        && e.seq == Some(4)));
    let traced: Vec<&str> = outbox
        .iter()
        .filter(|e| e.trace_context.is_some())
        .map(|e| e.event.as_str())
        .collect();
    assert_eq!(traced, ["participant_media_changed"]);

    assert_eq!(
        store.outbox_lag(at(10)).await.unwrap(),
        Duration::from_secs(10)
    );
    let (first, rest) = ids.split_at(2);
    store.mark_published(first, at(10)).await.unwrap();
    let remaining: Vec<i64> = store
        .unpublished_events(100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.id)
        .collect();
    assert_eq!(remaining, rest);
    store.mark_published(rest, at(11)).await.unwrap();
    assert!(store.unpublished_events(100).await.unwrap().is_empty());
    assert_eq!(store.outbox_lag(at(12)).await.unwrap(), Duration::ZERO);
    assert_eq!(
        store.purge_published_events(at(11)).await.unwrap(),
        first.len() as u64
    );
}

async fn due_timers_fire_exactly_once_across_two_replicas(db: TestDb) {
    let (s1, s2) = (db.store().await, db.store().await);
    let mut ids = BTreeSet::new();
    for i in 0..16 {
        let room = format!("room-{i}");
        ids.insert(
            create(&s1, new_call(&room, false, "alice", &["bob"]), T0)
                .await
                .id,
        );
    }
    assert!(s1.fire_due_timers(at(44), 100).await.unwrap().is_empty());

    let barrier = Arc::new(Barrier::new(2));
    let tasks = [s1.clone(), s2.clone()].map(|store| {
        let barrier = barrier.clone();
        tokio::spawn(async move {
            barrier.wait().await;
            let mut fired = Vec::new();
            loop {
                let batch = store.fire_due_timers(at(46), 3).await.unwrap();
                if batch.is_empty() {
                    break fired;
                }
                fired.extend(batch);
            }
        })
    });
    let mut count: BTreeMap<CallId, usize> = BTreeMap::new();
    for t in tasks {
        for f in t.await.unwrap() {
            assert_eq!(f.kind, TimerKind::RingTimeout);
            assert_eq!(f.due_at, at(45));
            assert!(f.events.iter().any(|e| e.name() == "call_ended"));
            *count.entry(f.call_id).or_default() += 1;
        }
    }
    assert_eq!(count.keys().copied().collect::<BTreeSet<_>>(), ids);
    assert!(count.values().all(|n| *n == 1), "{count:?}");
    for id in &ids {
        let c = s1.get_call(*id).await.unwrap().unwrap();
        assert_eq!(c.end_reason, Some(EndReason::Missed));
    }
    // Ending cancelled the max-duration timers too.
    assert_eq!(s1.next_timer_due().await.unwrap(), None);
}

async fn timers_are_rows_that_survive_a_restart(db: TestDb) {
    let first = db.store().await;
    let call = create(&first, new_call("room-1", false, "alice", &["bob"]), T0).await;
    join(&first, call.id, "bob", at(1)).await;
    first.close().await;

    let restarted = db.store().await;
    assert!(
        restarted
            .fire_due_timers(at(3599), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let fired = restarted.fire_due_timers(at(3600), 10).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].kind, TimerKind::MaxDuration);
    let c = restarted.get_call(call.id).await.unwrap().unwrap();
    assert_eq!(c.end_reason, Some(EndReason::Timeout));
    assert_eq!(c.ended_at, Some(at(3600)));
}

async fn a_user_losing_their_last_socket_is_disconnected_until_the_grace_runs_out(db: TestDb) {
    let store = db.store().await;
    let t = timing();
    let call = create(&store, new_call("room-1", false, "alice", &["bob"]), T0).await;
    join(&store, call.id, "bob", at(1)).await;

    // Two devices; losing one is not a disconnect.
    assert!(
        store
            .socket_connected("n1", "s1", "bob", at(2), &t)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .socket_connected("n1", "s2", "bob", at(2), &t)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .socket_disconnected("n1", "s1", at(3), &t)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.user_has_socket("bob").await.unwrap());

    let events = store
        .socket_disconnected("n1", "s2", at(4), &t)
        .await
        .unwrap();
    let names: Vec<&str> = events.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["participant_disconnected"]);
    let c = store.get_call(call.id).await.unwrap().unwrap();
    assert!(!c.participant("bob").unwrap().is_connected);
    assert_eq!(store.next_timer_due().await.unwrap(), Some(at(34)));
    // Unknown sockets are ignored.
    assert!(
        store
            .socket_disconnected("n1", "s2", at(5), &t)
            .await
            .unwrap()
            .is_empty()
    );

    // Back within the grace on another node: reconnected, timer gone.
    let events = store
        .socket_connected("n2", "s3", "bob", at(10), &t)
        .await
        .unwrap();
    assert_eq!(events[0].name(), "participant_reconnected");
    assert_eq!(store.next_timer_due().await.unwrap(), Some(at(3600)));

    // Gone for good: the grace runs out and bob leaves, which ends the 1:1.
    store
        .socket_disconnected("n2", "s3", at(20), &t)
        .await
        .unwrap();
    assert!(store.fire_due_timers(at(49), 10).await.unwrap().is_empty());
    let fired = store.fire_due_timers(at(50), 10).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].kind, TimerKind::DisconnectGrace);
    assert_eq!(fired[0].user_id.as_deref(), Some("bob"));
    let c = store.get_call(call.id).await.unwrap().unwrap();
    assert_eq!(c.end_reason, Some(EndReason::Completed));
    assert_eq!(c.ended_by, None);
    let outbox = store.unpublished_events(100).await.unwrap();
    let left = outbox
        .iter()
        .find(|e| e.event == "participant_left")
        .unwrap();
    assert!(left.payload.contains("\"connection_lost\""));
}

async fn a_node_that_stops_heartbeating_takes_its_sockets_with_it(db: TestDb) {
    let store = db.store().await;
    let t = timing();
    let call = create(&store, new_call("room-1", true, "alice", &["bob"]), T0).await;
    join(&store, call.id, "bob", at(1)).await;
    store
        .socket_connected("node-a", "sa", "alice", at(1), &t)
        .await
        .unwrap();
    store
        .socket_connected("node-b", "sb", "bob", at(1), &t)
        .await
        .unwrap();

    assert!(store.node_heartbeat("node-a", at(20)).await.unwrap());
    // node-b was last heard of at 1 s: dead at 20 s with a 15 s limit; node-a is fine.
    let expiry = store
        .expire_dead_nodes(at(20), Duration::from_secs(15), &t)
        .await
        .unwrap();
    assert_eq!(expiry.nodes, ["node-b"]);
    let names: Vec<&str> = expiry.events.iter().map(|e| e.name()).collect();
    assert_eq!(names, ["participant_disconnected"]);
    assert!(!store.user_has_socket("bob").await.unwrap());
    assert!(store.user_has_socket("alice").await.unwrap());
    let c = store.get_call(call.id).await.unwrap().unwrap();
    assert!(!c.participant("bob").unwrap().is_connected);
    assert!(c.participant("alice").unwrap().is_connected);

    // Nothing more to expire; a node coming back learns it was forgotten.
    let again = store
        .expire_dead_nodes(at(21), Duration::from_secs(15), &t)
        .await
        .unwrap();
    assert!(again.nodes.is_empty());
    assert!(!store.node_heartbeat("node-b", at(22)).await.unwrap());
}

async fn call_history_pages_newest_first_with_an_opaque_cursor(db: TestDb) {
    let store = db.store().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let room = format!("room-{i}");
        let c = create(&store, new_call(&room, false, "alice", &["bob"]), at(i)).await;
        ids.push(c.id);
    }
    create(&store, new_call("room-x", false, "carol", &["dave"]), at(9)).await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = store
            .calls_for_user("alice", 2, cursor.as_deref())
            .await
            .unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|c| c.id));
        assert!(page.items.iter().all(|c| c.participants.len() == 2));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    ids.reverse();
    assert_eq!(seen, ids);
    assert_eq!(pages, 3);
    assert_eq!(
        store
            .calls_for_user("bob", 100, None)
            .await
            .unwrap()
            .items
            .len(),
        5
    );
    assert!(
        store
            .calls_for_user("erin", 10, None)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    for bad in ["nope", "!!!", "MTIzOm5vdC1hLXV1aWQ"] {
        assert!(matches!(
            store.calls_for_user("alice", 2, Some(bad)).await,
            Err(StoreError::Domain(DomainError::Validation(_)))
        ));
    }
}

async fn room_membership_can_be_replaced_added_and_removed(db: TestDb) {
    let store = db.store().await;
    let members = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    store
        .replace_room_members("room-1", &members(&["bob", "alice", "bob"]), T0, false)
        .await
        .unwrap();
    assert_eq!(
        store.room_members("room-1").await.unwrap(),
        members(&["alice", "bob"])
    );
    assert!(store.is_room_member("room-1", "alice").await.unwrap());
    assert!(!store.is_room_member("room-2", "alice").await.unwrap());
    store.add_room_member("room-1", "carol", T0).await.unwrap();
    store.add_room_member("room-1", "carol", T0).await.unwrap();
    store
        .remove_room_member("room-1", "alice", T0, false)
        .await
        .unwrap();
    store
        .remove_room_member("room-1", "nobody", T0, false)
        .await
        .unwrap();
    assert_eq!(
        store.room_members("room-1").await.unwrap(),
        members(&["bob", "carol"])
    );
    store
        .replace_room_members("room-1", &members(&["dave"]), T0, false)
        .await
        .unwrap();
    assert_eq!(
        store.room_members("room-1").await.unwrap(),
        members(&["dave"])
    );
}

/// The `end_subscription` instructions in the outbox, as (call, user).
async fn end_subscriptions(store: &Store) -> Vec<(String, String)> {
    store
        .unpublished_events(500)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.audience == Audience::SignalingNodes)
        .map(|e| {
            assert_eq!(e.event, "end_subscription");
            let payload: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
            assert_eq!(payload["type"], "end_subscription");
            assert_eq!(payload["callId"], e.call_id.to_string());
            (
                e.call_id.to_string(),
                payload["userId"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

async fn members_removed_from_a_room_stop_following_its_live_call_unless_they_are_in_it(
    db: TestDb,
) {
    let store = db.store().await;
    let members = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    store
        .replace_room_members(
            "room-1",
            &members(&["alice", "bob", "carol", "erin"]),
            T0,
            true,
        )
        .await
        .unwrap();
    assert!(end_subscriptions(&store).await.is_empty());
    let call = create(&store, new_call("room-1", true, "alice", &["bob"]), T0).await;
    let id = call.id.to_string();

    // carol and erin only watch the group call as members: removing them ends that.
    assert_eq!(
        store
            .remove_room_member("room-1", "carol", at(1), true)
            .await
            .unwrap(),
        1
    );
    // bob is a participant: the host, not the room, decides whether he stays.
    assert_eq!(
        store
            .remove_room_member("room-1", "bob", at(1), true)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .replace_room_members("room-1", &members(&["alice"]), at(2), true)
            .await
            .unwrap(),
        1,
        "erin, removed by the PUT"
    );
    // In open mode the room decides nothing, so nothing ends.
    store
        .add_room_member("room-1", "frank", at(3))
        .await
        .unwrap();
    assert_eq!(
        store
            .remove_room_member("room-1", "frank", at(3), false)
            .await
            .unwrap(),
        0
    );
    // Other rooms' calls are not touched, nor a room without a live call.
    assert_eq!(
        store
            .remove_room_member("room-2", "carol", at(4), true)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        end_subscriptions(&store).await,
        [
            (id.clone(), "carol".to_owned()),
            (id.clone(), "erin".to_owned())
        ]
    );

    // A participant who leaves because they were removed gets the event, then loses the
    // subscription (the roster's removal reuses this).
    join(&store, call.id, "bob", at(4)).await;
    store
        .apply(call.id, |c| {
            c.leave(&user("bob"), LeftReason::Removed, at(5))
        })
        .await
        .unwrap();
    let outbox = store.unpublished_events(500).await.unwrap();
    let left = outbox
        .iter()
        .position(|e| e.event == "participant_left")
        .unwrap();
    assert_eq!(outbox[left + 1].audience, Audience::SignalingNodes);
    assert_eq!(
        end_subscriptions(&store).await.last(),
        Some(&(id, "bob".to_owned()))
    );
}

async fn presence_timers_and_commands_racing_on_the_same_calls_neither_deadlock_nor_skip_a_seq(
    db: TestDb,
) {
    let (s1, s2) = (db.store().await, db.store().await);
    // No grace: a disconnect makes a timer due at once, so timers fire while presence churns.
    let t = Timing {
        disconnect_grace: Duration::ZERO,
        ..timing()
    };
    let now = at(100);
    let mut calls = Vec::new();
    let mut users = Vec::new();
    for i in 0..6 {
        let members: Vec<String> = (0..3).map(|m| format!("u{i}-{m}")).collect();
        let refs: Vec<&str> = members.iter().map(String::as_str).collect();
        let host = format!("h{i}");
        let c = create(&s1, new_call(&format!("room-{i}"), true, &host, &refs), T0).await;
        for m in &members {
            join(&s1, c.id, m, at(1)).await;
        }
        users.push(host);
        users.extend(members);
        calls.push(c.id);
    }
    let users = Arc::new(users);
    let calls = Arc::new(calls);

    let not_domain = |r: Result<(), StoreError>| match r {
        Ok(()) | Err(StoreError::Domain(_)) => {}
        Err(e) => panic!("store failure under contention: {e:?}"),
    };
    let mut tasks = Vec::new();
    for (k, store) in [s1.clone(), s2.clone()].into_iter().enumerate() {
        // Socket churn on two nodes.
        let (users, t) = (users.clone(), t);
        tasks.push(tokio::spawn(async move {
            for round in 0..3 {
                for (i, u) in users.iter().enumerate() {
                    let node = format!("node-{k}");
                    let socket = format!("s{k}-{i}-{round}");
                    not_domain(
                        store
                            .socket_connected(&node, &socket, u, now, &t)
                            .await
                            .map(|_| ()),
                    );
                    not_domain(
                        store
                            .socket_disconnected(&node, &socket, now, &t)
                            .await
                            .map(|_| ()),
                    );
                }
            }
        }));
    }
    for store in [s1.clone(), s2.clone()] {
        // Timers on both replicas.
        tasks.push(tokio::spawn(async move {
            for _ in 0..30 {
                not_domain(store.fire_due_timers(now, 4).await.map(|_| ()));
                tokio::task::yield_now().await;
            }
        }));
    }
    {
        // Commands and node expiry.
        let (store, users, calls, t) = (s2.clone(), users.clone(), calls.clone(), t);
        tasks.push(tokio::spawn(async move {
            for round in 0..3 {
                for (i, u) in users.iter().enumerate() {
                    let id = calls[i / 4];
                    let actor = user(u);
                    let patch = MediaPatch {
                        is_mic_muted: Some(round % 2 == 0),
                        ..MediaPatch::default()
                    };
                    not_domain(
                        store
                            .apply(id, move |c| c.update_media(&actor, &patch, now))
                            .await
                            .map(|_| ()),
                    );
                }
                not_domain(
                    store
                        .expire_dead_nodes(now, Duration::from_secs(3600), &t)
                        .await
                        .map(|_| ()),
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    // Every socket is gone now, so every joined participant is disconnected with a grace
    // timer due: firing them ends every call, whatever the interleaving was.
    s1.fire_due_timers(now, 10_000).await.unwrap();
    let outbox = s1.unpublished_events(10_000).await.unwrap();
    for kind in ["participant_disconnected", "participant_left", "call_ended"] {
        assert!(outbox.iter().any(|e| e.event == kind), "no {kind} happened");
    }
    // Each call's stream is 1..=seq without gaps.
    for id in calls.iter() {
        let call = s1.get_call(*id).await.unwrap().unwrap();
        assert_eq!(call.end_reason, Some(EndReason::Completed), "call {id}");
        let seqs: Vec<u64> = outbox
            .iter()
            .filter(|e| e.audience == Audience::Call(*id))
            .filter_map(|e| e.seq)
            .collect();
        assert_eq!(seqs, (1..=call.seq).collect::<Vec<_>>(), "call {id}");
    }
}

// ----- the roster (CONTRACT section 10) -----

fn invitation(users: &[&str]) -> Invitation {
    Invitation {
        user_ids: users.iter().map(|s| s.to_string()).collect(),
        busy: BTreeSet::new(),
        from: Default::default(),
        max_invitees: 100,
        group_capacity: 16,
    }
}

async fn invite(
    store: &Store,
    id: CallId,
    by: &str,
    users: &[&str],
    now: OffsetDateTime,
) -> Result<(Call, Vec<calls_api::domain::DomainEvent>), StoreError> {
    let actor = user(by);
    let users: Vec<String> = users.iter().map(|s| s.to_string()).collect();
    let names = users.clone();
    store
        .apply_with_busy(id, None, &names, move |c, busy| {
            let mut inv = invitation(&[]);
            inv.user_ids = users;
            inv.busy = busy;
            c.invite(&actor, &inv, now)
        })
        .await
}

async fn an_invitation_persists_the_roster_its_events_and_the_ring_timer(db: TestDb) {
    let store = db.store().await;
    let call = create(&store, new_call("room-1", false, "alice", &["bob"]), T0).await;
    join(&store, call.id, "bob", at(1)).await;
    // carol is in a call of another room: busy.
    let other = create(&store, new_call("room-2", false, "dan", &["carol"]), T0).await;
    join(&store, other.id, "carol", at(1)).await;
    let before = store.unpublished_events(500).await.unwrap().len();

    let (returned, events) = invite(&store, call.id, "bob", &["erin", "carol"], at(10))
        .await
        .unwrap();
    let stored = store.get_call(call.id).await.unwrap().unwrap();
    assert_eq!(stored, returned);
    assert!(
        stored.is_group_call,
        "a 1:1 that rings a third person is a group call"
    );
    assert_eq!(stored.max_participants, 16);
    assert_eq!(stored.ring_timeout_seconds, 45);
    let erin = stored.participant("erin").unwrap();
    assert_eq!(
        (erin.status, erin.invited_at),
        (ParticipantStatus::Invited, at(10))
    );
    assert!(erin.is_invitee);
    let carol = stored.participant("carol").unwrap();
    assert_eq!(carol.status, ParticipantStatus::Declined);
    assert_eq!(carol.decline_reason.as_deref(), Some("busy"));

    let outbox = store.unpublished_events(500).await.unwrap();
    let new: Vec<(&str, &Audience)> = outbox[before..]
        .iter()
        .map(|e| (e.event.as_str(), &e.audience))
        .collect();
    assert_eq!(
        new,
        [
            ("participant_invited", &Audience::Call(call.id)),
            ("participant_invited", &Audience::Call(call.id)),
            ("call_updated", &Audience::Call(call.id)),
            ("incoming_call", &Audience::User("erin".into())),
        ]
    );
    assert_eq!(events.len(), 4);
    // Erin rings for the full timeout from her invitation, then is missed; the call goes on.
    assert!(store.fire_due_timers(at(54), 10).await.unwrap().is_empty());
    let fired = store.fire_due_timers(at(55), 10).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].kind, TimerKind::RingTimeout);
    let c = store.get_call(call.id).await.unwrap().unwrap();
    assert_eq!(
        c.participant("erin").unwrap().status,
        ParticipantStatus::Missed
    );
    assert_eq!(c.status, CallStatus::Active);
}

async fn two_invitations_of_the_same_user_at_once_ring_them_once(db: TestDb) {
    let (s1, s2) = (db.store().await, db.store().await);
    for round in 0..5 {
        let room = format!("room-{round}");
        let call = create(&s1, new_call(&room, true, "alice", &["bob", "carol"]), T0).await;
        join(&s1, call.id, "bob", at(1)).await;
        let barrier = Arc::new(Barrier::new(2));
        let tasks: Vec<_> = [(s1.clone(), "alice"), (s2.clone(), "bob")]
            .into_iter()
            .map(|(store, by)| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    invite(&store, call.id, by, &["erin"], at(5)).await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let outbox = s1.unpublished_events(1000).await.unwrap();
        let rings = outbox
            .iter()
            .filter(|e| e.call_id == call.id && e.event == "incoming_call")
            .filter(|e| e.audience == Audience::User("erin".into()))
            .count();
        let invited = outbox
            .iter()
            .filter(|e| e.call_id == call.id && e.event == "participant_invited")
            .count();
        assert_eq!((rings, invited), (1, 1), "round {round}");
        let c = s1.get_call(call.id).await.unwrap().unwrap();
        assert_eq!(
            c.participants
                .iter()
                .filter(|p| p.user_id == "erin")
                .count(),
            1
        );
    }
}

async fn an_invitation_racing_the_end_of_the_call_never_leaves_anyone_ringing(db: TestDb) {
    let (s1, s2) = (db.store().await, db.store().await);
    for round in 0..6 {
        let room = format!("room-{round}");
        let call = create(&s1, new_call(&room, true, "alice", &["bob"]), T0).await;
        join(&s1, call.id, "bob", at(1)).await;
        let barrier = Arc::new(Barrier::new(2));
        let inviting = {
            let (store, barrier) = (s2.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                invite(&store, call.id, "bob", &["erin"], at(5)).await
            })
        };
        let ending = {
            let (store, barrier) = (s1.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store.apply(call.id, |c| c.end(&user("alice"), at(5))).await
            })
        };
        let invited = inviting.await.unwrap();
        ending.await.unwrap().unwrap();
        let c = s1.get_call(call.id).await.unwrap().unwrap();
        assert_eq!(c.status, CallStatus::Ended);
        match invited {
            // The invitation committed first: the end stopped erin's ringing.
            Ok(_) => {
                assert_eq!(
                    c.participant("erin").unwrap().status,
                    ParticipantStatus::Missed
                );
                let outbox = s1.unpublished_events(1000).await.unwrap();
                assert!(outbox.iter().any(|e| e.call_id == call.id
                    && e.event == "incoming_call_cancelled"
                    && e.audience == Audience::User("erin".into())));
            }
            // The end committed first: nobody was rung.
            Err(StoreError::Domain(DomainError::CallEnded)) => {
                assert!(c.participant("erin").is_none());
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(!c.has_pending_invitees(), "round {round}");
    }
    // No timer survives an ended call.
    assert!(
        s1.fire_due_timers(at(100_000), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_removal_racing_a_rejoin_never_leaves_the_removed_user_in_the_call(db: TestDb) {
    let (s1, s2) = (db.store().await, db.store().await);
    for round in 0..6 {
        let room = format!("room-{round}");
        let call = create(&s1, new_call(&room, true, "alice", &["bob", "carol"]), T0).await;
        join(&s1, call.id, "carol", at(1)).await;
        join(&s1, call.id, "bob", at(1)).await;
        s1.apply(call.id, |c| c.leave(&user("bob"), LeftReason::Left, at(2)))
            .await
            .unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let rejoining = {
            let (store, barrier) = (s2.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .apply(call.id, |c| {
                        c.join(&user("bob"), &MediaPatch::default(), at(3))
                    })
                    .await
            })
        };
        let removing = {
            let (store, barrier) = (s1.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .apply(call.id, |c| c.remove(&user("alice"), "bob", at(3)))
                    .await
            })
        };
        let rejoined = rejoining.await.unwrap();
        removing.await.unwrap().unwrap();
        match rejoined {
            Ok(_) | Err(StoreError::Domain(DomainError::NotFound)) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
        let c = s1.get_call(call.id).await.unwrap().unwrap();
        let bob = c.participant("bob").unwrap();
        assert_eq!(bob.status, ParticipantStatus::Left, "round {round}");
        assert!(bob.is_removed);
        // Whichever came first, bob's sockets are told to stop following the call.
        assert!(
            end_subscriptions(&s1)
                .await
                .contains(&(call.id.to_string(), "bob".to_owned()))
        );
    }
}

async fn a_removed_participant_stays_removed_across_a_reload_until_invited_again(db: TestDb) {
    let store = db.store().await;
    let call = create(
        &store,
        new_call("room-1", true, "alice", &["bob", "carol"]),
        T0,
    )
    .await;
    join(&store, call.id, "bob", at(1)).await;
    join(&store, call.id, "carol", at(1)).await;
    store
        .apply(call.id, |c| c.remove(&user("alice"), "bob", at(2)))
        .await
        .unwrap();
    let c = store.get_call(call.id).await.unwrap().unwrap();
    assert!(c.participant("bob").unwrap().is_removed);
    assert!(!c.is_visible_to("bob", true));
    assert!(matches!(
        store
            .apply(call.id, |c| c.join(
                &user("bob"),
                &MediaPatch::default(),
                at(3)
            ))
            .await,
        Err(StoreError::Domain(DomainError::NotFound))
    ));
    invite(&store, call.id, "carol", &["bob"], at(4))
        .await
        .unwrap();
    let c = join(&store, call.id, "bob", at(5)).await;
    assert_eq!(
        c.participant("bob").unwrap().status,
        ParticipantStatus::Joined
    );
    assert!(!c.participant("bob").unwrap().is_removed);
}

async fn the_host_role_and_the_alone_timer_survive_a_restart(db: TestDb) {
    let first = db.store().await;
    let call = create(
        &first,
        new_call("room-1", true, "alice", &["bob", "carol"]),
        T0,
    )
    .await;
    join(&first, call.id, "bob", at(1)).await;
    first
        .apply(call.id, |c| {
            c.leave(&user("alice"), LeftReason::Left, at(2))
        })
        .await
        .unwrap();
    first.close().await;

    let restarted = db.store().await;
    let c = restarted.get_call(call.id).await.unwrap().unwrap();
    assert_eq!(c.host().map(|p| p.user_id.as_str()), Some("bob"));
    assert_eq!(c.alone_timeout_seconds, 120);
    // bob is alone (carol still ringing): the alone timer runs from alice's departure.
    assert!(
        restarted
            .fire_due_timers(at(121), 10)
            .await
            .unwrap()
            .iter()
            .all(|t| t.kind != TimerKind::AloneTimeout)
    );
    let fired = restarted.fire_due_timers(at(122), 10).await.unwrap();
    assert!(
        fired.iter().any(|t| t.kind == TimerKind::AloneTimeout),
        "{fired:?}"
    );
    let c = restarted.get_call(call.id).await.unwrap().unwrap();
    assert_eq!(c.end_reason, Some(EndReason::Completed));
    assert_eq!(c.ended_at, Some(at(122)));
}

async fn a_per_call_ring_timeout_is_stored_and_used_by_the_timer(db: TestDb) {
    let store = db.store().await;
    let mut new = new_call("room-1", true, "alice", &["bob"]);
    new.ring_timeout = Some(Duration::from_secs(10));
    let call = create(&store, new, T0).await;
    let c = store.get_call(call.id).await.unwrap().unwrap();
    assert_eq!(c.ring_timeout_seconds, 10);
    assert!(store.fire_due_timers(at(9), 10).await.unwrap().is_empty());
    let fired = store.fire_due_timers(at(10), 10).await.unwrap();
    assert_eq!(fired[0].kind, TimerKind::RingTimeout);
    let c = store.get_call(call.id).await.unwrap().unwrap();
    assert_eq!(c.end_reason, Some(EndReason::Missed));
}

fn channel_notice(user: &str, in_media: bool, client_seq: i64, ts: i64) -> ChannelNotice {
    ChannelNotice {
        user_id: user.into(),
        in_media,
        client_seq,
        uid: Some(77),
        reason: (!in_media).then_some(1),
        at: at(ts),
    }
}

async fn media_time_and_the_media_grace_timer_survive_a_restart(db: TestDb) {
    let t = Timing {
        media_grace: Some(Duration::from_secs(30)),
        ..timing()
    };
    let first = db.store().await;
    let call = create(&first, new_call("room-1", false, "alice", &["bob"]), T0).await;
    join(&first, call.id, "bob", at(1)).await;
    for (id, notice) in [
        ("n1", channel_notice("bob", true, 1, 2)),
        ("n2", channel_notice("alice", true, 1, 3)),
        ("n3", channel_notice("bob", false, 2, 12)),
    ] {
        first
            .apply_channel_notice(id, 103, call.id, &notice, at(20), &t)
            .await
            .unwrap();
    }
    first
        .socket_connected("n1", "s1", "bob", at(21), &t)
        .await
        .unwrap();
    first
        .socket_disconnected("n1", "s1", at(22), &t)
        .await
        .unwrap();
    first.close().await;

    let restarted = db.store().await;
    let c = restarted.get_call(call.id).await.unwrap().unwrap();
    assert_eq!(c.participant("bob").unwrap().media_seconds, 10);
    assert_eq!(c.participant("bob").unwrap().media_uid, Some(77));
    assert_eq!(c.participant("alice").unwrap().media_since, Some(at(3)));
    assert_eq!(c.media_seconds, 10);
    // bob's media grace (from the leave at 20 s) is due before his disconnect grace (52 s).
    assert_eq!(restarted.next_timer_due().await.unwrap(), Some(at(50)));
    let fired = restarted.fire_due_timers(at(50), 10).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].kind, TimerKind::MediaGrace);
    assert_eq!(fired[0].user_id.as_deref(), Some("bob"));
    let c = restarted.get_call(call.id).await.unwrap().unwrap();
    assert_eq!(
        c.participant("bob").unwrap().status,
        ParticipantStatus::Left
    );
    // The 1:1 ended then; alice's open stay ran to the end.
    assert_eq!(c.ended_at, Some(at(50)));
    assert_eq!(c.participant("alice").unwrap().media_seconds, 47);
    assert_eq!(c.media_seconds, 57);
    let outbox = restarted.unpublished_events(100).await.unwrap();
    let left = outbox
        .iter()
        .find(|e| e.event == "participant_left")
        .unwrap();
    assert!(left.payload.contains("\"connection_lost\""));
    let ended = outbox.iter().find(|e| e.event == "call_ended").unwrap();
    assert!(
        ended.payload.contains("\"mediaSeconds\":57"),
        "{}",
        ended.payload
    );
}

/// Applies one of Agora's notices (id `id`, a broadcaster's join 103 or leave 104) at `now`.
async fn notice(store: &Store, id: &str, call: CallId, notice: ChannelNotice, now: OffsetDateTime) {
    let event_type = if notice.in_media { 103 } else { 104 };
    store
        .apply_channel_notice(id, event_type, call, &notice, now, &timing())
        .await
        .unwrap();
}

/// A group call from alice to bob and carol in which `name` joined at 1 s and whose client
/// joined the call's Agora channel at 2 s (notice `n1`, `clientSeq` 1, uid 77).
async fn group_call_with_in_media(store: &Store, name: &str) -> Call {
    let call = create(
        store,
        new_call("room-1", true, "alice", &["bob", "carol"]),
        T0,
    )
    .await;
    join(store, call.id, name, at(1)).await;
    notice(
        store,
        "n1",
        call.id,
        channel_notice(name, true, 1, 2),
        at(2),
    )
    .await;
    call
}

async fn a_kick_is_taken_by_one_replica_at_a_time_retried_and_dropped_once_moot(db: TestDb) {
    let store = db.store().await;
    let other = db.store().await;
    let call = group_call_with_in_media(&store, "bob").await;
    let bob = user("bob");
    store
        .apply(call.id, move |c| c.leave(&bob, LeftReason::Left, at(3)))
        .await
        .unwrap();
    let lease = Duration::from_secs(30);
    // Due once the linger after his leave is over.
    assert_eq!(store.claim_media_kick(at(17), lease).await.unwrap(), None);
    let claimed = store
        .claim_media_kick(at(18), lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            claimed.call_id,
            claimed.user_id.as_str(),
            claimed.uid,
            claimed.attempts,
            claimed.needed
        ),
        (call.id, "bob", 77, 0, true)
    );
    assert_eq!(store.pending_media_kicks().await.unwrap(), 1);
    // Taken: no other replica sends it while the lease runs.
    assert_eq!(other.claim_media_kick(at(40), lease).await.unwrap(), None);
    store.retry_media_kick(claimed.id, at(41)).await.unwrap();
    let again = other
        .claim_media_kick(at(41), lease)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.id, again.attempts, again.needed),
        (claimed.id, 1, true)
    );
    // Bob's client left the channel meanwhile: the kick is moot.
    notice(
        &store,
        "n2",
        call.id,
        channel_notice("bob", false, 2, 42),
        at(42),
    )
    .await;
    store.retry_media_kick(again.id, at(43)).await.unwrap();
    let moot = store
        .claim_media_kick(at(43), lease)
        .await
        .unwrap()
        .unwrap();
    assert!(!moot.needed);
    store.finish_media_kick(moot.id).await.unwrap();
    assert_eq!(store.pending_media_kicks().await.unwrap(), 0);
    assert_eq!(
        store.claim_media_kick(at(10_000), lease).await.unwrap(),
        None
    );
    other.close().await;
}

async fn a_removal_and_a_strangers_join_are_kicked_at_once_and_survive_a_restart(db: TestDb) {
    let first = db.store().await;
    let call = group_call_with_in_media(&first, "carol").await;
    let alice = user("alice");
    first
        .apply(call.id, move |c| c.remove(&alice, "carol", at(3)))
        .await
        .unwrap();
    notice(
        &first,
        "n2",
        call.id,
        channel_notice("mallory", true, 9, 4),
        at(4),
    )
    .await;
    first.close().await;

    let restarted = db.store().await;
    let lease = Duration::from_secs(30);
    let mut kicked = Vec::new();
    while let Some(kick) = restarted.claim_media_kick(at(4), lease).await.unwrap() {
        assert!(kick.needed);
        kicked.push(kick.user_id.clone());
        restarted.finish_media_kick(kick.id).await.unwrap();
    }
    assert_eq!(kicked, ["carol", "mallory"]);
}

backend_tests!(
    migrations_apply_twice_and_the_database_answers_pings,
    a_kick_is_taken_by_one_replica_at_a_time_retried_and_dropped_once_moot,
    a_removal_and_a_strangers_join_are_kicked_at_once_and_survive_a_restart,
    an_initiated_call_reads_back_exactly_as_it_was_returned,
    initiating_in_a_room_with_a_live_call_returns_it_to_those_who_may_see_it,
    simultaneous_initiates_from_both_sides_of_a_one_to_one_yield_one_call,
    a_repeated_idempotency_key_replays_the_first_response,
    invitees_joined_in_another_live_call_are_busy,
    thirty_simultaneous_joins_never_exceed_max_participants,
    apply_writes_state_events_and_timers_together_and_a_refusal_writes_nothing,
    the_outbox_hands_out_events_in_seq_order_until_marked_published,
    due_timers_fire_exactly_once_across_two_replicas,
    timers_are_rows_that_survive_a_restart,
    a_user_losing_their_last_socket_is_disconnected_until_the_grace_runs_out,
    a_node_that_stops_heartbeating_takes_its_sockets_with_it,
    call_history_pages_newest_first_with_an_opaque_cursor,
    room_membership_can_be_replaced_added_and_removed,
    members_removed_from_a_room_stop_following_its_live_call_unless_they_are_in_it,
    presence_timers_and_commands_racing_on_the_same_calls_neither_deadlock_nor_skip_a_seq,
    an_invitation_persists_the_roster_its_events_and_the_ring_timer,
    two_invitations_of_the_same_user_at_once_ring_them_once,
    an_invitation_racing_the_end_of_the_call_never_leaves_anyone_ringing,
    a_removal_racing_a_rejoin_never_leaves_the_removed_user_in_the_call,
    a_removed_participant_stays_removed_across_a_reload_until_invited_again,
    the_host_role_and_the_alone_timer_survive_a_restart,
    a_per_call_ring_timeout_is_stored_and_used_by_the_timer,
    media_time_and_the_media_grace_timer_survive_a_restart,
);

// ----- backend-independent -----

#[tokio::test]
async fn a_database_url_of_another_kind_is_rejected() {
    for url in ["mysql://localhost/db", "", "http://x"] {
        assert!(matches!(
            Store::connect(url, 1).await,
            Err(StoreError::UnsupportedUrl)
        ));
    }
}

#[tokio::test]
async fn an_unreachable_database_is_reported_unavailable() {
    let err = Store::connect("postgres://postgres@127.0.0.1:1/nothing", 1)
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
}

#[tokio::test]
async fn an_in_memory_sqlite_database_keeps_its_data_on_its_single_connection() {
    let store = Store::connect("sqlite::memory:", 8).await.unwrap();
    store.migrate().await.unwrap();
    let call = create(&store, new_call("room-1", false, "alice", &["bob"]), T0).await;
    join(&store, call.id, "bob", at(1)).await;
    let c = store.get_call(call.id).await.unwrap().unwrap();
    assert_eq!(c.status, CallStatus::Active);
}
