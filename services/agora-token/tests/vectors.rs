//! The shared vector files (copied from `shared/agora/`): payloads must match byte for byte,
//! and every token in them, whichever zlib produced it, must decode and verify.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use agora_token::{
    AccessToken2, RtcRole, RtcTokenRequest, Service, account_for_uid, build_rtc_payload,
    build_rtc_token, decode, privilege,
};
use serde_json::Value;

const PUBLIC: &str = include_str!("data/vectors_public.json");
const OFFICIAL: &str = include_str!("data/vectors_official.json");
const WRONG_CERT: &str = "0123456789abcdef0123456789abcdef";

fn vectors(file: &str) -> Vec<Value> {
    let doc: Value = serde_json::from_str(file).unwrap();
    doc["vectors"].as_array().unwrap().clone()
}

fn all_vectors() -> Vec<Value> {
    let mut all = vectors(PUBLIC);
    all.extend(vectors(OFFICIAL));
    all
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{}: missing string {key}", v["id"]))
}

fn u32_field(v: &Value, key: &str) -> u32 {
    let n = v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: missing number {key}", v["id"]));
    u32::try_from(n).unwrap()
}

/// The account string the vector's builder call packs: `uid` goes through the uid mapping,
/// `account` is used verbatim.
fn account_of(v: &Value) -> String {
    match v.get("uid") {
        Some(uid) => account_for_uid(u32::try_from(uid.as_u64().unwrap()).unwrap()),
        None => s(v, "account").to_owned(),
    }
}

fn role_of(v: &Value) -> RtcRole {
    match v["role"].as_u64().unwrap() {
        1 => RtcRole::Publisher,
        _ => RtcRole::Subscriber,
    }
}

fn privileges_of(v: &Value) -> BTreeMap<u16, u32> {
    v["privileges"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, e)| {
            (
                k.parse().unwrap(),
                u32::try_from(e.as_u64().unwrap()).unwrap(),
            )
        })
        .collect()
}

fn payload_hex(v: &Value) -> Vec<u8> {
    hex::decode(s(v, "payloadHex")).unwrap()
}

/// The tokens a vector carries, with the field they came from.
fn tokens_of(v: &Value) -> Vec<(&'static str, String)> {
    ["token", "tokenStockZlib"]
        .into_iter()
        .filter_map(|k| v.get(k).and_then(Value::as_str).map(|t| (k, t.to_owned())))
        .collect()
}

fn expects(v: &Value, key: &str) -> bool {
    v.get(key).and_then(Value::as_bool).unwrap_or(true)
}

#[test]
fn the_vector_files_hold_the_expected_number_of_vectors() {
    assert_eq!(vectors(PUBLIC).len(), 20);
    assert_eq!(vectors(OFFICIAL).len(), 8);
}

#[test]
fn every_public_vector_payload_matches_byte_for_byte() {
    for v in vectors(PUBLIC) {
        let account = account_of(&v);
        assert_eq!(account, s(&v, "packedAccount"), "{}: uid mapping", v["id"]);
        let role = role_of(&v);
        let privilege_expire = u32_field(&v, "privilegeExpire");
        let expected_privileges: BTreeMap<u16, u32> = role
            .privileges()
            .iter()
            .map(|&p| (p, privilege_expire))
            .collect();
        assert_eq!(
            privileges_of(&v),
            expected_privileges,
            "{}: role privileges",
            v["id"]
        );

        let payload = build_rtc_payload(&RtcTokenRequest {
            app_id: s(&v, "appId"),
            app_certificate: s(&v, "appCertificate"),
            channel_name: s(&v, "channelName"),
            account: &account,
            role,
            token_expire: u32_field(&v, "tokenExpire"),
            privilege_expire,
            issue_ts: u32_field(&v, "issueTs"),
            salt: u32_field(&v, "salt"),
        })
        .unwrap();
        assert_eq!(hex::encode(&payload), s(&v, "payloadHex"), "{}", v["id"]);
        assert_eq!(
            hex::encode(&payload[2..34]),
            s(&v, "signatureHex"),
            "{}",
            v["id"]
        );
        assert_eq!(
            hex::encode(&payload[34..]),
            s(&v, "signingInfoHex"),
            "{}",
            v["id"]
        );
    }
}

