//! The calls REST API (CONTRACT sections 3 and 4) as apps use it: 1:1 and group flows, the rules
//! the server enforces (one live call per room, glare, idempotency, busy, capacity, end reasons,
//! ring timeout, rejoin, the status transition table), active-call recovery and history.
//!
//! Every test runs twice: on PostgreSQL with NATS (the scaled deployment) and on SQLite with the
//! in-process bus (the embedded default).

#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::{
    Options, Stack, assert_call_shape, assert_participant_shape, id_of, participant, spawn_app,
    statuses,
};

on_both_stacks!(
    a_one_to_one_call_rings_is_answered_and_completes_when_a_side_hangs_up,
    a_group_call_lives_while_anyone_is_in_it_and_the_host_ends_it_for_everyone,
    a_group_call_ends_when_its_last_participant_leaves,
    initiating_in_a_room_with_a_live_call_returns_that_call_instead_of_a_second,
    two_people_calling_each_other_at_once_end_up_in_the_same_call,
    retrying_an_initiate_with_the_same_idempotency_key_returns_the_first_response,
    an_invitee_already_in_another_call_is_declined_as_busy,
    calls_end_with_the_reason_that_matches_what_happened,
    invitees_nobody_answers_for_are_missed_when_the_ring_timeout_runs_out,
    the_rooms_active_call_is_returned_until_it_ends,
    call_history_pages_through_a_users_calls_newest_first,
    participant_status_changes_follow_the_transition_table,
    twenty_racing_joins_never_push_a_call_past_max_participants,
    a_call_that_reaches_the_max_duration_ends_with_timeout,
);

