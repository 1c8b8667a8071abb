use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use calls_push::{AndroidPriority, FcmClient, FcmMessage, FcmNotification, PushOutcome};
use serde_json::json;

use crate::doubles::{Doubles, closed_port_url};

fn ring(token: &str) -> FcmMessage {
    let data = [
        ("type", "incoming_call"),
        ("callId", "call-1"),
        ("isGroupCall", "false"),
    ];
    FcmMessage {
        token: token.to_owned(),
        data: data
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<BTreeMap<_, _>>(),
        priority: AndroidPriority::High,
        ttl: Some(Duration::from_secs(30)),
        notification: None,
    }
}

fn client(doubles: &Doubles) -> FcmClient {
    FcmClient::new(doubles.fcm_config()).unwrap()
}

#[tokio::test]
async fn a_data_message_reaches_fcm_with_high_priority_a_ttl_and_string_data() {
    let doubles = Doubles::start().await;

    let outcome = client(&doubles).send(&ring("android-token-1")).await;

    let PushOutcome::Delivered { id } = outcome else {
        panic!("expected Delivered, got {outcome:?}")
    };
    assert!(
        id.starts_with(&format!("projects/{}/messages/", doubles.fcm.project_id)),
        "{id}"
    );
    let [request] = doubles.fcm_requests(1).await.try_into().unwrap();
    assert_eq!(
        request["message"],
        json!({
            "token": "android-token-1",
            "data": {"callId": "call-1", "isGroupCall": "false", "type": "incoming_call"},
            "android": {"priority": "HIGH", "ttl": "30s"},
        })
    );
}

#[tokio::test]
async fn the_access_token_comes_from_a_jwt_grant_google_accepts() {
    let doubles = Doubles::start().await;
    assert!(matches!(
        client(&doubles).send(&ring("t")).await,
        PushOutcome::Delivered { .. }
    ));

    let [grant] = doubles.fcm_token_requests().await.try_into().unwrap();
    assert_eq!(grant["status"], 200);
    assert_eq!(grant["header"]["alg"], "RS256");
    let claims = &grant["claims"];
    assert_eq!(
        claims["aud"], doubles.fcm.token_uri,
        "the file's token_uri is the audience"
    );
    assert_eq!(
        claims["scope"],
        "https://www.googleapis.com/auth/firebase.messaging"
    );
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 3600);
}

#[tokio::test]
async fn a_missed_call_message_carries_a_visible_notification() {
    let doubles = Doubles::start().await;
    let mut missed = ring("android-token-1");
    missed.notification = Some(FcmNotification {
        title: "Missed call".into(),
        body: "Alice".into(),
    });
    missed.ttl = None;

    assert!(matches!(
        client(&doubles).send(&missed).await,
        PushOutcome::Delivered { .. }
    ));
    let [request] = doubles.fcm_requests(1).await.try_into().unwrap();
    assert_eq!(
        request["message"]["notification"],
        json!({"title": "Missed call", "body": "Alice"})
    );
    assert_eq!(request["message"]["android"], json!({"priority": "HIGH"}));
}

#[tokio::test]
async fn one_access_token_serves_many_sends() {
    let doubles = Doubles::start().await;
    let fcm = client(&doubles);

    let sends = (0..10).map(|i| {
        let fcm = fcm.clone();
        async move { fcm.send(&ring(&format!("token-{i}"))).await }
    });
    let outcomes = futures::future::join_all(sends).await;

    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, PushOutcome::Delivered { .. })),
        "{outcomes:?}"
    );
    assert_eq!(doubles.fcm_token_requests().await.len(), 1);
}

#[tokio::test]
async fn an_access_token_fcm_stopped_accepting_is_replaced_and_the_send_repeated_once() {
    let doubles = Doubles::start().await;
    let fcm = client(&doubles);
    assert!(matches!(
        fcm.send(&ring("t")).await,
        PushOutcome::Delivered { .. }
    ));
    doubles.fcm_expire_access_tokens().await;

    let outcome = fcm.send(&ring("t")).await;

    assert!(
        matches!(outcome, PushOutcome::Delivered { .. }),
        "{outcome:?}"
    );
    assert_eq!(doubles.fcm_token_requests().await.len(), 2);
    let statuses: Vec<_> = doubles
        .fcm_log()
        .await
        .iter()
        .map(|r| r["status"].clone())
        .collect();
    assert_eq!(statuses, vec![json!(200), json!(401), json!(200)]);
}

#[tokio::test]
async fn an_access_token_is_renewed_shortly_before_google_says_it_expires() {
    let doubles = Doubles::start_with(&["--access-token-ttl", "2"]).await;
    let fcm = client(&doubles);
    assert!(matches!(
        fcm.send(&ring("t")).await,
        PushOutcome::Delivered { .. }
    ));
    assert!(matches!(
        fcm.send(&ring("t")).await,
        PushOutcome::Delivered { .. }
    ));
    assert_eq!(
        doubles.fcm_token_requests().await.len(),
        1,
        "still fresh: reused"
    );

    // Time has to pass for a token to age; a two-second token is renewed after one.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(matches!(
        fcm.send(&ring("t")).await,
        PushOutcome::Delivered { .. }
    ));

    assert_eq!(doubles.fcm_token_requests().await.len(), 2);
    assert!(
        doubles.fcm_log().await.iter().all(|r| r["status"] == 200),
        "renewed before FCM refused the old token"
    );
}

