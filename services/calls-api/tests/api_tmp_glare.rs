#![allow(clippy::unwrap_used)]
#[macro_use]
mod support;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn glare_many() {
    let app = spawn_app(Options::default()).await;
    let mut bad = 0;
    for round in 0..300 {
        let room = format!("dm-{round}");
        let (a, b) = tokio::join!(
            app.try_initiate("alice", &room, json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["bob"]})),
            app.try_initiate("bob", &room, json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["alice"]})),
        );
        let mut codes = [a.status, b.status];
        codes.sort_unstable();
        if codes != [200, 201] || a.body["data"]["id"] != b.body["data"]["id"] {
            bad += 1;
            println!("round {round}: {} {} / {} {}", a.status, a.body["data"]["endReason"], b.status, b.body["data"]["endReason"]);
        }
        let live = app.active("alice", &room).await.ok(200);
        if !live.is_null() { app.end("alice", &id_of(&live)).await.ok(200); }
        for r in [&a, &b] { if r.body["data"]["status"] != "ended" { let _ = app.end("alice", r.body["data"]["id"].as_str().unwrap()).await; } }
    }
    assert_eq!(bad, 0);
}
