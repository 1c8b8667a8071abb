//! Key derivation and signature (SPEC §4).
//!
//! ```text
//! k1        = HMAC-SHA256(key = u32le(issueTs), msg = appCertificate)
//! k2        = HMAC-SHA256(key = u32le(salt),    msg = k1)
//! signature = HMAC-SHA256(key = k2,             msg = signing_info)
//! ```
//! The certificate is the *message* of the first HMAC and is used as its ASCII characters.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Length of the HMAC-SHA256 signature.
pub(crate) const SIGNATURE_LEN: usize = 32;

/// HMAC with a key shorter than the SHA-256 block. HMAC zero-pads short keys to the block size,
/// so passing the padded block to the infallible `KeyInit::new` is the same MAC as
/// `new_from_slice(key)` without its `Result` (which can never be an error for HMAC).
fn hmac_short_key(key: &[u8], msg: &[u8]) -> [u8; SIGNATURE_LEN] {
    let mut block = [0u8; 64];
    for (dst, src) in block.iter_mut().zip(key) {
        *dst = *src;
    }
    let mut mac = <HmacSha256 as KeyInit>::new(&block.into());
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// The signing key `k2` for a token issued at `issue_ts` with `salt`.
pub(crate) fn signing_key(app_certificate: &[u8], issue_ts: u32, salt: u32) -> [u8; SIGNATURE_LEN] {
    let k1 = hmac_short_key(&issue_ts.to_le_bytes(), app_certificate);
    hmac_short_key(&salt.to_le_bytes(), &k1)
}

/// `HMAC(k2, signing_info)`.
pub(crate) fn sign(
    app_certificate: &[u8],
    issue_ts: u32,
    salt: u32,
    signing_info: &[u8],
) -> [u8; SIGNATURE_LEN] {
    let k2 = signing_key(app_certificate, issue_ts, salt);
    hmac_short_key(&k2, signing_info)
}

/// `^[0-9a-fA-F]{32}$`, the 2.0.6 rule for app ids and certificates.
pub(crate) fn is_hex32(s: &[u8]) -> bool {
    s.len() == 32 && s.iter().all(u8::is_ascii_hexdigit)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn intermediate_keys_match_the_spec_worked_example() {
        let cert = b"5CFd2fd1755d40ecb72977518be15d3b";
        let k1 = hmac_short_key(&1_111_111u32.to_le_bytes(), cert);
        assert_eq!(
            hex::encode(k1),
            "e0f6141e54329d72102500478ec18e0020a5eeef53bbcccc442c6c2f7f178251"
        );
        assert_eq!(
            hex::encode(signing_key(cert, 1_111_111, 1)),
            "cee2fa8dcbe868c30ca8c959d97fad4a5049c634da48449f1b8f59c14fa61073"
        );
    }

    #[test]
    fn padded_key_mac_equals_the_variable_length_mac() {
        for key in [&b""[..], b"\x01", b"abcd", &[7u8; 32], &[9u8; 64]] {
            let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap();
            mac.update(b"message");
            let expected: [u8; 32] = mac.finalize().into_bytes().into();
            assert_eq!(hmac_short_key(key, b"message"), expected);
        }
    }

    #[test]
    fn hex32_accepts_only_32_hex_digits() {
        assert!(is_hex32(b"970CA35de60c44645bbae8a215061b33"));
        assert!(!is_hex32(b"970CA35de60c44645bbae8a215061b3"));
        assert!(!is_hex32(b"970CA35de60c44645bbae8a215061b3g"));
        assert!(!is_hex32(b"970CA35de60c44645bbae8a215061b333"));
    }
}
