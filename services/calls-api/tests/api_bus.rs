//! What signaling asks of calls-api over NATS (DESIGN "NATS subjects"): the socket commands,
//! answered in the Socket.IO ack shape and behaving like their REST twins, and socket presence
//! driving the disconnect grace (CONTRACT section 4), including a signaling node that dies
//! without a goodbye.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use calls_bus::{Headers, PresenceMessage};
use serde_json::{Value, json};
use support::{
    NatsServer, Options, TestApp, assert_participant_shape, id_of, participant, spawn_app,
};

#[track_caller]
fn ack_ok(ack: &Value) -> Value {
    assert_eq!(
        ack["ok"], true,
        "expected a successful ack, signaling got {ack}"
    );
    let keys: BTreeSet<&str> = ack
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["data", "ok"]),
        "a success ack is {{ok, data}}: {ack}"
    );
    ack["data"].clone()
}

#[track_caller]
fn ack_err(ack: &Value, code: &str) {
    assert_eq!(
        ack["ok"], false,
        "expected a refusal with {code}, signaling got {ack}"
    );
    let keys: BTreeSet<&str> = ack
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["error", "ok"]),
        "a failure ack is {{ok, error}}: {ack}"
    );
    assert_eq!(ack["error"]["code"], code, "wrong code in {ack}");
    assert!(
        ack["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "the error needs a message: {ack}"
    );
}

fn connected(node: &str, socket: &str, user: &str) -> PresenceMessage {
    PresenceMessage::Connected {
        node_id: node.into(),
        socket_id: socket.into(),
        user_id: user.into(),
    }
}

fn disconnected(node: &str, socket: &str, user: &str) -> PresenceMessage {
    PresenceMessage::Disconnected {
        node_id: node.into(),
        socket_id: socket.into(),
        user_id: user.into(),
    }
}

async fn report(app: &TestApp, message: PresenceMessage) {
    let ack = app.presence(&message).await;
    assert_eq!(
        ack,
        json!({"ok": true, "data": null}),
        "presence {message:?} was not acknowledged"
    );
}