#[test]
fn every_public_vector_token_we_build_inflates_to_the_vector_payload() {
    for v in vectors(PUBLIC) {
        let account = account_of(&v);
        let token = build_rtc_token(&RtcTokenRequest {
            app_id: s(&v, "appId"),
            app_certificate: s(&v, "appCertificate"),
            channel_name: s(&v, "channelName"),
            account: &account,
            role: role_of(&v),
            token_expire: u32_field(&v, "tokenExpire"),
            privilege_expire: u32_field(&v, "privilegeExpire"),
            issue_ts: u32_field(&v, "issueTs"),
            salt: u32_field(&v, "salt"),
        })
        .unwrap();
        let decoded = decode(&token).unwrap();
        assert_eq!(decoded.payload(), payload_hex(&v), "{}", v["id"]);
        assert!(decoded.verify(s(&v, "appCertificate")), "{}", v["id"]);
    }
}

/// The official vectors describe their services in prose; these are the same services as
/// builder calls, so the multi-service payloads are reproduced by the generic builder.
fn official_services(id: &str) -> Vec<Service> {
    let channel = "7d72365eb983485397e3e3f9d460bdda".to_owned();
    let all_rtc: BTreeMap<u16, u32> = (1..=4).map(|p| (p, 600)).collect();
    let rtc = |account: &str, privileges: BTreeMap<u16, u32>| Service::Rtc {
        channel_name: channel.clone(),
        account: account.to_owned(),
        privileges,
    };
    let join_only = BTreeMap::from([(privilege::RTC_JOIN_CHANNEL, 600)]);
    match id {
        "off-rtc-uid" | "off-rtc-uid-go" | "off-rtc-uid-rust" => vec![rtc("2882341273", join_only)],
        "off-rtc-uid0" => vec![rtc("", join_only)],
        // Added in the opposite order on purpose: the builder sorts services by type.
        "off-rtc-rtm-node" | "off-rtc-rtm-python" => vec![
            Service::Rtm {
                user_id: "test_user".to_owned(),
                privileges: BTreeMap::from([(privilege::LOGIN, 600)]),
            },
            rtc("2882341273", all_rtc),
        ],
        "off-chat-user-node" | "off-chat-user-python" => vec![Service::Chat {
            user_id: "2882341273".to_owned(),
            privileges: BTreeMap::from([(privilege::CHAT_USER, 600)]),
        }],
        other => panic!("no service description for official vector {other}"),
    }
}

#[test]
fn every_official_vector_payload_is_reproduced_by_the_generic_builder() {
    for v in vectors(OFFICIAL) {
        let mut token = AccessToken2::new(
            s(&v, "appId").to_owned(),
            u32_field(&v, "issueTs"),
            u32_field(&v, "expire"),
            u32_field(&v, "salt"),
        );
        for service in official_services(s(&v, "id")) {
            token.add_service(service);
        }
        let payload = token.build_payload(s(&v, "appCertificate")).unwrap();
        assert_eq!(hex::encode(payload), s(&v, "payloadHex"), "{}", v["id"]);
    }
}

#[test]
fn every_token_in_both_files_decodes_and_verifies_as_the_vector_says() {
    let mut checked = 0;
    for v in all_vectors() {
        for (field, token) in tokens_of(&v) {
            let decoded = decode(&token);
            if !expects(&v, "parses") {
                assert!(decoded.is_err(), "{} {field} should not parse", v["id"]);
                continue;
            }
            let decoded = decoded.unwrap_or_else(|e| panic!("{} {field}: {e}", v["id"]));
            assert_eq!(decoded.payload(), payload_hex(&v), "{} {field}", v["id"]);
            assert_eq!(
                decoded.verify(s(&v, "appCertificate")),
                expects(&v, "verifies"),
                "{} {field}",
                v["id"]
            );
            checked += 1;
        }
    }
    // 20 public vectors with two tokens each, 8 official ones with one.
    assert_eq!(checked, 48);
}

