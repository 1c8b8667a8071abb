//! Agora's Notification Center (CONTRACT section 11) posting channel events to
//! `POST /webhooks/agora`: signed notices set a participant's `inMedia` and tell the call,
//! once per `noticeId` and in `clientSeq` order; anything forged, repeated, stale or not about
//! one of the call's participants changes nothing.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod support;

use calls_bus::PresenceMessage;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use support::agora_rest::AgoraRestDouble;
use support::{
    AGORA_APP_ID, Api, NCS_SECRET, Options, Resp, Stack, TestApp, id_of, participant, spawn_app,
};

on_both_stacks!(
    a_signed_join_puts_the_participant_in_the_media_and_a_leave_takes_them_out,
    a_forged_or_missing_signature_is_refused_and_changes_nothing,
    a_notice_delivered_twice_is_applied_once,
    an_older_notice_arriving_after_a_newer_one_is_ignored,
    unknown_events_other_channels_and_strangers_change_no_participant,
    without_a_secret_the_webhook_is_not_found,
    media_seconds_add_up_by_agoras_times_and_are_reported_when_the_call_ends,
    only_a_ghost_out_of_the_media_and_without_a_socket_is_dropped_after_the_media_grace,
    a_removed_user_still_in_the_channel_is_kicked_through_agoras_kicking_rule_api,
    someone_in_the_channel_who_is_not_a_joined_participant_is_kicked_and_a_joined_one_is_not,
    a_kick_agora_cannot_take_now_is_retried_and_one_it_refuses_is_given_up,
);

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// A join (103) or leave (104) notice of `account` on `channel`, as Agora writes it.
fn notice(id: &str, event_type: i64, channel: &str, account: &str, client_seq: i64) -> Value {
    let mut payload = json!({
        "clientSeq": client_seq, "channelName": channel, "uid": 12121212, "platform": 1,
        "ts": 1560396843, "account": account,
    });
    if event_type == 104 {
        payload["reason"] = json!(1);
    }
    json!({
        "noticeId": id, "productId": 1, "eventType": event_type, "notifyMs": 1611566412672_i64,
        "sid": "C866467GVJJ54687", "payload": payload,
    })
}

/// The same, happening at `ts` (Unix seconds) by Agora's clock, which media time is counted by.
fn notice_at(
    id: &str,
    event_type: i64,
    channel: &str,
    account: &str,
    client_seq: i64,
    ts: i64,
) -> Value {
    let mut n = notice(id, event_type, channel, account, client_seq);
    n["payload"]["ts"] = json!(ts);
    n
}

/// Posts `body` exactly as given, signed with `signature` (none: no header).
async fn post_raw(app: &Api, body: &[u8], signature: Option<&str>) -> Resp {
    let mut request = app
        .request(Method::POST, "/webhooks/agora")
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some(signature) = signature {
        request = request.header("Agora-Signature-V2", signature);
    }
    app.send(request).await
}

/// Posts a notice signed as Agora would; returns the receipt's `outcome`.
async fn deliver(app: &Api, notice: &Value) -> String {
    let body = serde_json::to_vec(notice).unwrap();
    let resp = post_raw(app, &body, Some(&sign(NCS_SECRET, &body))).await;
    let data = resp.ok(200);
    data["outcome"].as_str().unwrap().to_owned()
}

/// A 1:1 from alice to bob that bob answered; its id and channel name.
async fn answered_call(app: &TestApp) -> (String, String) {
    let call = app.initiate("alice", "dm", &["bob"], false).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    let channel = format!("call_{id}");
    (id, channel)
}

async fn ncs_app(stack: Stack) -> TestApp {
    spawn_app(Options {
        ncs: true,
        ..Options::on(stack)
    })
    .await
}