fn status_of(call: &Value, user: &str) -> String {
    participant(call, user)["status"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn a_one_to_one_call_rings_is_answered_and_completes_when_a_side_hangs_up(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;

    // 1. Initiate.
    let resp = app
        .try_initiate(
            "alice",
            "room-1",
            json!({"type": "audio", "isGroupCall": false, "inviteUserIds": ["bob"]}),
        )
        .await;
    let call = resp.ok(201);
    assert_call_shape(&call);
    let id = id_of(&call);
    assert_eq!(call["chatRoomId"], "room-1");
    assert_eq!(call["type"], "audio");
    assert_eq!(call["isGroupCall"], false);
    assert_eq!(call["status"], "ringing");
    assert_eq!(call["initiatorId"], "alice");
    assert_eq!(call["maxParticipants"], 2, "a 1:1 holds two people");
    assert!(call["startedAt"].is_null());
    let host = participant(&call, "alice");
    assert_eq!(
        (host["role"].as_str(), host["status"].as_str()),
        (Some("host"), Some("joined"))
    );
    assert!(!host["joinedAt"].is_null());
    assert_eq!(
        host["isCameraOff"], true,
        "an audio call starts with the camera off"
    );
    let callee = participant(&call, "bob");
    assert_eq!(
        (callee["role"].as_str(), callee["status"].as_str()),
        (Some("participant"), Some("invited"))
    );
    assert!(callee["joinedAt"].is_null());

    // The callee sees the call, and their phone rings.
    assert_eq!(app.call("bob", &id).await.ok(200)["id"], id.as_str());
    let ringing = app.set_status("bob", &id, "ringing").await.ok(200);
    assert_eq!(status_of(&ringing, "bob"), "ringing");

    // 2. Answer (join with the mic muted).
    let resp = app
        .post(
            "bob",
            &format!("/api/v1/calls/{id}/join"),
            json!({"isMicMuted": true}),
        )
        .await;
    let call = resp.ok(200);
    assert_eq!(resp.body["message"], "Call joined successfully");
    assert_call_shape(&call);
    assert_eq!(
        call["status"], "active",
        "the first answer makes the call active"
    );
    assert!(!call["startedAt"].is_null());
    let bob = participant(&call, "bob");
    assert_eq!(bob["status"], "joined");
    assert_eq!(bob["isMicMuted"], true);
    assert!(!bob["joinedAt"].is_null());

    // 3. Toggle media: the answer is the caller's own Participant.
    let me = app
        .update_media(
            "bob",
            &id,
            json!({"isCameraOff": false, "isSharingScreen": true}),
        )
        .await
        .ok(200);
    assert_participant_shape(&me);
    assert_eq!(me["userId"], "bob");
    assert_eq!(
        (
            me["isMicMuted"].as_bool(),
            me["isCameraOff"].as_bool(),
            me["isSharingScreen"].as_bool()
        ),
        (Some(true), Some(false), Some(true))
    );

    // 4. Hang up.
    let ended = app.end("alice", &id).await.ok(200);
    assert_call_shape(&ended);
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["endReason"], "completed");
    assert_eq!(ended["endedBy"], "alice");
    assert_eq!(
        statuses(&ended),
        vec![
            ("alice".into(), "left".into()),
            ("bob".into(), "left".into())
        ]
    );
    assert!(!participant(&ended, "bob")["leftAt"].is_null());

    // An ended call stays readable and cannot be ended twice.
    assert_eq!(app.call("bob", &id).await.ok(200)["status"], "ended");
    app.end("bob", &id).await.err(409, "CALL_ENDED");
    app.join("bob", &id).await.err(409, "CALL_ENDED");
}

async fn a_group_call_lives_while_anyone_is_in_it_and_the_host_ends_it_for_everyone(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    let call = app
        .initiate("alice", "team", &["bob", "carol", "dave"], true)
        .await;
    let id = id_of(&call);
    assert_eq!(call["isGroupCall"], true);
    assert_eq!(
        call["maxParticipants"], 16,
        "maxParticipants defaults to CALL_MAX_PARTICIPANTS"
    );
    assert_eq!(
        statuses(&call),
        vec![
            ("alice".into(), "joined".into()),
            ("bob".into(), "invited".into()),
            ("carol".into(), "invited".into()),
            ("dave".into(), "invited".into())
        ]
    );

    let call = app.join("bob", &id).await.ok(200);
    assert_eq!(call["status"], "active");
    let call = app.set_status("carol", &id, "declined").await.ok(200);
    assert_eq!(
        call["status"], "active",
        "one decline does not end a group call"
    );
    assert_eq!(status_of(&call, "carol"), "declined");

    // Leaving a group call leaves the others in it; coming back is allowed while it is live.
    let call = app.set_status("bob", &id, "left").await.ok(200);
    assert_eq!(call["status"], "active");
    assert_eq!(status_of(&call, "bob"), "left");
    assert!(!participant(&call, "bob")["leftAt"].is_null());
    let call = app.join("bob", &id).await.ok(200);
    assert_eq!(status_of(&call, "bob"), "joined");
    assert!(
        participant(&call, "bob")["leftAt"].is_null(),
        "a rejoin clears leftAt"
    );
    let call = app.join("carol", &id).await.ok(200);
    assert_eq!(
        status_of(&call, "carol"),
        "joined",
        "who declined may still join a live group call"
    );

    // Only the host ends a group call for everyone.
    app.end("bob", &id).await.err(403, "FORBIDDEN");
    assert_eq!(app.call("alice", &id).await.ok(200)["status"], "active");
    let ended = app.end("alice", &id).await.ok(200);
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["endReason"], "completed");
    assert_eq!(ended["endedBy"], "alice");
    assert_eq!(
        statuses(&ended),
        vec![
            ("alice".into(), "left".into()),
            ("bob".into(), "left".into()),
            ("carol".into(), "left".into()),
            ("dave".into(), "missed".into())
        ],
        "the joined leave and whoever was still ringing missed it"
    );
}

async fn a_group_call_ends_when_its_last_participant_leaves(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    let call = app
        .try_initiate(
            "alice",
            "team",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["bob", "carol"], "maxParticipants": 4}),
        )
        .await
        .ok(201);
    assert_eq!(call["maxParticipants"], 4);
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    app.set_status("carol", &id, "declined").await.ok(200);
    let call = app.set_status("alice", &id, "left").await.ok(200);
    assert_eq!(
        call["status"], "active",
        "the host leaving does not end a call others are in"
    );
    let call = app.set_status("bob", &id, "left").await.ok(200);
    assert_eq!(call["status"], "ended", "nobody is left in the call");
    assert_eq!(call["endReason"], "completed");
}

async fn initiating_in_a_room_with_a_live_call_returns_that_call_instead_of_a_second(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    let body = json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["bob", "carol"]});
    let first = app
        .try_initiate("alice", "room", body.clone())
        .await
        .ok(201);

    let again = app.try_initiate("alice", "room", body).await;
    assert_eq!(
        again.ok(200)["id"],
        first["id"],
        "the room's live call comes back, not a new one"
    );
    let invitee = app
        .try_initiate(
            "bob",
            "room",
            json!({"type": "audio", "isGroupCall": false, "inviteUserIds": ["alice"]}),
        )
        .await;
    assert_eq!(
        invitee.ok(200)["id"],
        first["id"],
        "an invitee calling the room gets the call they are in"
    );

    app.end("alice", &id_of(&first)).await.ok(200);
    let next = app.initiate("alice", "room", &["bob"], false).await;
    assert_ne!(
        next["id"], first["id"],
        "after the call ended the room can have a new one"
    );
}

