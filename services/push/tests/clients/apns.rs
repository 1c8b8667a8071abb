use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use calls_push::{ApnsClient, ApnsNotification, ApnsPriority, ApnsPushType, PushOutcome};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::doubles::{BUNDLE_ID, Doubles, closed_port_url};

const DEVICE: &str = "5f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn ring(device: &str) -> ApnsNotification {
    ApnsNotification {
        device_token: device.to_owned(),
        topic: format!("{BUNDLE_ID}.voip"),
        push_type: ApnsPushType::Voip,
        priority: ApnsPriority::High,
        expiration: Some(now() + 30),
        collapse_id: Some("call-1".to_owned()),
        apns_id: None,
        payload: json!({"type": "incoming_call", "callId": "call-1", "isGroupCall": false}),
    }
}

fn client(doubles: &Doubles) -> ApnsClient {
    ApnsClient::new(doubles.apns_config()).unwrap()
}

#[tokio::test]
async fn a_voip_push_reaches_apple_with_the_headers_payload_and_provider_token_apple_requires() {
    let doubles = Doubles::start().await;
    let id = Uuid::new_v4();
    let mut push = ring(DEVICE);
    push.apns_id = Some(id);
    let expiration = push.expiration.unwrap();

    let outcome = client(&doubles).send(&push).await;

    assert_eq!(outcome, PushOutcome::Delivered { id: id.to_string() });
    let [request] = doubles.apns_requests(1).await.try_into().unwrap();
    assert_eq!(request["deviceToken"], DEVICE);
    assert_eq!(
        request["headers"]["apns-topic"],
        format!("{BUNDLE_ID}.voip")
    );
    assert_eq!(request["headers"]["apns-push-type"], "voip");
    assert_eq!(request["headers"]["apns-priority"], "10");
    assert_eq!(
        request["headers"]["apns-expiration"],
        expiration.to_string()
    );
    assert_eq!(request["headers"]["apns-collapse-id"], "call-1");
    assert_eq!(request["payload"], push.payload);
    assert_eq!(
        request["jwt"]["header"],
        json!({"alg": "ES256", "kid": doubles.apns.key_id}),
        "Apple's provider token header is exactly alg and kid"
    );
    assert_eq!(request["jwt"]["claims"]["iss"], doubles.apns.team_id);
    let iat = request["jwt"]["claims"]["iat"].as_u64().unwrap();
    assert!(iat.abs_diff(now()) < 60, "iat is now, not {iat}");
}

#[tokio::test]
async fn a_missed_call_alert_goes_to_the_app_topic_with_its_aps_alert() {
    let doubles = Doubles::start().await;
    let alert = ApnsNotification {
        topic: BUNDLE_ID.to_owned(),
        push_type: ApnsPushType::Alert,
        collapse_id: None,
        expiration: None,
        payload: json!({"aps": {"alert": {"title": "Missed call", "body": "Alice", "loc-key": "MISSED_CALL"}, "thread-id": "room-1"}}),
        ..ring(DEVICE)
    };

    assert!(matches!(
        client(&doubles).send(&alert).await,
        PushOutcome::Delivered { .. }
    ));
    let [request] = doubles.apns_requests(1).await.try_into().unwrap();
    assert_eq!(request["headers"]["apns-topic"], BUNDLE_ID);
    assert_eq!(request["headers"]["apns-push-type"], "alert");
    assert_eq!(request["payload"]["aps"]["thread-id"], "room-1");
}

#[tokio::test]
async fn many_pushes_share_one_http2_connection_and_one_provider_token() {
    let doubles = Doubles::start().await;
    let apns = client(&doubles);

    let sends = (0..20).map(|i| {
        let apns = apns.clone();
        let device = format!("{:064x}", i + 1);
        async move { apns.send(&ring(&device)).await }
    });
    let outcomes = futures::future::join_all(sends).await;

    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PushOutcome::Delivered { .. })),
        "{outcomes:?}"
    );
    let requests = doubles.apns_requests(20).await;
    assert_eq!(requests.len(), 20);
    assert_eq!(
        doubles.apns_connections().await,
        1,
        "one multiplexed connection for every push"
    );
    let tokens: std::collections::HashSet<String> = requests
        .iter()
        .map(|r| r["jwt"]["claims"].to_string())
        .collect();
    assert_eq!(
        tokens.len(),
        1,
        "the provider token is signed once and reused"
    );
}

