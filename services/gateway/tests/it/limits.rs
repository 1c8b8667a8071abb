//! Rate limits, size caps and slow clients.

use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::*;

#[tokio::test]
async fn each_user_has_a_token_bucket_and_a_429_says_when_to_retry() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let flags = [
        "--rate-limit-per-user-per-minute",
        "60",
        "--rate-limit-per-user-burst",
        "3",
    ];
    let gw = Gateway::start(&[&api], &[&sig], &flags).await;
    let client = client();
    let get = |user: &str| {
        client
            .get(gw.url("/api/v1/calls"))
            .bearer_auth(token(user))
            .send()
    };

    for _ in 0..3 {
        assert_eq!(get("alice").await.unwrap().status(), 200);
    }
    let refused = get("alice").await.unwrap();
    assert_eq!(refused.headers()["retry-after"], "1");
    let body = assert_envelope(refused, 429, "RATE_LIMITED").await;
    assert_eq!(body["error"], "Too Many Requests");
    assert_eq!(
        get("bob").await.unwrap().status(),
        200,
        "other users are unaffected"
    );
    assert_eq!(api.requests(), 4);
    assert!(
        gw.metrics()
            .await
            .contains(r#"gateway_rate_limited_total{scope="user"}"#)
    );
}

#[tokio::test]
async fn each_client_ip_has_a_token_bucket_whoever_the_user_is() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let flags = [
        "--rate-limit-per-ip-per-minute",
        "60",
        "--rate-limit-per-ip-burst",
        "3",
    ];
    let gw = Gateway::start(&[&api], &[&sig], &flags).await;
    let client = client();

    assert_eq!(
        client
            .get(gw.url("/api/docs"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(gw.url("/api/v1/calls"))
            .bearer_auth(token("alice"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        client
            .get(gw.url("/api/v1/calls"))
            .bearer_auth(token("bob"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let refused = client
        .get(gw.url("/api/v1/calls"))
        .bearer_auth(token("carol"))
        .send()
        .await
        .unwrap();
    assert!(refused.headers().contains_key("retry-after"));
    assert_envelope(refused, 429, "RATE_LIMITED").await;
    // Unauthenticated requests spend the IP's tokens too, before the token is even checked.
    let anonymous = client.get(gw.url("/api/v1/calls")).send().await.unwrap();
    assert_envelope(anonymous, 429, "RATE_LIMITED").await;
}

#[tokio::test]
async fn behind_a_trusted_load_balancer_the_forwarded_client_ip_is_limited() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let flags = [
        "--rate-limit-per-ip-per-minute",
        "60",
        "--rate-limit-per-ip-burst",
        "1",
        "--trust-forwarded-for",
        "true",
    ];
    let gw = Gateway::start(&[&api], &[&sig], &flags).await;
    let client = client();
    let from = |ip: &'static str| {
        client
            .get(gw.url("/api/docs"))
            .header("x-forwarded-for", ip)
            .send()
    };

    assert_eq!(from("198.51.100.1").await.unwrap().status(), 200);
    assert_eq!(from("198.51.100.1").await.unwrap().status(), 429);
    assert_eq!(from("198.51.100.2").await.unwrap().status(), 200);
}

#[tokio::test]
async fn initiating_calls_has_a_stricter_limit_than_other_requests() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let flags = [
        "--rate-limit-per-user-per-minute",
        "600",
        "--rate-limit-per-user-burst",
        "100",
        "--rate-limit-initiate-per-user-per-minute",
        "6",
        "--rate-limit-initiate-burst",
        "1",
    ];
    let gw = Gateway::start(&[&api], &[&sig], &flags).await;
    let client = client();
    let initiate = |user: &str| {
        client
            .post(gw.url("/api/v1/calls/rooms/room-1/initiate"))
            .bearer_auth(token(user))
            .body("{}")
            .send()
    };

    assert_eq!(initiate("alice").await.unwrap().status(), 200);
    let refused = initiate("alice").await.unwrap();
    assert_eq!(refused.headers()["retry-after"], "10");
    assert_envelope(refused, 429, "RATE_LIMITED").await;
    for _ in 0..5 {
        let other = client
            .get(gw.url("/api/v1/calls/rooms/room-1/active"))
            .bearer_auth(token("alice"))
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 200);
    }
    assert_eq!(initiate("bob").await.unwrap().status(), 200);
    assert!(
        gw.metrics()
            .await
            .contains(r#"gateway_rate_limited_total{scope="initiate"}"#)
    );
}

#[tokio::test]
async fn a_body_over_the_cap_gets_a_413_envelope_from_its_content_length() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;
    let client = client();
    let post = |len: usize| {
        client
            .post(gw.url("/api/v1/calls/rooms/r/initiate"))
            .bearer_auth(token("alice"))
            .body(bytes(len))
            .send()
    };

    let at_cap = echoed(post(65_536).await.unwrap()).await;
    assert_eq!(at_cap["bodyLen"], 65_536);
    let over = post(65_537).await.unwrap();
    let body = assert_envelope(over, 413, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(body["error"], "Payload Too Large");
    let far_over = post(600_000).await.unwrap();
    assert_envelope(far_over, 413, "PAYLOAD_TOO_LARGE").await;
    assert_eq!(api.requests(), 1);
}

fn chunked_request(addr: std::net::SocketAddr, chunks: &[usize]) -> Vec<u8> {
    let mut request = format!(
        "POST /api/v1/calls/c1/join HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        token("alice")
    )
    .into_bytes();
    for &len in chunks {
        request.extend_from_slice(format!("{len:x}\r\n").as_bytes());
        request.extend(std::iter::repeat_n(b'y', len));
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    request
}

#[tokio::test]
async fn a_chunked_body_is_capped_while_it_streams_and_forwarded_with_a_length_when_it_fits() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &["--max-body-bytes", "1024"]).await;

    let (status, text) = raw(gw.addr, &chunked_request(gw.addr, &[600, 600])).await;
    assert_eq!(status, 413, "{text}");
    let envelope: serde_json::Value = serde_json::from_str(raw_body(&text)).unwrap();
    assert_eq!(envelope["code"], "PAYLOAD_TOO_LARGE");

    let (status, text) = raw(gw.addr, &chunked_request(gw.addr, &[500, 500])).await;
    assert_eq!(status, 200, "{text}");
    let echo: serde_json::Value = serde_json::from_str(raw_body(&text)).unwrap();
    assert_eq!(echo["bodyLen"], 1000);
    assert_eq!(echo["headers"]["content-length"], "1000");
    assert!(echo["headers"].get("transfer-encoding").is_none());
    assert_eq!(api.requests(), 1);
}

#[tokio::test]
async fn oversized_headers_get_a_431_envelope() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &["--max-header-bytes", "4096"]).await;

    let response = client()
        .get(gw.url("/api/docs"))
        .header("x-big", "z".repeat(5000))
        .send()
        .await
        .unwrap();
    let body = assert_envelope(response, 431, "HEADER_TOO_LARGE").await;
    assert_eq!(body["error"], "Request Header Fields Too Large");
    assert_eq!(
        body["message"],
        "Request headers are larger than 4096 bytes"
    );

    // Many small headers: the envelope too, not an upstream's bare 431.
    let mut many = client().get(gw.url("/api/docs"));
    for i in 0..95 {
        many = many.header(format!("x-h{i}"), "v");
    }
    let body = assert_envelope(many.send().await.unwrap(), 431, "HEADER_TOO_LARGE").await;
    assert_eq!(body["message"], "Requests may carry at most 90 headers");

    // Far beyond the cap the HTTP parser refuses the head before the gateway sees it.
    let huge = format!(
        "GET /api/docs HTTP/1.1\r\nhost: x\r\nx-huge: {}\r\n\r\n",
        "z".repeat(20_000)
    );
    let (status, _) = raw(gw.addr, huge.as_bytes()).await;
    assert_eq!(status, 431);
    assert_eq!(api.requests(), 0);
}

