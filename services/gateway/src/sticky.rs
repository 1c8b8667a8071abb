//! Pinning engine.io long-polling sessions to the signaling instance that owns them.
//!
//! A long-polling Socket.IO client makes many HTTP requests for one session, each carrying the
//! session id in `?sid=`; only the instance that created the session knows it. The gateway
//! learns `sid → instance` from the handshake's answer (the open packet,
//! `0{"sid":"…","upgrades":["websocket"],…}`) and sends every later request with that `sid`,
//! including the WebSocket upgrade, to the same instance.
//!
//! Hashing the sid instead would not work: the instance that answers the handshake chooses the
//! sid, so no function of the sid can know where the handshake landed. The learned table has one
//! gap, a gateway replica that did not see the handshake (several gateway replicas behind one
//! load balancer, or a gateway restart). For that case the gateway asks the instances in turn:
//! engine.io answers a request for a session it does not hold with HTTP 400
//! `{"code":1,"message":"Session ID unknown"}` and does nothing else, so trying the wrong instance
//! first is harmless, and the first instance that answers otherwise is remembered.
//!
//! Entries expire after [`SESSION_IDLE_TTL`] without a request: engine.io itself closes a
//! session that has been silent for its ping interval plus ping timeout (45 s by default), and
//! an upgraded session no longer polls at all.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::shards::ShardedMap;

/// How long a session's pin survives without requests.
pub const SESSION_IDLE_TTL: Duration = Duration::from_secs(120);

/// Longest sid accepted from a handshake; engine.io's are 20 characters.
const MAX_SID_LEN: usize = 128;

#[derive(Debug, Clone, Copy)]
struct Pin {
    instance: usize,
    last_used: Instant,
}

/// `sid → instance index` with idle expiry.
#[derive(Debug)]
pub struct SessionTable {
    pins: ShardedMap<String, Pin>,
    ttl: Duration,
}

impl Default for SessionTable {
    fn default() -> Self {
        Self::new(SESSION_IDLE_TTL)
    }
}

impl SessionTable {
    /// An empty table whose entries expire after `ttl` of disuse.
    pub fn new(ttl: Duration) -> Self {
        Self {
            pins: ShardedMap::new(),
            ttl,
        }
    }

    /// The instance holding `sid`, refreshing its expiry.
    pub fn get(&self, sid: &str) -> Option<usize> {
        let now = Instant::now();
        let mut shard = self.pins.shard(sid);
        let pin = shard.get_mut(sid)?;
        if now.saturating_duration_since(pin.last_used) > self.ttl {
            shard.remove(sid);
            return None;
        }
        pin.last_used = now;
        Some(pin.instance)
    }

    /// Remembers that `instance` holds `sid`.
    pub fn insert(&self, sid: &str, instance: usize) {
        self.pins.shard(sid).insert(
            sid.to_owned(),
            Pin {
                instance,
                last_used: Instant::now(),
            },
        );
    }

    /// Forgets `sid` (the session is gone, or its instance is).
    pub fn remove(&self, sid: &str) {
        self.pins.shard(sid).remove(sid);
    }

    /// Drops entries idle for longer than the TTL.
    pub fn sweep(&self, now: Instant) {
        self.pins
            .retain(|_, pin| now.saturating_duration_since(pin.last_used) <= self.ttl);
    }

    /// Number of pinned sessions.
    pub fn len(&self) -> usize {
        self.pins.len()
    }

    /// Whether no session is pinned.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }
}

/// The engine.io parameters of a `/socket.io/` query string.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct EngineIoQuery<'a> {
    /// `sid`: present on every request of an established session.
    pub sid: Option<Cow<'a, str>>,
    /// `transport`: `polling` or `websocket`.
    pub transport: Option<&'a str>,
}

/// Parses the parameters the gateway routes on; everything else is left to signaling.
pub fn parse_query(query: Option<&str>) -> EngineIoQuery<'_> {
    let mut parsed = EngineIoQuery::default();
    for pair in query.unwrap_or_default().split('&') {
        if let Some(value) = pair.strip_prefix("sid=") {
            if !value.is_empty() {
                parsed.sid = Some(percent_decode(value));
            }
        } else if let Some(value) = pair.strip_prefix("transport=") {
            parsed.transport = Some(value);
        }
    }
    parsed
}

