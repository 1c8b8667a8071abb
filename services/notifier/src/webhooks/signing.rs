//! Standard Webhooks signatures (<https://www.standardwebhooks.com>): `webhook-signature` is
//! `v1,<base64 HMAC-SHA256 of "<webhook-id>.<webhook-timestamp>.<body>">`, one per secret,
//! separated by spaces, so receivers verify with any of them during a rotation.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::model::WebhookSecret;

/// The `webhook-signature` value for one delivery attempt.
pub fn signature(secrets: &[WebhookSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets
        .iter()
        .map(|secret| {
            // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
            let mut mac = match Hmac::<Sha256>::new_from_slice(secret.key()) {
                Ok(mac) => mac,
                Err(_) => return String::new(),
            };
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(timestamp.to_string().as_bytes());
            mac.update(b".");
            mac.update(body);
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
        })
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `webhook-id` of an event: stable for the event (the call and its place in the call's
/// event order), so every attempt and every replay carries the same id and receivers can
/// drop duplicates.
pub fn message_id(call_id: &str, position: i64) -> String {
    let digest = Sha256::digest(format!("{call_id}/{position}").as_bytes());
    format!("msg_{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn the_signature_matches_the_specification_example() {
        // The example of the Standard Webhooks specification.
        let secret = WebhookSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        assert_eq!(
            signature(
                &[secret],
                "msg_p5jXN8AQM9LWM0D4loKWxJek",
                1_614_265_330,
                br#"{"test": 2432232314}"#
            ),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn several_secrets_give_several_space_separated_signatures() {
        let (a, b) = (WebhookSecret::generate(), WebhookSecret::generate());
        let both = signature(&[a.clone(), b.clone()], "msg_1", 1, b"{}");
        let parts: Vec<&str> = both.split(' ').collect();
        assert_eq!(
            parts,
            vec![
                signature(&[a], "msg_1", 1, b"{}").as_str(),
                signature(&[b], "msg_1", 1, b"{}").as_str()
            ]
        );
    }

    #[test]
    fn message_ids_are_stable_per_event_and_differ_between_events() {
        assert_eq!(message_id("c1", 65536), message_id("c1", 65536));
        assert_ne!(message_id("c1", 65536), message_id("c1", 65537));
        assert_ne!(message_id("c1", 0), message_id("c2", 0));
        assert!(message_id("c1", 0).starts_with("msg_"));
    }
}
