//! Balancing, failover, ejection, recovery, and the 502/503/504 envelopes.

use std::collections::HashMap;

use crate::support::*;

async fn instance_of(gw: &Gateway, client: &reqwest::Client) -> String {
    let response = client
        .get(gw.url("/api/v1/whoami"))
        .bearer_auth(token("alice"))
        .send()
        .await
        .unwrap();
    echoed(response).await["instance"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn requests_are_balanced_over_both_calls_api_instances() {
    let a = Upstream::start("api-a").await;
    let b = Upstream::start("api-b").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&a, &b], &[&sig], &[]).await;
    let client = client();

    let mut counts = HashMap::<String, usize>::new();
    for _ in 0..20 {
        *counts.entry(instance_of(&gw, &client).await).or_default() += 1;
    }
    assert_eq!(counts.get("api-a"), Some(&10), "{counts:?}");
    assert_eq!(counts.get("api-b"), Some(&10), "{counts:?}");
}

#[tokio::test]
async fn requests_survive_an_instance_dying_mid_test_and_the_dead_one_is_ejected() {
    let a = Upstream::start("api-a").await;
    let b = Upstream::start("api-b").await;
    let sig = Upstream::start("sig-a").await;
    // Active checks out of the way: this is about what traffic alone notices.
    let flags = [
        "--health-check-interval-ms",
        "600000",
        "--eject-after-failures",
        "2",
        "--eject-cooldown-ms",
        "600000",
    ];
    let gw = Gateway::start(&[&a, &b], &[&sig], &flags).await;
    let client = client();
    for _ in 0..4 {
        instance_of(&gw, &client).await;
    }
    assert_eq!(b.requests(), 2);

    b.kill();
    for _ in 0..10 {
        // GETs retried on the other instance; a POST too, since the refused connection means
        // it never reached anyone.
        assert_eq!(instance_of(&gw, &client).await, "api-a");
        let post = client
            .post(gw.url("/api/v1/calls/c1/join"))
            .bearer_auth(token("alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(echoed(post).await["instance"], "api-a");
    }

    let ejections = format!(
        r#"gateway_upstream_ejections_total{{upstream="calls-api",instance="{}"}}"#,
        b.addr
    );
    let healthy = format!(
        r#"gateway_upstream_healthy{{upstream="calls-api",instance="{}"}}"#,
        b.addr
    );
    let metrics = gw.metrics().await;
    // Ejected once, after two failures, and not tried again afterwards.
    assert_eq!(metric(&metrics, &ejections), Some(1.0), "{metrics}");
    assert_eq!(metric(&metrics, &healthy), Some(0.0), "{metrics}");
    assert_eq!(b.requests(), 2);
}

#[tokio::test]
async fn an_instance_that_comes_back_is_used_again_once_a_health_check_passes() {
    let a = Upstream::start("api-a").await;
    let b = Upstream::start("api-b").await;
    let sig = Upstream::start("sig-a").await;
    // A passive ejection of ten minutes: only the active checks can bring b back in time.
    let flags = [
        "--health-check-interval-ms",
        "50",
        "--eject-after-failures",
        "1",
        "--eject-cooldown-ms",
        "600000",
    ];
    let gw = Gateway::start(&[&a, &b], &[&sig], &flags).await;
    let client = client();

    b.kill();
    let healthy = format!(
        r#"gateway_upstream_healthy{{upstream="calls-api",instance="{}"}}"#,
        b.addr
    );
    eventually("b to be taken out of rotation", || async {
        assert_eq!(instance_of(&gw, &client).await, "api-a");
        metric(&gw.metrics().await, &healthy) == Some(0.0)
    })
    .await;

    b.restart().await;
    eventually("a request to reach b again", || async {
        instance_of(&gw, &client).await == "api-b"
    })
    .await;
}

#[tokio::test]
async fn a_post_is_not_replayed_after_the_connection_broke_but_an_idempotent_request_is() {
    let broken = start_broken_upstream().await;
    let a = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let calls = format!("http://{broken},{}", a.url());
    let gw = Gateway::start_urls(&calls, &sig.url(), &["--eject-after-failures", "1000"]).await;
    let client = client();

    let mut bad_gateway = 0;
    for i in 0..10 {
        let get = client
            .get(gw.url("/api/v1/calls"))
            .bearer_auth(token("alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(echoed(get).await["instance"], "api-a");

        let keyed = client
            .post(gw.url("/api/v1/calls/rooms/r1/initiate"))
            .bearer_auth(token("alice"))
            .header("idempotency-key", format!("key-{i}"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(echoed(keyed).await["instance"], "api-a");

        let post = client
            .post(gw.url("/api/v1/calls/c1/end"))
            .bearer_auth(token("alice"))
            .body("{}")
            .send()
            .await
            .unwrap();
        if post.status() == 502 {
            let body = assert_envelope(post, 502, "BAD_GATEWAY").await;
            assert_eq!(
                body["message"],
                "calls-api closed the connection without answering"
            );
            bad_gateway += 1;
        } else {
            assert_eq!(echoed(post).await["instance"], "api-a");
        }
    }
    assert!(
        bad_gateway > 0,
        "a POST that reached the broken instance was not retried"
    );
}

#[tokio::test]
async fn an_upstream_that_drops_every_request_gives_a_502_envelope() {
    let broken = start_broken_upstream().await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start_urls(
        &format!("http://{broken}"),
        &sig.url(),
        &["--eject-after-failures", "1000"],
    )
    .await;

    let response = client().get(gw.url("/api/docs")).send().await.unwrap();
    assert_envelope(response, 502, "BAD_GATEWAY").await;
}

#[tokio::test]
async fn a_slow_upstream_gives_a_504_envelope_after_the_request_timeout() {
    let a = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&a], &[&sig], &["--request-timeout-ms", "200"]).await;

    let started = std::time::Instant::now();
    let response = client()
        .get(gw.url("/api/v1/slow?ms=5000"))
        .bearer_auth(token("alice"))
        .send()
        .await
        .unwrap();
    let body = assert_envelope(response, 504, "GATEWAY_TIMEOUT").await;
    assert_eq!(body["message"], "calls-api did not answer in time");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
}

#[tokio::test]
async fn a_pool_without_a_healthy_instance_gives_a_503_envelope() {
    let dead_a = closed_port().await;
    let dead_b = closed_port().await;
    let sig = Upstream::start("sig-a").await;
    let calls = format!("http://{dead_a},http://{dead_b}");
    let gw = Gateway::start_urls(&calls, &sig.url(), &["--health-check-failures", "1"]).await;
    let client = client();

    // Until the first checks fail the gateway still tries, and says it could not connect.
    eventually("503 once both instances failed their checks", || async {
        let response = client.get(gw.url("/api/docs")).send().await.unwrap();
        match response.status().as_u16() {
            502 => false,
            503 => {
                let body = assert_envelope(response, 503, "DEPENDENCY_UNAVAILABLE").await;
                body["message"] == "calls-api is unavailable"
            }
            other => panic!("unexpected status {other}"),
        }
    })
    .await;
}
