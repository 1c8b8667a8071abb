//! Two signaling nodes over real NATS (a random subject prefix per test).

#![allow(clippy::unwrap_used)]

mod common;

use calls_bus::{Bus, PresenceMessage};
use common::{Client, FakeCallsApi, Node, eventually, unique_prefix};
use serde_json::json;
use testkit::TcpProxy;

async fn nats() -> Bus {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    Bus::connect(&url).await.unwrap()
}

#[tokio::test]
async fn clients_on_different_nodes_see_each_others_events() {
    let prefix = unique_prefix();
    let fake = FakeCallsApi::start(nats().await, &prefix).await;
    let a = Node::start(nats().await, &prefix, &[]).await;
    let b = Node::start(nats().await, &prefix, &[]).await;
    let call = fake.create_call(&["alice", "bob"]);
    let mut alice = Client::connect_as(&a.base, "alice").await;
    let mut bob = Client::connect_as(&b.base, "bob").await;
    assert_eq!(
        alice.emit_ack("join_call", json!({"callId": call})).await["ok"],
        true
    );
    assert_eq!(
        bob.emit_ack("join_call", json!({"callId": call})).await["ok"],
        true
    );

    let ack = alice
        .emit_ack(
            "media_state_changed",
            json!({"callId": call, "isMicMuted": true}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let seen_by_bob = bob.event("participant_media_changed").await;
    assert_eq!(seen_by_bob["userId"], "alice");
    assert_eq!(seen_by_bob["isMicMuted"], true);
    let seen_by_alice = alice.event("participant_media_changed").await;
    assert_eq!(seen_by_alice["seq"], seen_by_bob["seq"]);

    let ack = bob
        .emit_ack(
            "media_state_changed",
            json!({"callId": call, "isMicMuted": false}),
        )
        .await;
    assert_eq!(ack["ok"], true);
    assert_eq!(
        alice.event("participant_media_changed").await["userId"],
        "bob"
    );

    // A user's events reach their sockets on every node.
    let subject = fake.subjects.user_events("alice");
    let mut alice_tablet = Client::connect_as(&b.base, "alice").await;
    fake.publish(&subject, "incoming_call", json!({"callId": call}))
        .await;
    assert_eq!(alice.event("incoming_call").await["callId"], call.as_str());
    assert_eq!(
        alice_tablet.event("incoming_call").await["callId"],
        call.as_str()
    );

    let (a_id, b_id) = (a.node_id.clone(), b.node_id.clone());
    eventually("connected presence from both nodes", || {
        let p = fake.presence();
        [&a_id, &b_id].iter().all(|n| {
            p.iter()
                .any(|m| matches!(m, PresenceMessage::Connected { node_id, .. } if node_id == *n))
        })
    })
    .await;
    a.stop().await;
    b.stop().await;
    fake.stop();
}

#[tokio::test]
async fn events_stored_while_a_node_was_cut_off_the_bus_reach_its_sockets_in_order_once_it_reconnects()
 {
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned());
    let upstream = url.trim_start_matches("nats://").to_owned();
    let prefix = unique_prefix();
    let fake = FakeCallsApi::start(nats().await, &prefix).await;
    let stream = format!("CALLS_EVENTS_{}", prefix.replace('.', "_").to_uppercase());
    fake.bus
        .ensure_stream(&stream, vec![fake.subjects.all_events()], 1)
        .await
        .unwrap();
    // Between this node and NATS, to cut one node off the bus while the rest of the system
    // (here the fake calls-api) stays connected.
    let proxy = TcpProxy::start(&upstream).await;
    let node_bus = Bus::connect(&format!("nats://{}", proxy.addr))
        .await
        .unwrap();
    let node = Node::start(node_bus, &prefix, &[]).await;
    let call = fake.create_call(&["alice", "bob"]);
    let mut alice = Client::connect_as(&node.base, "alice").await;
    assert_eq!(
        alice.emit_ack("join_call", json!({"callId": call})).await["ok"],
        true
    );
    let subject = fake.subjects.call_events(&call);
    let publish = |seq: u64, muted: bool| {
        let (bus, subject, call) = (fake.bus.clone(), subject.clone(), call.clone());
        async move {
            let body = serde_json::to_vec(&json!({"event": "participant_media_changed",
                "data": {"callId": call, "seq": seq, "at": "2026-01-01T00:00:00Z", "userId": "bob", "isMicMuted": muted}}))
            .unwrap();
            bus.publish_event(
                &subject,
                &format!("evt-{call}-{seq}"),
                calls_bus::Headers::new(),
                body.into(),
            )
            .await
            .unwrap();
        }
    };
    publish(1, true).await;
    assert_eq!(alice.event("participant_media_changed").await["seq"], 1);

    // Cut off, the node misses what calls-api publishes; the stream keeps it.
    proxy.cut();
    for seq in 2..=4 {
        publish(seq, seq % 2 == 0).await;
    }
    proxy.restore().await;
    for seq in 2..=4 {
        let event = alice.event("participant_media_changed").await;
        assert_eq!(
            event["seq"], seq,
            "alice's app missed or reordered what was published while her node was away: {event}"
        );
    }
    // Live again, and nothing twice.
    publish(5, false).await;
    assert_eq!(alice.event("participant_media_changed").await["seq"], 5);
    alice.drain_for(std::time::Duration::from_millis(300)).await;
    assert!(
        !alice
            .events
            .iter()
            .any(|(name, _)| name == "participant_media_changed"),
        "alice's app got an event twice after the resync"
    );

    node.stop().await;
    fake.stop();
    fake.bus.delete_stream(&stream).await.unwrap();
}

#[tokio::test]
async fn an_invitee_following_the_call_hears_call_ended_once_though_it_comes_on_two_subjects() {
    let prefix = unique_prefix();
    let fake = FakeCallsApi::start(nats().await, &prefix).await;
    let node = Node::start(nats().await, &prefix, &[]).await;
    let call = fake.create_call(&["alice", "bob"]);
    let mut bob = Client::connect_as(&node.base, "bob").await;
    assert_eq!(
        bob.emit_ack("join_call", json!({"callId": call})).await["ok"],
        true
    );
    let seq = fake
        .publish_call_event(
            &call,
            "call_ended",
            json!({"reason": "completed", "endedBy": "alice"}),
            None,
        )
        .await;
    // calls-api sends call_ended to the call's subscribers and to every invitee.
    fake.publish(
        &fake.subjects.user_events("bob"),
        "call_ended",
        json!({"callId": call, "seq": seq, "at": "2026-01-01T00:00:00Z", "reason": "completed", "endedBy": "alice"}),
    )
    .await;
    assert_eq!(bob.event("call_ended").await["seq"], seq);
    bob.drain_for(std::time::Duration::from_millis(300)).await;
    assert!(
        !bob.events.iter().any(|(name, _)| name == "call_ended"),
        "bob's app was told twice that the call ended"
    );

    // Another call's end still reaches him.
    let other = fake.create_call(&["alice", "bob"]);
    fake.publish(
        &fake.subjects.user_events("bob"),
        "call_ended",
        json!({"callId": other, "seq": 3, "at": "2026-01-01T00:00:00Z", "reason": "missed", "endedBy": null}),
    )
    .await;
    assert_eq!(bob.event("call_ended").await["callId"], other.as_str());
    node.stop().await;
    fake.stop();
}