#[tokio::test]
async fn a_connection_apple_closed_is_reopened_for_the_next_push() {
    let doubles = Doubles::start().await;
    let apns = client(&doubles);
    assert!(matches!(
        apns.send(&ring(DEVICE)).await,
        PushOutcome::Delivered { .. }
    ));

    doubles.apns_drop_connections().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    // The first push after the drop may race the client noticing the closed connection; it is
    // then a retry, and the one after must go through on a new connection.
    let mut outcome = apns.send(&ring(DEVICE)).await;
    while !matches!(outcome, PushOutcome::Delivered { .. }) && Instant::now() < deadline {
        assert_eq!(outcome.label(), "retry", "{outcome:?}");
        outcome = apns.send(&ring(DEVICE)).await;
    }

    assert!(
        matches!(outcome, PushOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    assert_eq!(doubles.apns_connections().await, 2);
}

#[tokio::test]
async fn an_unregistered_token_is_an_invalid_token_with_the_time_apple_gave() {
    let doubles = Doubles::start().await;
    doubles
        .apns_fault(json!({"token": DEVICE, "status": 410, "reason": "Unregistered"}))
        .await;

    let outcome = client(&doubles).send(&ring(DEVICE)).await;

    let PushOutcome::InvalidToken { reason, since } = outcome else {
        panic!("expected InvalidToken, got {outcome:?}");
    };
    assert_eq!(reason, "Unregistered");
    let since = since.expect("a 410 carries a timestamp");
    assert!(since <= SystemTime::now() && since > SystemTime::now() - Duration::from_secs(60));
}

#[tokio::test]
async fn a_bad_device_token_answer_is_an_invalid_token() {
    let doubles = Doubles::start().await;
    doubles
        .apns_fault(json!({"token": DEVICE, "status": 400, "reason": "BadDeviceToken"}))
        .await;

    let outcome = client(&doubles).send(&ring(DEVICE)).await;

    assert_eq!(
        outcome,
        PushOutcome::InvalidToken {
            reason: "BadDeviceToken".into(),
            since: None
        }
    );
}

#[tokio::test]
async fn throttling_and_apple_outages_are_retries_with_the_retry_after_apple_sent() {
    let doubles = Doubles::start().await;
    let apns = client(&doubles);
    doubles
        .apns_fault(json!({"next": 1, "status": 429, "reason": "TooManyRequests", "retryAfter": 5}))
        .await;
    doubles
        .apns_fault(json!({"next": 1, "status": 500, "reason": "InternalServerError"}))
        .await;
    doubles
        .apns_fault(json!({"next": 1, "status": 503, "reason": "ServiceUnavailable"}))
        .await;

    assert_eq!(
        apns.send(&ring(DEVICE)).await,
        PushOutcome::Retry {
            reason: "TooManyRequests".into(),
            after: Some(Duration::from_secs(5))
        }
    );
    assert_eq!(
        apns.send(&ring(DEVICE)).await,
        PushOutcome::Retry {
            reason: "InternalServerError".into(),
            after: None
        }
    );
    assert_eq!(
        apns.send(&ring(DEVICE)).await,
        PushOutcome::Retry {
            reason: "ServiceUnavailable".into(),
            after: None
        }
    );
    assert!(matches!(
        apns.send(&ring(DEVICE)).await,
        PushOutcome::Delivered { .. }
    ));
}

#[tokio::test]
async fn an_expired_provider_token_is_renewed_and_the_push_resent_once() {
    let doubles = Doubles::start().await;
    doubles
        .apns_fault(json!({"next": 1, "status": 403, "reason": "ExpiredProviderToken"}))
        .await;

    let outcome = client(&doubles).send(&ring(DEVICE)).await;

    assert!(
        matches!(outcome, PushOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    let statuses: Vec<Value> = doubles
        .apns_log()
        .await
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!(403), json!(200)]);
}

#[tokio::test]
async fn a_provider_token_still_refused_as_expired_after_renewal_is_a_credentials_problem() {
    let doubles = Doubles::start().await;
    doubles
        .apns_fault(json!({"next": 2, "status": 403, "reason": "ExpiredProviderToken"}))
        .await;

    let outcome = client(&doubles).send(&ring(DEVICE)).await;

    assert_eq!(
        outcome,
        PushOutcome::CredentialsRejected {
            reason: "ExpiredProviderToken".into()
        }
    );
    assert_eq!(
        doubles.apns_log().await.len(),
        2,
        "renewed once, not in a loop"
    );
}

#[tokio::test]
async fn a_key_id_apple_does_not_know_is_a_credentials_problem() {
    let doubles = Doubles::start().await;
    let mut config = doubles.apns_config();
    config.key_id = "UNKNOWN123".to_owned();

    let outcome = ApnsClient::new(config).unwrap().send(&ring(DEVICE)).await;

    assert_eq!(
        outcome,
        PushOutcome::CredentialsRejected {
            reason: "InvalidProviderToken".into()
        }
    );
}

#[tokio::test]
async fn a_payload_over_the_voip_limit_is_refused_without_reaching_apple() {
    let doubles = Doubles::start().await;
    let mut push = ring(DEVICE);
    push.payload = json!({"pad": "x".repeat(5200)});

    let outcome = client(&doubles).send(&push).await;

    assert_eq!(
        outcome,
        PushOutcome::Rejected {
            reason: "PayloadTooLarge".into()
        }
    );
    assert!(doubles.apns_log().await.is_empty());
}

#[tokio::test]
async fn a_push_apple_does_not_answer_in_time_is_a_retry_after_the_configured_timeout() {
    let doubles = Doubles::start().await;
    let mut config = doubles.apns_config();
    config.timeout = Duration::from_millis(300);
    let apns = ApnsClient::new(config).unwrap();
    // Open the connection first, so the timeout measured is the push's, not the handshake's.
    assert!(matches!(
        apns.send(&ring(DEVICE)).await,
        PushOutcome::Delivered { .. }
    ));
    doubles
        .apns_fault(json!({"next": 1, "delayMs": 3000}))
        .await;

    let started = Instant::now();
    let outcome = apns.send(&ring(DEVICE)).await;

    assert_eq!(
        outcome,
        PushOutcome::Retry {
            reason: "timeout".into(),
            after: None
        }
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_apns_nobody_listens_on_is_a_retry() {
    let mut config = Doubles::start().await.apns_config();
    config.base_url = Some(closed_port_url("http").await);

    let outcome = ApnsClient::new(config).unwrap().send(&ring(DEVICE)).await;

    assert_eq!(outcome.label(), "retry", "{outcome:?}");
    assert!(outcome.reason().starts_with("connection"), "{outcome:?}");
}
