//! Header handling for a proxy: request ids, hop-by-hop headers, `X-Forwarded-*`, the client IP.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;

/// `x-request-id`.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `x-forwarded-for`.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `x-forwarded-proto`.
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `x-forwarded-host`.
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `idempotency-key`.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Same rule as the envelope's `requestId` (common::error): a client's id is kept only if it is
/// short printable ASCII, so it can be logged and echoed safely.
const MAX_REQUEST_ID_LEN: usize = 128;

/// The request's id: the client's `X-Request-Id` when usable, otherwise a new UUID.
pub fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(value) = headers.get(&X_REQUEST_ID) {
        let bytes = value.as_bytes();
        if !bytes.is_empty()
            && bytes.len() <= MAX_REQUEST_ID_LEN
            && bytes.iter().all(u8::is_ascii_graphic)
        {
            return value.clone();
        }
    }
    // Random bytes from the thread-local generator rather than `Uuid::new_v4`, which makes a
    // getrandom system call per request.
    let uuid = uuid::Builder::from_random_bytes(rand::random()).into_uuid();
    let mut buf = uuid::Uuid::encode_buffer();
    let id = uuid.hyphenated().encode_lower(&mut buf);
    // A hyphenated UUID is always a valid header value.
    HeaderValue::from_str(id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Size of the request head as the client sent it, near enough: request line plus
/// `name: value\r\n` per header.
pub fn head_size(parts: &Parts) -> usize {
    let target = parts.uri.path_and_query().map_or(1, |pq| pq.as_str().len())
        + parts
            .uri
            .authority()
            .map_or(0, |a| a.as_str().len() + "http://".len());
    let line = parts.method.as_str().len() + target + " HTTP/1.1\r\n".len() + 1;
    parts.headers.iter().fold(line, |acc, (name, value)| {
        acc + name.as_str().len() + value.len() + 4
    })
}

/// Whether this is a WebSocket upgrade request (`Connection: upgrade` + `Upgrade: websocket`).
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade = headers
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    upgrade && connection_tokens(headers).any(|t| t.eq_ignore_ascii_case("upgrade"))
}

fn connection_tokens(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Removes hop-by-hop headers (RFC 9110 section 7.6.1): the standard ones and any the
/// `Connection` header names. With `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive,
/// which is how a WebSocket upgrade is forwarded.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages have none of them: one pass over the names avoids a dozen lookups.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = connection_tokens(headers)
        .filter(|t| !(keep_upgrade && t.eq_ignore_ascii_case("upgrade")))
        .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
        .collect();
    for name in named {
        // The request id and forwarding headers are set by the gateway after this; a client
        // naming them in `Connection` cannot make them disappear.
        headers.remove(name);
    }
    headers.remove(header::CONNECTION);
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::PROXY_AUTHENTICATE);
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::TE);
    headers.remove(header::TRAILER);
    headers.remove(header::TRANSFER_ENCODING);
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRAILER
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// The peer address as a header value (for `X-Forwarded-For`).
pub fn ip_header(ip: IpAddr) -> HeaderValue {
    // An IP address is always a valid header value.
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// The client's address: the peer, or with `trust_forwarded_for` the last address of
/// `X-Forwarded-For` (the one the trusted load balancer appended; earlier ones are whatever the
/// client claimed).
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for
        && let Some(ip) = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| a.trim().parse::<IpAddr>().ok())
            .next_back()
    {
        return ip;
    }
    peer.ip()
}

