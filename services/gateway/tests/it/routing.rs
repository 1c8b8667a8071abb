//! Routing, request ids and forwarded headers.

use crate::support::*;

#[tokio::test]
async fn api_requests_reach_calls_api_with_method_path_query_and_body() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;

    let alice = token("alice");
    let response = client()
        .post(gw.url("/api/v1/calls/abc/join?x=1&y=2"))
        .bearer_auth(&alice)
        .header("content-type", "application/json")
        .body(r#"{"hello":"world"}"#)
        .send()
        .await
        .unwrap();
    let echo = echoed(response).await;
    assert_eq!(echo["instance"], "api-a");
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["path"], "/api/v1/calls/abc/join");
    assert_eq!(echo["query"], "x=1&y=2");
    assert_eq!(echo["body"], r#"{"hello":"world"}"#);
    // The token is forwarded unchanged: upstreams verify it themselves.
    assert_eq!(echo["headers"]["authorization"], format!("Bearer {alice}"));
    assert_eq!(echo["headers"]["content-type"], "application/json");
    assert_eq!(sig.requests(), 0);
}

#[tokio::test]
async fn socket_io_requests_reach_signaling_not_calls_api() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;

    let response = client()
        .get(gw.url("/socket.io/?EIO=4&transport=polling"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    assert!(text.starts_with(r#"0{"sid":"sig-a-"#), "{text}");
    assert_eq!(api.requests(), 0);
    assert_eq!(sig.requests(), 1);
}

#[tokio::test]
async fn internal_routes_are_refused_with_a_404_envelope_and_never_forwarded() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;
    let client = client();

    for path in [
        "/internal/v1/rooms/r1/members",
        "/internal",
        "/api/../internal/v1/rooms/r1/members",
        "/api/%2e%2e/internal/v1/rooms/r1/members",
        "/nope",
    ] {
        let response = client
            .put(gw.url(path))
            .bearer_auth(token("alice"))
            .body("{}")
            .send()
            .await
            .unwrap();
        let body = assert_envelope(response, 404, "NOT_FOUND").await;
        assert_eq!(body["error"], "Not Found");
    }
    assert_eq!(api.requests() + sig.requests(), 0);
}

#[tokio::test]
async fn the_upstream_answer_passes_through_untouched() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;

    let response = client()
        .get(gw.url("/api/v1/conflict"))
        .bearer_auth(token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 409);
    assert_eq!(response.headers()["x-upstream"], "yes");
    assert_eq!(response.text().await.unwrap(), CONFLICT_BODY);
}

#[tokio::test]
async fn a_request_id_is_generated_when_absent_and_echoed_to_both_sides() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;

    let response = client().get(gw.url("/api/docs")).send().await.unwrap();
    let id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(id.len(), 36, "a UUID: {id}");
    let echo = echoed(response).await;
    assert_eq!(echo["headers"]["x-request-id"], id);

    // Refusals carry one too, in the header and the envelope.
    let response = client().get(gw.url("/internal/x")).send().await.unwrap();
    let body = assert_envelope(response, 404, "NOT_FOUND").await;
    assert_eq!(body["requestId"].as_str().unwrap().len(), 36);
}

#[tokio::test]
async fn a_client_request_id_is_passed_through_and_echoed() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;

    let response = client()
        .get(gw.url("/api/docs/openapi.json"))
        .header("x-request-id", "trace-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42");
    let echo = echoed(response).await;
    assert_eq!(echo["headers"]["x-request-id"], "trace-42");

    let response = client()
        .get(gw.url("/api/v1/calls"))
        .header("x-request-id", "trace-43")
        .send()
        .await
        .unwrap();
    let body = assert_envelope(response, 401, "UNAUTHORIZED").await;
    assert_eq!(body["requestId"], "trace-43");
}

