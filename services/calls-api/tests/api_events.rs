//! Events through the outbox onto the bus (CONTRACT section 5, DESIGN "NATS subjects"): what
//! signaling receives after each REST call, with `seq` gap-free per call; that events written
//! while NATS is down arrive once it is back; and that two replicas on one database neither
//! lose nor duplicate anything.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use calls_bus::Headers;
use reqwest::Method;
use serde_json::{Value, json};
use support::{
    BusEvent, DEADLINE, NatsServer, Options, Stack, TestApp, assert_call_shape, assert_gap_free,
    assert_participant_shape, assert_timestamp, id_of, spawn_app,
};

on_both_stacks!(
    every_state_change_reaches_the_bus_as_a_contract_event,
    the_caller_s_name_and_picture_and_the_ring_deadline_reach_the_people_rung,
);

#[track_caller]
fn assert_wire_shape(event: &BusEvent) {
    let keys: BTreeSet<&str> = event
        .message
        .as_object()
        .map(|o| o.keys().map(String::as_str).collect())
        .unwrap_or_default();
    assert_eq!(
        keys,
        BTreeSet::from(["data", "event"]),
        "bus messages are {{\"event\", \"data\"}}: {}",
        event.message
    );
    assert!(
        event
            .headers
            .get("Nats-Msg-Id")
            .is_some_and(|id| !id.is_empty()),
        "{} on {} has no Nats-Msg-Id header (JetStream cannot de-duplicate retries)",
        event.name,
        event.subject
    );
    assert_timestamp(&event.data["at"], "at");
}

async fn every_state_change_reaches_the_bus_as_a_contract_event(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    let s = &app.subjects;
    let call = app.initiate("alice", "team", &["bob", "carol"], true).await;
    let id = id_of(&call);
    let on_call = s.call_events(&id);

    // Every device of each invitee rings.
    for user in ["bob", "carol"] {
        let ring = app
            .events
            .wait_for(&s.user_events(user), "incoming_call")
            .await;
        assert_wire_shape(&ring);
        assert_eq!(ring.data["callId"], id.as_str());
        assert_eq!(ring.data["from"], json!({"userId": "alice"}));
        assert_timestamp(&ring.data["ringDeadline"], "ringDeadline");
        assert!(
            ring.data.get("seq").is_none(),
            "user events are not part of the call's seq stream"
        );
        assert_call_shape(&ring.data["call"]);
        assert_eq!(ring.data["call"]["id"], id.as_str());
    }
    assert!(
        app.events.on(&s.user_events("alice")).is_empty(),
        "the caller's own devices do not ring"
    );

    app.join("bob", &id).await.ok(200);
    let joined = app.events.wait_for(&on_call, "participant_joined").await;
    assert_participant_shape(&joined.data["participant"]);
    assert_eq!(joined.data["participant"]["userId"], "bob");
    assert_eq!(joined.data["participant"]["status"], "joined");
    let stop = app
        .events
        .wait_for(&s.user_events("bob"), "incoming_call_cancelled")
        .await;
    assert_eq!(
        stop.data["reason"], "answered_elsewhere",
        "bob's other devices stop ringing"
    );

    app.update_media("bob", &id, json!({"isMicMuted": true}))
        .await
        .ok(200);
    let media = app
        .events
        .wait_for(&on_call, "participant_media_changed")
        .await;
    assert_eq!(
        media.data,
        json!({"callId": id, "seq": media.data["seq"], "at": media.data["at"], "userId": "bob",
               "isMicMuted": true, "isCameraOff": false, "isSharingScreen": false})
    );

    app.set_status("carol", &id, "declined").await.ok(200);
    let declined = app
        .events
        .wait_for(&on_call, "participant_status_changed")
        .await;
    assert_eq!(
        (
            declined.data["userId"].as_str(),
            declined.data["status"].as_str()
        ),
        (Some("carol"), Some("declined"))
    );
    let stop = app
        .events
        .wait_for(&s.user_events("carol"), "incoming_call_cancelled")
        .await;
    assert_eq!(stop.data["reason"], "declined_elsewhere");

    app.set_status("bob", &id, "left").await.ok(200);
    let left = app.events.wait_for(&on_call, "participant_left").await;
    assert_eq!(
        (left.data["userId"].as_str(), left.data["reason"].as_str()),
        (Some("bob"), Some("left"))
    );

    let ended = app.end("alice", &id).await.ok(200);
    let last = ended["seq"].as_u64().unwrap();
    let stream = app
        .events
        .wait_for_count(&on_call, usize::try_from(last).unwrap())
        .await;
    assert_gap_free(&stream, last);
    let names: Vec<&str> = stream.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "participant_joined",
            "participant_media_changed",
            "participant_status_changed",
            "participant_left",
            "call_ended"
        ]
    );
    let end = stream.last().unwrap();
    assert_eq!(
        (end.data["reason"].as_str(), end.data["endedBy"].as_str()),
        (Some("completed"), Some("alice"))
    );
    for event in &stream {
        assert_wire_shape(event);
        assert_eq!(event.data["callId"], id.as_str());
    }
    // call_ended also goes to every invitee's devices.
    for user in ["bob", "carol"] {
        let copy = app
            .events
            .wait_for(&s.user_events(user), "call_ended")
            .await;
        assert_eq!(copy.data, end.data, "{user} gets the same call_ended");
    }

    // A caller who gives up stops the callee's phone ringing.
    let cancelled = app.initiate("alice", "dm", &["dave"], false).await;
    app.end("alice", &id_of(&cancelled)).await.ok(200);
    let stop = app
        .events
        .wait_for(&s.user_events("dave"), "incoming_call_cancelled")
        .await;
    assert_eq!(
        (stop.data["callId"].as_str(), stop.data["reason"].as_str()),
        (cancelled["id"].as_str(), Some("cancelled"))
    );
    let end = app
        .events
        .wait_for(&s.user_events("dave"), "call_ended")
        .await;
    assert_eq!(end.data["reason"], "cancelled");

    let ids: Vec<String> = app
        .events
        .all()
        .iter()
        .map(|e| e.headers.get("Nats-Msg-Id").unwrap_or_default().to_owned())
        .collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "every message has its own Nats-Msg-Id: {ids:?}"
    );
}