async fn two_people_calling_each_other_at_once_end_up_in_the_same_call(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    for round in 0..5 {
        let room = format!("dm-{round}");
        let (a, b) = tokio::join!(
            app.try_initiate(
                "alice",
                &room,
                json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["bob"]})
            ),
            app.try_initiate(
                "bob",
                &room,
                json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["alice"]})
            ),
        );
        let mut codes = [a.status, b.status];
        codes.sort_unstable();
        assert_eq!(
            codes,
            [200, 201],
            "round {round}: one call is created and the other side gets it: {} / {}",
            a.text,
            b.text
        );
        let (ca, cb) = (a.ok(a.status), b.ok(b.status));
        assert_eq!(
            ca["id"], cb["id"],
            "round {round}: both sides must land in the same call"
        );
        assert_eq!(ca["participants"].as_array().unwrap().len(), 2);
        let active = app.active("alice", &room).await.ok(200);
        assert_eq!(
            active["id"], ca["id"],
            "round {round}: the room has exactly that one live call"
        );
        // Hang up, or both would be busy (joined in a live call) in the next round.
        app.end("alice", &id_of(&ca)).await.ok(200);
    }
}

async fn retrying_an_initiate_with_the_same_idempotency_key_returns_the_first_response(
    stack: Stack,
) {
    let app = spawn_app(Options::on(stack)).await;
    let path = "/api/v1/calls/rooms/room/initiate";
    let body = json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["bob"]});
    let send = |user: &'static str, key: String, body: Value| {
        let request = app
            .request_as(user, Method::POST, path)
            .header("Idempotency-Key", key)
            .json(&body);
        app.send(request)
    };

    let first = send("alice", "key-1".into(), body.clone()).await.ok(201);
    let retry = send("alice", "key-1".into(), body.clone()).await.ok(201);
    assert_eq!(
        retry, first,
        "a retry with the same key must return the first response"
    );

    // Even once the call moved on, the retry gets the first response, not a second call.
    app.join("bob", &id_of(&first)).await.ok(200);
    let late = send(
        "alice",
        "key-1".into(),
        json!({"type": "audio", "isGroupCall": true, "inviteUserIds": ["zed"]}),
    )
    .await
    .ok(201);
    assert_eq!(late, first);

    // A new key is a new request: the room's live call, as it is now, with 200.
    let fresh = send("alice", "key-2".into(), body.clone()).await.ok(200);
    assert_eq!(fresh["id"], first["id"]);
    assert_eq!(fresh["status"], "active");
    // Keys belong to their user: bob's "key-1" is his own request.
    let bobs = send(
        "bob",
        "key-1".into(),
        json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["alice"]}),
    )
    .await
    .ok(200);
    assert_eq!(bobs["id"], first["id"]);

    let err = send("alice", "k".repeat(300), body)
        .await
        .err(400, "VALIDATION_FAILED");
    assert_eq!(err.details[0].field, "Idempotency-Key");

    // Retries racing each other (a flaky network resending) still create one call.
    let racing = json!({"type": "audio", "isGroupCall": false, "inviteUserIds": ["carol"]});
    let path = "/api/v1/calls/rooms/other-room/initiate";
    let retries = futures::future::join_all((0..5).map(|_| {
        app.send(
            app.request_as("dave", Method::POST, path)
                .header("Idempotency-Key", "same")
                .json(&racing),
        )
    }))
    .await;
    let first = retries[0].ok(201);
    for retry in &retries {
        assert_eq!(
            retry.ok(201),
            first,
            "every concurrent retry gets the first response"
        );
    }
}

async fn an_invitee_already_in_another_call_is_declined_as_busy(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    let first = app.initiate("alice", "room-a", &["bob"], false).await;
    app.join("bob", &id_of(&first)).await.ok(200);

    let busy = app.initiate("carol", "room-b", &["bob"], false).await;
    assert_eq!(busy["status"], "ended", "a 1:1 to a busy user ends at once");
    assert_eq!(busy["endReason"], "busy");
    let bob = participant(&busy, "bob");
    assert_eq!(bob["status"], "declined");
    assert_eq!(bob["declineReason"], "busy");

    let group = app.initiate("dave", "room-c", &["bob", "erin"], true).await;
    assert_eq!(
        group["status"], "ringing",
        "a group call still rings the others"
    );
    assert_eq!(participant(&group, "bob")["declineReason"], "busy");
    assert_eq!(status_of(&group, "bob"), "declined");
    assert_eq!(status_of(&group, "erin"), "invited");

    // Once free again, bob can be called.
    app.end("alice", &id_of(&first)).await.ok(200);
    let again = app.initiate("carol", "room-b", &["bob"], false).await;
    assert_eq!(again["status"], "ringing");
    assert_eq!(status_of(&again, "bob"), "invited");
}

