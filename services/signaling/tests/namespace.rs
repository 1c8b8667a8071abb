//! The `/calls` namespace against an in-process bus and a fake calls-api.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use calls_bus::{Bus, LocalBus, PresenceMessage, Subjects};
use common::{Client, FakeCallsApi, Node, eventually, token, unique_prefix};
use futures::StreamExt;
use serde_json::{Value, json};

async fn setup(extra: &[(&str, &str)]) -> (LocalBus, FakeCallsApi, Node) {
    let local = LocalBus::new();
    let bus = Bus::from(local.clone());
    let prefix = unique_prefix();
    let fake = FakeCallsApi::start(bus.clone(), &prefix).await;
    let node = Node::start(bus, &prefix, extra).await;
    (local, fake, node)
}

fn code(ack: &Value) -> &str {
    ack["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn a_socket_without_a_token_is_refused_as_unauthorized() {
    let (_, _, node) = setup(&[]).await;
    let refused = Client::connect(&node.base, json!({}), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(refused["message"], "unauthorized");
    let refused = Client::connect(&node.base, json!({"token": 42}), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(refused["message"], "unauthorized");
    node.stop().await;
}

#[tokio::test]
async fn a_token_signed_with_another_secret_or_expired_is_refused() {
    let (_, _, node) = setup(&[]).await;
    let forged = ::common::auth::mint_hs256(
        "another-secret-another-secret-00",
        "u1",
        Duration::from_secs(60),
    );
    let refused = Client::connect(&node.base, json!({"token": forged}), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(refused["message"], "unauthorized");
    // Expired beyond the 30 s leeway.
    let expired = expired_token("u1");
    let refused = Client::connect(&node.base, json!({"token": expired}), &[])
        .await
        .err()
        .unwrap();
    assert_eq!(refused["message"], "unauthorized");
    node.stop().await;
}

fn expired_token(sub: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"sub": sub, "iat": now - 3600, "exp": now - 120});
    // Hand-made HS256 so the expiry can lie in the past.
    use base64::Engine as _;
    let enc = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let unsigned = format!(
        "{}.{}",
        enc(&json!({"alg": "HS256", "typ": "JWT"})),
        enc(&claims)
    );
    let sig = hmac_sha256(common::SECRET.as_bytes(), unsigned.as_bytes());
    format!(
        "{unsigned}.{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sig)
    )
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

#[tokio::test]
async fn a_token_in_the_authorization_header_is_accepted() {
    let (_, _, node) = setup(&[]).await;
    let bearer = format!("Bearer {}", token("u1"));
    let client = Client::connect(&node.base, json!({}), &[("authorization", &bearer)]).await;
    assert!(client.is_ok());
    node.stop().await;
}

#[tokio::test]
async fn join_call_answers_the_snapshot_and_emits_call_participants() {
    let (_, fake, node) = setup(&[]).await;
    let call = fake.create_call(&["alice", "bob"]);
    let mut alice = Client::connect_as(&node.base, "alice").await;
    let ack = alice.emit_ack("join_call", json!({"callId": call})).await;
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["data"]["callId"], call.as_str());
    let snapshot = alice.event("call_participants").await;
    assert_eq!(snapshot, ack["data"]);
    let (name, request) = &fake.commands()[0];
    assert_eq!(name, "join_call");
    assert_eq!(request["userId"], "alice");
    assert_eq!(request["nodeId"], node.node_id.as_str());
    assert_eq!(request["payload"], json!({"callId": call}));
    node.stop().await;
}

#[tokio::test]
async fn every_kind_of_bad_payload_is_answered_and_the_socket_stays_connected() {
    let (_, fake, node) = setup(&[("max-payload-bytes", "1024")]).await;
    let call = fake.create_call(&["alice"]);
    let mut alice = Client::connect_as(&node.base, "alice").await;
    let cases = [
        ("join_call", Value::Null, "VALIDATION_FAILED"),
        ("join_call", json!("x"), "VALIDATION_FAILED"),
        ("join_call", json!([1, 2]), "VALIDATION_FAILED"),
        ("join_call", json!({}), "VALIDATION_FAILED"),
        ("join_call", json!({"callId": 7}), "VALIDATION_FAILED"),
        (
            "join_call",
            json!({"callId": "not-a-uuid"}),
            "VALIDATION_FAILED",
        ),
        (
            "media_state_changed",
            json!({"callId": call}),
            "VALIDATION_FAILED",
        ),
        (
            "media_state_changed",
            json!({"callId": call, "isMicMuted": "yes"}),
            "VALIDATION_FAILED",
        ),
        (
            "call_status_changed",
            json!({"callId": call, "status": "teleported"}),
            "VALIDATION_FAILED",
        ),
        ("no_such_event", json!({}), "VALIDATION_FAILED"),
        (
            "join_call",
            json!({"callId": call, "pad": "x".repeat(2000)}),
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "join_call",
            json!({"callId": uuid::Uuid::now_v7().to_string()}),
            "CALL_NOT_FOUND",
        ),
    ];
    for (event, payload, expected) in &cases {
        let ack = alice.emit_ack(event, payload.clone()).await;
        assert_eq!(ack["ok"], false, "{event} {payload}: {ack}");
        assert_eq!(code(&ack), *expected, "{event} {payload}: {ack}");
        assert!(
            ack["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    // An event with no argument at all.
    let id = alice.take_ack_id();
    alice.post(format!("42/calls,{id}[\"join_call\"]")).await;
    assert_eq!(code(&alice.ack(id).await), "VALIDATION_FAILED");

    // Without an ack, the same failures arrive as `error` events naming the event.
    alice.emit("join_call", json!({"callId": "nope"})).await;
    let error = alice.event("error").await;
    assert_eq!(error["event"], "join_call");
    assert_eq!(error["code"], "VALIDATION_FAILED");
    alice
        .emit(
            "join_call",
            json!({"callId": uuid::Uuid::nil().to_string()}),
        )
        .await;
    let error = alice.event("error").await;
    assert_eq!(error["code"], "CALL_NOT_FOUND");
    assert_eq!(error["callId"], uuid::Uuid::nil().to_string());

    // Still connected and served.
    let ack = alice.emit_ack("join_call", json!({"callId": call})).await;
    assert_eq!(ack["ok"], true, "{ack}");
    node.stop().await;
}

#[tokio::test]
async fn event_names_that_need_json_escapes_or_are_not_strings_are_answered_and_keep_the_socket() {
    // socketioxide's parser used to close the connection on these (see
    // vendor/socketioxide-parser-common): no ack, no error event, the socket gone.
    let (_, fake, node) = setup(&[]).await;
    let call = fake.create_call(&["alice"]);
    let mut alice = Client::connect_as(&node.base, "alice").await;
    for name in [
        "join\"call",
        "back\\slash",
        "tab\tand\nnewline",
        "nul\u{0}",
        "\u{1f}",
    ] {
        let ack = alice.emit_ack(name, json!({"callId": call})).await;
        assert_eq!(ack["ok"], false, "{name:?}: {ack}");
        assert_eq!(code(&ack), "VALIDATION_FAILED", "{name:?}: {ack}");
    }
    // A name that is not a string at all (`socket.emit(42)` in socket.io-client).
    let id = alice.take_ack_id();
    alice.post(format!("42/calls,{id}[42,{{}}]")).await;
    assert_eq!(code(&alice.ack(id).await), "VALIDATION_FAILED");
    // Without an ack the answer is an `error` event naming the event as the client spelt it.
    alice.emit("quote\"d", json!({})).await;
    let error = alice.event("error").await;
    assert_eq!(error["code"], "VALIDATION_FAILED", "{error}");
    assert_eq!(error["event"], "quote\"d", "{error}");
    // An escape that spells an ordinary name is that event.
    let id = alice.take_ack_id();
    alice
        .post(format!(
            "42/calls,{id}[\"join\\u005fcall\",{{\"callId\":\"{call}\"}}]"
        ))
        .await;
    let ack = alice.ack(id).await;
    assert_eq!(ack["ok"], true, "{ack}");
    // The socket is still connected and served.
    let ack = alice.emit_ack("join_call", json!({"callId": call})).await;
    assert_eq!(ack["ok"], true, "{ack}");
    node.stop().await;
}

#[tokio::test]
async fn events_over_the_rate_limit_are_answered_with_rate_limited() {
    let (_, fake, node) = setup(&[("events-per-second", "1"), ("events-burst", "3")]).await;
    let call = fake.create_call(&["alice"]);
    let mut alice = Client::connect_as(&node.base, "alice").await;
    let ids: Vec<i64> = (0..6).map(|_| alice.take_ack_id()).collect();
    let packets: Vec<String> = ids
        .iter()
        .map(|id| Client::event_packet("join_call", &json!({"callId": call}), Some(*id)))
        .collect();
    alice.post_batch(&packets).await;
    let mut codes = Vec::new();
    for id in ids {
        let ack = alice.ack(id).await;
        codes.push(if ack["ok"] == true {
            "ok".to_owned()
        } else {
            code(&ack).to_owned()
        });
    }
    assert_eq!(
        codes,
        [
            "ok",
            "ok",
            "ok",
            "RATE_LIMITED",
            "RATE_LIMITED",
            "RATE_LIMITED"
        ]
    );
    node.stop().await;
}

#[tokio::test]
async fn events_of_one_socket_are_applied_in_the_order_sent() {
    let (_, fake, node) = setup(&[]).await;
    let call = fake.create_call(&["alice", "bob"]);
    let mut alice = Client::connect_as(&node.base, "alice").await;
    let mut bob = Client::connect_as(&node.base, "bob").await;
    assert_eq!(
        alice.emit_ack("join_call", json!({"callId": call})).await["ok"],
        true
    );
    assert_eq!(
        bob.emit_ack("join_call", json!({"callId": call})).await["ok"],
        true
    );
    // 200 toggles in one HTTP body: the server reads them in one burst.
    let mut packets = Vec::new();
    let mut ids = Vec::new();
    for i in 0..200 {
        let id = alice.take_ack_id();
        ids.push(id);
        packets.push(Client::event_packet(
            "media_state_changed",
            &json!({"callId": call, "isMicMuted": i % 2 == 0}),
            Some(id),
        ));
    }
    alice.post_batch(&packets).await;
    for (i, id) in ids.into_iter().enumerate() {
        let ack = alice.ack(id).await;
        assert_eq!(
            ack["data"]["isMicMuted"],
            i % 2 == 0,
            "ack {i} answers its own toggle"
        );
    }
    let applied: Vec<bool> = fake
        .commands()
        .iter()
        .filter(|(n, _)| n == "media_state_changed")
        .map(|(_, r)| r["payload"]["isMicMuted"].as_bool().unwrap())
        .collect();
    assert_eq!(applied, (0..200).map(|i| i % 2 == 0).collect::<Vec<_>>());
    let mut seen = Vec::new();
    while seen.len() < 200 {
        let e = bob.event("participant_media_changed").await;
        seen.push(e["isMicMuted"].as_bool().unwrap());
    }
    assert_eq!(seen, (0..200).map(|i| i % 2 == 0).collect::<Vec<_>>());
    assert!(!seen[199], "bob ends in alice's last state");
    node.stop().await;
}

#[tokio::test]
async fn a_command_calls_api_cannot_answer_gets_dependency_unavailable() {
    let (_, fake, node) = setup(&[("command-timeout-ms", "200")]).await;
    let call = fake.create_call(&["alice"]);
    let mut alice = Client::connect_as(&node.base, "alice").await;
    fake.state.lock().unwrap().silent = true;
    let ack = alice
        .emit_ack(
            "media_state_changed",
            json!({"callId": call, "isMicMuted": true}),
        )
        .await;
    assert_eq!(code(&ack), "DEPENDENCY_UNAVAILABLE", "timeout: {ack}");
    fake.stop();
    let ack = alice.emit_ack("join_call", json!({"callId": call})).await;
    assert_eq!(code(&ack), "DEPENDENCY_UNAVAILABLE", "no responders: {ack}");
    node.stop().await;
}

#[tokio::test]
async fn an_end_subscription_instruction_stops_every_socket_of_that_user_following_the_call() {
    let (_, fake, node) = setup(&[]).await;
    let call = fake.create_call(&["alice", "carol"]);
    let mut alice = Client::connect_as(&node.base, "alice").await;
    let mut phone = Client::connect_as(&node.base, "carol").await;
    let mut tablet = Client::connect_as(&node.base, "carol").await;
    for client in [&mut alice, &mut phone, &mut tablet] {
        let ack = client.emit_ack("join_call", json!({"callId": call})).await;
        assert_eq!(ack["ok"], true, "{ack}");
    }

    // calls-api: carol was removed from the call's room.
    let instruction = calls_bus::ControlMessage::EndSubscription {
        call_id: call.clone(),
        user_id: "carol".into(),
        after_seq: None,
    };
    fake.bus
        .publish(
            &fake.subjects.signaling_control(),
            calls_bus::Headers::new(),
            serde_json::to_vec(&instruction).unwrap().into(),
        )
        .await
        .unwrap();
    wait_for_metric(&node.base, "signaling_subscriptions_ended_total 2").await;

    fake.publish_call_event(
        &call,
        "participant_media_changed",
        json!({"userId": "alice", "isMicMuted": true}),
        None,
    )
    .await;
    assert_eq!(
        alice.event("participant_media_changed").await["isMicMuted"],
        true
    );
    for device in [&mut phone, &mut tablet] {
        device.drain_for(Duration::from_millis(200)).await;
        assert!(
            !device
                .events
                .iter()
                .any(|(name, _)| name == "participant_media_changed"),
            "a removed user's device still follows the call: {:?}",
            device.events
        );
    }
    // Instructions this node does not understand are ignored.
    fake.bus
        .publish(
            &fake.subjects.signaling_control(),
            calls_bus::Headers::new(),
            br#"{"type":"from_the_future"}"#.to_vec().into(),
        )
        .await
        .unwrap();
    let ack = alice.emit_ack("join_call", json!({"callId": call})).await;
    assert_eq!(ack["ok"], true, "{ack}");
    node.stop().await;
}

/// Polls the node's metrics until they contain `line` (an instruction was applied).
async fn wait_for_metric(base: &str, line: &str) {
    let metrics_url = format!("{base}/metrics");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = reqwest::get(&metrics_url)
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text.contains(line) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the node never applied the instruction ({line})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn end_subscription(fake: &FakeCallsApi, call: &str, user: &str, after_seq: Option<u64>) {
    let instruction = calls_bus::ControlMessage::EndSubscription {
        call_id: call.to_owned(),
        user_id: user.to_owned(),
        after_seq,
    };
    fake.bus
        .publish(
            &fake.subjects.signaling_control(),
            calls_bus::Headers::new(),
            serde_json::to_vec(&instruction).unwrap().into(),
        )
        .await
        .unwrap();
}

/// A call of alice and carol, both following it on one socket each.
async fn alice_and_carol_following(fake: &FakeCallsApi, node: &Node) -> (String, Client, Client) {
    let call = fake.create_call(&["alice", "carol"]);
    let mut alice = Client::connect_as(&node.base, "alice").await;
    let mut carol = Client::connect_as(&node.base, "carol").await;
    for client in [&mut alice, &mut carol] {
        let ack = client.emit_ack("join_call", json!({"callId": call})).await;
        assert_eq!(ack["ok"], true, "{ack}");
    }
    (call, alice, carol)
}

/// Alice mutes (event `seq`): she hears it, carol (removed) does not.
async fn only_alice_hears_her_mute(
    fake: &FakeCallsApi,
    call: &str,
    alice: &mut Client,
    carol: &mut Client,
    seq: u64,
) {
    fake.publish_call_event(
        call,
        "participant_media_changed",
        json!({"userId": "alice", "isMicMuted": true}),
        Some(seq),
    )
    .await;
    assert_eq!(
        alice.event("participant_media_changed").await["isMicMuted"],
        true
    );
    carol.drain_for(Duration::from_millis(200)).await;
    assert!(
        !carol
            .events
            .iter()
            .any(|(name, _)| name == "participant_media_changed"),
        "a removed user still follows the call: {:?}",
        carol.events
    );
}

#[tokio::test]
async fn a_removed_user_hears_of_her_removal_even_when_the_instruction_to_stop_comes_first() {
    let (_, fake, node) = setup(&[]).await;
    let (call, mut alice, mut carol) = alice_and_carol_following(&fake, &node).await;

    // The instruction and the event it follows travel on different subscriptions; here the
    // instruction is applied before the event is even published.
    end_subscription(&fake, &call, "carol", Some(1)).await;
    wait_for_metric(&node.base, "signaling_subscriptions_ended_total 1").await;
    fake.publish_call_event(
        &call,
        "participant_left",
        json!({"userId": "carol", "reason": "removed"}),
        Some(1),
    )
    .await;
    assert_eq!(carol.event("participant_left").await["reason"], "removed");
    assert_eq!(alice.event("participant_left").await["userId"], "carol");

    only_alice_hears_her_mute(&fake, &call, &mut alice, &mut carol, 2).await;
    node.stop().await;
}

#[tokio::test]
async fn a_removed_user_stops_following_the_call_even_if_her_removal_event_is_lost() {
    let (_, fake, node) = setup(&[("reorder-window-ms", "50")]).await;
    let (call, mut alice, mut carol) = alice_and_carol_following(&fake, &node).await;
    end_subscription(&fake, &call, "carol", Some(1)).await;
    wait_for_metric(&node.base, "signaling_subscriptions_ended_total 1").await;
    // Event 1 never comes. Past the reorder window and the grace for a lost event (2 s), the
    // socket stops following anyway.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    only_alice_hears_her_mute(&fake, &call, &mut alice, &mut carol, 1).await;
    node.stop().await;
}

#[tokio::test]
async fn a_socket_gets_its_users_events_on_every_device() {
    let (_, fake, node) = setup(&[]).await;
    let mut phone = Client::connect_as(&node.base, "carol@example.com").await;
    let mut tablet = Client::connect_as(&node.base, "carol@example.com").await;
    let mut other = Client::connect_as(&node.base, "dave").await;
    let subject = fake.subjects.user_events("carol@example.com");
    fake.publish(
        &subject,
        "incoming_call",
        json!({"callId": "c", "from": "dave"}),
    )
    .await;
    assert_eq!(phone.event("incoming_call").await["from"], "dave");
    assert_eq!(tablet.event("incoming_call").await["from"], "dave");
    other.drain_for(Duration::from_millis(100)).await;
    assert!(other.events.is_empty(), "{:?}", other.events);
    node.stop().await;
}

#[tokio::test]
async fn call_events_reach_sockets_in_seq_order_without_duplicates() {
    let (_, fake, node) = setup(&[("reorder-window-ms", "2000")]).await;
    let call = fake.create_call(&["alice"]);
    let mut alice = Client::connect_as(&node.base, "alice").await;
    assert_eq!(
        alice.emit_ack("join_call", json!({"callId": call})).await["data"]["seq"],
        0
    );
    for seq in [1, 3, 2, 2, 4, 1] {
        fake.publish_call_event(
            &call,
            "participant_status_changed",
            json!({"userId": "x"}),
            Some(seq),
        )
        .await;
    }
    let mut seqs = Vec::new();
    for _ in 0..4 {
        seqs.push(
            alice.event("participant_status_changed").await["seq"]
                .as_u64()
                .unwrap(),
        );
    }
    assert_eq!(seqs, [1, 2, 3, 4]);
    alice.drain_for(Duration::from_millis(100)).await;
    assert!(
        alice
            .events
            .iter()
            .all(|(n, _)| n != "participant_status_changed"),
        "{:?}",
        alice.events
    );
    node.stop().await;
}

#[tokio::test]
async fn a_gap_in_seq_is_given_up_after_the_reorder_window() {
    let (_, fake, node) = setup(&[("reorder-window-ms", "50")]).await;
    let call = fake.create_call(&["alice"]);
    let mut alice = Client::connect_as(&node.base, "alice").await;
    alice.emit_ack("join_call", json!({"callId": call})).await;
    for seq in [1, 3, 4] {
        fake.publish_call_event(&call, "participant_status_changed", json!({}), Some(seq))
            .await;
    }
    let mut seqs = Vec::new();
    for _ in 0..3 {
        seqs.push(
            alice.event("participant_status_changed").await["seq"]
                .as_u64()
                .unwrap(),
        );
    }
    assert_eq!(seqs, [1, 3, 4]);
    node.stop().await;
}

#[tokio::test]
async fn events_older_than_the_snapshot_are_not_relayed_to_the_joiner() {
    let (_, fake, node) = setup(&[]).await;
    let call = fake.create_call(&["alice"]);
    fake.state.lock().unwrap().calls.get_mut(&call).unwrap().seq = 10;
    let mut alice = Client::connect_as(&node.base, "alice").await;
    assert_eq!(
        alice.emit_ack("join_call", json!({"callId": call})).await["data"]["seq"],
        10
    );
    fake.publish_call_event(&call, "participant_left", json!({}), Some(9))
        .await;
    fake.publish_call_event(&call, "participant_left", json!({}), Some(11))
        .await;
    assert_eq!(alice.event("participant_left").await["seq"], 11);
    alice.drain_for(Duration::from_millis(100)).await;
    assert!(alice.events.iter().all(|(n, _)| n != "participant_left"));
    node.stop().await;
}

#[tokio::test]
async fn leaving_ending_and_disconnecting_release_every_subscription() {
    let (local, fake, node) = setup(&[]).await;
    // The fake's two subscriptions and the node's control subscription; presence requests use
    // short-lived inboxes.
    let baseline = 3;
    let settled = |expected: usize| {
        let local = local.clone();
        move || local.subscription_count() == expected
    };
    let call = fake.create_call(&["alice", "bob"]);
    let mut alice = Client::connect_as(&node.base, "alice").await;
    let mut bob = Client::connect_as(&node.base, "bob").await;
    eventually("user subscriptions", settled(baseline + 2)).await;
    alice.emit_ack("join_call", json!({"callId": call})).await;
    bob.emit_ack("join_call", json!({"callId": call})).await;
    eventually(
        "one call subscription for two sockets",
        settled(baseline + 3),
    )
    .await;

    alice.emit_ack("leave_call", json!({"callId": call})).await;
    assert_eq!(
        local.subscription_count(),
        baseline + 3,
        "bob still listens"
    );
    bob.emit_ack("leave_call", json!({"callId": call})).await;
    eventually(
        "call subscription dropped after the last leave",
        settled(baseline + 2),
    )
    .await;

    bob.emit_ack("join_call", json!({"callId": call})).await;
    eventually("resubscribed", settled(baseline + 3)).await;
    fake.publish_call_event(&call, "call_ended", json!({"reason": "completed"}), None)
        .await;
    assert_eq!(bob.event("call_ended").await["reason"], "completed");
    eventually(
        "call subscription dropped when the call ended",
        settled(baseline + 2),
    )
    .await;

    bob.emit_ack("join_call", json!({"callId": call})).await;
    eventually("resubscribed", settled(baseline + 3)).await;
    bob.disconnect().await;
    alice.disconnect().await;
    eventually("everything released on disconnect", settled(baseline)).await;
    node.stop().await;
}

#[tokio::test]
async fn presence_reports_connects_disconnects_heartbeats_and_node_down() {
    let (_, fake, node) = setup(&[]).await;
    let alice = Client::connect_as(&node.base, "alice").await;
    eventually("connected", || {
        fake.presence()
            .iter()
            .any(|p| matches!(p, PresenceMessage::Connected { user_id, .. } if user_id == "alice"))
    })
    .await;
    eventually("a heartbeat counting the socket", || {
        fake.presence()
            .iter()
            .any(|p| matches!(p, PresenceMessage::Heartbeat { sockets: 1, .. }))
    })
    .await;
    alice.disconnect().await;
    eventually("disconnected", || {
        fake.presence()
            .iter()
            .any(|p| matches!(p, PresenceMessage::Disconnected { .. }))
    })
    .await;
    let node_id = node.node_id.clone();
    node.stop().await;
    let presence = fake.presence();
    assert!(presence.iter().all(|p| p.node_id() == node_id));
    assert!(
        matches!(presence.last(), Some(PresenceMessage::NodeDown { .. })),
        "{presence:?}"
    );
}

#[tokio::test]
async fn shutdown_closes_the_transport_so_clients_reconnect_and_reports_no_per_socket_disconnects()
{
    let (_, fake, node) = setup(&[]).await;
    let call = fake.create_call(&["alice"]);
    let mut alice = Client::connect_as(&node.base, "alice").await;
    alice.emit_ack("join_call", json!({"callId": call})).await;
    eventually("connected reported", || {
        fake.presence()
            .iter()
            .any(|p| matches!(p, PresenceMessage::Connected { .. }))
    })
    .await;
    node.stop().await;
    alice.drain_for(Duration::from_millis(200)).await;
    let presence = fake.presence();
    assert!(
        !presence
            .iter()
            .any(|p| matches!(p, PresenceMessage::Disconnected { .. })),
        "{presence:?}"
    );
    assert!(
        presence
            .iter()
            .any(|p| matches!(p, PresenceMessage::NodeDown { .. }))
    );
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served() {
    let (_, fake, node) = setup(&[]).await;
    let call = fake.create_call(&["alice"]);
    let mut alice = Client::connect_as(&node.base, "alice").await;
    alice.emit_ack("join_call", json!({"callId": call})).await;
    alice.emit_ack("join_call", json!({})).await;
    let health = reqwest::get(format!("{}/healthz", node.base))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let ready = reqwest::get(format!("{}/readyz", node.base)).await.unwrap();
    assert_eq!(ready.status(), 200);
    let metrics = reqwest::get(format!("{}/metrics", node.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "signaling_sockets_connected",
        "signaling_events_in_total{event=\"join_call\"}",
        "signaling_events_out_total{event=\"call_participants\"}",
        "signaling_command_duration_seconds_bucket",
        "signaling_errors_total{code=\"VALIDATION_FAILED\"}",
    ] {
        assert!(metrics.contains(name), "{name} missing from:\n{metrics}");
    }
    node.stop().await;
}

#[tokio::test]
async fn heartbeats_stop_when_the_node_is_gone() {
    let local = LocalBus::new();
    let bus = Bus::from(local.clone());
    let prefix = unique_prefix();
    let subjects = Subjects::new(&prefix);
    let mut watch = bus.subscribe(&subjects.all_presence()).await.unwrap();
    let fake = FakeCallsApi::start(bus.clone(), &prefix).await;
    let node = Node::start(bus, &prefix, &[]).await;
    let first = tokio::time::timeout(common::WAIT, watch.next())
        .await
        .unwrap()
        .unwrap();
    let first: PresenceMessage = serde_json::from_slice(&first.payload).unwrap();
    assert!(matches!(
        first,
        PresenceMessage::Heartbeat { sockets: 0, .. }
    ));
    node.stop().await;
    // Drain what was sent up to the stop (node_down), then nothing for two intervals.
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), watch.next()).await {}
    let after = tokio::time::timeout(Duration::from_millis(2500), watch.next()).await;
    assert!(after.is_err(), "presence after stop: {after:?}");
    drop(fake);
}

#[tokio::test]
async fn a_shared_user_feed_delivers_user_events_without_a_subscription_per_user() {
    let (local, fake, node) = setup(&[("user-subscriptions", "shared")]).await;
    // The fake's two subscriptions, the node's one wildcard and its control subscription.
    assert_eq!(local.subscription_count(), 4);
    let mut rita = Client::connect_as(&node.base, "rita").await;
    let mut sam = Client::connect_as(&node.base, "sam").await;
    assert_eq!(local.subscription_count(), 4);
    fake.publish(
        &fake.subjects.user_events("rita"),
        "incoming_call",
        json!({"from": "sam"}),
    )
    .await;
    assert_eq!(rita.event("incoming_call").await["from"], "sam");
    sam.drain_for(Duration::from_millis(100)).await;
    assert!(sam.events.is_empty(), "{:?}", sam.events);
    node.stop().await;
}

#[tokio::test]
async fn presence_is_retried_until_calls_api_is_back() {
    let local = LocalBus::new();
    let bus = Bus::from(local.clone());
    let prefix = unique_prefix();
    let node = Node::start(bus.clone(), &prefix, &[]).await;
    let _tina = Client::connect_as(&node.base, "tina").await;
    // calls-api comes up only after the socket connected.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fake = FakeCallsApi::start(bus, &prefix).await;
    eventually("the connected report, retried", || {
        fake.presence()
            .iter()
            .any(|p| matches!(p, PresenceMessage::Connected { user_id, .. } if user_id == "tina"))
    })
    .await;
    node.stop().await;
}

#[tokio::test]
async fn a_socket_that_connects_is_sent_the_rings_calls_api_replays_for_its_user() {
    let (_, fake, node) = setup(&[]).await;
    fake.state.lock().unwrap().rings.insert(
        "bob".into(),
        vec![
            json!({"event": "incoming_call", "data": {"callId": "c1", "from": {"userId": "alice"}}}),
            json!({"event": "incoming_call_cancelled", "data": {"callId": "c0", "reason": "missed"}}),
        ],
    );
    let mut bob = Client::connect(
        &node.base,
        json!({"token": token("bob"), "deviceId": "pixel-7"}),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(bob.event("incoming_call").await["callId"], "c1");
    assert_eq!(bob.event("incoming_call_cancelled").await["callId"], "c0");
    let requests = fake.state.lock().unwrap().ring_requests.clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0]["userId"], "bob");
    assert_eq!(
        requests[0]["deviceId"], "pixel-7",
        "calls-api is told which device asks"
    );
    node.stop().await;
}

#[tokio::test]
async fn answered_elsewhere_is_not_sent_back_to_the_socket_or_the_device_that_answered() {
    let (_, fake, node) = setup(&[]).await;
    let call = fake.create_call(&["alice", "bob"]);
    let mut answering = Client::connect(
        &node.base,
        json!({"token": token("bob"), "deviceId": "phone"}),
        &[],
    )
    .await
    .unwrap();
    let mut same_device = Client::connect(
        &node.base,
        json!({"token": token("bob"), "deviceId": "phone"}),
        &[],
    )
    .await
    .unwrap();
    let mut tablet = Client::connect(
        &node.base,
        json!({"token": token("bob"), "deviceId": "tablet"}),
        &[],
    )
    .await
    .unwrap();
    // The answering socket's id, as calls-api sees it on its commands.
    answering
        .emit_ack("join_call", json!({"callId": call}))
        .await;
    let socket_id = fake.commands()[0].1["socketId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(fake.commands()[0].1["deviceId"], "phone");

    let user = fake.subjects.user_events("bob");
    let data =
        json!({"callId": call, "at": "2026-01-01T00:00:00Z", "reason": "answered_elsewhere"});
    fake.publish_with(
        &user,
        "incoming_call_cancelled",
        data.clone(),
        &[(calls_bus::wire::HEADER_ORIGIN_SOCKET, &socket_id)],
    )
    .await;
    assert_eq!(tablet.event("incoming_call_cancelled").await, data);
    assert_eq!(
        same_device.event("incoming_call_cancelled").await,
        data,
        "origin socket only"
    );
    answering.drain_for(Duration::from_millis(300)).await;
    assert!(
        answering
            .events
            .iter()
            .all(|(n, _)| n != "incoming_call_cancelled")
    );

    // An answer over REST names the device: none of its sockets is told.
    fake.publish_with(
        &user,
        "incoming_call_cancelled",
        data.clone(),
        &[(calls_bus::wire::HEADER_ORIGIN_DEVICE, "phone")],
    )
    .await;
    assert_eq!(tablet.event("incoming_call_cancelled").await, data);
    same_device.drain_for(Duration::from_millis(300)).await;
    answering.drain_for(Duration::from_millis(50)).await;
    assert!(
        same_device
            .events
            .iter()
            .all(|(n, _)| n != "incoming_call_cancelled")
    );
    assert!(
        answering
            .events
            .iter()
            .all(|(n, _)| n != "incoming_call_cancelled")
    );
    node.stop().await;
}
