//! Two signaling nodes over real NATS (a random subject prefix per test).

#![allow(clippy::unwrap_used)]

mod common;

use calls_bus::{Bus, PresenceMessage};
use common::{Client, FakeCallsApi, Node, eventually, unique_prefix};
use serde_json::json;

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