async fn calls_end_with_the_reason_that_matches_what_happened(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    let check = |call: Value, reason: &str, by: Option<&str>, what: &str| {
        assert_eq!(
            call["status"], "ended",
            "{what}: the call should have ended: {call:#}"
        );
        assert_eq!(call["endReason"], reason, "{what}: wrong end reason");
        assert_eq!(call["endedBy"].as_str(), by, "{what}: wrong endedBy");
    };

    let c = app.initiate("alice", "r1", &["bob"], false).await;
    let ended = app.set_status("bob", &id_of(&c), "declined").await.ok(200);
    check(
        ended.clone(),
        "declined",
        Some("bob"),
        "the callee declines a 1:1",
    );
    assert_eq!(status_of(&ended, "bob"), "declined");

    let c = app.initiate("alice", "r2", &["bob"], false).await;
    let ended = app.end("alice", &id_of(&c)).await.ok(200);
    check(
        ended.clone(),
        "cancelled",
        Some("alice"),
        "the caller hangs up before an answer",
    );
    assert_eq!(status_of(&ended, "bob"), "missed");

    let c = app.initiate("alice", "r3", &["bob"], false).await;
    let ended = app.set_status("alice", &id_of(&c), "left").await.ok(200);
    check(
        ended,
        "cancelled",
        Some("alice"),
        "the caller leaves before an answer",
    );

    let c = app.initiate("alice", "r4", &["bob"], false).await;
    let ended = app.end("bob", &id_of(&c)).await.ok(200);
    check(
        ended,
        "declined",
        Some("bob"),
        "the callee hangs up a ringing 1:1",
    );

    let c = app.initiate("alice", "r5", &["bob"], false).await;
    app.join("bob", &id_of(&c)).await.ok(200);
    let ended = app.set_status("bob", &id_of(&c), "left").await.ok(200);
    check(
        ended,
        "completed",
        Some("bob"),
        "the callee leaves an answered 1:1",
    );

    let c = app.initiate("alice", "r6", &["bob", "carol"], true).await;
    let ended = app.end("alice", &id_of(&c)).await.ok(200);
    check(
        ended,
        "cancelled",
        Some("alice"),
        "the host ends a group call nobody answered",
    );

    let c = app.initiate("alice", "r7", &["bob", "carol"], true).await;
    let still = app.set_status("bob", &id_of(&c), "declined").await.ok(200);
    assert_eq!(still["status"], "ringing", "carol is still being rung");
    let ended = app
        .set_status("carol", &id_of(&c), "declined")
        .await
        .ok(200);
    check(
        ended,
        "declined",
        Some("carol"),
        "every invitee of a group call declines",
    );

    let c = app.initiate("alice", "r8", &["bob", "carol"], true).await;
    app.set_status("bob", &id_of(&c), "declined").await.ok(200);
    let ended = app.set_status("carol", &id_of(&c), "missed").await.ok(200);
    check(
        ended,
        "missed",
        Some("carol"),
        "one declines, the other misses it",
    );
}

async fn invitees_nobody_answers_for_are_missed_when_the_ring_timeout_runs_out(stack: Stack) {
    let app = spawn_app(Options {
        ring_timeout_seconds: 1,
        ..Options::on(stack)
    })
    .await;
    let one = app.initiate("alice", "r1", &["bob"], false).await;
    let group = app.initiate("carol", "r2", &["dave", "erin"], true).await;
    app.join("dave", &id_of(&group)).await.ok(200);

    let missed = app
        .wait_for_call("alice", &id_of(&one), "the 1:1's ring timeout", |c| {
            c["status"] == "ended"
        })
        .await;
    assert_eq!(missed["endReason"], "missed");
    assert!(missed["endedBy"].is_null(), "a timer ended it, not a user");
    assert_eq!(status_of(&missed, "bob"), "missed");

    let group = app
        .wait_for_call("carol", &id_of(&group), "erin's ring timeout", |c| {
            participant(c, "erin")["status"] == "missed"
        })
        .await;
    assert_eq!(
        group["status"], "active",
        "the group call goes on with those who answered"
    );
    // Who missed a live call may still join it.
    let joined = app.join("erin", &id_of(&group)).await.ok(200);
    assert_eq!(status_of(&joined, "erin"), "joined");
}

