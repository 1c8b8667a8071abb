//! Room membership (CONTRACT sections 2 and 6): the internal API the chat backend writes
//! members through, and what `MEMBERSHIP_MODE=table` lets members and non-members do.

#![allow(clippy::unwrap_used)]

mod support;

use reqwest::Method;
use serde_json::json;
use support::{INTERNAL_TOKEN, Options, id_of, participant, spawn_app};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_membership_api_requires_the_internal_token() {
    let app = spawn_app(Options::default().table_mode()).await;
    let put = |token: Option<&str>| {
        let mut request = app
            .request(Method::PUT, "/internal/v1/rooms/room/members")
            .json(&json!({"userIds": ["alice", "bob"]}));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        app.send(request)
    };
    put(None).await.err(401, "UNAUTHORIZED");
    put(Some("wrong-token")).await.err(401, "UNAUTHORIZED");
    put(Some(&app.token("alice")))
        .await
        .err(401, "UNAUTHORIZED");
    let done = put(Some(INTERNAL_TOKEN)).await.ok(200);
    assert_eq!(done, json!({"userIds": ["alice", "bob"]}));

    let add = app
        .send(
            app.request(Method::POST, "/internal/v1/rooms/room/members/carol")
                .bearer_auth("nope"),
        )
        .await;
    add.err(401, "UNAUTHORIZED");
    let added = app
        .internal(Method::POST, "/internal/v1/rooms/room/members/carol", None)
        .await
        .ok(200);
    assert_eq!(added, json!({"chatRoomId": "room", "userId": "carol"}));
    let delete = app
        .send(app.request(Method::DELETE, "/internal/v1/rooms/room/members/carol"))
        .await;
    delete.err(401, "UNAUTHORIZED");
    app.internal(
        Method::DELETE,
        "/internal/v1/rooms/room/members/carol",
        None,
    )
    .await
    .ok(200);

    let err = app
        .internal(
            Method::PUT,
            "/internal/v1/rooms/room/members",
            Some(json!({"userIds": "alice"})),
        )
        .await
        .err(400, "VALIDATION_FAILED");
    assert_eq!(err.details[0].field, "userIds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_internal_token_the_membership_api_does_not_exist() {
    let app = spawn_app(Options::default()).await;
    for (method, path) in [
        (Method::PUT, "/internal/v1/rooms/room/members"),
        (Method::POST, "/internal/v1/rooms/room/members/bob"),
        (Method::DELETE, "/internal/v1/rooms/room/members/bob"),
    ] {
        let mut request = app
            .request(method.clone(), path)
            .bearer_auth(INTERNAL_TOKEN);
        if method == Method::PUT {
            request = request.json(&json!({"userIds": ["bob"]}));
        }
        app.send(request).await.err(404, "NOT_FOUND");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_room_members_can_start_a_call_or_be_invited_to_one() {
    let app = spawn_app(Options::default().table_mode()).await;
    app.set_members("room", &["alice", "bob"]).await;
    let body = |invitees: &[&str]| json!({"type": "audio", "isGroupCall": true, "inviteUserIds": invitees});

    app.try_initiate("mallory", "room", body(&["alice"]))
        .await
        .err(403, "FORBIDDEN");
    let err = app
        .try_initiate("alice", "room", body(&["bob", "zed"]))
        .await
        .err(400, "VALIDATION_FAILED");
    assert_eq!(
        err.details[0].field, "inviteUserIds[1]",
        "the non-member is named: {err:?}"
    );
    assert!(
        app.active("alice", "room").await.ok(200).is_null(),
        "nothing was created"
    );
    app.active("mallory", "room").await.err(403, "FORBIDDEN");

    // Membership changes apply at once.
    app.internal(Method::POST, "/internal/v1/rooms/room/members/zed", None)
        .await
        .ok(200);
    let call = app
        .try_initiate("alice", "room", body(&["bob", "zed"]))
        .await
        .ok(201);
    app.end("alice", &id_of(&call)).await.ok(200);
    app.internal(
        Method::DELETE,
        "/internal/v1/rooms/room/members/alice",
        None,
    )
    .await
    .ok(200);
    app.try_initiate("alice", "room", body(&["bob"]))
        .await
        .err(403, "FORBIDDEN");
    app.set_members("room", &["alice", "bob"]).await;
    app.try_initiate("alice", "room", body(&["bob"]))
        .await
        .ok(201);
    app.set_members("room", &[]).await;
    app.try_initiate("bob", "room", body(&["alice"]))
        .await
        .err(403, "FORBIDDEN");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_members_can_see_and_join_group_calls_they_were_not_invited_to() {
    let app = spawn_app(Options::default().table_mode()).await;
    app.set_members("team", &["alice", "bob", "carol"]).await;
    let call = app.initiate("alice", "team", &["bob"], true).await;
    let id = id_of(&call);

    // carol was not invited, but she is in the room.
    assert_eq!(app.call("carol", &id).await.ok(200)["id"], id.as_str());
    assert_eq!(app.active("carol", "team").await.ok(200)["id"], id.as_str());
    let again = app
        .try_initiate(
            "carol",
            "team",
            json!({"type": "video", "isGroupCall": true, "inviteUserIds": ["alice"]}),
        )
        .await;
    assert_eq!(
        again.ok(200)["id"],
        id.as_str(),
        "a member starting a call joins the room's group call instead"
    );
    let joined = app.join("carol", &id).await.ok(200);
    let carol = participant(&joined, "carol");
    assert_eq!(
        (carol["role"].as_str(), carol["status"].as_str()),
        (Some("participant"), Some("joined"))
    );
    assert_eq!(joined["status"], "active");

    // Someone outside the room sees nothing.
    app.call("mallory", &id).await.err(404, "CALL_NOT_FOUND");
    app.join("mallory", &id).await.err(404, "CALL_NOT_FOUND");

    // Leaving the room does not throw a participant out, but an outsider who never took part
    // loses sight of the call.
    app.internal(Method::POST, "/internal/v1/rooms/team/members/dave", None)
        .await
        .ok(200);
    app.call("dave", &id).await.ok(200);
    app.internal(Method::DELETE, "/internal/v1/rooms/team/members/dave", None)
        .await
        .ok(200);
    app.call("dave", &id).await.err(404, "CALL_NOT_FOUND");
    app.internal(
        Method::DELETE,
        "/internal/v1/rooms/team/members/carol",
        None,
    )
    .await
    .ok(200);
    assert_eq!(
        app.call("carol", &id).await.ok(200)["id"],
        id.as_str(),
        "a participant keeps seeing their call"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn room_members_cannot_see_or_join_a_one_to_one_in_their_room() {
    let app = spawn_app(Options::default().table_mode()).await;
    app.set_members("room", &["alice", "bob", "carol"]).await;
    let call = app.initiate("alice", "room", &["bob"], false).await;
    let id = id_of(&call);

    app.call("carol", &id).await.err(404, "CALL_NOT_FOUND");
    app.join("carol", &id).await.err(404, "CALL_NOT_FOUND");
    assert!(
        app.active("carol", "room").await.ok(200).is_null(),
        "the 1:1 is private to its two sides"
    );
    let resp = app
        .try_initiate(
            "carol",
            "room",
            json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["alice"]}),
        )
        .await;
    resp.err(409, "CALL_ALREADY_ACTIVE");
    assert!(
        !resp.text.contains(&id),
        "CALL_ALREADY_ACTIVE must not reveal the call: {}",
        resp.text
    );
    assert!(resp.body.get("data").is_none());

    // Its two sides still merge into it.
    let glare = app
        .try_initiate(
            "bob",
            "room",
            json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["alice"]}),
        )
        .await;
    assert_eq!(glare.ok(200)["id"], id.as_str());
}