#[tokio::test]
async fn forwarded_headers_are_set_and_hop_by_hop_headers_removed() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;

    let response = client()
        .get(gw.url("/api/docs"))
        .header("x-forwarded-for", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-real-ip", "6.6.6.6")
        .header("connection", "keep-alive, x-drop-me")
        .header("x-drop-me", "1")
        .header("te", "trailers")
        .send()
        .await
        .unwrap();
    let echo = echoed(response).await;
    let headers = &echo["headers"];
    // Untrusted by default: the client's claims are replaced by what the gateway saw.
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], gw.addr.to_string());
    assert_eq!(headers["host"], api.addr.to_string());
    for gone in ["x-real-ip", "x-drop-me", "te"] {
        assert!(headers.get(gone).is_none(), "{gone} forwarded: {headers}");
    }
}

#[tokio::test]
async fn a_trusted_forwarded_for_is_appended_to() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &["--trust-forwarded-for", "true"]).await;

    let response = client()
        .get(gw.url("/api/docs"))
        .header("x-forwarded-for", "203.0.113.7")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let echo = echoed(response).await;
    assert_eq!(echo["headers"]["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
}

#[tokio::test]
async fn health_readiness_and_metrics_are_served_by_the_gateway_itself() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &[]).await;
    gw.wait_ready().await;

    let healthz = client().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(healthz.status(), 200);
    for path in ["/healthz", "/readyz"] {
        let admin = client().get(gw.admin_url(path)).send().await.unwrap();
        assert_eq!(admin.status(), 200, "{path} on the admin listener");
    }
    // The metrics name internal instances: never on the public port.
    let public = client().get(gw.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
    let body: serde_json::Value = public.json().await.unwrap();
    assert_eq!(body["code"], "NOT_FOUND");
    client().get(gw.url("/api/docs")).send().await.unwrap();
    let metrics = gw.metrics().await;
    assert!(metrics.contains("gateway_requests_total{"), "{metrics}");
    assert!(metrics.contains(r#"route="api_docs""#), "{metrics}");
    assert!(
        metrics.contains("gateway_upstream_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            r#"gateway_upstream_healthy{{upstream="calls-api",instance="{}"}} 1"#,
            api.addr
        )),
        "{metrics}"
    );
    assert_eq!(
        api.requests(),
        1,
        "health checks and /metrics are not forwarded"
    );
}

#[tokio::test]
async fn readiness_fails_while_a_pool_has_no_healthy_instance() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(&[&api], &[&sig], &["--health-check-failures", "1"]).await;
    gw.wait_ready().await;

    sig.set_healthy(false);
    let client = client();
    let url = gw.url("/readyz");
    eventually("readyz to fail", || {
        let request = client.get(&url).send();
        async move { request.await.is_ok_and(|r| r.status() == 503) }
    })
    .await;
    let response = client.get(&url).send().await.unwrap();
    let body = assert_envelope(response, 503, "DEPENDENCY_UNAVAILABLE").await;
    assert_eq!(body["message"], "signaling is unavailable");

    sig.set_healthy(true);
    gw.wait_ready().await;
}

#[tokio::test]
async fn cors_preflights_are_answered_for_allowed_origins_only() {
    let api = Upstream::start("api-a").await;
    let sig = Upstream::start("sig-a").await;
    let gw = Gateway::start(
        &[&api],
        &[&sig],
        &["--cors-allowed-origins", "https://app.example"],
    )
    .await;
    let client = client();

    let preflight = |origin: &'static str| {
        client
            .request(reqwest::Method::OPTIONS, gw.url("/api/v1/calls"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://app.example").await.unwrap();
    assert_eq!(
        allowed.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let denied = preflight("https://evil.example").await.unwrap();
    assert!(
        denied
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    assert_eq!(api.requests(), 0, "preflights are answered by the gateway");

    let response = client
        .get(gw.url("/api/docs"))
        .header("origin", "https://app.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    assert!(
        response.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("x-request-id")
    );
}