#[test]
fn a_wrong_certificate_is_rejected_for_every_token() {
    for v in all_vectors() {
        let cert = s(&v, "appCertificate");
        for (field, token) in tokens_of(&v) {
            let decoded = decode(&token).unwrap();
            assert!(!decoded.verify(WRONG_CERT), "{} {field}", v["id"]);
            // The certificate is ASCII, not hex: changing the case is a different certificate.
            let flipped_case: String = cert
                .chars()
                .map(|c| {
                    if c.is_ascii_lowercase() {
                        c.to_ascii_uppercase()
                    } else {
                        c.to_ascii_lowercase()
                    }
                })
                .collect();
            if flipped_case != cert {
                assert!(!decoded.verify(&flipped_case), "{} {field}", v["id"]);
            }
            assert!(!decoded.verify(""), "{} {field}", v["id"]);
            assert!(!decoded.verify(&cert[..31]), "{} {field}", v["id"]);
        }
    }
}

#[test]
fn decoded_public_vectors_expose_the_inputs_they_were_built_from() {
    for v in vectors(PUBLIC) {
        let decoded = decode(s(&v, "token")).unwrap();
        assert_eq!(decoded.app_id(), s(&v, "appId"));
        assert_eq!(decoded.issue_ts(), u32_field(&v, "issueTs"));
        assert_eq!(decoded.expire(), u32_field(&v, "tokenExpire"));
        assert_eq!(decoded.salt(), u32_field(&v, "salt"));
        assert_eq!(
            decoded.signature(),
            &hex::decode(s(&v, "signatureHex")).unwrap()[..]
        );
        assert_eq!(
            decoded.signing_info(),
            &hex::decode(s(&v, "signingInfoHex")).unwrap()[..]
        );
        let expected = [Service::Rtc {
            channel_name: s(&v, "channelName").to_owned(),
            account: s(&v, "packedAccount").to_owned(),
            privileges: privileges_of(&v),
        }];
        assert_eq!(decoded.services(), &expected[..], "{}", v["id"]);
        assert_eq!(decoded.unknown_service_type(), None);
        assert_eq!(decoded.trailing_len(), 0);
    }
}

#[test]
fn every_decoded_vector_rebuilds_to_the_same_payload() {
    for v in all_vectors() {
        let decoded = decode(s(&v, "token")).unwrap();
        let rebuilt = decoded
            .to_builder()
            .build_payload(s(&v, "appCertificate"))
            .unwrap();
        assert_eq!(rebuilt, decoded.payload(), "{}", v["id"]);
    }
}

#[test]
fn uid_and_account_forms_give_identical_tokens_except_for_uid_zero() {
    let base = RtcTokenRequest {
        app_id: "970CA35de60c44645bbae8a215061b33",
        app_certificate: "5CFd2fd1755d40ecb72977518be15d3b",
        channel_name: "room1",
        account: "",
        role: RtcRole::Publisher,
        token_expire: 3600,
        privilege_expire: 3600,
        issue_ts: 1_700_000_000,
        salt: 12_345_678,
    };
    let by_uid = account_for_uid(2_882_341_273);
    assert_eq!(
        build_rtc_token(&RtcTokenRequest {
            account: &by_uid,
            ..base
        })
        .unwrap(),
        build_rtc_token(&RtcTokenRequest {
            account: "2882341273",
            ..base
        })
        .unwrap()
    );
    assert_eq!(account_for_uid(0), "");
    assert_ne!(
        build_rtc_payload(&RtcTokenRequest {
            account: &account_for_uid(0),
            ..base
        })
        .unwrap(),
        build_rtc_payload(&RtcTokenRequest {
            account: "0",
            ..base
        })
        .unwrap()
    );
}

#[test]
fn every_single_byte_corruption_of_a_vector_token_is_caught_or_harmless() {
    let v = &vectors(PUBLIC)[3];
    let cert = s(v, "appCertificate");
    let payload = payload_hex(v);
    let token = s(v, "token").as_bytes().to_vec();
    let (mut rejected, mut harmless) = (0, 0);
    for i in 0..token.len() {
        for mask in 1..=255u8 {
            let mut corrupted = token.clone();
            corrupted[i] ^= mask;
            match agora_token::decode_bytes(&corrupted) {
                Ok(d) if d.verify(cert) => {
                    // Only bits zlib ignores may change: the signed payload must be intact.
                    assert_eq!(d.payload(), payload, "byte {i} ^ {mask:#04x} accepted");
                    harmless += 1;
                }
                _ => rejected += 1,
            }
        }
    }
    assert_eq!(rejected + harmless, token.len() * 255);
    assert!(harmless < token.len(), "{harmless} harmless flips");
}