async fn the_rooms_active_call_is_returned_until_it_ends(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    let none = app.active("alice", "room").await.ok(200);
    assert!(none.is_null(), "no call yet: data must be null, got {none}");

    let call = app.initiate("alice", "room", &["bob"], false).await;
    for user in ["alice", "bob"] {
        let active = app.active(user, "room").await.ok(200);
        assert_call_shape(&active);
        assert_eq!(
            active["id"], call["id"],
            "{user} recovers the live call after an app restart"
        );
    }
    assert!(
        app.active("mallory", "room").await.ok(200).is_null(),
        "someone outside the call must not learn about it"
    );

    app.end("alice", &id_of(&call)).await.ok(200);
    assert!(
        app.active("alice", "room").await.ok(200).is_null(),
        "an ended call is not active"
    );
}

async fn call_history_pages_through_a_users_calls_newest_first(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    let mut created = Vec::new();
    for i in 0..5 {
        let call = app
            .initiate("alice", &format!("h{i}"), &["bob"], false)
            .await;
        app.end("alice", &id_of(&call)).await.ok(200);
        created.push(id_of(&call));
    }
    app.initiate("carol", "other", &["dave"], false).await;
    created.reverse();

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut sizes = Vec::new();
    loop {
        let query = match &cursor {
            None => "?limit=2".to_owned(),
            Some(c) => format!("?limit=2&before={c}"),
        };
        let page = app.history("alice", &query).await.ok(200);
        let items = page["items"].as_array().unwrap();
        sizes.push(items.len());
        for item in items {
            assert_call_shape(item);
            seen.push(id_of(item));
        }
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => {
                assert!(
                    page["nextCursor"].is_null(),
                    "the last page says so with nextCursor: null"
                );
                break;
            }
        }
        assert!(sizes.len() < 10, "history never ends: {sizes:?}");
    }
    assert_eq!(sizes, vec![2, 2, 1]);
    assert_eq!(
        seen, created,
        "alice's calls, newest first, each once, nobody else's"
    );

    let everything = app.history("bob", "").await.ok(200);
    assert_eq!(
        everything["items"].as_array().unwrap().len(),
        5,
        "invitees see the calls too"
    );
    assert!(everything["nextCursor"].is_null());
}

/// Brings `user` (an invitee of a live group call) from `invited` to `from`.
async fn bring(app: &support::TestApp, id: &str, user: &str, from: &str) {
    match from {
        "invited" => {}
        "ringing" | "declined" | "missed" => {
            app.set_status(user, id, from).await.ok(200);
        }
        "joined" => {
            app.join(user, id).await.ok(200);
        }
        "left" => {
            app.join(user, id).await.ok(200);
            app.set_status(user, id, "left").await.ok(200);
        }
        other => panic!("no way to reach {other}"),
    }
}

