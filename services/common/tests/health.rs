//! `/healthz`, `/readyz` and `/metrics` as a service mounts them.

#![allow(clippy::unwrap_used)]

use axum::Router;
use axum::body::Body;
use common::health;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

async fn get(app: Router, uri: &str) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let response = app
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    (
        status,
        headers,
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

#[tokio::test]
async fn healthz_says_ok() {
    let app: Router = health::router(health::always_ready);
    let (status, _, body) = get(app, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body), json!({"status": "ok"}));
}

#[tokio::test]
async fn readyz_says_ready_when_the_check_passes() {
    let app: Router = health::router(|| async { Ok(()) });
    let (status, _, body) = get(app, "/readyz").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json_of(&body), json!({"status": "ready"}));
}

#[tokio::test]
async fn readyz_names_the_failing_dependency_in_a_503_envelope() {
    let app: Router = health::router(|| async { Err("database".to_owned()) });
    let (status, _, body) = get(app, "/readyz").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let body = json_of(&body);
    assert_eq!(body["code"], "DEPENDENCY_UNAVAILABLE");
    assert_eq!(body["statusCode"], 503);
    assert_eq!(body["error"], "Service Unavailable");
    assert!(body["message"].as_str().unwrap().contains("database"));
}

#[tokio::test]
async fn metrics_are_served_in_prometheus_text_format() {
    common::metrics::prometheus();
    metrics::counter!("common_health_test_total").increment(1);
    let app: Router = health::router(health::always_ready);
    let (status, headers, body) = get(app, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "text/plain; version=0.0.4"
    );
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("common_health_test_total 1")
    );
}

#[tokio::test]
async fn health_routes_merge_into_a_stateful_router() {
    #[derive(Clone)]
    struct State;
    let app: Router = Router::new()
        .route(
            "/x",
            axum::routing::get(|_: axum::extract::State<State>| async { "x" }),
        )
        .merge(health::router(health::always_ready))
        .with_state(State);
    let (status, _, _) = get(app, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
}
