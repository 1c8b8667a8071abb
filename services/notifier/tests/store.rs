//! notifier's store on both databases: what makes a ring go out once, on time, to the right
//! phone — whatever order replicas consume the events in, however often an event is delivered,
//! and however many workers claim at once. Each Postgres test gets its own database.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use common::ids::DeviceId;
use notifier::devices::{Platform, PushProvider, Registration};
use notifier::events::{Caller, RingEvent, RingInfo, UserRingEvent};
use notifier::plan::Lane;
use notifier::store::{Finish, Store};

const T0: i64 = 1_767_225_600_000;
const DEADLINE: i64 = T0 + 45_000;
const HEX: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

mod support;

on_both!(
    a_ring_queues_a_voip_push_and_a_data_message_and_its_cancel_stops_what_is_still_queued,
    a_cancel_consumed_before_its_ring_means_the_phone_never_rings_but_still_hears_it_missed,
    an_event_consumed_twice_queues_nothing_the_second_time,
    a_token_registered_by_someone_else_moves_and_their_queued_pushes_are_dropped,
    a_user_keeps_at_most_the_configured_number_of_devices,
    two_workers_never_claim_the_same_push_and_a_lease_that_runs_out_frees_it,
    a_dead_token_removes_its_device_unless_it_was_registered_again_since,
);

fn android(token: &str) -> Registration {
    Registration {
        platform: Platform::Android,
        push_provider: PushProvider::Fcm,
        push_token: token.into(),
        voip_token: None,
        bundle_id: None,
    }
}

fn iphone(voip: &str) -> Registration {
    Registration {
        platform: Platform::Ios,
        push_provider: PushProvider::Apns,
        push_token: HEX.into(),
        voip_token: Some(voip.into()),
        bundle_id: Some("com.ex.app".into()),
    }
}

fn id(s: &str) -> DeviceId {
    DeviceId::parse(s).unwrap()
}

fn ring(event_id: i64, user: &str) -> UserRingEvent {
    UserRingEvent {
        event_id,
        created_at_ms: T0,
        call_id: "call-1".into(),
        user_id: user.into(),
        event: RingEvent::Incoming(RingInfo {
            chat_room_id: "room".into(),
            call_type: "audio".into(),
            is_group_call: false,
            caller: Caller {
                user_id: "alice".into(),
                display_name: None,
                avatar_url: None,
            },
            ring_deadline_ms: DEADLINE,
        }),
    }
}

fn stop(event_id: i64, user: &str, reason: &str) -> UserRingEvent {
    UserRingEvent {
        event_id,
        created_at_ms: T0 + 1000,
        call_id: "call-1".into(),
        user_id: user.into(),
        event: RingEvent::Stopped {
            reason: reason.into(),
            origin_device: None,
        },
    }
}

async fn kinds(store: &Store, user: &str) -> Vec<(String, String, String)> {
    store.deliveries_of(user).await.unwrap()
}

fn triple(device: &str, kind: &str, status: &str) -> (String, String, String) {
    (device.into(), kind.into(), status.into())
}

async fn a_ring_queues_a_voip_push_and_a_data_message_and_its_cancel_stops_what_is_still_queued(
    store: &Store,
) {
    store
        .register_device(
            "bob",
            &id("iphone"),
            &iphone(&HEX.replace('a', "b")),
            T0,
            20,
        )
        .await
        .unwrap();
    store
        .register_device("bob", &id("pixel"), &android("fcm:1"), T0, 20)
        .await
        .unwrap();
    let applied = store
        .apply_ring_event(&ring(10, "bob"), T0, None)
        .await
        .unwrap();
    assert_eq!(applied.ring, 2);
    let applied = store
        .apply_ring_event(&stop(12, "bob", "answered_elsewhere"), T0 + 1000, None)
        .await
        .unwrap();
    assert_eq!(applied.cancelled, 2, "both rings were still queued");
    assert_eq!(applied.bulk, 0, "answered elsewhere is no missed call");
    assert_eq!(
        kinds(store, "bob").await,
        [
            triple("iphone", "incoming_call", "cancelled"),
            triple("pixel", "incoming_call", "cancelled"),
            triple("pixel", "incoming_call_cancelled", "pending"),
        ]
    );
}

async fn a_cancel_consumed_before_its_ring_means_the_phone_never_rings_but_still_hears_it_missed(
    store: &Store,
) {
    store
        .register_device("bob", &id("pixel"), &android("fcm:2"), T0, 20)
        .await
        .unwrap();
    // A backlog shared by two replicas: the ring timeout's cancel is applied first.
    let first = store
        .apply_ring_event(&stop(20, "bob", "missed"), T0 + 2000, None)
        .await
        .unwrap();
    assert_eq!(first.ring, 1, "the Android phone is told to stop ringing");
    assert_eq!(first.bulk, 0, "the caller is not known yet");
    let late = store
        .apply_ring_event(&ring(18, "bob"), T0 + 2100, None)
        .await
        .unwrap();
    assert!(late.stale);
    assert_eq!(late.ring, 0, "the late ring is never sent");
    assert_eq!(
        late.bulk, 1,
        "but the missed call is announced, now that the caller is known"
    );
    assert_eq!(
        kinds(store, "bob").await,
        [
            triple("pixel", "incoming_call_cancelled", "pending"),
            triple("pixel", "missed_call", "pending"),
        ]
    );
}