#[tokio::test]
async fn unregistered_and_malformed_registration_tokens_are_invalid_tokens() {
    let doubles = Doubles::start().await;
    let fcm = client(&doubles);
    doubles
        .fcm_fault(json!({"token": "gone", "errorCode": "UNREGISTERED"}))
        .await;

    assert_eq!(
        fcm.send(&ring("gone")).await,
        PushOutcome::InvalidToken {
            reason: "UNREGISTERED".into(),
            since: None
        }
    );
    assert_eq!(
        fcm.send(&ring("not a registration token")).await,
        PushOutcome::InvalidToken {
            reason: "INVALID_ARGUMENT".into(),
            since: None
        }
    );
}

#[tokio::test]
async fn unavailable_and_quota_exceeded_are_retries_after_googles_retry_after() {
    let doubles = Doubles::start().await;
    let fcm = client(&doubles);
    doubles
        .fcm_fault(json!({"next": 1, "errorCode": "UNAVAILABLE", "retryAfter": 7}))
        .await;
    doubles
        .fcm_fault(json!({"next": 1, "errorCode": "QUOTA_EXCEEDED", "retryAfter": 60}))
        .await;
    doubles
        .fcm_fault(json!({"next": 1, "errorCode": "INTERNAL"}))
        .await;

    assert_eq!(
        fcm.send(&ring("t")).await,
        PushOutcome::Retry {
            reason: "UNAVAILABLE".into(),
            after: Some(Duration::from_secs(7))
        }
    );
    assert_eq!(
        fcm.send(&ring("t")).await,
        PushOutcome::Retry {
            reason: "QUOTA_EXCEEDED".into(),
            after: Some(Duration::from_secs(60))
        }
    );
    assert_eq!(
        fcm.send(&ring("t")).await,
        PushOutcome::Retry {
            reason: "INTERNAL".into(),
            after: None
        }
    );
    assert!(matches!(
        fcm.send(&ring("t")).await,
        PushOutcome::Delivered { .. }
    ));
}

#[tokio::test]
async fn sender_id_mismatch_and_third_party_auth_errors_are_credentials_problems() {
    let doubles = Doubles::start().await;
    let fcm = client(&doubles);
    doubles
        .fcm_fault(json!({"next": 1, "errorCode": "SENDER_ID_MISMATCH"}))
        .await;
    doubles
        .fcm_fault(json!({"next": 1, "errorCode": "THIRD_PARTY_AUTH_ERROR"}))
        .await;

    assert_eq!(
        fcm.send(&ring("t")).await,
        PushOutcome::CredentialsRejected {
            reason: "SENDER_ID_MISMATCH".into()
        }
    );
    assert_eq!(
        fcm.send(&ring("t")).await,
        PushOutcome::CredentialsRejected {
            reason: "THIRD_PARTY_AUTH_ERROR".into()
        }
    );
}

#[tokio::test]
async fn a_service_account_google_does_not_know_is_a_credentials_problem() {
    let doubles = Doubles::start().await;
    let mut config = doubles.fcm_config();
    config.service_account.client_email = "deleted@calls-test.iam.gserviceaccount.com".into();

    let outcome = FcmClient::new(config).unwrap().send(&ring("t")).await;

    assert_eq!(
        outcome,
        PushOutcome::CredentialsRejected {
            reason: "token endpoint: invalid_grant".into()
        }
    );
    assert!(
        doubles.fcm_log().await.is_empty(),
        "nothing is sent without an access token"
    );
}

#[tokio::test]
async fn a_token_endpoint_nobody_listens_on_is_a_retry() {
    let doubles = Doubles::start().await;
    let mut config = doubles.fcm_config();
    config.service_account.token_uri = format!("{}/token", closed_port_url("http").await);

    let outcome = FcmClient::new(config).unwrap().send(&ring("t")).await;

    assert_eq!(outcome.label(), "retry", "{outcome:?}");
    assert!(
        outcome.reason().starts_with("token endpoint: connection"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_send_fcm_does_not_answer_in_time_is_a_retry_after_the_configured_timeout() {
    let doubles = Doubles::start().await;
    let mut config = doubles.fcm_config();
    config.timeout = Duration::from_millis(300);
    let fcm = FcmClient::new(config).unwrap();
    assert!(matches!(
        fcm.send(&ring("t")).await,
        PushOutcome::Delivered { .. }
    ));
    doubles.fcm_fault(json!({"next": 1, "delayMs": 3000})).await;

    let started = Instant::now();
    let outcome = fcm.send(&ring("t")).await;

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
