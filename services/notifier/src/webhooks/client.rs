//! The outbound HTTP client of webhooks: one POST, bounded in every direction.
//!
//! - Addresses are checked when a connection is made, not only when the URL is saved: a name
//!   is resolved by [`GuardedResolver`], which drops loopback, private and link-local
//!   addresses (unless `WEBHOOK_ALLOW_PRIVATE=true`), and the connection goes only to what it
//!   kept. A name that resolves to a public address when the endpoint is created and to
//!   `127.0.0.1` later (DNS rebinding) is refused then. An address literal, which hyper connects
//!   to without resolving, is checked before the request.
//! - Redirects are never followed (a 3xx is a failed attempt): a redirect could point anywhere.
//! - The whole exchange has a timeout, and at most [`MAX_RESPONSE_BYTES`] of the answer are
//!   read (only the status matters; the start of the body is kept for support).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::model::is_public;

/// How much of an endpoint's answer is read.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024;
/// How much of it is kept with the delivery, for support.
const KEPT_RESPONSE_CHARS: usize = 200;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// An address the policy refuses (carried through hyper's error chain).
#[derive(Debug, thiserror::Error)]
#[error(
    "{host} resolves only to loopback, private or link-local addresses (WEBHOOK_ALLOW_PRIVATE is off)"
)]
pub struct Blocked {
    host: String,
}

/// Resolves names with the system resolver and keeps only the addresses the policy allows.
#[derive(Clone, Debug)]
pub struct GuardedResolver {
    allow_private: bool,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        Box::pin(resolve_allowed(
            name.as_str().to_owned(),
            self.allow_private,
        ))
    }
}

/// The addresses of `host` the policy allows; an error wrapping [`Blocked`] when it resolves
/// only to refused ones.
async fn resolve_allowed(
    host: String,
    allow_private: bool,
) -> std::io::Result<std::vec::IntoIter<SocketAddr>> {
    let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
    let kept: Vec<SocketAddr> = found
        .iter()
        .copied()
        .filter(|a| allow_private || is_public(a.ip()))
        .collect();
    if kept.is_empty() && !found.is_empty() {
        return Err(std::io::Error::other(Blocked { host }));
    }
    Ok(kept.into_iter())
}

/// Checks a name or address against the policy now (the internal API, before saving an
/// endpoint). `Ok` when it is allowed or cannot be resolved at the moment (the connection
/// checks again).
pub async fn check_host(host: &str, allow_private: bool) -> Result<(), Blocked> {
    if allow_private {
        return Ok(());
    }
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return if is_public(ip) {
            Ok(())
        } else {
            Err(Blocked {
                host: host.to_owned(),
            })
        };
    }
    match resolve_allowed(host.to_owned(), allow_private).await {
        Err(e) if e.get_ref().is_some_and(|inner| inner.is::<Blocked>()) => Err(Blocked {
            host: host.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// What came of one POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The endpoint answered.
    Status {
        /// The status.
        status: u16,
        /// The start of the body, for support.
        body: String,
        /// `Retry-After`, when the endpoint asked for a pause.
        retry_after: Option<Duration>,
    },
    /// No answer within the timeout.
    Timeout,
    /// The address is not allowed.
    Blocked(String),
    /// No connection, or it broke.
    Connection(String),
}

/// The client; cheap to clone (one connection pool).
#[derive(Clone)]
pub struct WebhookClient {
    http: Client<HttpsConnector<HttpConnector<GuardedResolver>>, Full<Bytes>>,
    allow_private: bool,
    timeout: Duration,
}

/// The `User-Agent` of deliveries.
pub const USER_AGENT: &str = concat!("calls-backend-webhooks/", env!("CARGO_PKG_VERSION"));

impl WebhookClient {
    /// A client with the given policy and per-delivery timeout.
    pub fn new(allow_private: bool, timeout: Duration) -> Result<WebhookClient, String> {
        let mut tcp = HttpConnector::new_with_resolver(GuardedResolver { allow_private });
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
            .map_err(|e| format!("TLS: {e}"))?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(https);
        Ok(WebhookClient {
            http,
            allow_private,
            timeout,
        })
    }

    /// POSTs `body` to `url` with `headers`.
    pub async fn post(&self, url: &str, headers: &[(&'static str, String)], body: Bytes) -> Answer {
        let uri: Uri = match url.parse() {
            Ok(u) => u,
            Err(_) => return Answer::Connection("the stored URL does not parse".into()),
        };
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        if let Ok(ip) = host.parse::<std::net::IpAddr>()
            && !self.allow_private
            && !is_public(ip)
        {
            return Answer::Blocked(
                Blocked {
                    host: host.to_owned(),
                }
                .to_string(),
            );
        }
        let mut request = Request::post(uri)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, USER_AGENT);
        for (name, value) in headers {
            match HeaderValue::from_str(value) {
                Ok(v) => request = request.header(*name, v),
                Err(_) => return Answer::Connection(format!("header {name} is not valid")),
            }
        }
        let request = match request.body(Full::new(body)) {
            Ok(r) => r,
            Err(e) => return Answer::Connection(format!("building the request: {e}")),
        };
        let exchange = async {
            let response = match self.http.request(request).await {
                Ok(r) => r,
                Err(e) => return failure(&e),
            };
            let status = response.status();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            // Only the status decides; a body over the cap is cut short, not an error.
            let body = match Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
            {
                Ok(collected) => collected.to_bytes(),
                Err(_) => Bytes::new(),
            };
            Answer::Status {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&body)
                    .chars()
                    .take(KEPT_RESPONSE_CHARS)
                    .collect(),
                retry_after,
            }
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Answer::Timeout)
    }
}

/// Classifies a failed request: a refused address somewhere in the chain, or a connection
/// problem (described with its causes, which say more than hyper's top line).
fn failure(error: &(dyn std::error::Error + 'static)) -> Answer {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(blocked) = cause.downcast_ref::<Blocked>() {
            return Answer::Blocked(blocked.to_string());
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>()
            && let Some(blocked) = io.get_ref().and_then(|e| e.downcast_ref::<Blocked>())
        {
            return Answer::Blocked(blocked.to_string());
        }
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    Answer::Connection(text)
}

/// Whether a status means delivered.
pub fn is_success(status: u16) -> bool {
    StatusCode::from_u16(status).is_ok_and(|s| s.is_success())
}