async fn a_signed_join_puts_the_participant_in_the_media_and_a_leave_takes_them_out(stack: Stack) {
    let app = ncs_app(stack).await;
    let (id, channel) = answered_call(&app).await;
    let on_call = app.subjects.call_events(&id);
    let before = app.call("alice", &id).await.ok(200);
    assert_eq!(participant(&before, "bob")["inMedia"], false);

    assert_eq!(
        deliver(&app, &notice("n-1", 103, &channel, "bob", 10)).await,
        "applied"
    );
    let joined = app
        .events
        .wait_for(&on_call, "participant_media_presence")
        .await;
    assert_eq!(
        joined.data,
        json!({"callId": id, "seq": before["seq"].as_u64().unwrap() + 1, "at": joined.data["at"],
               "userId": "bob", "inMedia": true})
    );
    let now = app.call("alice", &id).await.ok(200);
    assert_eq!(participant(&now, "bob")["inMedia"], true);
    assert_eq!(participant(&now, "alice")["inMedia"], false);

    assert_eq!(
        deliver(&app, &notice("n-2", 104, &channel, "bob", 11)).await,
        "applied"
    );
    let left = app
        .events
        .wait_for_where(&on_call, "participant_media_presence", |d| {
            d["inMedia"] == false
        })
        .await;
    assert_eq!(left.data["userId"], "bob");
    assert_eq!(left.data["reason"], 1, "Agora's leave reason is passed on");
    let now = app.call("bob", &id).await.ok(200);
    assert_eq!(participant(&now, "bob")["inMedia"], false);
}

async fn a_forged_or_missing_signature_is_refused_and_changes_nothing(stack: Stack) {
    let app = ncs_app(stack).await;
    let (id, channel) = answered_call(&app).await;
    let before = app.call("alice", &id).await.ok(200);
    let body = serde_json::to_vec(&notice("n-1", 103, &channel, "bob", 10)).unwrap();

    let forged = sign("not-the-secret", &body);
    post_raw(&app, &body, Some(&forged))
        .await
        .err(401, "UNAUTHORIZED");
    post_raw(&app, &body, None).await.err(401, "UNAUTHORIZED");
    post_raw(&app, &body, Some("not hex"))
        .await
        .err(401, "UNAUTHORIZED");
    // A valid signature of another body: the signature covers the exact bytes.
    let other = serde_json::to_vec(&notice("n-1", 103, &channel, "bob", 11)).unwrap();
    post_raw(&app, &body, Some(&sign(NCS_SECRET, &other)))
        .await
        .err(401, "UNAUTHORIZED");

    assert_eq!(app.call("alice", &id).await.ok(200), before);
    // None of them was recorded as seen: the genuine notice still applies.
    assert_eq!(
        deliver(&app, &notice("n-1", 103, &channel, "bob", 10)).await,
        "applied"
    );
}

async fn a_notice_delivered_twice_is_applied_once(stack: Stack) {
    let app = ncs_app(stack).await;
    let (id, channel) = answered_call(&app).await;
    let join = notice("n-join", 103, &channel, "bob", 10);
    assert_eq!(deliver(&app, &join).await, "applied");
    assert_eq!(
        deliver(&app, &notice("n-leave", 104, &channel, "bob", 11)).await,
        "applied"
    );
    let before = app.call("alice", &id).await.ok(200);

    // Agora retries the join (same noticeId): it must not put bob back in.
    assert_eq!(deliver(&app, &join).await, "duplicate");
    let after = app.call("alice", &id).await.ok(200);
    assert_eq!(after, before);
    assert_eq!(participant(&after, "bob")["inMedia"], false);
}

async fn an_older_notice_arriving_after_a_newer_one_is_ignored(stack: Stack) {
    let app = ncs_app(stack).await;
    let (id, channel) = answered_call(&app).await;
    assert_eq!(
        deliver(&app, &notice("n-2", 103, &channel, "bob", 20)).await,
        "applied"
    );
    let before = app.call("alice", &id).await.ok(200);

    // The leave of an earlier session, delivered late.
    assert_eq!(
        deliver(&app, &notice("n-1", 104, &channel, "bob", 19)).await,
        "ignored"
    );
    let after = app.call("alice", &id).await.ok(200);
    assert_eq!(after, before);
    assert_eq!(participant(&after, "bob")["inMedia"], true);
}