/// Sets `X-Forwarded-For`, `-Proto` and `-Host` for the upstream, and drops the headers
/// a client could use to impersonate another address unless they are trusted.
///
/// `peer_ip` is [`ip_header`] of the peer.
pub fn set_forwarded(headers: &mut HeaderMap, peer_ip: &HeaderValue, trust_forwarded_for: bool) {
    let prior: Vec<&str> = if trust_forwarded_for {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    } else {
        Vec::new()
    };
    let xff = if prior.is_empty() {
        Some(peer_ip.clone())
    } else {
        let peer = peer_ip.to_str().unwrap_or_default();
        HeaderValue::from_str(&format!("{}, {peer}", prior.join(", "))).ok()
    };
    if let Some(xff) = xff {
        headers.insert(&X_FORWARDED_FOR, xff);
    }

    if !trust_forwarded_for || !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    }
    if !trust_forwarded_for || !headers.contains_key(&X_FORWARDED_HOST) {
        match headers.get(header::HOST).cloned() {
            Some(host) => {
                headers.insert(&X_FORWARDED_HOST, host);
            }
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }
    if !trust_forwarded_for {
        headers.remove(header::FORWARDED);
        headers.remove(&X_REAL_IP);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn a_usable_client_request_id_is_kept_and_a_bad_one_replaced() {
        let kept = request_id(&map(&[("x-request-id", "abc-123")]));
        assert_eq!(kept, "abc-123");
        let replaced = request_id(&map(&[("x-request-id", "has space")]));
        assert_eq!(replaced.len(), 36);
        let long: &'static str = Box::leak("x".repeat(129).into_boxed_str());
        assert_eq!(request_id(&map(&[("x-request-id", long)])).len(), 36);
        assert_eq!(request_id(&HeaderMap::new()).len(), 36);
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_removed() {
        let mut headers = map(&[
            ("connection", "keep-alive, x-secret"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("authorization", "Bearer t"),
        ]);
        strip_hop_by_hop(&mut headers, false);
        let names: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, vec!["authorization"]);
    }

    #[test]
    fn a_websocket_upgrade_keeps_connection_upgrade_and_upgrade() {
        let mut headers = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("sec-websocket-key", "k"),
        ]);
        assert!(is_websocket_upgrade(&headers));
        strip_hop_by_hop(&mut headers, true);
        assert_eq!(headers["connection"], "upgrade");
        assert_eq!(headers["upgrade"], "websocket");
        assert_eq!(headers["sec-websocket-key"], "k");
        assert!(!is_websocket_upgrade(&map(&[("upgrade", "websocket")])));
        assert!(is_websocket_upgrade(&map(&[
            ("connection", "keep-alive, upgrade"),
            ("upgrade", "WebSocket")
        ])));
    }

    #[test]
    fn forwarded_headers_are_replaced_unless_trusted() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let incoming = [
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil"),
            ("host", "calls.example.com"),
            ("x-real-ip", "1.2.3.4"),
        ];
        let mut untrusted = map(&incoming);
        assert_eq!(client_ip(peer, &untrusted, false), peer.ip());
        set_forwarded(&mut untrusted, &ip_header(peer.ip()), false);
        assert_eq!(untrusted["x-forwarded-for"], "10.0.0.9");
        assert_eq!(untrusted["x-forwarded-proto"], "http");
        assert_eq!(untrusted["x-forwarded-host"], "calls.example.com");
        assert!(!untrusted.contains_key("x-real-ip"));

        let mut trusted = map(&incoming);
        assert_eq!(
            client_ip(peer, &trusted, true),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        set_forwarded(&mut trusted, &ip_header(peer.ip()), true);
        assert_eq!(trusted["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(trusted["x-forwarded-proto"], "https");
        assert_eq!(trusted["x-forwarded-host"], "evil");
    }

    #[test]
    fn the_trusted_client_ip_is_the_last_forwarded_address() {
        let peer: SocketAddr = "10.0.0.9:5000".parse().unwrap();
        let headers = map(&[
            ("x-forwarded-for", "6.6.6.6, 1.2.3.4"),
            ("x-forwarded-for", "5.6.7.8"),
        ]);
        assert_eq!(
            client_ip(peer, &headers, true),
            "5.6.7.8".parse::<IpAddr>().unwrap()
        );
        let garbage = map(&[("x-forwarded-for", "not-an-ip")]);
        assert_eq!(client_ip(peer, &garbage, true), peer.ip());
    }
}
