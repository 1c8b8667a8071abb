//! Parsing and verification (SPEC §7), mirroring agora-token 2.0.6's `from_string` and
//! `verifySignature`, but stricter wherever Node is lenient by accident (see [`decode`]).

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use subtle::ConstantTimeEq as _;

use crate::builder::{AccessToken2, VERSION};
use crate::compression::inflate;
use crate::service::{RawService, Service};
use crate::signing::{is_hex32, sign};
use crate::wire::Reader;

/// Standard alphabet; padding optional (a token that lost its `=` in transit still decodes),
/// non-zero trailing bits rejected (so one token has one spelling).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a string is not an AccessToken2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// It does not start with `"007"`.
    #[error("not an AccessToken2: missing the \"007\" version prefix")]
    UnsupportedVersion,
    /// The body is not standard base64.
    #[error("token body is not valid base64: {0}")]
    Base64(String),
    /// The decoded body is not one complete zlib stream.
    #[error("token body is not a valid zlib stream: {0}")]
    Zlib(String),
    /// The inflated payload is larger than any real token.
    #[error("token payload is larger than {limit} bytes")]
    TooLarge {
        /// The limit, [`crate::MAX_PAYLOAD_LEN`].
        limit: usize,
    },
    /// The payload ends inside a field.
    #[error("token payload is truncated in {field}")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
}

/// A parsed token. It keeps the inflated payload verbatim, so [`DecodedToken::verify`] hashes
/// exactly the received `signing_info` bytes and never a re-serialisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedToken {
    payload: Vec<u8>,
    /// `payload[2..signing_info_start]` is the signature.
    signing_info_start: usize,
    app_id_raw: Vec<u8>,
    app_id: String,
    issue_ts: u32,
    expire: u32,
    salt: u32,
    declared_service_count: u16,
    raw_services: Vec<RawService>,
    services: Vec<Service>,
    unknown_service_type: Option<u16>,
    trailing_len: usize,
}

/// Parses a token string. Never panics, whatever the input.
///
/// Accepted like Agora's parser: services of one type may repeat; parsing stops (successfully)
/// at the first unknown service type; bytes after the last service are kept (they are covered
/// by the signature). Rejected, where Node's parser would accept: bytes after the end of the
/// zlib stream (Node ignores them, so two different strings would be the same token), base64
/// that is not the standard alphabet or has non-zero trailing bits, and payloads over
/// [`crate::MAX_PAYLOAD_LEN`].
pub fn decode(token: &str) -> Result<DecodedToken, DecodeError> {
    decode_bytes(token.as_bytes())
}

/// [`decode`] for a token that arrived as bytes (for instance an HTTP header value).
pub fn decode_bytes(token: &[u8]) -> Result<DecodedToken, DecodeError> {
    let body = token
        .strip_prefix(VERSION.as_bytes())
        .ok_or(DecodeError::UnsupportedVersion)?;
    let compressed = BASE64
        .decode(body)
        .map_err(|e| DecodeError::Base64(e.to_string()))?;
    let payload = inflate(&compressed)?;
    DecodedToken::from_payload(payload)
}

impl DecodedToken {
    /// Parses an already inflated payload (`bytes(signature) || signing_info`), such as the
    /// `payloadHex` of a test vector.
    pub fn from_payload(payload: Vec<u8>) -> Result<Self, DecodeError> {
        let mut r = Reader::new(&payload);
        let signature = r.bytes("signature")?;
        let signing_info_start = 2 + signature.len();

        let app_id_raw = r.bytes("app id")?.to_vec();
        let issue_ts = r.u32("issue ts")?;
        let expire = r.u32("expire")?;
        let salt = r.u32("salt")?;
        let declared_service_count = r.u16("service count")?;
        let mut raw_services = Vec::new();
        let mut unknown_service_type = None;
        let mut trailing_len = 0;
        for _ in 0..declared_service_count {
            // Counted before the type id, so an unknown service counts whole as trailing bytes.
            trailing_len = r.rest().len();
            let service_type = r.u16("service type")?;
            match RawService::decode(service_type, &mut r)? {
                Some(service) => raw_services.push(service),
                None => {
                    unknown_service_type = Some(service_type);
                    break;
                }
            }
        }
        if unknown_service_type.is_none() {
            trailing_len = r.rest().len();
        }
        let services = raw_services
            .iter()
            .map(|s| s.map_strings(|b| String::from_utf8_lossy(b).into_owned()))
            .collect();
        Ok(Self {
            signing_info_start,
            app_id: String::from_utf8_lossy(&app_id_raw).into_owned(),
            app_id_raw,
            issue_ts,
            expire,
            salt,
            declared_service_count,
            raw_services,
            services,
            unknown_service_type,
            trailing_len,
            payload,
        })
    }

