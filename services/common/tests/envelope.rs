//! The envelope on the wire: a tiny router exercised with `oneshot` for every way a request can
//! fail before or inside a handler.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn;
use axum::response::Response;
use axum::routing::{get, post};
use common::auth::{Authenticated, JwtVerifier, mint_hs256};
use common::error::{
    ApiError, Envelope, ErrorCode, ErrorEnvelope, ValidJson, ValidPath, ValidQuery,
    envelope_middleware, ok, with_fallbacks,
};
use common::ids::CallId;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tower::ServiceExt;

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
enum CallType {
    Audio,
    Video,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Initiate {
    #[serde(rename = "type")]
    kind: CallType,
    is_group_call: bool,
    invite_user_ids: Vec<String>,
    max_participants: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Page {
    limit: u32,
}

const SECRET: &str = "envelope-test-secret-envelope-test-secret";

fn app() -> Router {
    let verifier = Arc::new(JwtVerifier::hs256(SECRET));
    let routes = Router::new()
        .route(
            "/calls",
            post(|ValidJson(body): ValidJson<Initiate>| async move {
                ok(StatusCode::CREATED, "Call initiated", body)
            }),
        )
        .route(
            "/calls/{id}",
            get(|ValidPath(id): ValidPath<CallId>| async move {
                ok(StatusCode::OK, "Call", json!({"id": id}))
            }),
        )
        .route(
            "/list",
            get(|ValidQuery(page): ValidQuery<Page>| async move {
                ok(StatusCode::OK, "Calls", json!({"limit": page.limit}))
            }),
        )
        .route(
            "/full",
            post(|| async { ApiError::new(ErrorCode::CallFull, "Call is full") }),
        )
        .route("/limited", get(|| async { ApiError::rate_limited(7) }))
        .route(
            "/boom",
            get(|| async { ApiError::internal_from("connection refused: password=x") }),
        )
        .route(
            "/teapot",
            get(|| async { (StatusCode::IM_A_TEAPOT, "short and stout") }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                "late"
            })
            .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                StatusCode::REQUEST_TIMEOUT,
                Duration::from_millis(20),
            )),
        )
        .route(
            "/limited-body",
            post(|body: axum::body::Bytes| async move { body.len().to_string() })
                .layer(tower_http::limit::RequestBodyLimitLayer::new(16)),
        )
        .route(
            "/me",
            get(|user: Authenticated| async move {
                ok(StatusCode::OK, "Me", json!({"userId": user.user_id()}))
            }),
        )
        .with_state(verifier)
        .layer(DefaultBodyLimit::max(1024));
    with_fallbacks(routes).layer(from_fn(envelope_middleware))
}

async fn send(request: Request<Body>) -> (StatusCode, http::HeaderMap, Value) {
    let response: Response = app().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&bytes)));
    (status, headers, body)
}

fn post_json(uri: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn envelope(body: &Value) -> ErrorEnvelope {
    serde_json::from_value(body.clone()).unwrap()
}

fn valid_body() -> Value {
    json!({"type": "video", "isGroupCall": false, "inviteUserIds": ["u2"]})
}

#[tokio::test]
async fn valid_json_reaches_the_handler_and_gets_the_success_envelope() {
    let (status, _, body) = send(post_json("/calls", &valid_body().to_string())).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["statusCode"], 201);
    assert_eq!(body["message"], "Call initiated");
    assert_eq!(body["data"]["type"], "video");
    let parsed: Envelope<Value> = serde_json::from_value(body).unwrap();
    assert_eq!(parsed.status_code, 201);
}

