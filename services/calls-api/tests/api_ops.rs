//! What operators and integrators rely on besides the calls API (CONTRACT section 6): the
//! OpenAPI document and Swagger UI, `/healthz`, `/readyz` (including a database outage and
//! recovery), and `/metrics`.

#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};
use support::{DEADLINE, Options, Resp, TestApp, admin_url, id_of, postgres_authority, spawn_app};
use testkit::TcpProxy;

async fn get(app: &TestApp, path: &str) -> Resp {
    app.send(app.request(Method::GET, path)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_every_endpoint_its_bearer_auth_and_the_error_codes() {
    let app = spawn_app(Options::default()).await;
    let resp = get(&app, "/api/docs/openapi.json").await;
    assert_eq!(resp.status, 200, "{}", resp.text);
    let doc = &resp.body;
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "an OpenAPI 3 document: {}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string());

    let endpoints = [
        ("post", "/api/v1/calls/rooms/{chatRoomId}/initiate"),
        ("post", "/api/v1/calls/{id}/join"),
        ("post", "/api/v1/calls/{id}/media/session"),
        ("patch", "/api/v1/calls/{id}/status"),
        ("patch", "/api/v1/calls/{id}/media"),
        ("post", "/api/v1/calls/{id}/end"),
        ("get", "/api/v1/calls/{id}"),
        ("get", "/api/v1/calls/rooms/{chatRoomId}/active"),
        ("get", "/api/v1/calls"),
        ("post", "/api/v1/calls/{id}/invite"),
        ("post", "/api/v1/calls/{id}/participants/{userId}/remove"),
    ];
    for (method, path) in endpoints {
        let operation = &doc["paths"][path][method];
        assert!(
            operation.is_object(),
            "{} {path} is missing from the OpenAPI document",
            method.to_uppercase()
        );
        assert!(
            operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some())),
            "{} {path} must say it needs the bearer token",
            method.to_uppercase()
        );
        assert!(
            operation["responses"]
                .as_object()
                .is_some_and(|r| r.keys().any(|k| k.starts_with('2')))
        );
    }
    assert!(
        doc["paths"]["/internal/v1/rooms/{chatRoomId}/members"]["put"].is_object(),
        "the membership API is documented"
    );
    // The roster's Swagger example is one a developer can send as is.
    assert_eq!(
        doc["paths"]["/api/v1/calls/{id}/invite"]["post"]["requestBody"]["content"]["application/json"]
            ["example"],
        serde_json::json!({"userIds": ["user-id-3", "user-id-4"]})
    );
    // Operation ids are unique: client generators name methods after them.
    let mut ids = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            if let Some(id) = operation["operationId"].as_str() {
                assert!(
                    ids.insert(id.to_owned()),
                    "operationId {id} repeats at {method} {path}"
                );
            }
        }
    }
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (bearer["type"].as_str(), bearer["scheme"].as_str()),
        (Some("http"), Some("bearer")),
        "{bearer}"
    );

    for code in [
        "VALIDATION_FAILED",
        "UNAUTHORIZED",
        "FORBIDDEN",
        "CALL_NOT_FOUND",
        "CALL_FULL",
        "CALL_ENDED",
        "INVALID_TRANSITION",
        "CALL_ALREADY_ACTIVE",
        "NOT_JOINED",
        "PAYLOAD_TOO_LARGE",
        "RATE_LIMITED",
        "MEDIA_PROVIDER_NOT_CONFIGURED",
        "DEPENDENCY_UNAVAILABLE",
    ] {
        assert!(
            resp.text.contains(code),
            "the OpenAPI document never mentions {code}"
        );
    }

    // Clients generate their types from this document (clients/js): enums must list the
    // values on the wire, not the Rust variant names.
    let schemas = &doc["components"]["schemas"];
    for (schema, values) in [
        ("CallStatus", &["ringing", "active", "ended"][..]),
        ("CallType", &["audio", "video"][..]),
        ("Role", &["host", "participant"][..]),
        (
            "ParticipantStatus",
            &["invited", "ringing", "joined", "left", "declined", "missed"][..],
        ),
        (
            "EndReason",
            &[
                "completed",
                "cancelled",
                "declined",
                "missed",
                "busy",
                "timeout",
                "failed",
            ][..],
        ),
    ] {
        assert_eq!(
            schemas[schema]["enum"],
            serde_json::json!(values),
            "{schema} in the OpenAPI document"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_is_served_from_the_binary() {
    let app = spawn_app(Options::default()).await;
    let redirect = get(&app, "/api/docs").await;
    assert!(
        (300..400).contains(&redirect.status),
        "/api/docs should lead to the UI, got {}",
        redirect.status
    );
    assert_eq!(redirect.header("location"), Some("/api/docs/"));

    let page = get(&app, "/api/docs/").await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|c| c.starts_with("text/html"))
    );
    assert!(
        page.text.contains("swagger-ui"),
        "not the Swagger UI page: {}",
        page.text
    );
    let init = get(&app, "/api/docs/swagger-initializer.js").await;
    assert_eq!(init.status, 200);
    assert!(
        init.text.contains("/api/docs/openapi.json"),
        "the UI must load our document: {}",
        init.text
    );
    for asset in ["/api/docs/swagger-ui-bundle.js", "/api/docs/swagger-ui.css"] {
        let resp = get(&app, asset).await;
        assert_eq!(resp.status, 200, "{asset} must be vendored into the binary");
        assert!(resp.text.len() > 10_000, "{asset} looks empty");
    }
    for text in [&page.text, &init.text] {
        assert!(
            !text.contains("//unpkg.com") && !text.contains("//cdn."),
            "the UI must not need the network: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app(Options::default()).await;
    let health = get(&app, "/healthz").await;
    assert_eq!(
        (health.status, &health.body),
        (200, &json!({"status": "ok"}))
    );
    let ready = get(&app, "/readyz").await;
    assert_eq!(
        (ready.status, &ready.body),
        (200, &json!({"status": "ready"}))
    );

    let call = app.initiate("alice", "room", &["bob"], true).await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    app.call("alice", &id).await.ok(200);
    app.call("mallory", &id).await.err(404, "CALL_NOT_FOUND");

    let metrics = get(&app, "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain"))
    );
    let text = &metrics.text;
    let series = |route: &str, status: &str| {
        text.lines().any(|l| {
            l.starts_with("http_requests_total{")
                && l.contains("service=\"calls-api\"")
                && l.contains(&format!("route=\"{route}\""))
                && l.contains(&format!("status=\"{status}\""))
        })
    };
    assert!(
        series("/api/v1/calls/rooms/{chatRoomId}/initiate", "201"),
        "no request count for initiate:\n{text}"
    );
    assert!(
        series("/api/v1/calls/{id}/join", "200"),
        "no request count for join:\n{text}"
    );
    assert!(
        series("/api/v1/calls/{id}", "404"),
        "no request count for the 404:\n{text}"
    );
    assert!(
        !text.contains(&id),
        "metrics must be labelled by route template, not by call id"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("calls_started_total{") && l.contains("group=\"true\"")),
        "calls_started_total must count the call started before the first scrape:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_database_is_unreachable_readiness_fails_and_requests_get_a_retryable_503() {
    let proxy = TcpProxy::start(postgres_authority(&admin_url())).await;
    let app = spawn_app(Options {
        postgres_via: Some(proxy.addr),
        ..Options::default()
    })
    .await;
    let call = app.initiate("alice", "room", &["bob"], false).await;
    let id = id_of(&call);

    proxy.cut();
    // Each of these waits out the pool's acquire timeout; run them side by side.
    let (down, read, join) = tokio::join!(
        get(&app, "/readyz"),
        app.call("alice", &id),
        app.join("bob", &id)
    );
    down.err(503, "DEPENDENCY_UNAVAILABLE");
    read.err(503, "DEPENDENCY_UNAVAILABLE");
    join.err(503, "DEPENDENCY_UNAVAILABLE");
    assert_eq!(
        get(&app, "/healthz").await.status,
        200,
        "liveness must not depend on the database"
    );
    for resp in [&down, &read, &join] {
        let lower = resp.text.to_lowercase();
        assert!(
            !lower.contains("sqlx")
                && !lower.contains("refused")
                && !lower.contains("calls_api_test"),
            "{}: the 503 must not show internals: {}",
            resp.what,
            resp.text
        );
    }

    proxy.restore().await;
    let started = Instant::now();
    while get(&app, "/readyz").await.status != 200 {
        assert!(
            started.elapsed() < DEADLINE,
            "/readyz never recovered once the database was back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let joined: Value = app.join("bob", &id).await.ok(200);
    assert_eq!(
        joined["status"], "active",
        "the service works again once the database is back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_short_acquire_timeout_a_database_outage_is_answered_503_within_it() {
    let proxy = TcpProxy::start(postgres_authority(&admin_url())).await;
    let app = spawn_app(Options {
        postgres_via: Some(proxy.addr),
        database_acquire_timeout_ms: 300,
        ..Options::default()
    })
    .await;
    let call = app.initiate("alice", "room", &["bob"], false).await;
    let id = id_of(&call);

    proxy.cut();
    let started = Instant::now();
    app.call("alice", &id)
        .await
        .err(503, "DEPENDENCY_UNAVAILABLE");
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(2),
        "with DATABASE_ACQUIRE_TIMEOUT_MS=300 the app waited {waited:?} for its 503"
    );

    proxy.restore().await;
    let started = Instant::now();
    loop {
        let resp = app.call("alice", &id).await;
        if resp.status == 200 {
            break;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "the service never recovered once the database was back: {}",
            resp.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misconfigured_service_refuses_to_start_and_names_the_variable() {
    let base = || {
        support::build_config(
            &Options::default(),
            "sqlite::memory:",
            "nats://unused",
            "calls.v1",
        )
    };
    let cases: Vec<(&str, calls_api::Config)> = vec![
        ("INTERNAL_API_TOKEN", {
            let mut c = base();
            c.membership_mode = calls_api::MembershipMode::Table;
            c.internal_api_token = None;
            c
        }),
        ("MEDIA_TOKEN_SERVICE_TOKEN", {
            let mut c = base();
            c.media_token_url = Some("http://127.0.0.1:1".into());
            c
        }),
        ("MEDIA_TOKEN_URL", {
            let mut c = base();
            c.media_token_url = Some("not a url".into());
            c.media_token_service_token = Some(common::config::Secret::new("x"));
            c
        }),
        ("DATABASE_URL", {
            let mut c = base();
            c.database.url = common::config::Secret::new("mysql://root@localhost/calls");
            c
        }),
        ("NATS_SUBJECT_PREFIX", {
            let mut c = base();
            c.nats_subject_prefix = "calls..v1".into();
            c
        }),
        ("JWT_SECRET", {
            let mut c = base();
            c.jwt = common::auth::JwtConfig::default();
            c
        }),
    ];
    for (variable, config) in cases {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let result = tokio::time::timeout(
            DEADLINE,
            calls_api::run_with_bus(
                config,
                calls_bus::Bus::local(),
                listener,
                std::future::pending(),
            ),
        )
        .await
        .unwrap_or_else(|_| panic!("a service without a valid {variable} started anyway"));
        let message = match result {
            Err(calls_api::RunError::Config(message)) => message,
            other => panic!("{variable}: expected a configuration error, got {other:?}"),
        };
        assert!(
            message.contains(variable),
            "the start-up error must name {variable}: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_export_active_calls_and_how_each_ring_ended() {
    let app = spawn_app(Options::default()).await;
    let call = app
        .initiate("alice", "ops-room", &["bob", "carol"], true)
        .await;
    let id = id_of(&call);
    app.join("bob", &id).await.ok(200);
    app.set_status("carol", &id, "declined").await.ok(200);
    // The outcomes are counted as the relay publishes the events: poll with a deadline.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = get(&app, "/metrics").await.text;
        let has = |prefix: &str, label: &str| {
            text.lines()
                .any(|l| l.starts_with(prefix) && l.contains(label))
        };
        if has("calls_ring_outcomes_total{", "outcome=\"answered\"")
            && has("calls_ring_outcomes_total{", "outcome=\"declined\"")
            && text.lines().any(|l| l.starts_with("calls_active "))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "an SRE would not see ring outcomes (answered, declined) and active calls:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
