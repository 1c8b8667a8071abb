//! Webhook endpoints, event types and secrets, and their validation (pure code).

use std::net::IpAddr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

/// The event types of CONTRACT section 9.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
pub enum EventType {
    /// A call was created and its invitees are being rung.
    #[serde(rename = "call.initiated")]
    CallInitiated,
    /// Someone other than the initiator answered first.
    #[serde(rename = "call.started")]
    CallStarted,
    /// The call ended; carries the whole call, its duration and each participant's time in it.
    #[serde(rename = "call.ended")]
    CallEnded,
    /// An invitee did not answer (ring timeout, or the call stopped ringing first).
    #[serde(rename = "call.missed")]
    CallMissed,
    /// An invitee declined (or was busy in another call).
    #[serde(rename = "call.declined")]
    CallDeclined,
    /// A participant joined (answered, or joined a group call).
    #[serde(rename = "participant.joined")]
    ParticipantJoined,
    /// A participant left (hung up, lost their connection).
    #[serde(rename = "participant.left")]
    ParticipantLeft,
}

impl EventType {
    /// Every type.
    pub const ALL: [EventType; 7] = [
        EventType::CallInitiated,
        EventType::CallStarted,
        EventType::CallEnded,
        EventType::CallMissed,
        EventType::CallDeclined,
        EventType::ParticipantJoined,
        EventType::ParticipantLeft,
    ];

    /// The wire name (`call.ended`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::CallInitiated => "call.initiated",
            EventType::CallStarted => "call.started",
            EventType::CallEnded => "call.ended",
            EventType::CallMissed => "call.missed",
            EventType::CallDeclined => "call.declined",
            EventType::ParticipantJoined => "participant.joined",
            EventType::ParticipantLeft => "participant.left",
        }
    }

    /// The type named `name`.
    pub fn parse(name: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|t| t.as_str() == name)
    }
}

/// An endpoint's id: a UUID for endpoints created through the API, `env` for `WEBHOOK_URL`;
/// 1 to 64 of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EndpointId(String);

impl EndpointId {
    /// The endpoint `WEBHOOK_URL` configures.
    pub const ENV: &'static str = "env";

    /// Parses an id.
    pub fn parse(value: &str) -> Result<EndpointId, &'static str> {
        if value.is_empty() || value.len() > 64 {
            return Err("must be 1 to 64 characters");
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("may contain only letters, digits, - and _");
        }
        Ok(EndpointId(value.to_owned()))
    }

    /// A new id (UUIDv7, so listings sort by creation).
    pub fn generate() -> EndpointId {
        EndpointId(uuid::Uuid::now_v7().to_string())
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EndpointId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for EndpointId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EndpointId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The longest accepted endpoint URL.
pub const MAX_URL_LEN: usize = 2048;
/// Most secrets one endpoint may hold at once (a rotation needs two).
pub const MAX_SECRETS: usize = 5;
/// The length of a generated secret's key, bytes (Standard Webhooks: 24 to 64).
const GENERATED_KEY_BYTES: usize = 32;
const SECRET_PREFIX: &str = "whsec_";

/// A signing secret, `whsec_<base64 key>` (Standard Webhooks). Never printed: `Debug` shows its
/// [`WebhookSecret::hint`] only.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret {
    text: String,
    key: Vec<u8>,
}

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSecret({})", self.hint())
    }
}

impl WebhookSecret {
    /// Parses `whsec_<base64>`, whose key must be 24 to 64 bytes.
    pub fn parse(text: &str) -> Result<WebhookSecret, &'static str> {
        let Some(encoded) = text.strip_prefix(SECRET_PREFIX) else {
            return Err("a secret starts with whsec_");
        };
        let key = STANDARD
            .decode(encoded)
            .map_err(|_| "the part after whsec_ must be base64")?;
        if !(24..=64).contains(&key.len()) {
            return Err("the key must be 24 to 64 bytes");
        }
        Ok(WebhookSecret {
            text: text.to_owned(),
            key,
        })
    }

    /// A new random secret.
    pub fn generate() -> WebhookSecret {
        let mut key = vec![0u8; GENERATED_KEY_BYTES];
        rand::rng().fill_bytes(&mut key);
        WebhookSecret {
            text: format!("{SECRET_PREFIX}{}", STANDARD.encode(&key)),
            key,
        }
    }

    /// The whole secret (shown once, when the endpoint is created; stored to sign with).
    pub fn expose(&self) -> &str {
        &self.text
    }

    /// The HMAC key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// What the API shows after creation: enough to tell two secrets apart, too little to
    /// sign with (`whsec_MfKQ…`).
    pub fn hint(&self) -> String {
        let shown: String = self.text.chars().take(SECRET_PREFIX.len() + 4).collect();
        format!("{shown}…")
    }
}

/// Parses a list of secrets (the API's `secrets`, or `WEBHOOK_SECRET` split on spaces and
/// commas); at least one, at most [`MAX_SECRETS`], no repeats.
pub fn parse_secrets<'a>(
    texts: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<WebhookSecret>, String> {
    let mut out: Vec<WebhookSecret> = Vec::new();
    for (i, text) in texts.into_iter().enumerate() {
        let secret = WebhookSecret::parse(text).map_err(|e| format!("secret {}: {e}", i + 1))?;
        if out.iter().any(|s| s.text == secret.text) {
            return Err(format!("secret {} is listed twice", i + 1));
        }
        out.push(secret);
    }
    if out.is_empty() {
        return Err("at least one secret is needed".into());
    }
    if out.len() > MAX_SECRETS {
        return Err(format!("at most {MAX_SECRETS} secrets at once"));
    }
    Ok(out)
}