async fn participant_status_changes_follow_the_transition_table(stack: Stack) {
    // CONTRACT section 4: invited→ringing|joined|declined|missed, ringing→joined|declined|missed,
    // joined→left, left|declined|missed→joined; setting the status one has is a no-op; anything
    // else is INVALID_TRANSITION.
    const TABLE: &[(&str, &str, bool)] = &[
        ("invited", "ringing", true),
        ("invited", "joined", true),
        ("invited", "declined", true),
        ("invited", "missed", true),
        ("invited", "left", false),
        ("invited", "invited", false),
        ("ringing", "joined", true),
        ("ringing", "declined", true),
        ("ringing", "missed", true),
        ("ringing", "ringing", true),
        ("ringing", "left", false),
        ("ringing", "invited", false),
        ("joined", "left", true),
        ("joined", "joined", true),
        ("joined", "ringing", false),
        ("joined", "declined", false),
        ("joined", "missed", false),
        ("joined", "invited", false),
        ("left", "joined", true),
        ("left", "ringing", false),
        ("left", "declined", false),
        ("left", "missed", false),
        ("declined", "joined", true),
        ("declined", "ringing", false),
        ("declined", "missed", false),
        ("declined", "left", false),
        ("missed", "joined", true),
        ("missed", "declined", false),
        ("missed", "ringing", false),
        ("missed", "left", false),
    ];
    let app = spawn_app(Options::on(stack)).await;
    let mut wrong = Vec::new();
    for (batch, rows) in TABLE.chunks(12).enumerate() {
        // A call that outlives every row: the host stays in and "keeper" keeps ringing.
        let users: Vec<String> = (0..rows.len()).map(|i| format!("u{batch}-{i}")).collect();
        let mut invitees: Vec<&str> = users.iter().map(String::as_str).collect();
        invitees.push("keeper");
        let call = app
            .initiate("host", &format!("transitions-{batch}"), &invitees, true)
            .await;
        let id = id_of(&call);
        for ((from, to, allowed), user) in rows.iter().zip(&users) {
            bring(&app, &id, user, from).await;
            let resp = app.set_status(user, &id, to).await;
            let after = app.call("host", &id).await.ok(200);
            let now = status_of(&after, user);
            let outcome = if *allowed {
                (resp.status == 200 && now == *to).then_some(())
            } else {
                (resp.status == 409 && resp.body["code"] == "INVALID_TRANSITION" && now == *from)
                    .then_some(())
            };
            if outcome.is_none() {
                wrong.push(format!(
                    "{from} → {to}: expected {}, the client got {} {} and the participant is now {now}",
                    if *allowed { "200" } else { "409 INVALID_TRANSITION (nothing changed)" },
                    resp.status,
                    resp.body["code"].as_str().unwrap_or(""),
                ));
            } else if !allowed {
                resp.err(409, "INVALID_TRANSITION");
            }
            assert_ne!(
                after["status"], "ended",
                "{from} → {to} must not end the call"
            );
        }
    }
    assert!(
        wrong.is_empty(),
        "status changes that break the transition table:\n{}",
        wrong.join("\n")
    );
}

async fn twenty_racing_joins_never_push_a_call_past_max_participants(stack: Stack) {
    // Uninvited room members may join a group call in table mode, so many more people than
    // the call holds can race for a place.
    let app = spawn_app(Options::on(stack).table_mode()).await;
    let racers: Vec<String> = (1..=20).map(|i| format!("m{i:02}")).collect();
    let mut members: Vec<&str> = racers.iter().map(String::as_str).collect();
    members.push("host");
    app.set_members("big-room", &members).await;
    let call = app
        .try_initiate(
            "host",
            "big-room",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["m01"], "maxParticipants": 5}),
        )
        .await
        .ok(201);
    let id = id_of(&call);

    let joins = futures::future::join_all(racers.iter().map(|u| app.join(u, &id))).await;
    let admitted: Vec<&str> = racers
        .iter()
        .zip(&joins)
        .filter(|(_, r)| r.status == 200)
        .map(|(u, _)| u.as_str())
        .collect();
    for (user, resp) in racers.iter().zip(&joins) {
        if resp.status != 200 {
            assert_eq!(
                resp.body["code"], "CALL_FULL",
                "{user} was refused for another reason: {}",
                resp.text
            );
            resp.err(409, "CALL_FULL");
        }
    }
    assert_eq!(
        admitted.len(),
        4,
        "the host plus four fill maxParticipants 5; admitted {admitted:?}"
    );
    let after = app.call("host", &id).await.ok(200);
    let joined = after["participants"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"] == "joined")
        .count();
    assert_eq!(joined, 5, "maxParticipants must hold: {after:#}");

    // A place that frees up can be taken.
    app.set_status(admitted[0], &id, "left").await.ok(200);
    let waiting = racers
        .iter()
        .find(|u| !admitted.contains(&u.as_str()))
        .unwrap();
    app.join(waiting, &id).await.ok(200);
    app.join(admitted[0], &id).await.err(409, "CALL_FULL");
}

async fn a_call_that_reaches_the_max_duration_ends_with_timeout(stack: Stack) {
    let app = spawn_app(Options {
        max_duration_seconds: 1,
        ..Options::on(stack)
    })
    .await;
    let call = app.initiate("alice", "room", &["bob", "carol"], true).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    let ended = app
        .wait_for_call("alice", &id, "the max-duration timer", |c| {
            c["status"] == "ended"
        })
        .await;
    assert_eq!(ended["endReason"], "timeout");
    assert!(ended["endedBy"].is_null(), "a timer ended it, not a user");
    assert_eq!(statuses(&ended)[1], ("bob".to_owned(), "left".to_owned()));
    assert_eq!(
        statuses(&ended)[2],
        ("carol".to_owned(), "missed".to_owned())
    );
}