    /// Whether `app_certificate` signed this token (SPEC §7 step 5).
    ///
    /// False unless the token's app id and `app_certificate` are both 32 hex characters and the
    /// signature is non-empty. Recomputes `HMAC(k2, signing_info)` over the original bytes and
    /// compares in constant time. Does not check expiry, nor which app the token is for: compare
    /// [`DecodedToken::app_id`] with the expected one.
    pub fn verify(&self, app_certificate: &str) -> bool {
        let signature = self.signature();
        if signature.is_empty()
            || !is_hex32(&self.app_id_raw)
            || !is_hex32(app_certificate.as_bytes())
        {
            return false;
        }
        let expected = sign(
            app_certificate.as_bytes(),
            self.issue_ts,
            self.salt,
            self.signing_info(),
        );
        // `ct_eq` on slices of different lengths is false; the length itself is not secret.
        bool::from(signature.ct_eq(&expected))
    }

    /// The app id (lossy if the token holds invalid UTF-8, which then never verifies).
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Unix seconds at which the token was issued.
    pub fn issue_ts(&self) -> u32 {
        self.issue_ts
    }

    /// Token lifetime in seconds from [`DecodedToken::issue_ts`].
    pub fn expire(&self) -> u32 {
        self.expire
    }

    /// `issue_ts + expire` in unix seconds (in `u64`: both may be near `u32::MAX`).
    pub fn expires_at(&self) -> u64 {
        u64::from(self.issue_ts) + u64::from(self.expire)
    }

    /// Key-derivation salt.
    pub fn salt(&self) -> u32 {
        self.salt
    }

    /// The services parsed, in token order, strings converted lossily to UTF-8.
    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// The services parsed, in token order, strings as the exact bytes of the token.
    pub fn raw_services(&self) -> &[RawService] {
        &self.raw_services
    }

    /// The service count the token declares (more than [`DecodedToken::services`] holds when
    /// parsing stopped at an unknown type).
    pub fn declared_service_count(&self) -> u16 {
        self.declared_service_count
    }

    /// The first service type this crate does not know, where parsing stopped, if any.
    pub fn unknown_service_type(&self) -> Option<u16> {
        self.unknown_service_type
    }

    /// How many payload bytes follow the last parsed service: bytes after the declared
    /// services, or everything from the type id of an unknown service on.
    pub fn trailing_len(&self) -> usize {
        self.trailing_len
    }

    /// The inflated payload: `bytes(signature) || signing_info`.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The signature as received (32 bytes in any token a builder made).
    pub fn signature(&self) -> &[u8] {
        self.payload
            .get(2..self.signing_info_start)
            .unwrap_or_default()
    }

    /// Every byte after the signature, as received: what the signature covers.
    pub fn signing_info(&self) -> &[u8] {
        self.payload
            .get(self.signing_info_start..)
            .unwrap_or_default()
    }

