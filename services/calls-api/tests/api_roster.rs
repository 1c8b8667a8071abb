//! A live call's roster over REST (CONTRACT section 10): inviting more people, removing
//! someone, the host role passing on, and what each puts on the bus.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use serde_json::{Value, json};
use support::{Options, Stack, TestApp, assert_call_shape, id_of, participant, spawn_app};

on_both_stacks!(
    a_joined_participant_invites_someone_who_is_rung_and_announced_to_the_call,
    a_one_to_one_that_invites_a_third_person_becomes_a_group_call,
    the_host_removes_someone_who_then_can_neither_see_rejoin_nor_get_media,
    when_the_host_leaves_the_longest_joined_participant_takes_over,
    roster_requests_are_refused_with_the_contract_s_codes,
);

async fn invite(app: &TestApp, user: &str, id: &str, users: &[&str]) -> support::Resp {
    app.post(
        user,
        &format!("/api/v1/calls/{id}/invite"),
        json!({ "userIds": users }),
    )
    .await
}

async fn remove(app: &TestApp, user: &str, id: &str, target: &str) -> support::Resp {
    app.post_empty(
        user,
        &format!("/api/v1/calls/{id}/participants/{target}/remove"),
    )
    .await
}

fn event_names(app: &TestApp, subject: &str) -> Vec<String> {
    app.events.on(subject).into_iter().map(|e| e.name).collect()
}

async fn a_joined_participant_invites_someone_who_is_rung_and_announced_to_the_call(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    let s = &app.subjects;
    let call = app.initiate("alice", "team", &["bob"], true).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);

    let resp = invite(&app, "bob", &id, &["erin"]).await;
    let after = resp.ok(200);
    assert_eq!(resp.body["message"], "Users invited successfully");
    assert_call_shape(&after);
    assert_eq!(participant(&after, "erin")["status"], "invited");

    let ring = app
        .events
        .wait_for(&s.user_events("erin"), "incoming_call")
        .await;
    assert_eq!(ring.data["callId"], id.as_str());
    assert_eq!(ring.data["from"]["userId"], "bob");
    assert_eq!(ring.data["call"]["id"], id.as_str());
    let invited = app
        .events
        .wait_for(&s.call_events(&id), "participant_invited")
        .await;
    assert_eq!(invited.data["participant"]["userId"], "erin");
    assert_eq!(invited.data["participant"]["status"], "invited");
    assert_eq!(invited.seq(), Some(after["seq"].as_u64().unwrap()));

    // Rung again after declining.
    app.set_status("erin", &id, "declined").await.ok(200);
    invite(&app, "alice", &id, &["erin"]).await.ok(200);
    app.events.wait_for_count(&s.user_events("erin"), 3).await;
    let names = event_names(&app, &s.user_events("erin"));
    assert_eq!(
        names,
        ["incoming_call", "incoming_call_cancelled", "incoming_call"]
    );
}

async fn a_one_to_one_that_invites_a_third_person_becomes_a_group_call(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    let s = &app.subjects;
    let call = app.initiate("alice", "dm", &["bob"], false).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    let after = invite(&app, "alice", &id, &["carol"]).await.ok(200);
    assert_eq!(after["isGroupCall"], true);
    assert_eq!(after["maxParticipants"], 16);
    let updated = app
        .events
        .wait_for(&s.call_events(&id), "call_updated")
        .await;
    assert_eq!(updated.data["call"]["isGroupCall"], true);
    assert_eq!(updated.data["call"]["seq"], updated.data["seq"]);
    // A group call now: bob hanging up leaves alice and the ringing carol in it.
    app.set_status("bob", &id, "left").await.ok(200);
    assert_eq!(app.call("alice", &id).await.ok(200)["status"], "active");
}