async fn unknown_events_other_channels_and_strangers_change_no_participant(stack: Stack) {
    let app = ncs_app(stack).await;
    let (id, channel) = answered_call(&app).await;
    let before = app.call("alice", &id).await.ok(200);

    let mut unknown = notice("n-1", 103, &channel, "bob", 10);
    unknown["eventType"] = json!(999);
    assert_eq!(deliver(&app, &unknown).await, "ignored");
    let created = json!({"noticeId": "n-2", "productId": 1, "eventType": 101,
                         "notifyMs": 1611566412672_i64, "payload": {"channelName": channel, "ts": 1}});
    assert_eq!(deliver(&app, &created).await, "ignored");
    assert_eq!(
        deliver(&app, &notice("n-3", 103, "test_webhook", "bob", 10)).await,
        "ignored"
    );
    let upper = format!("call_{}", id.to_uppercase());
    assert_eq!(
        deliver(&app, &notice("n-4", 103, &upper, "bob", 10)).await,
        "ignored"
    );
    let unknown_call = format!("call_{}", uuid::Uuid::now_v7());
    assert_eq!(
        deliver(&app, &notice("n-5", 103, &unknown_call, "bob", 10)).await,
        "ignored"
    );
    // A stranger in the channel changes no participant but is to be kicked.
    assert_eq!(
        deliver(&app, &notice("n-6", 103, &channel, "mallory", 10)).await,
        "applied"
    );
    let mut no_account = notice("n-7", 103, &channel, "bob", 10);
    no_account["payload"]
        .as_object_mut()
        .unwrap()
        .remove("account");
    assert_eq!(deliver(&app, &no_account).await, "ignored");

    assert_eq!(app.call("alice", &id).await.ok(200), before);
    // Signed but not a notice at all: a validation error, still nothing changed.
    let junk = br#"{"eventType": 103}"#;
    post_raw(&app, junk, Some(&sign(NCS_SECRET, junk)))
        .await
        .err(400, "VALIDATION_FAILED");
    assert_eq!(app.call("alice", &id).await.ok(200), before);
}

async fn without_a_secret_the_webhook_is_not_found(stack: Stack) {
    let app = spawn_app(Options::on(stack)).await;
    let (id, channel) = answered_call(&app).await;
    let body = serde_json::to_vec(&notice("n-1", 103, &channel, "bob", 10)).unwrap();
    let resp = post_raw(&app, &body, Some(&sign(NCS_SECRET, &body))).await;
    let envelope = resp.err(404, "NOT_FOUND");
    assert!(
        envelope.message.contains("AGORA_NCS_SECRET"),
        "the answer says what is missing: {}",
        resp.text
    );
    let call = app.call("alice", &id).await.ok(200);
    assert_eq!(participant(&call, "bob")["inMedia"], false);
}

/// Agora may deliver a notice twice at once, and the gateway may hand the copies to different
/// replicas: the one database decides which copy applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notice_delivered_to_two_replicas_at_once_is_applied_once() {
    let mut app = ncs_app(Stack::PostgresNats).await;
    let b = app.spawn_replica().await;
    let a = app.api.clone();
    let (id, channel) = answered_call(&app).await;
    let before = app.call("alice", &id).await.ok(200);

    for n in 0..5 {
        let join = notice(&format!("n-join-{n}"), 103, &channel, "bob", 2 * n + 10);
        let leave = notice(&format!("n-leave-{n}"), 104, &channel, "bob", 2 * n + 11);
        for copy in [join, leave] {
            let (first, second) = tokio::join!(deliver(&a, &copy), deliver(&b, &copy));
            let mut outcomes = [first, second];
            outcomes.sort();
            assert_eq!(outcomes, ["applied", "duplicate"], "{copy}");
        }
    }
    let after = app.call("alice", &id).await.ok(200);
    assert_eq!(
        after["seq"].as_u64().unwrap(),
        before["seq"].as_u64().unwrap() + 10,
        "one participant_media_presence per notice"
    );
    assert_eq!(participant(&after, "bob")["inMedia"], false);
}

