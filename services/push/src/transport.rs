//! The HTTP side both clients share: connection setup (rustls with the bundled Mozilla roots, ALPN),
//! base URLs, one bounded exchange with a timeout, and `Retry-After`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::ConfigError;

pub(crate) type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Responses from Apple and Google are a few hundred bytes; anything far larger is not theirs.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pings keep an idle connection known-alive through NATs and load balancers, and find a dead
/// one before a ring has to wait for it.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(60);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

fn tcp() -> HttpConnector {
    let mut tcp = HttpConnector::new();
    // The https connector wraps this one and needs it to accept `https://` URIs.
    tcp.enforce_http(false);
    // A push is one small request: Nagle would only delay it.
    tcp.set_nodelay(true);
    tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
    tcp
}

fn tls() -> Result<HttpsConnectorBuilder<hyper_rustls::builderstates::WantsSchemes>, ConfigError> {
    HttpsConnectorBuilder::new()
        .with_provider_and_webpki_roots(Arc::new(rustls::crypto::ring::default_provider()))
        .map_err(|e| ConfigError::Tls(e.to_string()))
}

/// The APNs client: HTTP/2 only (TLS with ALPN `h2`, or cleartext h2c with prior knowledge for an
/// `http://` base), which also makes the pool share one connection per host among concurrent
/// requests instead of racing to open several.
pub(crate) fn http2_client() -> Result<HttpClient, ConfigError> {
    let connector = tls()?.https_or_http().enable_http2().wrap_connector(tcp());
    Ok(Client::builder(TokioExecutor::new())
        // HTTP/2 keep-alive pings need a timer (hyper panics without one).
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_only(true)
        // Apple allows one stream on a new connection until a request carries a valid provider
        // token; without this, a burst on a fresh connection is refused stream by stream before
        // the server's SETTINGS arrive.
        .http2_initial_max_send_streams(1)
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        // Apple: keep connections open rather than reconnecting per push.
        .pool_idle_timeout(None)
        .build(connector))
}

/// The FCM client: HTTP/1.1 or HTTP/2 as the server offers (ALPN), plain HTTP/1.1 for `http://`.
pub(crate) fn http_client() -> Result<HttpClient, ConfigError> {
    let connector = tls()?
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(tcp());
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .build(connector))
}

/// A validated `http(s)://host[:port][/prefix]` base URL.
#[derive(Clone, Debug)]
pub(crate) struct BaseUrl {
    text: String,
}

impl BaseUrl {
    pub(crate) fn parse(what: &'static str, url: &str) -> Result<Self, ConfigError> {
        let fail = |reason: &str| ConfigError::Url {
            what,
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|_| fail("not a URL"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(fail("the scheme must be http or https")),
        }
        let authority = uri.authority().ok_or_else(|| fail("no host"))?;
        if uri.query().is_some() {
            return Err(fail("a query string is not allowed"));
        }
        let scheme = uri.scheme_str().unwrap_or("https");
        let prefix = uri.path().trim_end_matches('/');
        Ok(BaseUrl {
            text: format!("{scheme}://{authority}{prefix}"),
        })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    /// `path` starts with `/` and is already percent-safe.
    pub(crate) fn join(&self, path: &str) -> Result<Uri, http::Error> {
        Ok(format!("{}{path}", self.text).parse::<Uri>()?)
    }
}

pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// Why an exchange produced no response. Never carries the request URI (an APNs path holds the
/// device token).
#[derive(Debug)]
pub(crate) enum TransportError {
    Timeout,
    Connection(String),
}

impl TransportError {
    pub(crate) fn into_retry(self) -> crate::PushOutcome {
        match self {
            TransportError::Timeout => crate::PushOutcome::retry("timeout", None),
            TransportError::Connection(detail) => {
                crate::PushOutcome::retry(format!("connection: {detail}"), None)
            }
        }
    }
}

/// Sends `request` and reads the whole (bounded) response within `timeout`.
pub(crate) async fn exchange(
    client: &HttpClient,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Response, TransportError> {
    let work = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| TransportError::Connection(chain(&e)))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| TransportError::Connection(format!("reading the response: {e}")))?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    };
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(TransportError::Timeout))
}

/// An error and its causes on one line: hyper's top-level message ("client error (Connect)") says
/// little without them.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3).
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_keep_scheme_host_port_and_prefix_without_trailing_slash() {
        let base = BaseUrl::parse("APNs URL", "http://127.0.0.1:8443/").map(|b| b.text);
        assert_eq!(base.ok().as_deref(), Some("http://127.0.0.1:8443"));
        let prefixed = BaseUrl::parse("FCM URL", "https://proxy.example/fcm/").map(|b| b.text);
        assert_eq!(prefixed.ok().as_deref(), Some("https://proxy.example/fcm"));
    }

    #[test]
    fn base_urls_other_than_http_or_https_are_refused() {
        for bad in ["ftp://x", "api.push.apple.com", "", "https://x/?a=1"] {
            assert!(BaseUrl::parse("APNs URL", bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("7"),
        );
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_str(&later).unwrap_or(http::HeaderValue::from_static("x")),
        );
        let after = retry_after(&headers).unwrap_or_default();
        assert!(after > Duration::from_secs(100) && after <= Duration::from_secs(120));
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("soon"),
        );
        assert_eq!(retry_after(&headers), None);
    }
}
