//! The `Inspection` JSON that `media-token inspect` prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use agora_token::{AccessToken2, Service, decode};
use serde_json::{Value, json};

const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";

fn inspect_json(token: &str, cert: Option<&str>) -> Value {
    serde_json::to_value(decode(token).unwrap().inspect(cert)).unwrap()
}

fn build(expire: u32, services: Vec<Service>) -> String {
    AccessToken2 {
        app_id: APP_ID.to_owned(),
        issue_ts: 1_000,
        expire,
        salt: 7,
        services,
    }
    .build(CERT)
    .unwrap()
}

#[test]
fn a_publisher_token_inspects_as_documented() {
    let public: Value = serde_json::from_str(include_str!("data/vectors_public.json")).unwrap();
    let token = public["vectors"][3]["token"].as_str().unwrap();
    let p = json!({"expire": 600, "expiresAt": 1_111_711});
    assert_eq!(
        inspect_json(token, Some(CERT)),
        json!({
            "version": "007",
            "appId": APP_ID,
            "issueTs": 1_111_111,
            "expire": 600,
            "expiresAt": 1_111_711,
            "salt": 1,
            "services": [{
                "type": "rtc",
                "serviceType": 1,
                "channelName": "7d72365eb983485397e3e3f9d460bdda",
                "account": "2882341273",
                "privileges": {
                    "joinChannel": p,
                    "publishAudioStream": p,
                    "publishVideoStream": p,
                    "publishDataStream": p,
                },
            }],
            "signatureValid": true,
        })
    );
}

