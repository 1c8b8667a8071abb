//! Socket.IO: WebSocket passthrough and long-polling sessions pinned to their instance.

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::support::*;

/// Opens a polling session through `gw`; returns its sid.
async fn handshake(gw: &Gateway, client: &reqwest::Client) -> String {
    let response = client
        .get(gw.url("/socket.io/?EIO=4&transport=polling&t=abc"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let open: serde_json::Value = serde_json::from_str(text.strip_prefix('0').unwrap()).unwrap();
    open["sid"].as_str().unwrap().to_owned()
}

/// The instance a sid was issued by (the fake prefixes sids with its name).
fn owner(sid: &str) -> &str {
    sid.rsplit_once('-').unwrap().0
}

async fn echo_once(url: &str, text: &str) -> String {
    let (mut socket, response) = tokio_tungstenite::connect_async(url).await.unwrap();
    assert_eq!(response.status(), 101);
    socket.send(Message::Text(text.into())).await.unwrap();
    let reply = tokio::time::timeout(DEADLINE, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    socket.close(None).await.ok();
    reply.into_text().unwrap().to_string()
}

#[tokio::test]
async fn a_websocket_upgrade_is_passed_through_to_signaling() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;

    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", gw.addr);
    let (mut socket, response) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(response.status(), 101);
    assert!(response.headers().contains_key("x-request-id"));
    for i in 0..20 {
        socket
            .send(Message::Text(format!("m{i}").into()))
            .await
            .unwrap();
        let reply = tokio::time::timeout(DEADLINE, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), format!("sig-a:m{i}"));
    }
    let metrics = gw.metrics().await;
    assert!(
        metric(&metrics, "gateway_websockets_open").is_some_and(|open| open >= 1.0),
        "{metrics}"
    );
    socket.close(None).await.unwrap();
    assert_eq!(api.requests(), 0);
}

#[tokio::test]
async fn a_polling_session_stays_on_the_instance_that_issued_its_sid() {
    let api = Upstream::start("api-a").await;
    let sig_a = Upstream::start("sig-a").await;
    let sig_b = Upstream::start("sig-b").await;
    let gw = Gateway::start(&[&api], &[&sig_a, &sig_b], &[]).await;
    let client = client();

    let mut sids = Vec::new();
    for _ in 0..6 {
        sids.push(handshake(&gw, &client).await);
    }
    assert!(
        sids.iter().any(|s| owner(s) == "sig-a") && sids.iter().any(|s| owner(s) == "sig-b"),
        "{sids:?}"
    );

    for round in 0..10 {
        for sid in &sids {
            let url = gw.url(&format!(
                "/socket.io/?EIO=4&transport=polling&t={round}&sid={sid}"
            ));
            let get = client.get(&url).send().await.unwrap();
            assert_eq!(get.status(), 200, "GET for {sid}");
            assert_eq!(
                get.text().await.unwrap(),
                format!("{}:{sid}:GET", owner(sid))
            );
            let post = client.post(&url).body("42[\"ping\"]").send().await.unwrap();
            assert_eq!(
                post.text().await.unwrap(),
                format!("{}:{sid}:POST", owner(sid))
            );
        }
    }
    // Every request went straight to the owner: no instance was asked about a session it lacks.
    assert_eq!(sig_a.requests() + sig_b.requests(), 6 + 6 * 10 * 2);
}

#[tokio::test]
async fn a_gateway_replica_that_missed_the_handshake_finds_the_session_and_then_keeps_to_it() {
    let api = Upstream::start("api-a").await;
    let sig_a = Upstream::start("sig-a").await;
    let sig_b = Upstream::start("sig-b").await;
    let gw1 = Gateway::start(&[&api], &[&sig_a, &sig_b], &[]).await;
    let gw2 = Gateway::start(&[&api], &[&sig_a, &sig_b], &[]).await;
    let client = client();

    let sids = [
        handshake(&gw1, &client).await,
        handshake(&gw1, &client).await,
    ];
    let before = sig_a.requests() + sig_b.requests();
    for sid in &sids {
        for round in 0..5 {
            let url = gw2.url(&format!(
                "/socket.io/?EIO=4&transport=polling&t={round}&sid={sid}"
            ));
            let get = client.get(&url).send().await.unwrap();
            assert_eq!(get.status(), 200);
            assert_eq!(
                get.text().await.unwrap(),
                format!("{}:{sid}:GET", owner(sid))
            );
        }
    }
    // At most one wrong guess per session, on its first request.
    let asked = sig_a.requests() + sig_b.requests() - before;
    assert!((10..=12).contains(&asked), "{asked} upstream requests");

    // A sid nobody knows gets engine.io's own answer, so the client starts over.
    let response = client
        .get(gw2.url("/socket.io/?EIO=4&transport=polling&sid=nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("Session ID unknown")
    );
}

#[tokio::test]
async fn a_websocket_upgrade_of_a_polling_session_goes_to_the_instance_that_owns_it() {
    let api = Upstream::start("api-a").await;
    let sig_a = Upstream::start("sig-a").await;
    let sig_b = Upstream::start("sig-b").await;
    let gw = Gateway::start(&[&api], &[&sig_a, &sig_b], &[]).await;
    let client = client();

    for _ in 0..4 {
        let sid = handshake(&gw, &client).await;
        let url = format!(
            "ws://{}/socket.io/?EIO=4&transport=websocket&sid={sid}",
            gw.addr
        );
        assert_eq!(
            echo_once(&url, "2probe").await,
            format!("{}:2probe", owner(&sid))
        );
    }
}

#[tokio::test]
async fn socket_io_handshakes_are_rate_limited_per_ip_but_established_sessions_are_not() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let flags = [
        "--rate-limit-per-ip-per-minute",
        "60",
        "--rate-limit-per-ip-burst",
        "2",
    ];
    let gw = Gateway::start(&[&api], &[&sig], &flags).await;
    let client = client();

    let sid = handshake(&gw, &client).await;
    handshake(&gw, &client).await;
    let refused = client
        .get(gw.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.headers()["retry-after"], "1");
    assert_envelope(refused, 429, "RATE_LIMITED").await;
    let ws = tokio_tungstenite::connect_async(format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket",
        gw.addr
    ))
    .await;
    assert!(ws.is_err(), "a new WebSocket is a handshake too");

    for round in 0..5 {
        let url = gw.url(&format!(
            "/socket.io/?EIO=4&transport=polling&t={round}&sid={sid}"
        ));
        assert_eq!(client.get(&url).send().await.unwrap().status(), 200);
    }
}