async fn media_seconds_add_up_by_agoras_times_and_are_reported_when_the_call_ends(stack: Stack) {
    let app = ncs_app(stack).await;
    let (id, channel) = answered_call(&app).await;
    let t = 1_760_000_000;
    // bob: two stays, 60 s and 25 s; alice: 40 s. Delivered out of order in time but in
    // clientSeq order per user, with a retry of one of them.
    for n in [
        notice_at("m-1", 103, &channel, "bob", 1, t),
        notice_at("m-2", 103, &channel, "alice", 1, t + 5),
        notice_at("m-3", 104, &channel, "bob", 2, t + 60),
        notice_at("m-3", 104, &channel, "bob", 2, t + 60),
        notice_at("m-4", 104, &channel, "alice", 2, t + 45),
        notice_at("m-5", 103, &channel, "bob", 3, t + 100),
        notice_at("m-6", 104, &channel, "bob", 4, t + 125),
    ] {
        deliver(&app, &n).await;
    }
    let call = app.call("alice", &id).await.ok(200);
    assert_eq!(participant(&call, "bob")["mediaSeconds"], 85);
    assert_eq!(participant(&call, "alice")["mediaSeconds"], 40);
    assert_eq!(
        call["mediaSeconds"], 125,
        "the call's is the participants' sum"
    );

    let on_call = app.subjects.call_events(&id);
    app.end("alice", &id).await.ok(200);
    let ended = app.events.wait_for(&on_call, "call_ended").await;
    assert_eq!(ended.data["mediaSeconds"], 125);
    assert_eq!(
        ended.data["participantMediaSeconds"],
        json!([{"userId": "alice", "mediaSeconds": 40}, {"userId": "bob", "mediaSeconds": 85}])
    );
    let after = app.call("bob", &id).await.ok(200);
    assert_eq!(after["mediaSeconds"], 125);
    assert_eq!(participant(&after, "bob")["mediaSeconds"], 85);
}

/// Reports that `user`'s only socket opened and closed again: they have none left (the
/// disconnect grace, long here, is running).
async fn socket_gone(app: &TestApp, user: &str) {
    for message in [
        PresenceMessage::Connected {
            node_id: "node-1".into(),
            socket_id: format!("s-{user}"),
            user_id: user.into(),
        },
        PresenceMessage::Disconnected {
            node_id: "node-1".into(),
            socket_id: format!("s-{user}"),
            user_id: user.into(),
        },
    ] {
        assert_eq!(
            app.presence(&message).await,
            json!({"ok": true, "data": null})
        );
    }
}

async fn only_a_ghost_out_of_the_media_and_without_a_socket_is_dropped_after_the_media_grace(
    stack: Stack,
) {
    let app = spawn_app(Options {
        ncs: true,
        media_grace_seconds: 1,
        disconnect_grace_seconds: 3600,
        ..Options::on(stack)
    })
    .await;
    let call = app
        .initiate("alice", "team", &["bob", "carol", "dave"], true)
        .await;
    let id = id_of(&call);
    let channel = format!("call_{id}");
    for user in ["bob", "carol", "dave"] {
        app.join(user, &id).await.ok(200);
        deliver(&app, &notice(&format!("in-{user}"), 103, &channel, user, 1)).await;
    }
    let on_call = app.subjects.call_events(&id);
    socket_gone(&app, "carol").await;
    socket_gone(&app, "dave").await;

    // In this order, so that bob's and carol's graces end before dave's: bob's media drops but
    // his socket lives; carol has no socket but comes back into the media within the grace;
    // dave has neither.
    deliver(&app, &notice("out-bob", 104, &channel, "bob", 2)).await;
    deliver(&app, &notice("out-carol", 104, &channel, "carol", 2)).await;
    deliver(&app, &notice("back-carol", 103, &channel, "carol", 3)).await;
    deliver(&app, &notice("out-dave", 104, &channel, "dave", 2)).await;

    let left = app.events.wait_for(&on_call, "participant_left").await;
    assert_eq!(
        (left.data["userId"].as_str(), left.data["reason"].as_str()),
        (Some("dave"), Some("connection_lost"))
    );
    // Timers fire in due order, so bob's grace has run out too by now.
    let now = app.call("alice", &id).await.ok(200);
    assert_eq!(participant(&now, "dave")["status"], "left");
    assert_eq!(participant(&now, "bob")["status"], "joined");
    assert_eq!(participant(&now, "bob")["inMedia"], false);
    assert_eq!(participant(&now, "carol")["status"], "joined");
    assert_eq!(participant(&now, "carol")["isConnected"], false);
    assert_eq!(now["status"], "active");
    assert_eq!(
        app.events
            .on(&on_call)
            .iter()
            .filter(|e| e.name == "participant_left")
            .count(),
        1,
        "only dave left"
    );
}

/// An app with NCS on, sending kicks to `double`.
async fn kicking_app(stack: Stack, double: &AgoraRestDouble) -> TestApp {
    spawn_app(Options {
        ncs: true,
        agora_rest_url: Some(double.url.clone()),
        ..Options::on(stack)
    })
    .await
}

