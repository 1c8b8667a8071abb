//! The webhook HTTP client against a real server on loopback: refused addresses are refused at
//! connection time (a name that resolves to loopback included), redirects are not followed,
//! large answers are cut short, slow endpoints time out.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect};
use axum::routing::post;
use bytes::Bytes;
use notifier::webhooks::client::{Answer, WebhookClient};

struct Receiver {
    port: u16,
    hits: Arc<AtomicUsize>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn receiver() -> Receiver {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = Router::new()
        .route(
            "/ok",
            post(move |headers: HeaderMap| {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    (StatusCode::NO_CONTENT, [("x-seen-id", id)])
                }
            }),
        )
        .route("/moved", post(|| async { Redirect::temporary("/ok") }))
        .route(
            "/huge",
            post(|| async { (StatusCode::OK, vec![b'x'; 4 * 1024 * 1024]).into_response() }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                StatusCode::OK
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Receiver {
        port,
        hits,
        _stop: stop,
    }
}

fn status(answer: &Answer) -> Option<u16> {
    match answer {
        Answer::Status { status, .. } => Some(*status),
        _ => None,
    }
}

#[tokio::test]
async fn loopback_is_refused_at_connection_time_by_address_and_by_name_unless_allowed() {
    let r = receiver().await;
    let strict = WebhookClient::new(false, Duration::from_secs(2)).unwrap();
    let headers = [("webhook-id", "msg_1".to_owned())];
    for url in [
        format!("http://127.0.0.1:{}/ok", r.port),
        format!("http://localhost:{}/ok", r.port),
        format!("http://[::ffff:127.0.0.1]:{}/ok", r.port),
    ] {
        let answer = strict.post(&url, &headers, Bytes::from_static(b"{}")).await;
        assert!(matches!(answer, Answer::Blocked(_)), "{url}: {answer:?}");
    }
    assert_eq!(
        r.hits.load(Ordering::SeqCst),
        0,
        "nothing reached the server"
    );

    let open = WebhookClient::new(true, Duration::from_secs(2)).unwrap();
    let answer = open
        .post(
            &format!("http://localhost:{}/ok", r.port),
            &headers,
            Bytes::from_static(b"{}"),
        )
        .await;
    assert_eq!(status(&answer), Some(204));
    assert_eq!(r.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn redirects_are_not_followed_big_answers_are_cut_short_and_slow_ones_time_out() {
    let r = receiver().await;
    let client = WebhookClient::new(true, Duration::from_millis(800)).unwrap();
    let base = format!("http://127.0.0.1:{}", r.port);
    let moved = client
        .post(&format!("{base}/moved"), &[], Bytes::new())
        .await;
    assert_eq!(status(&moved), Some(307));
    assert_eq!(
        r.hits.load(Ordering::SeqCst),
        0,
        "the redirect was not followed"
    );

    let huge = client
        .post(&format!("{base}/huge"), &[], Bytes::new())
        .await;
    let Answer::Status { status, body, .. } = huge else {
        panic!("{huge:?}")
    };
    assert_eq!(status, 200);
    assert!(body.len() <= 200, "only the start of the answer is kept");

    let started = std::time::Instant::now();
    let slow = client
        .post(&format!("{base}/slow"), &[], Bytes::new())
        .await;
    assert_eq!(slow, Answer::Timeout);
    assert!(started.elapsed() < Duration::from_secs(3));
}