async fn an_event_consumed_twice_queues_nothing_the_second_time(store: &Store) {
    store
        .register_device("bob", &id("pixel"), &android("fcm:3"), T0, 20)
        .await
        .unwrap();
    assert_eq!(
        store
            .apply_ring_event(&ring(30, "bob"), T0, None)
            .await
            .unwrap()
            .ring,
        1
    );
    let again = store
        .apply_ring_event(&ring(30, "bob"), T0 + 50, None)
        .await
        .unwrap();
    assert!(again.stale);
    assert_eq!((again.ring, again.bulk), (0, 0));
    let missed = stop(31, "bob", "missed");
    let first = store
        .apply_ring_event(&missed, T0 + 100, None)
        .await
        .unwrap();
    assert_eq!((first.ring, first.bulk), (1, 1));
    let second = store
        .apply_ring_event(&missed, T0 + 150, None)
        .await
        .unwrap();
    assert_eq!((second.ring, second.bulk), (0, 0));
    assert_eq!(kinds(store, "bob").await.len(), 3);
}

async fn a_token_registered_by_someone_else_moves_and_their_queued_pushes_are_dropped(
    store: &Store,
) {
    store
        .register_device("carol", &id("phone"), &android("fcm:shared"), T0, 20)
        .await
        .unwrap();
    store
        .apply_ring_event(&ring(40, "carol"), T0, None)
        .await
        .unwrap();
    let moved = store
        .register_device(
            "dave",
            &id("same-phone"),
            &android("fcm:shared"),
            T0 + 10,
            20,
        )
        .await
        .unwrap();
    assert_eq!(moved.moved_from_others, 1);
    assert!(store.devices("carol").await.unwrap().is_empty());
    assert_eq!(store.devices("dave").await.unwrap().len(), 1);
    assert_eq!(
        kinds(store, "carol").await,
        [triple("phone", "incoming_call", "cancelled")],
        "Carol's ring must not reach Dave's phone"
    );
}

async fn a_user_keeps_at_most_the_configured_number_of_devices(store: &Store) {
    for (i, name) in ["a", "b", "c", "d"].iter().enumerate() {
        store
            .register_device(
                "erin",
                &id(name),
                &android(&format!("fcm:{name}")),
                T0 + i as i64,
                3,
            )
            .await
            .unwrap();
    }
    let left: BTreeSet<String> = store
        .devices("erin")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device_id.to_string())
        .collect();
    assert_eq!(left, BTreeSet::from(["b".into(), "c".into(), "d".into()]));
    // Registering an existing device again refreshes it, so it is not the one to go.
    store
        .register_device("erin", &id("b"), &android("fcm:b"), T0 + 10, 3)
        .await
        .unwrap();
    store
        .register_device("erin", &id("e"), &android("fcm:e"), T0 + 11, 3)
        .await
        .unwrap();
    let left: BTreeSet<String> = store
        .devices("erin")
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device_id.to_string())
        .collect();
    assert_eq!(left, BTreeSet::from(["b".into(), "d".into(), "e".into()]));
}

async fn two_workers_never_claim_the_same_push_and_a_lease_that_runs_out_frees_it(store: &Store) {
    for i in 0..20 {
        let user = format!("u{i}");
        store
            .register_device(&user, &id("p"), &android(&format!("fcm:{i}")), T0, 20)
            .await
            .unwrap();
        store
            .apply_ring_event(&ring(100 + i, &user), T0, None)
            .await
            .unwrap();
    }
    let (a, b) = tokio::join!(
        store.claim(Lane::Ring, T0 + 10, 5_000, 15),
        store.claim(Lane::Ring, T0 + 10, 5_000, 15)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let ids: BTreeSet<i64> = a.iter().chain(&b).map(|d| d.id).collect();
    assert_eq!(ids.len(), a.len() + b.len(), "no delivery claimed twice");
    assert_eq!(ids.len(), 20, "and none left behind");
    assert!(
        store
            .claim(Lane::Ring, T0 + 20, 5_000, 50)
            .await
            .unwrap()
            .is_empty()
    );
    // A worker that died with its lease: after the lease, another one takes over.
    let taken = store
        .claim(Lane::Ring, T0 + 5_011, 5_000, 50)
        .await
        .unwrap();
    assert_eq!(taken.len(), 20);
    assert!(taken.iter().all(|d| d.attempts == 2));
    store
        .finish(taken[0].id, &Finish::Sent, T0 + 5_100)
        .await
        .unwrap();
    assert!(
        store
            .claim(Lane::Ring, T0 + 20_000, 5_000, 50)
            .await
            .unwrap()
            .iter()
            .all(|d| d.id != taken[0].id),
        "a sent push is never claimed again"
    );
}

async fn a_dead_token_removes_its_device_unless_it_was_registered_again_since(store: &Store) {
    store
        .register_device("finn", &id("old"), &android("fcm:dead"), T0, 20)
        .await
        .unwrap();
    assert_eq!(
        store
            .remove_invalid_token("fcm:dead", None, T0 + 1)
            .await
            .unwrap(),
        1
    );
    assert!(store.devices("finn").await.unwrap().is_empty());
    store
        .register_device("finn", &id("new"), &android("fcm:again"), T0 + 5_000, 20)
        .await
        .unwrap();
    // Apple says the token died at T0 + 1000, before it was registered again.
    assert_eq!(
        store
            .remove_invalid_token("fcm:again", Some(T0 + 1_000), T0 + 6_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.devices("finn").await.unwrap().len(), 1);
}
