//! The media-token service over real gRPC on a loopback socket: issuance, refusals, health,
//! reflection, the HTTP endpoints and graceful shutdown.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use calls_proto::mediatoken::v1::{
    self as pb, media_token_service_client::MediaTokenServiceClient,
};
use media_token::{AgoraConfig, Config};
use tokio::sync::oneshot;
use tonic::{Code, Request, transport::Channel};

const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";
const CREDENTIAL: &str = "test-service-credential";

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), media_token::server::ServeError>>,
}

async fn start(agora: bool) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Config {
        listen: addr,
        service_tokens: vec![
            "old-credential".parse().unwrap(),
            CREDENTIAL.parse().unwrap(),
        ],
        agora: AgoraConfig {
            app_id: agora.then(|| APP_ID.to_owned()),
            app_certificate: agora.then(|| CERT.parse().unwrap()),
            token_ttl_seconds: 3600,
        },
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(media_token::run(config, listener, async {
        let _ = stopped.await;
    }));
    let server = Server {
        addr,
        stop: Some(stop),
        task,
    };
    wait_healthy(addr).await;
    server
}

/// Polls `/healthz` until it answers, with a deadline instead of a sleep.
async fn wait_healthy(addr: SocketAddr) {
    let url = format!("http://{addr}/healthz");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(resp) = reqwest::get(&url).await
            && resp.status().is_success()
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "media-token never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn client(addr: SocketAddr) -> MediaTokenServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    MediaTokenServiceClient::new(channel)
}

fn authed<T>(message: T, credential: &str) -> Request<T> {
    let mut req = Request::new(message);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {credential}").parse().unwrap(),
    );
    req
}

fn issue_request(channel: &str, account: &str) -> pb::IssueRtcTokenRequest {
    pb::IssueRtcTokenRequest {
        channel_name: channel.into(),
        identity: Some(pb::issue_rtc_token_request::Identity::UserAccount(
            account.into(),
        )),
        role: pb::RtcRole::Publisher as i32,
        token_ttl_seconds: 0,
        privilege_ttl_seconds: 0,
    }
}

#[tokio::test]
async fn an_authenticated_caller_gets_a_token_that_verifies_for_its_channel_and_account() {
    let server = start(true).await;
    let mut client = client(server.addr).await;
    let resp = client
        .issue_rtc_token(authed(issue_request("call_abc", "user-1"), CREDENTIAL))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.app_id, APP_ID);
    assert_eq!(resp.expires_at_unix, i64::from(resp.issued_at_unix) + 3600);
    assert!(
        resp.expires_at.ends_with('Z'),
        "RFC 3339 UTC: {}",
        resp.expires_at
    );
    let decoded = agora_token::decode(&resp.token).unwrap();
    assert!(decoded.verify(CERT));
    match &decoded.services()[0] {
        agora_token::Service::Rtc {
            channel_name,
            account,
            privileges,
        } => {
            assert_eq!(channel_name, "call_abc");
            assert_eq!(account, "user-1");
            assert_eq!(
                privileges.keys().copied().collect::<Vec<_>>(),
                vec![1, 2, 3, 4]
            );
        }
        other => panic!("expected an RTC service, got {other:?}"),
    }
}

#[tokio::test]
async fn a_subscriber_token_only_allows_joining() {
    let server = start(true).await;
    let mut req = issue_request("call_abc", "viewer");
    req.role = pb::RtcRole::Subscriber as i32;
    req.token_ttl_seconds = 600;
    let resp = client(server.addr)
        .await
        .issue_rtc_token(authed(req, CREDENTIAL))
        .await
        .unwrap()
        .into_inner();
    let decoded = agora_token::decode(&resp.token).unwrap();
    assert_eq!(decoded.expire(), 600);
    match &decoded.services()[0] {
        agora_token::Service::Rtc { privileges, .. } => {
            assert_eq!(privileges.keys().copied().collect::<Vec<_>>(), vec![1])
        }
        other => panic!("expected an RTC service, got {other:?}"),
    }
}

#[tokio::test]
async fn a_caller_without_the_service_credential_is_unauthenticated() {
    let server = start(true).await;
    let mut client = client(server.addr).await;
    let missing = client
        .issue_rtc_token(Request::new(issue_request("c", "u")))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::Unauthenticated);
    let wrong = client
        .issue_rtc_token(authed(issue_request("c", "u"), "guess"))
        .await
        .unwrap_err();
    assert_eq!(wrong.code(), Code::Unauthenticated);
    // Both configured credentials work, so a credential can be rotated without downtime.
    client
        .issue_rtc_token(authed(issue_request("c", "u"), "old-credential"))
        .await
        .unwrap();
}