/// One message of the JetStream stream.
#[derive(Debug)]
struct Stored {
    subject: String,
    msg_id: String,
    event: Value,
}

/// Reads the whole JetStream stream through the JetStream API (request/reply), or `None` while
/// NATS does not answer.
async fn read_stream(app: &TestApp) -> Option<Vec<Stored>> {
    let stream = app.stream_name();
    let ask = |subject: String, body: Value| {
        let bus = app.bus.clone();
        async move {
            let reply = bus
                .request(
                    &subject,
                    Headers::new(),
                    serde_json::to_vec(&body).unwrap().into(),
                    Duration::from_secs(2),
                )
                .await
                .ok()?;
            serde_json::from_slice::<Value>(&reply.payload).ok()
        }
    };
    let info = ask(format!("$JS.API.STREAM.INFO.{stream}"), json!({})).await?;
    let state = &info["state"];
    let (first, last) = (state["first_seq"].as_u64()?, state["last_seq"].as_u64()?);
    let mut out = Vec::new();
    for seq in first..=last {
        if last == 0 {
            break;
        }
        let got = ask(
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
            json!({"seq": seq}),
        )
        .await?;
        let message = &got["message"];
        let data = STANDARD.decode(message["data"].as_str()?).ok()?;
        let headers = message["hdrs"]
            .as_str()
            .and_then(|h| STANDARD.decode(h).ok())
            .unwrap_or_default();
        let msg_id = String::from_utf8_lossy(&headers)
            .lines()
            .find_map(|l| l.strip_prefix("Nats-Msg-Id:").map(|v| v.trim().to_owned()))
            .unwrap_or_default();
        out.push(Stored {
            subject: message["subject"].as_str()?.to_owned(),
            msg_id,
            event: serde_json::from_slice(&data).ok()?,
        });
    }
    Some(out)
}

