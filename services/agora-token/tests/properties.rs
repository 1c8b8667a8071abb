//! Property tests: building and decoding agree on every field, any single-byte corruption is
//! caught, and decoding never panics.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;

use agora_token::{
    AccessToken2, DecodedToken, RawService, RtcRole, RtcTokenRequest, Service, ServiceOf,
    build_rtc_payload, build_rtc_token, decode, decode_bytes,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use proptest::prelude::*;
use proptest::sample::Index;

fn hex32() -> impl Strategy<Value = String> {
    "[0-9a-fA-F]{32}"
}

/// Any Unicode text, including NUL, controls and astral characters.
fn text(max: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..max).prop_map(String::from_iter)
}

/// Any bytes, valid UTF-8 or not.
fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn role() -> impl Strategy<Value = RtcRole> {
    prop_oneof![Just(RtcRole::Publisher), Just(RtcRole::Subscriber)]
}

fn privileges() -> impl Strategy<Value = BTreeMap<u16, u32>> {
    proptest::collection::btree_map(any::<u16>(), any::<u32>(), 0..6)
}

fn raw_service() -> impl Strategy<Value = RawService> {
    let permissions = proptest::collection::btree_map(
        0u16..6,
        proptest::collection::btree_map(0u16..3, proptest::collection::vec(bytes(12), 0..3), 0..3),
        0..3,
    );
    prop_oneof![
        (bytes(40), bytes(40), privileges()).prop_map(|(channel_name, account, privileges)| {
            ServiceOf::Rtc {
                channel_name,
                account,
                privileges,
            }
        }),
        (bytes(40), privileges()).prop_map(|(user_id, privileges)| ServiceOf::Rtm {
            user_id,
            privileges
        }),
        (bytes(40), bytes(40), privileges()).prop_map(|(channel_name, account, privileges)| {
            ServiceOf::Streaming {
                channel_name,
                account,
                privileges,
            }
        }),
        privileges().prop_map(|privileges| ServiceOf::Fpa { privileges }),
        (bytes(40), privileges()).prop_map(|(user_id, privileges)| ServiceOf::Chat {
            user_id,
            privileges
        }),
        (bytes(40), bytes(40), privileges()).prop_map(|(channel_name, account, privileges)| {
            ServiceOf::Fcdn {
                channel_name,
                account,
                privileges,
            }
        }),
        (bytes(40), bytes(40), any::<i16>(), privileges()).prop_map(
            |(room_uuid, user_uuid, role, privileges)| ServiceOf::Apaas {
                room_uuid,
                user_uuid,
                role,
                privileges
            }
        ),
        (bytes(40), privileges(), permissions).prop_map(|(user_id, privileges, permissions)| {
            ServiceOf::Rtm2 {
                user_id,
                privileges,
                permissions,
            }
        }),
        privileges().prop_map(|privileges| ServiceOf::ConvoAi { privileges }),
        privileges().prop_map(|privileges| ServiceOf::Stt { privileges }),
    ]
}