/// Heartbeats for `node` every 250 ms until the handle is aborted, as a live signaling node
/// sends them; a failed publish (the bus is down) is lost, as a real node's would be.
fn keep_beating(app: &TestApp, node: &str) -> tokio::task::JoinHandle<()> {
    let (bus, subject) = (app.bus.clone(), app.subjects.presence(node));
    let message = serde_json::to_vec(&PresenceMessage::Heartbeat {
        node_id: node.into(),
        sockets: 1,
    })
    .unwrap();
    tokio::spawn(async move {
        loop {
            let _ = bus
                .publish(&subject, Headers::new(), message.clone().into())
                .await;
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_call_answers_a_participant_with_a_snapshot_and_a_stranger_with_call_not_found() {
    let app = spawn_app(Options::default()).await;
    let call = app.initiate("alice", "team", &["bob", "carol"], true).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    app.update_media("bob", &id, json!({"isMicMuted": true}))
        .await
        .ok(200);
    let now = app.call("alice", &id).await.ok(200);

    let snapshot = ack_ok(&app.command("join_call", "bob", json!({"callId": id})).await);
    let keys: BTreeSet<&str> = snapshot
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["callId", "participants", "seq", "status"])
    );
    assert_eq!(snapshot["callId"], id.as_str());
    assert_eq!(
        snapshot["seq"], now["seq"],
        "the snapshot's seq is the call's event counter"
    );
    assert_eq!(snapshot["status"], "active");
    assert_eq!(snapshot["participants"], now["participants"]);
    for p in snapshot["participants"].as_array().unwrap() {
        assert_participant_shape(p);
    }
    // Anyone in the call may follow it, whatever their status.
    ack_ok(
        &app.command("join_call", "carol", json!({"callId": id}))
            .await,
    );

    ack_err(
        &app.command("join_call", "mallory", json!({"callId": id}))
            .await,
        "CALL_NOT_FOUND",
    );
    let missing = uuid::Uuid::now_v7().to_string();
    let unknown = app
        .command("join_call", "mallory", json!({"callId": missing}))
        .await;
    ack_err(&unknown, "CALL_NOT_FOUND");
    assert_eq!(
        app.command("join_call", "mallory", json!({"callId": id}))
            .await["error"],
        unknown["error"],
        "a stranger cannot tell someone else's call from no call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_commands_change_the_call_like_their_rest_twins() {
    let app = spawn_app(Options::default()).await;
    let call = app
        .initiate("alice", "team", &["bob", "carol", "dave"], true)
        .await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);

    let me = ack_ok(
        &app.command(
            "media_state_changed",
            "bob",
            json!({"callId": id, "isCameraOff": true}),
        )
        .await,
    );
    assert_participant_shape(&me);
    assert_eq!(
        (me["userId"].as_str(), me["isCameraOff"].as_bool()),
        (Some("bob"), Some(true))
    );
    let event = app
        .events
        .wait_for(&app.subjects.call_events(&id), "participant_media_changed")
        .await;
    assert_eq!(event.data["isCameraOff"], true);
    assert_eq!(
        participant(&app.call("bob", &id).await.ok(200), "bob")["isCameraOff"],
        true
    );

    let ringing = ack_ok(
        &app.command(
            "call_status_changed",
            "carol",
            json!({"callId": id, "status": "ringing"}),
        )
        .await,
    );
    assert_eq!(participant(&ringing, "carol")["status"], "ringing");
    let declined = ack_ok(
        &app.command(
            "call_status_changed",
            "carol",
            json!({"callId": id, "status": "declined", "reason": "in a meeting"}),
        )
        .await,
    );
    assert_eq!(participant(&declined, "carol")["status"], "declined");
    assert_eq!(
        participant(&declined, "carol")["declineReason"],
        "in a meeting"
    );

    // Refusals carry the same codes as REST.
    ack_err(
        &app.command(
            "call_status_changed",
            "dave",
            json!({"callId": id, "status": "left"}),
        )
        .await,
        "INVALID_TRANSITION",
    );
    app.set_status("dave", &id, "left")
        .await
        .err(409, "INVALID_TRANSITION");
    ack_err(
        &app.command(
            "media_state_changed",
            "dave",
            json!({"callId": id, "isMicMuted": true}),
        )
        .await,
        "NOT_JOINED",
    );
    app.update_media("dave", &id, json!({"isMicMuted": true}))
        .await
        .err(409, "NOT_JOINED");
    ack_err(
        &app.command("leave_call", "mallory", json!({"callId": id}))
            .await,
        "CALL_NOT_FOUND",
    );

    let left = ack_ok(
        &app.command("leave_call", "bob", json!({"callId": id}))
            .await,
    );
    assert_eq!(participant(&left, "bob")["status"], "left");
    let event = app
        .events
        .wait_for(&app.subjects.call_events(&id), "participant_left")
        .await;
    assert_eq!(
        (event.data["userId"].as_str(), event.data["reason"].as_str()),
        (Some("bob"), Some("left"))
    );
    assert_eq!(
        participant(&app.call("alice", &id).await.ok(200), "bob")["status"],
        "left"
    );

    app.end("alice", &id).await.ok(200);
    ack_err(
        &app.command(
            "call_status_changed",
            "dave",
            json!({"callId": id, "status": "joined"}),
        )
        .await,
        "CALL_ENDED",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_commands_are_validation_failures() {
    let app = spawn_app(Options::default()).await;
    let call = app.initiate("alice", "team", &["bob"], true).await;
    let id = id_of(&call);
    let cases: Vec<(&str, &str, Value)> = vec![
        ("no callId", "join_call", json!({})),
        (
            "a callId that is not a UUID",
            "join_call",
            json!({"callId": "nope"}),
        ),
        (
            "a payload that is not an object",
            "leave_call",
            json!("hello"),
        ),
        (
            "a media change without flags",
            "media_state_changed",
            json!({"callId": id}),
        ),
        (
            "a flag that is not a boolean",
            "media_state_changed",
            json!({"callId": id, "isMicMuted": "yes"}),
        ),
        (
            "an unknown status",
            "call_status_changed",
            json!({"callId": id, "status": "sleeping"}),
        ),
        ("no status", "call_status_changed", json!({"callId": id})),
        ("an unknown command", "dance", json!({"callId": id})),
    ];
    for (what, name, payload) in cases {
        let ack = app.command(name, "alice", payload).await;
        assert_eq!(ack["error"]["code"], "VALIDATION_FAILED", "{what}: {ack}");
        ack_err(&ack, "VALIDATION_FAILED");
    }
    let not_json = app
        .request_raw(&app.subjects.command("join_call"), b"not json".to_vec())
        .await;
    ack_err(&not_json, "VALIDATION_FAILED");
    let no_user = app
        .request_raw(
            &app.subjects.command("join_call"),
            serde_json::to_vec(&json!({"payload": {"callId": id}})).unwrap(),
        )
        .await;
    ack_err(&no_user, "VALIDATION_FAILED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_participant_whose_sockets_all_close_is_disconnected_and_leaves_after_the_grace() {
    let app = spawn_app(Options {
        disconnect_grace_seconds: 1,
        ..Options::default()
    })
    .await;
    let call = app.initiate("alice", "dm", &["bob"], false).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    let on_call = app.subjects.call_events(&id);

    // Two devices; closing one leaves bob connected.
    report(&app, connected("node-1", "phone", "bob")).await;
    report(&app, connected("node-2", "tablet", "bob")).await;
    report(&app, disconnected("node-1", "phone", "bob")).await;
    assert_eq!(
        participant(&app.call("alice", &id).await.ok(200), "bob")["isConnected"],
        true
    );

    report(&app, disconnected("node-2", "tablet", "bob")).await;
    let gone = app
        .events
        .wait_for(&on_call, "participant_disconnected")
        .await;
    assert_eq!(gone.data["userId"], "bob");
    assert_eq!(gone.data["graceSeconds"], 1);
    let now = app.call("alice", &id).await.ok(200);
    assert_eq!(
        participant(&now, "bob")["isConnected"],
        false,
        "bob shows as disconnected during the grace"
    );
    assert_eq!(participant(&now, "bob")["status"], "joined");

    let left = app.events.wait_for(&on_call, "participant_left").await;
    assert_eq!(
        (left.data["userId"].as_str(), left.data["reason"].as_str()),
        (Some("bob"), Some("connection_lost"))
    );
    let ended = app.events.wait_for(&on_call, "call_ended").await;
    assert_eq!(
        ended.data["reason"], "completed",
        "an answered 1:1 ends when a side is gone"
    );
    assert!(
        ended.data["endedBy"].is_null(),
        "a lost connection ended it, not a user"
    );
    assert!(gone.seq() < left.seq() && left.seq() < ended.seq());
    let disconnects = app
        .events
        .on(&on_call)
        .iter()
        .filter(|e| e.name == "participant_disconnected")
        .count();
    assert_eq!(
        disconnects, 1,
        "closing one of two sockets is not a disconnect"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_within_the_grace_keeps_the_participant_in_the_call() {
    let app = spawn_app(Options {
        disconnect_grace_seconds: 1,
        ..Options::default()
    })
    .await;
    let call = app.initiate("alice", "team", &["bob"], true).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    let on_call = app.subjects.call_events(&id);

    report(&app, connected("node-1", "s1", "bob")).await;
    report(&app, disconnected("node-1", "s1", "bob")).await;
    app.events
        .wait_for(&on_call, "participant_disconnected")
        .await;
    // The app reconnects, through another node.
    report(&app, connected("node-2", "s2", "bob")).await;
    let back = app
        .events
        .wait_for(&on_call, "participant_reconnected")
        .await;
    assert_eq!(back.data["userId"], "bob");

    // Past the grace, bob is still in the call.
    tokio::time::sleep(Duration::from_millis(1_600)).await;
    let now = app.call("alice", &id).await.ok(200);
    assert_eq!(participant(&now, "bob")["status"], "joined");
    assert_eq!(participant(&now, "bob")["isConnected"], true);
    assert!(
        app.events
            .on(&on_call)
            .iter()
            .all(|e| e.name != "participant_left"),
        "a participant who came back within the grace must not be removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signaling_node_that_stops_heartbeating_takes_its_users_out_of_their_calls() {
    let app = spawn_app(Options {
        heartbeat_seconds: 1,
        disconnect_grace_seconds: 1,
        ..Options::default()
    })
    .await;
    let call = app.initiate("alice", "team", &["bob", "carol"], true).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    app.join("carol", &id).await.ok(200);
    let on_call = app.subjects.call_events(&id);

    report(&app, connected("node-dead", "s1", "bob")).await;
    report(&app, connected("node-alive", "s2", "carol")).await;
    // node-alive keeps beating; node-dead crashed and says nothing more.
    let beat = keep_beating(&app, "node-alive");

    let started = Instant::now();
    let gone = app
        .events
        .wait_for(&on_call, "participant_disconnected")
        .await;
    assert_eq!(gone.data["userId"], "bob");
    let left = app.events.wait_for(&on_call, "participant_left").await;
    assert_eq!(
        (left.data["userId"].as_str(), left.data["reason"].as_str()),
        (Some("bob"), Some("connection_lost"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    beat.abort();

    let now = app.call("alice", &id).await.ok(200);
    assert_eq!(
        participant(&now, "carol")["status"],
        "joined",
        "the live node's users stay: {now:#}"
    );
    assert_eq!(participant(&now, "carol")["isConnected"], true);
    assert_eq!(now["status"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_outage_longer_than_three_heartbeats_takes_nobody_out_of_their_call() {
    let mut nats = NatsServer::start().await;
    let app = spawn_app(Options {
        nats_url: Some(nats.url()),
        heartbeat_seconds: 1,
        disconnect_grace_seconds: 1,
        ..Options::default()
    })
    .await;
    let call = app.initiate("alice", "team", &["bob"], true).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    report(&app, connected("node-a", "s1", "bob")).await;
    // node-a beats whenever the bus lets it: it never stopped, NATS did.
    let beat = keep_beating(&app, "node-a");

    nats.stop();
    // Silence for more than three heartbeats, heard by nobody.
    tokio::time::sleep(Duration::from_secs(4)).await;
    nats.restart().await;
    // Long enough for an expiry and the grace after it, had calls-api blamed the node.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(4) {
        let now = app.call("alice", &id).await.ok(200);
        let bob = participant(&now, "bob");
        assert_eq!(
            (bob["status"].as_str(), bob["isConnected"].as_bool()),
            (Some("joined"), Some(true)),
            "bob was taken out of the call because NATS restarted: {now:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    beat.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_shuts_down_disconnects_its_users_at_once() {
    // Heartbeats every 5 s: expiry would take 15 s, so a prompt disconnect comes from node_down.
    let app = spawn_app(Options {
        disconnect_grace_seconds: 1,
        ..Options::default()
    })
    .await;
    let call = app.initiate("alice", "team", &["bob"], true).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    let on_call = app.subjects.call_events(&id);
    report(&app, connected("node-x", "s1", "bob")).await;

    let started = Instant::now();
    report(
        &app,
        PresenceMessage::NodeDown {
            node_id: "node-x".into(),
        },
    )
    .await;
    let gone = app
        .events
        .wait_for(&on_call, "participant_disconnected")
        .await;
    assert_eq!(gone.data["userId"], "bob");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "node_down took {:?} to disconnect",
        started.elapsed()
    );
    let left = app.events.wait_for(&on_call, "participant_left").await;
    assert_eq!(left.data["reason"], "connection_lost");
    let now = app.call("alice", &id).await.ok(200);
    assert_eq!(participant(&now, "bob")["status"], "left");
    assert_eq!(
        now["status"], "active",
        "the host is still in the group call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_from_a_node_calls_api_forgot_is_told_to_report_its_sockets_again() {
    let app = spawn_app(Options::default()).await;
    let heartbeat = |node: &str| PresenceMessage::Heartbeat {
        node_id: node.into(),
        sockets: 1,
    };
    // A node calls-api has never heard of (or expired after missed heartbeats) learns it.
    let first = app.presence(&heartbeat("node-forgotten")).await;
    assert_eq!(first["ok"], true, "{first}");
    assert_eq!(
        first["data"]["known"], false,
        "the node must be told to re-report its sockets: {first}"
    );
    // From then on it is known, and its heartbeats are plain acknowledgements.
    let second = app.presence(&heartbeat("node-forgotten")).await;
    assert_eq!(second["data"]["known"], true, "{second}");
}