async fn readyz(app: &TestApp) -> u16 {
    app.send(app.request(Method::GET, "/readyz")).await.status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_while_nats_is_down_are_all_delivered_in_order_once_it_is_back() {
    let mut nats = NatsServer::start().await;
    let app = spawn_app(Options {
        nats_url: Some(nats.url()),
        ..Options::default()
    })
    .await;
    let call = app.initiate("alice", "team", &["bob", "carol"], true).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    app.events
        .wait_for(&app.subjects.call_events(&id), "participant_joined")
        .await;

    nats.stop();
    let started = Instant::now();
    while readyz(&app).await != 503 {
        assert!(
            started.elapsed() < DEADLINE,
            "/readyz kept saying ready with NATS down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The API does not need the bus to change state: the events wait in the outbox.
    app.update_media("bob", &id, json!({"isCameraOff": true}))
        .await
        .ok(200);
    app.set_status("carol", &id, "declined").await.ok(200);
    app.set_status("bob", &id, "left").await.ok(200);
    let ended = app.end("alice", &id).await.ok(200);
    let last = ended["seq"].as_u64().unwrap();
    assert_eq!(last, 5);

    nats.restart().await;
    let started = Instant::now();
    let stored = loop {
        if let Some(stored) = read_stream(&app).await
            && stored.iter().any(|m| {
                m.subject == app.subjects.call_events(&id) && m.event["event"] == "call_ended"
            })
            && stored
                .iter()
                .filter(|m| m.event["event"] == "call_ended")
                .count()
                == 3
        {
            break stored;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the outbox never delivered the events written while NATS was down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let on_call: Vec<&Stored> = stored
        .iter()
        .filter(|m| m.subject == app.subjects.call_events(&id))
        .collect();
    let seqs: Vec<u64> = on_call
        .iter()
        .map(|m| m.event["data"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=last).collect::<Vec<_>>(),
        "every call event, in order, stored once: {on_call:?}"
    );
    let names: Vec<&str> = on_call
        .iter()
        .map(|m| m.event["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "participant_joined",
            "participant_media_changed",
            "participant_status_changed",
            "participant_left",
            "call_ended"
        ]
    );
    for user in ["bob", "carol"] {
        let mine: Vec<&str> = stored
            .iter()
            .filter(|m| m.subject == app.subjects.user_events(user))
            .map(|m| m.event["event"].as_str().unwrap())
            .collect();
        assert_eq!(
            mine.first(),
            Some(&"incoming_call"),
            "{user}'s events: {mine:?}"
        );
        assert_eq!(
            mine.last(),
            Some(&"call_ended"),
            "{user}'s events: {mine:?}"
        );
    }
    let ids: BTreeSet<&str> = stored.iter().map(|m| m.msg_id.as_str()).collect();
    assert_eq!(
        ids.len(),
        stored.len(),
        "each event is stored once, whatever the relay retried"
    );

    let started = Instant::now();
    while readyz(&app).await != 200 {
        assert!(
            started.elapsed() < DEADLINE,
            "/readyz never recovered after NATS came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The command subscription came back with the connection.
    let ack = app
        .command("join_call", "alice", json!({"callId": id}))
        .await;
    assert_eq!(
        ack["ok"], true,
        "signaling's commands must be answered again after a NATS restart: {ack}"
    );
    assert_eq!(ack["data"]["seq"], last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_database_share_the_work_without_duplicating_it() {
    let mut app = spawn_app(Options {
        ring_timeout_seconds: 1,
        ..Options::default()
    })
    .await;
    let b = app.spawn_replica().await;
    let a = app.api.clone();

    // Requests to either replica act on the same calls.
    let call = a.initiate("alice", "team", &["bob", "carol"], true).await;
    let id = id_of(&call);
    assert_eq!(b.call("bob", &id).await.ok(200)["id"], id.as_str());
    b.join("bob", &id).await.ok(200);
    a.update_media("bob", &id, json!({"isSharingScreen": true}))
        .await
        .ok(200);
    b.set_status("carol", &id, "declined").await.ok(200);
    let glare = b
        .try_initiate(
            "bob",
            "team",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["alice"]}),
        )
        .await;
    assert_eq!(
        glare.ok(200)["id"],
        id.as_str(),
        "one live call per room holds across replicas"
    );
    let ended = b.end("alice", &id).await.ok(200);
    let last = ended["seq"].as_u64().unwrap();

    // Two people calling each other at once through different replicas get one call.
    for round in 0..5 {
        let room = format!("glare-{round}");
        let (x, y) = tokio::join!(
            a.try_initiate(
                "gus",
                &room,
                json!({"type": "audio", "isGroupCall": false, "inviteUserIds": ["hal"]})
            ),
            b.try_initiate(
                "hal",
                &room,
                json!({"type": "audio", "isGroupCall": false, "inviteUserIds": ["gus"]})
            ),
        );
        let mut codes = [x.status, y.status];
        codes.sort_unstable();
        assert_eq!(codes, [200, 201], "round {round}: {} / {}", x.text, y.text);
        assert_eq!(
            x.body["data"]["id"], y.body["data"]["id"],
            "round {round}: both sides must land in one call"
        );
        a.end("gus", x.body["data"]["id"].as_str().unwrap())
            .await
            .ok(200);
    }

    // A ring timeout fires once, whichever replica's timer loop sees it first.
    let unanswered = b.initiate("dave", "dm", &["erin"], false).await;
    let missed_id = id_of(&unanswered);
    let missed = app
        .wait_for_call("dave", &missed_id, "the ring timeout", |c| {
            c["status"] == "ended"
        })
        .await;
    assert_eq!(missed["endReason"], "missed");
    let missed_last = missed["seq"].as_u64().unwrap();
    assert_eq!(
        missed_last, 2,
        "one participant_status_changed and one call_ended: {missed:#}"
    );

    // A sentinel event after everything else: once it is through, anything duplicated would be too.
    a.initiate("zoe", "sentinel", &["yan"], false).await;
    app.events
        .wait_for(&app.subjects.user_events("yan"), "incoming_call")
        .await;
    let first_stream = app
        .events
        .wait_for_count(
            &app.subjects.call_events(&id),
            usize::try_from(last).unwrap(),
        )
        .await;
    assert_gap_free(&first_stream, last);
    let timeout_stream = app.events.on(&app.subjects.call_events(&missed_id));
    assert_gap_free(&timeout_stream, missed_last);
    let names: Vec<&str> = timeout_stream.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["participant_status_changed", "call_ended"]);
    let erin: Vec<String> = app
        .events
        .on(&app.subjects.user_events("erin"))
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(
        erin,
        ["incoming_call", "incoming_call_cancelled", "call_ended"],
        "erin's devices hear each thing once"
    );

    let all = app.events.all();
    let ids: Vec<&str> = all
        .iter()
        .map(|e| e.headers.get("Nats-Msg-Id").unwrap_or_default())
        .collect();
    let unique: BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "no event was published twice: {ids:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_event_stream_is_recreated_and_the_events_still_go_out() {
    // What a NATS restart without storage looks like to calls-api: the stream is gone.
    let app = spawn_app(Options::default()).await;
    let call = app.initiate("alice", "team", &["bob"], true).await;
    let id = id_of(&call);
    app.events
        .wait_for(&app.subjects.user_events("bob"), "incoming_call")
        .await;
    app.bus.delete_stream(&app.stream_name()).await.unwrap();

    app.join("bob", &id).await.ok(200);
    app.update_media("bob", &id, json!({"isMicMuted": true}))
        .await
        .ok(200);
    // The first publish after the loss reaches core subscribers but no stream acknowledges it
    // (the relay waits out the 5 s JetStream ack timeout: subscribers count as responders), so
    // the relay sends it again once the stream is back. Delivery is at-least-once, and a retry
    // carries the same Nats-Msg-Id (signaling drops call events by seq).
    let on_call = app.subjects.call_events(&id);
    let distinct = app
        .events
        .wait_until("both events after the stream was lost", |events| {
            let mut seen = BTreeSet::new();
            let distinct: Vec<BusEvent> = events
                .iter()
                .filter(|e| {
                    e.subject == on_call
                        && seen.insert(e.headers.get("Nats-Msg-Id").unwrap_or_default().to_owned())
                })
                .cloned()
                .collect();
            (distinct.len() >= 2).then_some(distinct)
        })
        .await;
    assert_gap_free(&distinct, 2);
    let stored = read_stream(&app)
        .await
        .expect("the stream must exist again");
    assert!(
        stored
            .iter()
            .any(|m| m.event["event"] == "participant_media_changed"),
        "events after the loss are stored again: {stored:?}"
    );
}

async fn the_caller_s_name_and_picture_and_the_ring_deadline_reach_the_people_rung(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "alice", "exp": now + 600, "name": "Alice Liddell",
                "picture": "https://img.example/alice.png"}),
        &jsonwebtoken::EncodingKey::from_secret(support::JWT_SECRET.as_bytes()),
    )
    .unwrap();
    app.remember_token(&token);
    let created = app
        .send(
            app.request(Method::POST, "/api/v1/calls/rooms/room-p/initiate")
                .bearer_auth(&token)
                .json(&json!({"type": "audio", "isGroupCall": false, "inviteUserIds": ["bob"]})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let ring = app
        .events
        .wait_for(&app.subjects.user_events("bob"), "incoming_call")
        .await;
    assert_eq!(
        ring.data["from"],
        json!({"userId": "alice", "displayName": "Alice Liddell",
               "avatarUrl": "https://img.example/alice.png"})
    );
    let parse = |v: &Value| {
        time::OffsetDateTime::parse(
            v.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    // The ring deadline is the ring timeout after the call was created (45 s by default).
    assert_eq!(
        parse(&ring.data["ringDeadline"]) - parse(&created.body["data"]["createdAt"]),
        time::Duration::seconds(45)
    );
}