async fn the_host_removes_someone_who_then_can_neither_see_rejoin_nor_get_media(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    let s = &app.subjects;
    let call = app.initiate("alice", "team", &["bob", "carol"], true).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    app.join("carol", &id).await.ok(200);

    let resp = remove(&app, "alice", &id, "bob").await;
    let after = resp.ok(200);
    assert_eq!(resp.body["message"], "Participant removed successfully");
    assert_eq!(participant(&after, "bob")["status"], "left");
    let left = app
        .events
        .wait_for(&s.call_events(&id), "participant_left")
        .await;
    assert_eq!(
        left.data,
        json!({"callId": id, "seq": left.data["seq"], "at": left.data["at"], "userId": "bob", "reason": "removed"})
    );

    app.call("bob", &id).await.err(404, "CALL_NOT_FOUND");
    app.join("bob", &id).await.err(404, "CALL_NOT_FOUND");
    app.media_session("bob", &id)
        .await
        .err(404, "CALL_NOT_FOUND");
    // The call goes on for the others.
    assert_eq!(app.call("carol", &id).await.ok(200)["status"], "active");

    // Invited again, bob may come back.
    invite(&app, "carol", &id, &["bob"]).await.ok(200);
    let back: Value = app.join("bob", &id).await.ok(200);
    assert_eq!(participant(&back, "bob")["status"], "joined");
}

async fn when_the_host_leaves_the_longest_joined_participant_takes_over(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    let s = &app.subjects;
    let call = app
        .initiate("alice", "team", &["bob", "carol", "dave"], true)
        .await;
    let id = id_of(&call);
    app.join("carol", &id).await.ok(200);
    app.join("bob", &id).await.ok(200);
    app.set_status("alice", &id, "left").await.ok(200);
    let changed = app
        .events
        .wait_for(&s.call_events(&id), "host_changed")
        .await;
    assert_eq!(changed.data["userId"], "carol");
    let now = app.call("carol", &id).await.ok(200);
    assert_eq!(participant(&now, "carol")["role"], "host");
    assert_eq!(participant(&now, "alice")["role"], "participant");

    app.end("alice", &id).await.err(403, "FORBIDDEN");
    remove(&app, "carol", &id, "bob").await.ok(200);
    let ended = app.end("carol", &id).await.ok(200);
    assert_eq!(ended["status"], "ended");
    assert_eq!(ended["endedBy"], "carol");
}

async fn roster_requests_are_refused_with_the_contract_s_codes(stack: Stack) {
    let app = spawn_app(Options::on(stack).table_mode()).await;
    app.set_members("team", &["alice", "bob", "carol"]).await;
    let call = app.initiate("alice", "team", &["bob", "carol"], true).await;
    let id = id_of(&call);

    // Only the host or a joined participant invites; only the host removes.
    invite(&app, "bob", &id, &["carol"])
        .await
        .err(403, "FORBIDDEN");
    app.join("bob", &id).await.ok(200);
    remove(&app, "bob", &id, "carol")
        .await
        .err(403, "FORBIDDEN");
    // Validation names the field.
    for (body, field) in [
        (json!({"userIds": []}), "userIds"),
        (json!({"userIds": ["carol", "carol"]}), "userIds"),
        (json!({"userIds": ["alice"]}), "userIds"),
        (json!({"userIds": "carol"}), "userIds"),
        (json!({}), "userIds"),
        // Table mode: only members of the room may be rung.
        (json!({"userIds": ["carol", "mallory"]}), "userIds[1]"),
    ] {
        let e = app
            .post("alice", &format!("/api/v1/calls/{id}/invite"), body.clone())
            .await
            .err(400, "VALIDATION_FAILED");
        assert!(
            e.details.iter().any(|d| d.field == field),
            "{body}: {:?}",
            e.details
        );
    }
    remove(&app, "alice", &id, "alice")
        .await
        .err(400, "VALIDATION_FAILED");
    remove(&app, "alice", &id, "zed")
        .await
        .err(400, "VALIDATION_FAILED");
    // Strangers learn nothing; nothing happens to an ended call.
    invite(&app, "mallory", &id, &["carol"])
        .await
        .err(404, "CALL_NOT_FOUND");
    remove(&app, "mallory", &id, "bob")
        .await
        .err(404, "CALL_NOT_FOUND");
    app.end("alice", &id).await.ok(200);
    invite(&app, "alice", &id, &["carol"])
        .await
        .err(409, "CALL_ENDED");
    remove(&app, "alice", &id, "bob")
        .await
        .err(409, "CALL_ENDED");
}