#[test]
fn keys_come_out_in_the_documented_order() {
    let public: Value = serde_json::from_str(include_str!("data/vectors_public.json")).unwrap();
    let token = public["vectors"][0]["token"].as_str().unwrap();
    let text = serde_json::to_string(&decode(token).unwrap().inspect(None)).unwrap();
    assert!(
        text.starts_with(r#"{"version":"007","appId":"970CA35de60c44645bbae8a215061b33","issueTs":1111111,"expire":600,"expiresAt":1111711,"salt":1,"services":[{"type":"rtc","serviceType":1,"channelName":"#),
        "{text}"
    );
    assert!(text.ends_with(r#""privileges":{"joinChannel":{"expire":600,"expiresAt":1111711}}}],"signatureValid":null}"#), "{text}");
}

#[test]
fn signature_valid_is_null_without_a_certificate_and_false_with_a_wrong_one() {
    let token = build(
        600,
        vec![Service::Fpa {
            privileges: BTreeMap::new(),
        }],
    );
    assert_eq!(inspect_json(&token, None)["signatureValid"], Value::Null);
    assert_eq!(
        inspect_json(&token, Some(CERT))["signatureValid"],
        json!(true)
    );
    assert_eq!(
        inspect_json(&token, Some(&CERT.to_uppercase()))["signatureValid"],
        json!(false)
    );
    assert_eq!(
        inspect_json(&token, Some("not a cert"))["signatureValid"],
        json!(false)
    );
}

#[test]
fn privilege_end_times_are_capped_by_the_token_expiry() {
    let token = build(
        600,
        vec![Service::Rtc {
            channel_name: "c".to_owned(),
            account: "a".to_owned(),
            privileges: BTreeMap::from([(1, 0), (2, 300), (3, 600), (4, 601)]),
        }],
    );
    let privileges = &inspect_json(&token, None)["services"][0]["privileges"];
    assert_eq!(
        privileges["joinChannel"],
        json!({"expire": 0, "expiresAt": 1_600})
    );
    assert_eq!(
        privileges["publishAudioStream"],
        json!({"expire": 300, "expiresAt": 1_300})
    );
    assert_eq!(
        privileges["publishVideoStream"],
        json!({"expire": 600, "expiresAt": 1_600})
    );
    assert_eq!(
        privileges["publishDataStream"],
        json!({"expire": 601, "expiresAt": 1_600})
    );
}

#[test]
fn end_times_do_not_overflow_at_the_u32_limits() {
    let token = AccessToken2 {
        app_id: APP_ID.to_owned(),
        issue_ts: u32::MAX,
        expire: u32::MAX,
        salt: 1,
        services: vec![Service::Rtm {
            user_id: "u".to_owned(),
            privileges: BTreeMap::from([(1, u32::MAX)]),
        }],
    }
    .build(CERT)
    .unwrap();
    let json = inspect_json(&token, None);
    assert_eq!(json["expiresAt"], json!(2 * u64::from(u32::MAX)));
    assert_eq!(
        json["services"][0]["privileges"]["login"]["expiresAt"],
        json!(2 * u64::from(u32::MAX))
    );
}

#[test]
fn every_service_type_shows_its_own_fields_and_privilege_names() {
    let p = |ids: &[u16]| {
        ids.iter()
            .map(|&id| (id, 60))
            .collect::<BTreeMap<u16, u32>>()
    };
    let token = build(
        60,
        vec![
            Service::Stt { privileges: p(&[]) },
            Service::ConvoAi {
                privileges: p(&[1]),
            },
            Service::Rtm2 {
                user_id: "u2".to_owned(),
                privileges: p(&[1]),
                permissions: BTreeMap::from([
                    (
                        0,
                        BTreeMap::from([
                            (0, vec!["ch-b".to_owned(), "ch-a".to_owned()]),
                            (1, vec![]),
                        ]),
                    ),
                    (9, BTreeMap::from([(7, vec!["x".to_owned()])])),
                ]),
            },
            Service::Apaas {
                room_uuid: "room".to_owned(),
                user_uuid: "user".to_owned(),
                role: -1,
                privileges: p(&[1, 2, 3]),
            },
            Service::Fcdn {
                channel_name: "cdn".to_owned(),
                account: "acc".to_owned(),
                privileges: p(&[1, 2]),
            },
            Service::Chat {
                user_id: "chatter".to_owned(),
                privileges: p(&[1, 2]),
            },
            Service::Fpa {
                privileges: p(&[1]),
            },
            Service::Streaming {
                channel_name: "live".to_owned(),
                account: "7".to_owned(),
                privileges: p(&[1, 2]),
            },
            Service::Rtm {
                user_id: "rtm-user".to_owned(),
                privileges: p(&[1]),
            },
            Service::Rtc {
                channel_name: "room".to_owned(),
                account: "".to_owned(),
                privileges: p(&[1, 9]),
            },
        ],
    );
    let e = json!({"expire": 60, "expiresAt": 1_060});
    assert_eq!(
        inspect_json(&token, Some(CERT))["services"],
        json!([
            {"type": "rtc", "serviceType": 1, "channelName": "room", "account": "",
             "privileges": {"joinChannel": e, "9": e}},
            {"type": "rtm", "serviceType": 2, "userId": "rtm-user", "privileges": {"login": e}},
            {"type": "streaming", "serviceType": 3, "channelName": "live", "account": "7",
             "privileges": {"publishMixStream": e, "publishRawStream": e}},
            {"type": "fpa", "serviceType": 4, "privileges": {"login": e}},
            {"type": "chat", "serviceType": 5, "userId": "chatter", "privileges": {"user": e, "app": e}},
            {"type": "fcdn", "serviceType": 6, "channelName": "cdn", "account": "acc",
             "privileges": {"publish": e, "play": e}},
            {"type": "apaas", "serviceType": 7, "roomUuid": "room", "userUuid": "user", "role": -1,
             "privileges": {"roomUser": e, "user": e, "app": e}},
            {"type": "rtm2", "serviceType": 8, "userId": "u2",
             "permissions": {"messageChannels": {"read": ["ch-b", "ch-a"], "write": []}, "9": {"7": ["x"]}},
             "privileges": {"login": e}},
            {"type": "convoai", "serviceType": 9, "privileges": {"1": e}},
            {"type": "stt", "serviceType": 10, "privileges": {}},
        ])
    );
}

#[test]
fn invalid_utf8_strings_are_shown_lossily_and_still_verify() {
    let token = AccessToken2 {
        app_id: APP_ID.as_bytes().to_vec(),
        issue_ts: 5,
        expire: 5,
        salt: 5,
        services: vec![agora_token::RawService::Rtc {
            channel_name: b"caf\xe9".to_vec(),
            account: vec![0, 0xff],
            privileges: BTreeMap::new(),
        }],
    }
    .build(CERT)
    .unwrap();
    let decoded = decode(&token).unwrap();
    assert!(decoded.verify(CERT));
    let json = serde_json::to_value(decoded.inspect(Some(CERT))).unwrap();
    assert_eq!(json["services"][0]["channelName"], json!("caf\u{fffd}"));
    assert_eq!(json["services"][0]["account"], json!("\u{0}\u{fffd}"));
    assert_eq!(json["signatureValid"], json!(true));
    match &decoded.raw_services()[0] {
        agora_token::RawService::Rtc {
            channel_name,
            account,
            ..
        } => {
            assert_eq!(channel_name, b"caf\xe9");
            assert_eq!(account, &[0, 0xff]);
        }
        other => panic!("unexpected {other:?}"),
    }
}