#[tokio::test]
async fn a_client_that_never_finishes_its_head_or_stays_idle_is_disconnected() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &["--header-read-timeout-ms", "300"]).await;

    let started = Instant::now();
    let mut slow = TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /api/docs HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    read_response(&mut slow).await;
    read_response(&mut idle).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    assert_eq!(api.requests(), 0);
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_a_408_envelope() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &["--body-read-timeout-ms", "300"]).await;

    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/calls/c1/join HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-length: 100\r\n\r\n0123456789",
        token("alice")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (status, text) = read_response(&mut stream).await;
    assert_eq!(status, 408, "{text}");
    let envelope: serde_json::Value = serde_json::from_str(raw_body(&text)).unwrap();
    assert_eq!(envelope["code"], "REQUEST_TIMEOUT");
    assert_eq!(api.requests(), 0);
}

#[tokio::test]
async fn a_client_waiting_for_100_continue_gets_its_413_without_sending_the_body() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;

    let started = Instant::now();
    let mut stream = TcpStream::connect(gw.addr).await.unwrap();
    let head = format!(
        "POST /api/v1/calls/c1/join HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {}\r\ncontent-length: 1000000\r\nexpect: 100-continue\r\n\r\n",
        token("alice")
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let (status, text) = read_response(&mut stream).await;
    assert_eq!(status, 413, "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered without waiting for the body"
    );
}