#[tokio::test]
async fn requests_outside_agora_limits_are_invalid_arguments_with_a_clear_message() {
    let server = start(true).await;
    let mut client = client(server.addr).await;
    let cases = [
        (issue_request("", "u"), "empty"),
        (issue_request(&"c".repeat(64), "u"), "at most 63"),
        (issue_request("bad/channel", "u"), "channel name contains"),
        (issue_request("c", ""), "must not be empty"),
        (issue_request("c", &"u".repeat(256)), "at most 255"),
        (
            pb::IssueRtcTokenRequest {
                identity: None,
                ..issue_request("c", "u")
            },
            "user_account or uid",
        ),
        (
            pb::IssueRtcTokenRequest {
                token_ttl_seconds: 86_401,
                ..issue_request("c", "u")
            },
            "maximum",
        ),
        (
            pb::IssueRtcTokenRequest {
                role: 7,
                ..issue_request("c", "u")
            },
            "unknown role",
        ),
    ];
    for (req, expected) in cases {
        let err = client
            .issue_rtc_token(authed(req, CREDENTIAL))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
        assert!(
            err.message().contains(expected),
            "message {:?} should mention {expected:?}",
            err.message()
        );
        assert!(!err.message().contains(CERT));
    }
}

#[tokio::test]
async fn uid_zero_issues_an_any_uid_token() {
    let server = start(true).await;
    let req = pb::IssueRtcTokenRequest {
        identity: Some(pb::issue_rtc_token_request::Identity::Uid(0)),
        ..issue_request("c", "ignored")
    };
    let resp = client(server.addr)
        .await
        .issue_rtc_token(authed(req, CREDENTIAL))
        .await
        .unwrap()
        .into_inner();
    match &agora_token::decode(&resp.token).unwrap().services()[0] {
        agora_token::Service::Rtc { account, .. } => assert_eq!(account, ""),
        other => panic!("expected an RTC service, got {other:?}"),
    }
}

#[tokio::test]
async fn without_agora_credentials_issuance_fails_as_a_failed_precondition() {
    let server = start(false).await;
    let err = client(server.addr)
        .await
        .issue_rtc_token(authed(issue_request("c", "u"), CREDENTIAL))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("AGORA_APP_ID"));
}

#[tokio::test]
async fn inspect_decodes_and_verifies_a_token_without_revealing_the_certificate() {
    let server = start(true).await;
    let mut client = client(server.addr).await;
    let token = client
        .issue_rtc_token(authed(issue_request("call_x", "bob"), CREDENTIAL))
        .await
        .unwrap()
        .into_inner()
        .token;
    let inspected = client
        .inspect_token(authed(
            pb::InspectTokenRequest {
                token: token.clone(),
            },
            CREDENTIAL,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(inspected.signature_valid);
    assert!(inspected.app_id_matches);
    assert_eq!(inspected.services[0].channel_name, "call_x");
    assert_eq!(inspected.services[0].account, "bob");
    assert_eq!(inspected.services[0].privileges.len(), 4);
    assert!(!format!("{inspected:?}").contains(CERT));

    let foreign = agora_token::build_rtc_token(&agora_token::RtcTokenRequest {
        app_id: APP_ID,
        app_certificate: "00000000000000000000000000000000",
        channel_name: "call_x",
        account: "bob",
        role: agora_token::RtcRole::Publisher,
        token_expire: 600,
        privilege_expire: 600,
        issue_ts: 1_700_000_000,
        salt: 7,
    })
    .unwrap();
    let inspected = client
        .inspect_token(authed(
            pb::InspectTokenRequest { token: foreign },
            CREDENTIAL,
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!inspected.signature_valid);

    let garbage = client
        .inspect_token(authed(
            pb::InspectTokenRequest {
                token: "007garbage".into(),
            },
            CREDENTIAL,
        ))
        .await
        .unwrap_err();
    assert_eq!(garbage.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn grpc_health_reports_the_token_service_serving_without_a_credential() {
    let server = start(true).await;
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "calls.mediatoken.v1.MediaTokenService"] {
        let resp = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            resp.status(),
            tonic_health::pb::health_check_response::ServingStatus::Serving
        );
    }
}

#[tokio::test]
async fn reflection_lists_the_token_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = start(true).await;
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut stream = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = first.message_response else {
        panic!("expected a service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"calls.mediatoken.v1.MediaTokenService"),
        "{names:?}"
    );
}

#[tokio::test]
async fn metrics_count_issued_tokens_by_role_and_errors_by_code() {
    let server = start(true).await;
    let mut client = client(server.addr).await;
    client
        .issue_rtc_token(authed(issue_request("c", "u"), CREDENTIAL))
        .await
        .unwrap();
    let _ = client
        .issue_rtc_token(authed(issue_request("c", "u"), "wrong"))
        .await;
    let body = reqwest::get(format!("http://{}/metrics", server.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains("media_token_tokens_issued_total{role=\"publisher\"}"),
        "{body}"
    );
    assert!(
        body.contains("media_token_errors_total{code=\"unauthenticated\"}"),
        "{body}"
    );
    assert!(
        body.contains("grpc_server_request_duration_seconds"),
        "{body}"
    );
    assert!(!body.contains(CERT));
}

#[tokio::test]
async fn shutdown_stops_the_server_cleanly() {
    let mut server = start(true).await;
    server.stop.take().unwrap().send(()).unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), &mut server.task).await;
    assert!(
        matches!(result, Ok(Ok(Ok(())))),
        "server did not stop cleanly"
    );
    assert!(
        tokio::net::TcpStream::connect(server.addr).await.is_err(),
        "still accepting connections"
    );
}
