//! The generic AccessToken2 builder (SPEC §1, §3, §4).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::compression::deflate;
use crate::service::{MAX_SERVICE_TYPE, ServiceOf};
use crate::signing::{SIGNATURE_LEN, is_hex32, sign};
use crate::wire::{put_bytes, put_count, put_u16, put_u32};

/// The version prefix of every AccessToken2 string.
pub const VERSION: &str = "007";

/// Why a token could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The app id is not 32 hexadecimal characters.
    #[error("app id must be 32 hexadecimal characters")]
    InvalidAppId,
    /// The app certificate is not 32 hexadecimal characters.
    #[error("app certificate must be 32 hexadecimal characters")]
    InvalidAppCertificate,
    /// A token must carry at least one service.
    #[error("a token needs at least one service")]
    NoServices,
    /// A string does not fit its `u16` length prefix.
    #[error("{field} is {len} bytes long; a token string holds at most 65535 bytes")]
    StringTooLong {
        /// Which string.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
    /// A list does not fit its `u16` count.
    #[error("{count} {what}; a token list holds at most 65535 entries")]
    TooManyEntries {
        /// Which list.
        what: &'static str,
        /// How many entries it has.
        count: usize,
    },
    /// The compressor failed (not expected to happen).
    #[error("zlib compression failed: {0}")]
    Compression(String),
}

/// An AccessToken2 to build: header fields plus any number of services of any type.
///
/// `S` is the string type of the services (and of the app id): `String`, `&str`, or `Vec<u8>`
/// for byte-exact strings taken from a decoded token (see [`crate::DecodedToken::to_builder`]).
///
/// ```
/// use agora_token::{AccessToken2, Service, privilege};
/// let mut token = AccessToken2::new("970CA35de60c44645bbae8a215061b33".to_owned(), 1_111_111, 600, 1);
/// token.add_service(Service::Rtm {
///     user_id: "test_user".to_owned(),
///     privileges: [(privilege::LOGIN, 600)].into(),
/// });
/// let token = token.build("5CFd2fd1755d40ecb72977518be15d3b").unwrap();
/// assert!(token.starts_with("007"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken2<S = String> {
    /// 32 hex characters, packed as given (case kept).
    pub app_id: S,
    /// Unix seconds.
    pub issue_ts: u32,
    /// Token lifetime in seconds, counted from `issue_ts`.
    pub expire: u32,
    /// Random input to the key derivation; [`crate::random_salt`] gives the usual range.
    pub salt: u32,
    /// Services, in any order: they are written sorted by type (stable for equal types).
    pub services: Vec<ServiceOf<S>>,
}

impl<S: AsRef<[u8]>> AccessToken2<S> {
    /// A token without services yet.
    pub fn new(app_id: S, issue_ts: u32, expire: u32, salt: u32) -> Self {
        Self {
            app_id,
            issue_ts,
            expire,
            salt,
            services: Vec::new(),
        }
    }

    /// Adds a service. Several services of one type are all kept, as in agora-token 2.0.6.
    pub fn add_service(&mut self, service: ServiceOf<S>) -> &mut Self {
        self.services.push(service);
        self
    }

    /// The uncompressed payload: `bytes(signature) || signing_info`.
    pub fn build_payload(&self, app_certificate: &str) -> Result<Vec<u8>, BuildError> {
        encode_payload(
            self.app_id.as_ref(),
            app_certificate.as_bytes(),
            self.issue_ts,
            self.expire,
            self.salt,
            &self.services,
        )
    }

    /// The token string: `"007" || base64(zlib(payload))`.
    pub fn build(&self, app_certificate: &str) -> Result<String, BuildError> {
        encode_token(&self.build_payload(app_certificate)?)
    }
}

/// Builds and signs the payload. Validation happens before any work, in the order of the
/// official builders: ids first, then the service list.
pub(crate) fn encode_payload<S: AsRef<[u8]>>(
    app_id: &[u8],
    app_certificate: &[u8],
    issue_ts: u32,
    expire: u32,
    salt: u32,
    services: &[ServiceOf<S>],
) -> Result<Vec<u8>, BuildError> {
    if !is_hex32(app_id) {
        return Err(BuildError::InvalidAppId);
    }
    if !is_hex32(app_certificate) {
        return Err(BuildError::InvalidAppCertificate);
    }
    if services.is_empty() {
        return Err(BuildError::NoServices);
    }

    let header = 2 + SIGNATURE_LEN + 2 + app_id.len() + 4 + 4 + 4 + 2;
    let hint = header + services.iter().map(ServiceOf::size_hint).sum::<usize>();
    let mut payload = Vec::with_capacity(hint);

    // The signature covers the bytes that follow it, so reserve its slot, write signing_info
    // in place, then fill the slot: no second buffer and no copy.
    put_u16(&mut payload, SIGNATURE_LEN as u16);
    payload.extend_from_slice(&[0u8; SIGNATURE_LEN]);
    let signing_info_start = payload.len();

    put_bytes(&mut payload, app_id, "app id")?;
    put_u32(&mut payload, issue_ts);
    put_u32(&mut payload, expire);
    put_u32(&mut payload, salt);
    put_count(&mut payload, services.len(), "services")?;
    // Stable sort by type without allocating: the known types are exactly 1..=MAX_SERVICE_TYPE
    // and every `ServiceOf` has one of them.
    for service_type in 1..=MAX_SERVICE_TYPE {
        for service in services.iter().filter(|s| s.service_type() == service_type) {
            service.encode(&mut payload)?;
        }
    }

    let (head, signing_info) = payload.split_at_mut(signing_info_start);
    let signature = sign(app_certificate, issue_ts, salt, signing_info);
    if let Some(slot) = head.get_mut(2..2 + SIGNATURE_LEN) {
        slot.copy_from_slice(&signature);
    }
    Ok(payload)
}

/// `"007" || base64(zlib(payload))`.
pub(crate) fn encode_token(payload: &[u8]) -> Result<String, BuildError> {
    let mut compressed = Vec::new();
    deflate(payload, &mut compressed)?;
    let mut token = String::with_capacity(VERSION.len() + compressed.len().div_ceil(3) * 4);
    token.push_str(VERSION);
    STANDARD.encode_string(&compressed, &mut token);
    Ok(token)
}
