//! Graceful shutdown.

use std::time::Duration;

use futures::StreamExt;

use crate::support::*;

#[tokio::test]
async fn shutdown_finishes_a_request_in_flight_then_stops_accepting() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let mut gw = Gateway::start(&[&api], &[&sig], &[]).await;
    let client = client();

    let in_flight = {
        let request = client
            .get(gw.url("/api/v1/slow?ms=700"))
            .bearer_auth(token("alice"))
            .send();
        tokio::spawn(request)
    };
    eventually("the slow request to reach the upstream", || async {
        api.requests() == 1
    })
    .await;
    gw.trigger_shutdown();

    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(echoed(response).await["path"], "/api/v1/slow");
    gw.stopped().await.unwrap();
    let refused = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(gw.url("/healthz"))
        .send()
        .await;
    assert!(refused.is_err(), "the listener is closed");
}

#[tokio::test]
async fn shutdown_closes_proxied_websockets_so_clients_reconnect_elsewhere() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let mut gw = Gateway::start(&[&api], &[&sig], &["--shutdown-grace-ms", "5000"]).await;

    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", gw.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    gw.trigger_shutdown();
    let end = tokio::time::timeout(DEADLINE, async {
        loop {
            match socket.next().await {
                None | Some(Err(_)) => break,
                Some(Ok(message)) if message.is_close() => break,
                Some(Ok(_)) => {}
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the websocket was closed");
    tokio::time::timeout(Duration::from_secs(3), gw.stopped())
        .await
        .expect("stopped well before the grace")
        .unwrap();
}

#[tokio::test]
async fn shutdown_cuts_requests_that_outlive_the_grace_period() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let mut gw = Gateway::start(&[&api], &[&sig], &["--shutdown-grace-ms", "200"]).await;
    let client = client();

    let in_flight = tokio::spawn(
        client
            .get(gw.url("/api/v1/slow?ms=30000"))
            .bearer_auth(token("alice"))
            .send(),
    );
    eventually("the slow request to reach the upstream", || async {
        api.requests() == 1
    })
    .await;
    gw.trigger_shutdown();
    gw.stopped().await.unwrap();
    assert!(
        in_flight.await.unwrap().is_err(),
        "the connection was closed"
    );
}