fn percent_decode(value: &str) -> Cow<'_, str> {
    if !value.contains('%') {
        return Cow::Borrowed(value);
    }
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The sid in a polling handshake's answer: the engine.io open packet `0{"sid":…}` (EIO 4), or
/// `<len>:0{…}` (EIO 3).
pub fn sid_from_handshake(body: &[u8]) -> Option<String> {
    let start = body.iter().position(|&b| b == b'{')?;
    let prefix = &body[..start];
    let packet_type_ok = prefix.last() == Some(&b'0')
        && prefix[..prefix.len() - 1]
            .iter()
            .all(|b| b.is_ascii_digit() || *b == b':');
    if !packet_type_ok {
        return None;
    }
    let mut values =
        serde_json::Deserializer::from_slice(&body[start..]).into_iter::<serde_json::Value>();
    let open = values.next()?.ok()?;
    let sid = open.get("sid")?.as_str()?;
    let valid =
        !sid.is_empty() && sid.len() <= MAX_SID_LEN && sid.bytes().all(|b| b.is_ascii_graphic());
    valid.then(|| sid.to_owned())
}

/// Whether a response is engine.io's "Session ID unknown" (HTTP 400 with code 1; Node's
/// engine.io sends the code as a number, socketioxide as a string).
pub fn is_unknown_session(status: StatusCode, body: &[u8]) -> bool {
    if status != StatusCode::BAD_REQUEST {
        return false;
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    match value.get("code") {
        Some(serde_json::Value::Number(n)) => n.as_u64() == Some(1),
        Some(serde_json::Value::String(s)) => s == "1",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_sid_is_read_from_an_eio4_and_an_eio3_open_packet() {
        let eio4 = br#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        assert_eq!(
            sid_from_handshake(eio4).as_deref(),
            Some("lv_VI97HAXpY6yYWAAAC")
        );
        let eio3 = br#"96:0{"sid":"abc","upgrades":[],"pingInterval":25000}2:40"#;
        assert_eq!(sid_from_handshake(eio3).as_deref(), Some("abc"));
    }

    #[test]
    fn other_packets_and_bad_sids_are_not_learned() {
        assert_eq!(sid_from_handshake(br#"4{"sid":"x"}"#), None);
        assert_eq!(sid_from_handshake(b"ok"), None);
        assert_eq!(sid_from_handshake(br#"0{"sid":""}"#), None);
        assert_eq!(sid_from_handshake(br#"0{"sid":"has space"}"#), None);
        assert_eq!(sid_from_handshake(br#"0{"sid":42}"#), None);
    }

    #[test]
    fn unknown_session_answers_are_recognised_in_both_dialects() {
        let socketioxide = br#"{"code":"1","message":"Session ID unknown"}"#;
        let node = br#"{"code":1,"message":"Session ID unknown"}"#;
        assert!(is_unknown_session(StatusCode::BAD_REQUEST, socketioxide));
        assert!(is_unknown_session(StatusCode::BAD_REQUEST, node));
        assert!(!is_unknown_session(StatusCode::OK, node));
        assert!(!is_unknown_session(
            StatusCode::BAD_REQUEST,
            br#"{"code":3}"#
        ));
        assert!(!is_unknown_session(StatusCode::BAD_REQUEST, b""));
    }

    #[test]
    fn the_query_yields_sid_and_transport() {
        let q = parse_query(Some("EIO=4&transport=polling&t=Pabc&sid=a%2Db"));
        assert_eq!(q.sid.as_deref(), Some("a-b"));
        assert_eq!(q.transport, Some("polling"));
        assert_eq!(parse_query(Some("EIO=4&sid=")).sid, None);
        assert_eq!(parse_query(None), EngineIoQuery::default());
    }

    #[test]
    fn pins_expire_after_the_idle_ttl() {
        let table = SessionTable::new(Duration::from_millis(50));
        table.insert("s1", 1);
        assert_eq!(table.get("s1"), Some(1));
        table.sweep(Instant::now() + Duration::from_secs(1));
        assert!(table.is_empty());
        assert_eq!(table.get("s1"), None);
        table.insert("s2", 0);
        table.remove("s2");
        assert_eq!(table.get("s2"), None);
    }
}