    /// A builder holding this token's fields and raw services. Building it with the right
    /// certificate reproduces [`DecodedToken::payload`] byte for byte, unless the token had
    /// trailing bytes, an unknown service, services out of type order, or repeated or unsorted
    /// map keys, none of which a builder produces.
    pub fn to_builder(&self) -> AccessToken2<Vec<u8>> {
        AccessToken2 {
            app_id: self.app_id_raw.clone(),
            issue_ts: self.issue_ts,
            expire: self.expire,
            salt: self.salt,
            services: self.raw_services.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::builder::encode_token;
    use crate::service::ServiceOf;
    use crate::wire::{put_bytes, put_u16, put_u32};

    const APP_ID: &[u8] = b"970CA35de60c44645bbae8a215061b33";
    const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";

    /// A payload with arbitrary `services` bytes (which the builder cannot produce), signed.
    fn signed_payload(service_count: u16, services: &[u8]) -> Vec<u8> {
        let mut info = Vec::new();
        put_bytes(&mut info, APP_ID, "app id").unwrap();
        put_u32(&mut info, 1_000);
        put_u32(&mut info, 60);
        put_u32(&mut info, 9);
        put_u16(&mut info, service_count);
        info.extend_from_slice(services);
        let mut payload = Vec::new();
        put_bytes(
            &mut payload,
            &sign(CERT.as_bytes(), 1_000, 9, &info),
            "signature",
        )
        .unwrap();
        payload.extend_from_slice(&info);
        payload
    }

    fn rtc_service_bytes() -> Vec<u8> {
        let mut out = Vec::new();
        ServiceOf::<&str>::Rtc {
            channel_name: "c",
            account: "a",
            privileges: [(1, 60)].into(),
        }
        .encode(&mut out)
        .unwrap();
        out
    }

    #[test]
    fn parsing_stops_at_an_unknown_service_type_and_the_token_still_verifies() {
        let mut services = rtc_service_bytes();
        services.extend_from_slice(&[99, 0, 0xde, 0xad, 0xbe, 0xef]);
        services.extend_from_slice(&rtc_service_bytes());
        let token = encode_token(&signed_payload(3, &services)).unwrap();
        let decoded = decode(&token).unwrap();
        assert!(decoded.verify(CERT));
        assert_eq!(decoded.services().len(), 1);
        assert_eq!(decoded.declared_service_count(), 3);
        assert_eq!(decoded.unknown_service_type(), Some(99));
        assert_eq!(decoded.trailing_len(), 6 + rtc_service_bytes().len());
        let inspection = decoded.inspect(Some(CERT));
        assert_eq!(inspection.unknown_service_type, Some(99));
        assert_eq!(inspection.signature_valid, Some(true));
    }

    #[test]
    fn trailing_bytes_after_the_services_are_kept_and_signed() {
        let mut services = rtc_service_bytes();
        services.extend_from_slice(b"extra");
        let token = encode_token(&signed_payload(1, &services)).unwrap();
        let decoded = decode(&token).unwrap();
        assert!(decoded.verify(CERT));
        assert_eq!(decoded.trailing_len(), 5);
        assert_eq!(decoded.unknown_service_type(), None);
    }

    #[test]
    fn a_service_count_larger_than_the_services_present_is_truncation() {
        let token = encode_token(&signed_payload(2, &rtc_service_bytes())).unwrap();
        assert_eq!(
            decode(&token),
            Err(DecodeError::Truncated {
                field: "service type"
            })
        );
    }

    #[test]
    fn a_signature_of_the_wrong_length_parses_but_never_verifies() {
        for len in [0usize, 31, 33] {
            let good = signed_payload(1, &rtc_service_bytes());
            let info = good.get(34..).unwrap();
            let mut payload = Vec::new();
            put_bytes(&mut payload, &vec![0u8; len], "signature").unwrap();
            payload.extend_from_slice(info);
            let decoded = decode(&encode_token(&payload).unwrap()).unwrap();
            assert_eq!(decoded.signature().len(), len);
            assert!(!decoded.verify(CERT));
        }
    }

    #[test]
    fn a_token_for_a_non_hex_app_id_never_verifies() {
        let mut info = Vec::new();
        put_bytes(&mut info, b"not-a-hex-app-id-but-32-chars-ok", "app id").unwrap();
        info.extend_from_slice(&[0; 14]);
        let mut payload = Vec::new();
        put_bytes(
            &mut payload,
            &sign(CERT.as_bytes(), 0, 0, &info),
            "signature",
        )
        .unwrap();
        payload.extend_from_slice(&info);
        let decoded = decode(&encode_token(&payload).unwrap()).unwrap();
        assert!(!decoded.verify(CERT));
    }
}