/// A group call from alice (host) to bob and carol, both joined; its id and channel.
async fn group_call(app: &TestApp) -> (String, String) {
    let call = app.initiate("alice", "team", &["bob", "carol"], true).await;
    let id = id_of(&call);
    for user in ["bob", "carol"] {
        app.join(user, &id).await.ok(200);
    }
    let channel = format!("call_{id}");
    (id, channel)
}

/// The rule Agora's reference says takes `uid` out of `channel` (and lets it back at once).
fn kicking_rule(channel: &str, uid: u64) -> Value {
    json!({"appid": AGORA_APP_ID, "cname": channel, "uid": uid, "time_in_seconds": 0,
           "privileges": ["join_channel"]})
}

async fn a_removed_user_still_in_the_channel_is_kicked_through_agoras_kicking_rule_api(
    stack: Stack,
) {
    let double = AgoraRestDouble::start(AGORA_APP_ID).await;
    let app = kicking_app(stack, &double).await;
    let (id, channel) = group_call(&app).await;
    assert_eq!(
        deliver(&app, &notice("n-1", 103, &channel, "carol", 10)).await,
        "applied"
    );
    app.post_empty(
        "alice",
        &format!("/api/v1/calls/{id}/participants/carol/remove"),
    )
    .await
    .ok(200);
    let rules = double.wait_for_rules(1).await;
    assert_eq!(rules, [kicking_rule(&channel, 12_121_212)]);
    app.wait_for_metric("calls_media_kicks_total{outcome=\"sent\"}")
        .await;
}

async fn someone_in_the_channel_who_is_not_a_joined_participant_is_kicked_and_a_joined_one_is_not(
    stack: Stack,
) {
    let double = AgoraRestDouble::start(AGORA_APP_ID).await;
    let app = kicking_app(stack, &double).await;
    let (id, channel) = group_call(&app).await;
    app.set_status("carol", &id, "left").await.ok(200);
    // bob is joined: welcome. carol left the call but joins its channel. mallory was never in it.
    for (n, user, uid) in [(1, "bob", 1001), (2, "carol", 1002), (3, "mallory", 1003)] {
        let mut join = notice(&format!("n-{n}"), 103, &channel, user, 10);
        join["payload"]["uid"] = json!(uid);
        assert_eq!(deliver(&app, &join).await, "applied", "{user}");
    }
    let mut rules = double.wait_for_rules(2).await;
    rules.sort_by_key(|r| r["uid"].as_u64());
    assert_eq!(
        rules,
        [kicking_rule(&channel, 1002), kicking_rule(&channel, 1003)]
    );
    let call = app.call("alice", &id).await.ok(200);
    assert_eq!(participant(&call, "bob")["inMedia"], true);
    assert_eq!(participant(&call, "bob")["status"], "joined");
}

async fn a_kick_agora_cannot_take_now_is_retried_and_one_it_refuses_is_given_up(stack: Stack) {
    let double = AgoraRestDouble::start(AGORA_APP_ID).await;
    let app = kicking_app(stack, &double).await;
    let (_, channel) = group_call(&app).await;
    // Rate limited, then unavailable: both are retried (after 1 s, then 2 s).
    double.fail_next(429, 1);
    double.fail_next(503, 1);
    assert_eq!(
        deliver(&app, &notice("n-1", 103, &channel, "mallory", 10)).await,
        "applied"
    );
    assert_eq!(
        double.wait_for_rules(1).await,
        [kicking_rule(&channel, 12_121_212)]
    );
    let statuses: Vec<u16> = double.refused().iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [429, 503]);

    // A kicking rule for another project's App ID is refused (400): not worth repeating.
    let elsewhere = AgoraRestDouble::start("0123456789abcdef0123456789abcdef").await;
    let app = kicking_app(stack, &elsewhere).await;
    let (_, channel) = group_call(&app).await;
    assert_eq!(
        deliver(&app, &notice("n-1", 103, &channel, "mallory", 10)).await,
        "applied"
    );
    app.wait_for_metric("calls_media_kicks_total{outcome=\"failed\"}")
        .await;
    assert_eq!(elsewhere.refused().len(), 1, "tried once");
    assert!(elsewhere.rules().is_empty());
}