#[tokio::test]
async fn malformed_json_is_a_validation_failure() {
    let (status, _, body) = send(post_json("/calls", "{\"type\": ")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let e = envelope(&body);
    assert_eq!(e.code, "VALIDATION_FAILED");
    assert_eq!(e.error, "Bad Request");
    assert_eq!(e.details[0].field, "body");
}

#[tokio::test]
async fn trailing_garbage_after_json_is_a_validation_failure() {
    let (status, _, _) = send(post_json("/calls", &format!("{} x", valid_body()))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn empty_body_is_a_validation_failure() {
    let (status, _, body) = send(post_json("/calls", "")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(envelope(&body).details[0].field, "body");
}

#[tokio::test]
async fn wrong_content_type_is_a_validation_failure() {
    let request = Request::post("/calls")
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(valid_body().to_string()))
        .unwrap();
    let (status, _, body) = send(request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let e = envelope(&body);
    assert_eq!(e.code, "VALIDATION_FAILED");
    assert_eq!(e.details[0].field, "Content-Type");
}

#[tokio::test]
async fn json_content_type_with_charset_is_accepted() {
    let request = Request::post("/calls")
        .header(header::CONTENT_TYPE, "Application/JSON; charset=utf-8")
        .body(Body::from(valid_body().to_string()))
        .unwrap();
    let (status, _, _) = send(request).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn missing_field_is_named_in_details() {
    let (status, _, body) = send(post_json(
        "/calls",
        r#"{"type":"audio","inviteUserIds":["u2"]}"#,
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let e = envelope(&body);
    assert_eq!(e.details[0].field, "isGroupCall");
    assert!(
        e.details[0].message.contains("missing field"),
        "{}",
        e.details[0].message
    );
}

#[tokio::test]
async fn wrong_type_is_named_in_details_with_its_path() {
    let (_, _, body) = send(post_json(
        "/calls",
        r#"{"type":"audio","isGroupCall":false,"inviteUserIds":["u2", 7]}"#,
    ))
    .await;
    let e = envelope(&body);
    assert_eq!(e.code, "VALIDATION_FAILED");
    assert_eq!(e.details[0].field, "inviteUserIds[1]");
    assert!(
        !e.details[0].message.contains("line"),
        "{}",
        e.details[0].message
    );
}

#[tokio::test]
async fn unknown_enum_value_is_named_in_details() {
    let (status, _, body) = send(post_json(
        "/calls",
        r#"{"type":"hologram","isGroupCall":false,"inviteUserIds":["u2"]}"#,
    ))
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let e = envelope(&body);
    assert_eq!(e.details[0].field, "type");
    assert!(
        e.details[0].message.contains("unknown variant"),
        "{}",
        e.details[0].message
    );
}

#[tokio::test]
async fn oversized_json_body_is_payload_too_large() {
    let big =
        json!({"type": "audio", "isGroupCall": true, "inviteUserIds": vec!["x".repeat(100); 20]});
    let (status, _, body) = send(post_json("/calls", &big.to_string())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let e = envelope(&body);
    assert_eq!(e.code, "PAYLOAD_TOO_LARGE");
    assert_eq!(e.error, "Payload Too Large");
}

#[tokio::test]
async fn tower_http_body_limit_response_is_converted_to_the_envelope() {
    let request = Request::post("/limited-body")
        .header(header::CONTENT_LENGTH, "64")
        .body(Body::from("x".repeat(64)))
        .unwrap();
    let (status, _, body) = send(request).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(envelope(&body).code, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn timeout_response_is_converted_to_the_envelope() {
    let (status, _, body) = send(Request::get("/slow").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::REQUEST_TIMEOUT);
    assert_eq!(envelope(&body).code, "REQUEST_TIMEOUT");
}

#[tokio::test]
async fn unknown_route_is_not_found_in_the_envelope() {
    let (status, _, body) = send(Request::get("/nowhere").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let e = envelope(&body);
    assert_eq!(e.code, "NOT_FOUND");
    assert_eq!(e.error, "Not Found");
}

#[tokio::test]
async fn wrong_method_is_method_not_allowed_in_the_envelope() {
    let (status, headers, body) =
        send(Request::delete("/calls").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(envelope(&body).code, "METHOD_NOT_ALLOWED");
    assert!(headers.get(header::ALLOW).is_some());
}

#[tokio::test]
async fn invalid_path_parameter_is_a_validation_failure_naming_it() {
    let (status, _, body) = send(
        Request::get("/calls/not-a-uuid")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let e = envelope(&body);
    assert_eq!(e.code, "VALIDATION_FAILED");
    assert_eq!(e.details.len(), 1);
    assert_eq!(e.details[0].field, "id");
    assert!(e.details[0].message.contains("UUID"), "{:?}", e.details);
}

#[tokio::test]
async fn valid_path_parameter_reaches_the_handler() {
    let id = CallId::new();
    let (status, _, body) = send(
        Request::get(format!("/calls/{id}"))
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["id"], id.as_str());
}

#[tokio::test]
async fn invalid_query_is_a_validation_failure() {
    let (status, _, body) = send(
        Request::get("/list?limit=lots")
            .body(Body::empty())
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let e = envelope(&body);
    assert_eq!(e.code, "VALIDATION_FAILED");
    assert_eq!(e.details[0].field, "limit");
    let (_, _, body) = send(Request::get("/list").body(Body::empty()).unwrap()).await;
    assert_eq!(envelope(&body).details[0].field, "limit");
}

#[tokio::test]
async fn handler_error_has_the_exact_contract_shape_with_request_id() {
    let request = Request::post("/full")
        .header("x-request-id", "req-123")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(request).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        body,
        json!({"statusCode": 409, "message": "Call is full", "error": "Conflict",
               "code": "CALL_FULL", "requestId": "req-123"})
    );
}

#[tokio::test]
async fn request_id_is_omitted_without_the_header() {
    let (_, _, body) = send(Request::post("/full").body(Body::empty()).unwrap()).await;
    assert!(body.get("requestId").is_none());
    assert!(body.get("details").is_none());
}

#[tokio::test]
async fn request_id_is_added_to_converted_framework_errors_too() {
    let request = Request::get("/nowhere")
        .header("x-request-id", "abc")
        .body(Body::empty())
        .unwrap();
    let (_, _, body) = send(request).await;
    assert_eq!(body["requestId"], "abc");
}

#[tokio::test]
async fn rate_limited_error_sets_retry_after() {
    let (status, headers, body) = send(Request::get("/limited").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(headers.get(header::RETRY_AFTER).unwrap(), "7");
    assert_eq!(envelope(&body).code, "RATE_LIMITED");
}

#[tokio::test]
async fn internal_error_shows_nothing_of_its_cause() {
    let (status, _, body) = send(Request::get("/boom").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["message"], "Internal server error");
    assert!(!body.to_string().contains("password"));
}

#[tokio::test]
async fn unusual_plain_text_status_keeps_its_status_in_the_envelope() {
    let (status, _, body) = send(Request::get("/teapot").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    assert_eq!(body["statusCode"], 418);
    assert_eq!(body["code"], "BAD_REQUEST");
}

#[tokio::test]
async fn authenticated_extractor_accepts_a_valid_bearer_token() {
    let token = mint_hs256(SECRET, "alice", Duration::from_secs(60));
    let request = Request::get("/me")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["userId"], "alice");
}

#[tokio::test]
async fn authenticated_extractor_rejects_missing_and_bad_tokens_with_401() {
    let (status, _, body) = send(Request::get("/me").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(envelope(&body).code, "UNAUTHORIZED");
    let request = Request::get("/me")
        .header(header::AUTHORIZATION, "Bearer not.a.token")
        .body(Body::empty())
        .unwrap();
    let (status, _, body) = send(request).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "Unauthorized");
}