prop_compose! {
    fn rtc_inputs()(
        app_id in hex32(),
        cert in hex32(),
        channel in text(70),
        account in text(70),
        role in role(),
        token_expire in any::<u32>(),
        privilege_expire in any::<u32>(),
        issue_ts in any::<u32>(),
        salt in any::<u32>(),
    ) -> (String, String, String, String, RtcRole, u32, u32, u32, u32) {
        (app_id, cert, channel, account, role, token_expire, privilege_expire, issue_ts, salt)
    }
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn token_from_payload(payload: &[u8]) -> String {
    format!("007{}", STANDARD.encode(zlib(payload)))
}

/// Everything a caller may do with a decoded token must be panic-free too.
fn exercise(decoded: &DecodedToken) {
    let _ = decoded.verify("5CFd2fd1755d40ecb72977518be15d3b");
    let _ = decoded
        .to_builder()
        .build_payload("5CFd2fd1755d40ecb72977518be15d3b");
    serde_json::to_string(&decoded.inspect(None)).unwrap();
    serde_json::to_string(&decoded.inspect(Some("5CFd2fd1755d40ecb72977518be15d3b"))).unwrap();
}

proptest! {
    #[test]
    fn an_rtc_token_round_trips_every_field(
        (app_id, cert, channel, account, role, token_expire, privilege_expire, issue_ts, salt) in rtc_inputs()
    ) {
        let req = RtcTokenRequest {
            app_id: &app_id, app_certificate: &cert, channel_name: &channel, account: &account,
            role, token_expire, privilege_expire, issue_ts, salt,
        };
        let token = build_rtc_token(&req).unwrap();
        let decoded = decode(&token).unwrap();
        prop_assert!(decoded.verify(&cert));
        prop_assert_eq!(decoded.app_id(), app_id.as_str());
        prop_assert_eq!(decoded.issue_ts(), issue_ts);
        prop_assert_eq!(decoded.expire(), token_expire);
        prop_assert_eq!(decoded.salt(), salt);
        prop_assert_eq!(decoded.payload(), &build_rtc_payload(&req).unwrap()[..]);
        let expected = [Service::Rtc {
            channel_name: channel.clone(),
            account: account.clone(),
            privileges: role.privileges().iter().map(|&p| (p, privilege_expire)).collect(),
        }];
        prop_assert_eq!(decoded.services(), &expected[..]);
    }

    #[test]
    fn any_mix_of_services_round_trips_byte_for_byte(
        app_id in hex32(),
        cert in hex32(),
        issue_ts in any::<u32>(),
        expire in any::<u32>(),
        salt in any::<u32>(),
        services in proptest::collection::vec(raw_service(), 1..5),
    ) {
        let token = AccessToken2 { app_id: app_id.clone().into_bytes(), issue_ts, expire, salt, services: services.clone() };
        let built = token.build(&cert).unwrap();
        let decoded = decode(&built).unwrap();
        prop_assert!(decoded.verify(&cert));
        // Written sorted by type, stable among equal types.
        let mut sorted = services.clone();
        sorted.sort_by_key(ServiceOf::service_type);
        prop_assert_eq!(decoded.raw_services(), &sorted[..]);
        let lossy: Vec<Service> = sorted
            .iter()
            .map(|s| s.map_strings(|b| String::from_utf8_lossy(b).into_owned()))
            .collect();
        prop_assert_eq!(decoded.services(), &lossy[..]);
        prop_assert_eq!(decoded.to_builder().build_payload(&cert).unwrap(), decoded.payload());
        prop_assert_eq!(decoded.to_builder().build_payload(&cert).unwrap(), token.build_payload(&cert).unwrap());
    }

    #[test]
    fn flipping_any_payload_byte_breaks_decoding_or_verification(
        (app_id, cert, channel, account, role, token_expire, privilege_expire, issue_ts, salt) in rtc_inputs(),
        at in any::<Index>(),
        mask in 1u8..,
    ) {
        let req = RtcTokenRequest {
            app_id: &app_id, app_certificate: &cert, channel_name: &channel, account: &account,
            role, token_expire, privilege_expire, issue_ts, salt,
        };
        let mut payload = build_rtc_payload(&req).unwrap();
        let i = at.index(payload.len());
        payload[i] ^= mask;
        if let Ok(decoded) = decode(&token_from_payload(&payload)) {
            prop_assert!(!decoded.verify(&cert), "flip at {} accepted", i);
        }
    }

    #[test]
    fn flipping_any_token_byte_breaks_decoding_or_verification_or_changes_nothing(
        (app_id, cert, channel, account, role, token_expire, privilege_expire, issue_ts, salt) in rtc_inputs(),
        at in any::<Index>(),
        mask in 1u8..,
    ) {
        let req = RtcTokenRequest {
            app_id: &app_id, app_certificate: &cert, channel_name: &channel, account: &account,
            role, token_expire, privilege_expire, issue_ts, salt,
        };
        let token = build_rtc_token(&req).unwrap();
        let original = build_rtc_payload(&req).unwrap();
        let mut corrupted = token.into_bytes();
        let i = at.index(corrupted.len());
        corrupted[i] ^= mask;
        // zlib ignores a few bits (FLEVEL in the header, padding after the final block), so a
        // flip there inflates to the very payload that was signed. That token is as good as the
        // original; what must never happen is a *different* payload that verifies.
        if let Ok(decoded) = decode_bytes(&corrupted) {
            prop_assert!(
                !decoded.verify(&cert) || decoded.payload() == original,
                "flip at {} accepted with a different payload", i
            );
        }
    }

    #[test]
    fn decode_never_panics_on_arbitrary_text(s in text(300)) {
        for candidate in [s.clone(), format!("007{s}")] {
            if let Ok(decoded) = decode(&candidate) {
                exercise(&decoded);
            }
        }
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(b in bytes(300)) {
        let mut prefixed = b"007".to_vec();
        prefixed.extend_from_slice(&b);
        for candidate in [&b, &prefixed] {
            if let Ok(decoded) = decode_bytes(candidate) {
                exercise(&decoded);
            }
        }
    }

    #[test]
    fn decode_never_panics_on_valid_base64_of_garbage(b in bytes(300)) {
        if let Ok(decoded) = decode(&format!("007{}", STANDARD.encode(&b))) {
            exercise(&decoded);
        }
    }

    #[test]
    fn decode_never_panics_on_valid_zlib_of_garbage(b in bytes(400)) {
        if let Ok(decoded) = decode(&token_from_payload(&b)) {
            exercise(&decoded);
        }
    }

    #[test]
    fn decode_never_panics_on_a_real_payload_cut_and_extended_with_garbage(
        services in proptest::collection::vec(raw_service(), 1..4),
        cut in any::<Index>(),
        tail in bytes(64),
    ) {
        let token = AccessToken2 {
            app_id: b"970CA35de60c44645bbae8a215061b33".to_vec(),
            issue_ts: 1, expire: 2, salt: 3, services,
        };
        let mut payload = token.build_payload("5CFd2fd1755d40ecb72977518be15d3b").unwrap();
        payload.truncate(cut.index(payload.len() + 1));
        payload.extend_from_slice(&tail);
        if let Ok(decoded) = decode(&token_from_payload(&payload)) {
            exercise(&decoded);
        }
    }
}
