//! Agora AccessToken2 (`"007"`) tokens: build, parse, verify, inspect.
//!
//! Clients join Agora RTC channels with a token that our backend signs with the project's app
//! certificate. This crate produces tokens that Agora (and its official `agora-token` npm
//! package) accept, and reads them back for verification and debugging. The byte layout is
//! specified in `shared/agora/SPEC.md`; in short:
//!
//! ```text
//! token        = "007" || base64(zlib(payload))
//! payload      = bytes(signature) || signing_info
//! signing_info = bytes(appId) u32 issueTs u32 expire u32 salt u16 n service_1 .. service_n
//! signature    = HMAC(HMAC(u32 salt, HMAC(u32 issueTs, cert)), signing_info)
//! ```
//!
//! Compatibility is defined on the *inflated payload*: the compressed bytes differ between
//! every official implementation (Node's Chromium zlib, stock zlib, Go), and Agora inflates.
//!
//! # Modules
//! * `wire`: little-endian primitives; the reader never indexes out of bounds.
//! * [`service`]: the service types of SPEC §3 ([`ServiceOf`], generic over string storage
//!   so decoded tokens keep their exact bytes), privilege ids and names.
//! * `signing`: the three-HMAC key derivation.
//! * `compression`: zlib with a per-thread reusable compressor; bounded, strict inflate.
//! * `builder`: [`AccessToken2`], the generic builder, and [`BuildError`].
//! * `rtc`: [`build_rtc_token`], what the rest of the backend calls, with [`RtcRole`].
//! * `decode`: [`decode`] and [`DecodedToken::verify`].
//! * `inspect`: [`DecodedToken::inspect`], a serialisable [`Inspection`].
//!
//! ```
//! use agora_token::{RtcRole, RtcTokenRequest, account_for_uid, build_rtc_token, decode, random_salt};
//! let account = account_for_uid(42);
//! let token = build_rtc_token(&RtcTokenRequest {
//!     app_id: "970CA35de60c44645bbae8a215061b33",
//!     app_certificate: "5CFd2fd1755d40ecb72977518be15d3b",
//!     channel_name: "room-1",
//!     account: &account,
//!     role: RtcRole::Publisher,
//!     token_expire: 3600,
//!     privilege_expire: 3600,
//!     issue_ts: 1_700_000_000,
//!     salt: random_salt(),
//! })
//! .unwrap();
//! let decoded = decode(&token).unwrap();
//! assert!(decoded.verify("5CFd2fd1755d40ecb72977518be15d3b"));
//! assert!(!decoded.verify("00000000000000000000000000000000"));
//! ```

mod builder;
mod compression;
mod decode;
mod inspect;
mod rtc;
pub mod service;
mod signing;
mod wire;

pub use builder::{AccessToken2, BuildError, VERSION};
pub use compression::MAX_PAYLOAD_LEN;
pub use decode::{DecodeError, DecodedToken, decode, decode_bytes};
pub use inspect::{Inspection, PrivilegeInspection, ServiceInspection};
pub use rtc::{
    ParseRoleError, RtcRole, RtcTokenRequest, account_for_uid, build_rtc_payload, build_rtc_token,
    random_salt,
};
pub use service::{
    Privileges, RawService, Rtm2Permissions, Service, ServiceOf, privilege, service_type,
};