/// An endpoint URL that passed [`validate_url`]: `http(s)://host[:port]/path[?query]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointUrl {
    text: String,
    host: String,
}

impl EndpointUrl {
    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The host name or address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The host, when it is an IP address rather than a name.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// Checks the shape of an endpoint URL: `http` or `https`, a host, no user name or password (they
/// would show in every listing), no fragment. With `allow_private` false, an address literal
/// or a name such as `localhost` that can only mean this machine or a private network is
/// refused; names are checked again against what they resolve to, at every connection.
pub fn validate_url(text: &str, allow_private: bool) -> Result<EndpointUrl, String> {
    if text.len() > MAX_URL_LEN {
        return Err(format!("must be at most {MAX_URL_LEN} characters"));
    }
    if text.contains('#') {
        return Err("must not have a fragment".into());
    }
    let uri: http::Uri = text.parse().map_err(|_| "is not a URL".to_owned())?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err("must start with https:// or http://".into()),
    }
    let Some(authority) = uri.authority() else {
        return Err("has no host".into());
    };
    if authority.as_str().contains('@') {
        return Err("must not carry a user name or password".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err("has no host".into());
    }
    if !allow_private {
        let refused = match host.parse::<IpAddr>() {
            Ok(ip) => !is_public(ip),
            Err(_) => host == "localhost" || host.ends_with(".localhost"),
        };
        if refused {
            return Err(
                "points at a loopback, private or link-local address (set WEBHOOK_ALLOW_PRIVATE=true to allow it)"
                    .into(),
            );
        }
    }
    Ok(EndpointUrl {
        text: text.to_owned(),
        host,
    })
}

/// Whether `ip` is an address on the public internet: not loopback, private (RFC 1918, unique
/// local), link-local (which includes cloud metadata services), carrier-grade NAT, unspecified,
/// broadcast, multicast or documentation space. An IPv4 address inside IPv6 (mapped or
/// compatible) is judged as the IPv4 address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // ::a.b.c.d (deprecated IPv4-compatible form), except :: and ::1.
            if s[..6] == [0; 6] && !(v6.is_unspecified() || v6.is_loopback()) {
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(
                    (s[6] >> 8) as u8,
                    s[6] as u8,
                    (s[7] >> 8) as u8,
                    s[7] as u8,
                )));
            }
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] & 0xffc0) == 0xfec0
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x0064 && s[1] == 0xff9b))
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_event_type_round_trips_through_its_name() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        assert_eq!(EventType::parse("call.exploded"), None);
    }

    #[test]
    fn secrets_are_whsec_base64_of_24_to_64_bytes_and_never_print() {
        let s = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(s.key().len(), 24);
        assert_eq!(s.hint(), "whsec_MfKQ…");
        assert!(!format!("{s:?}").contains("9r8GKY"));
        for bad in [
            "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "whsec_",
            "whsec_!!!!",
            "whsec_c2hvcnQ=",
        ] {
            assert!(WebhookSecret::parse(bad).is_err(), "{bad} accepted");
        }
        let generated = WebhookSecret::generate();
        assert_eq!(
            WebhookSecret::parse(generated.expose()).unwrap().key(),
            generated.key()
        );
        assert_ne!(generated, WebhookSecret::generate());
    }

    #[test]
    fn a_secret_list_needs_one_to_five_distinct_secrets() {
        let a = WebhookSecret::generate();
        let b = WebhookSecret::generate();
        assert_eq!(parse_secrets([a.expose(), b.expose()]).unwrap().len(), 2);
        assert!(parse_secrets([]).is_err());
        assert!(parse_secrets([a.expose(), a.expose()]).is_err());
        let many: Vec<WebhookSecret> = (0..6).map(|_| WebhookSecret::generate()).collect();
        assert!(parse_secrets(many.iter().map(WebhookSecret::expose)).is_err());
    }

    #[test]
    fn urls_must_be_http_with_a_host_and_no_credentials() {
        let ok = validate_url("https://chat.example.com/hooks/calls?tenant=4", false).unwrap();
        assert_eq!(ok.host(), "chat.example.com");
        assert!(ok.ip().is_none());
        for bad in [
            "ftp://chat.example.com/",
            "chat.example.com/hooks",
            "https://user:pw@chat.example.com/",
            "https://chat.example.com/#x",
            "",
        ] {
            assert!(validate_url(bad, true).is_err(), "{bad} accepted");
        }
        assert!(validate_url(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN)), true).is_err());
    }

    #[test]
    fn private_and_loopback_hosts_are_refused_unless_allowed() {
        for private in [
            "http://127.0.0.1:9000/",
            "http://localhost/",
            "http://api.localhost/",
            "http://10.1.2.3/",
            "http://192.168.0.10/",
            "http://172.20.0.1/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://0.0.0.0/",
            "http://100.64.0.1/",
        ] {
            assert!(validate_url(private, false).is_err(), "{private} accepted");
            assert!(
                validate_url(private, true).is_ok(),
                "{private} refused when allowed"
            );
        }
        assert_eq!(
            validate_url("http://[2606:4700::1111]/", false)
                .unwrap()
                .ip(),
            Some("2606:4700::1111".parse().unwrap())
        );
        assert!(validate_url("https://1.1.1.1/", false).is_ok());
    }

    #[test]
    fn public_addresses_are_told_from_the_rest() {
        for public in ["1.1.1.1", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for private in [
            "127.0.0.53",
            "10.0.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
            "::",
            "::1",
            "fe80::abcd",
            "fc00::1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
    }
}
