//! RtcTokenBuilder2 (SPEC §5): the RTC-only token this project hands to clients.

use std::fmt;
use std::str::FromStr;

use rand::Rng as _;

use crate::builder::{BuildError, encode_payload, encode_token};
use crate::service::{ServiceOf, privilege};

/// The caller's role in the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RtcRole {
    /// Role 1: join plus publish audio, video and data (privileges 1..=4).
    Publisher = 1,
    /// Role 2: join only (privilege 1).
    Subscriber = 2,
}

impl RtcRole {
    /// The privilege ids this role is granted, in ascending order.
    pub fn privileges(self) -> &'static [u16] {
        match self {
            Self::Publisher => &[
                privilege::RTC_JOIN_CHANNEL,
                privilege::RTC_PUBLISH_AUDIO_STREAM,
                privilege::RTC_PUBLISH_VIDEO_STREAM,
                privilege::RTC_PUBLISH_DATA_STREAM,
            ],
            Self::Subscriber => &[privilege::RTC_JOIN_CHANNEL],
        }
    }

    /// Agora's numeric role code (1 or 2).
    pub fn code(self) -> u16 {
        self as u16
    }

    /// `"publisher"` or `"subscriber"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Publisher => "publisher",
            Self::Subscriber => "subscriber",
        }
    }
}

impl fmt::Display for RtcRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string is not a role name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown RTC role {0:?} (expected \"publisher\" or \"subscriber\")")]
pub struct ParseRoleError(pub String);

impl FromStr for RtcRole {
    type Err = ParseRoleError;

    /// Accepts the names (any case) and Agora's codes `1` and `2`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "publisher" | "1" => Ok(Self::Publisher),
            "subscriber" | "2" => Ok(Self::Subscriber),
            _ => Err(ParseRoleError(s.to_owned())),
        }
    }
}

/// Everything that goes into an RTC token. Fixing `issue_ts` and `salt` makes the build
/// deterministic (the payload, not necessarily the compressed bytes of other implementations).
///
/// `Debug` redacts the certificate, so a request can be logged.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RtcTokenRequest<'a> {
    /// 32 hex characters.
    pub app_id: &'a str,
    /// 32 hex characters; used as ASCII, never hex-decoded.
    pub app_certificate: &'a str,
    /// Channel name.
    pub channel_name: &'a str,
    /// The account string as packed: see [`account_for_uid`] for numeric uids.
    pub account: &'a str,
    /// Publisher or subscriber.
    pub role: RtcRole,
    /// Token lifetime in seconds from `issue_ts`.
    pub token_expire: u32,
    /// Lifetime of each privilege in seconds from `issue_ts` (0: bounded by the token only).
    pub privilege_expire: u32,
    /// Unix seconds.
    pub issue_ts: u32,
    /// Key-derivation salt; [`random_salt`] for a fresh token.
    pub salt: u32,
}

impl fmt::Debug for RtcTokenRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RtcTokenRequest")
            .field("app_id", &self.app_id)
            .field("app_certificate", &"<redacted>")
            .field("channel_name", &self.channel_name)
            .field("account", &self.account)
            .field("role", &self.role)
            .field("token_expire", &self.token_expire)
            .field("privilege_expire", &self.privilege_expire)
            .field("issue_ts", &self.issue_ts)
            .field("salt", &self.salt)
            .finish()
    }
}

/// Builds the token `RtcTokenBuilder.buildTokenWithUserAccount` would build for the same inputs.
pub fn build_rtc_token(req: &RtcTokenRequest<'_>) -> Result<String, BuildError> {
    encode_token(&build_rtc_payload(req)?)
}

/// The uncompressed payload of [`build_rtc_token`] (what the vectors' `payloadHex` holds).
pub fn build_rtc_payload(req: &RtcTokenRequest<'_>) -> Result<Vec<u8>, BuildError> {
    let privileges = req
        .role
        .privileges()
        .iter()
        .map(|&p| (p, req.privilege_expire))
        .collect();
    // Borrowed strings: the RTC path copies each input exactly once, into the payload.
    let service = ServiceOf::<&str>::Rtc {
        channel_name: req.channel_name,
        account: req.account,
        privileges,
    };
    encode_payload(
        req.app_id.as_bytes(),
        req.app_certificate.as_bytes(),
        req.issue_ts,
        req.token_expire,
        req.salt,
        std::slice::from_ref(&service),
    )
}

/// The account string of a numeric uid: uid 0 (Agora's "any uid") is `""`, any other uid its
/// decimal string. Only the *number* 0 maps to `""`; an account string `"0"` stays `"0"`.
pub fn account_for_uid(uid: u32) -> String {
    if uid == 0 {
        String::new()
    } else {
        uid.to_string()
    }
}

/// A salt uniform in `[1, 99999999]`, the range of the Node and Python builders.
pub fn random_salt() -> u32 {
    rand::rng().random_range(1..=99_999_999)
}
