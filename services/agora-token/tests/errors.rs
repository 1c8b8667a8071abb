//! Inputs the builder refuses and strings the parser rejects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::Write;

use agora_token::{
    AccessToken2, BuildError, DecodeError, MAX_PAYLOAD_LEN, RtcRole, RtcTokenRequest, Service,
    build_rtc_token, decode, decode_bytes, random_salt,
};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};

const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";

fn request<'a>() -> RtcTokenRequest<'a> {
    RtcTokenRequest {
        app_id: APP_ID,
        app_certificate: CERT,
        channel_name: "room",
        account: "alice",
        role: RtcRole::Subscriber,
        token_expire: 600,
        privilege_expire: 600,
        issue_ts: 1_700_000_000,
        salt: 42,
    }
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn app_ids_and_certificates_must_be_32_hex_characters() {
    for bad in [
        "",
        "970CA35de60c44645bbae8a215061b3",
        "970CA35de60c44645bbae8a215061b333",
        "970CA35de60c44645bbae8a215061b3z",
        " 70CA35de60c44645bbae8a215061b33",
    ] {
        assert_eq!(
            build_rtc_token(&RtcTokenRequest {
                app_id: bad,
                ..request()
            }),
            Err(BuildError::InvalidAppId),
            "{bad:?}"
        );
        assert_eq!(
            build_rtc_token(&RtcTokenRequest {
                app_certificate: bad,
                ..request()
            }),
            Err(BuildError::InvalidAppCertificate),
            "{bad:?}"
        );
    }
    // Case is kept, not rejected.
    assert!(
        build_rtc_token(&RtcTokenRequest {
            app_id: &APP_ID.to_uppercase(),
            ..request()
        })
        .is_ok()
    );
}

#[test]
fn a_token_needs_at_least_one_service() {
    let token: AccessToken2 = AccessToken2::new(APP_ID.to_owned(), 1, 1, 1);
    assert_eq!(token.build(CERT), Err(BuildError::NoServices));
}

#[test]
fn strings_up_to_65535_bytes_build_and_longer_ones_are_refused() {
    let max = "x".repeat(65_535);
    let token = build_rtc_token(&RtcTokenRequest {
        channel_name: &max,
        account: &max,
        ..request()
    })
    .unwrap();
    let decoded = decode(&token).unwrap();
    assert!(decoded.verify(CERT));
    assert!(
        matches!(&decoded.services()[0], Service::Rtc { channel_name, .. } if channel_name.len() == 65_535)
    );

    let over = "x".repeat(65_536);
    assert_eq!(
        build_rtc_token(&RtcTokenRequest {
            account: &over,
            ..request()
        }),
        Err(BuildError::StringTooLong {
            field: "account",
            len: 65_536
        })
    );
    assert_eq!(
        build_rtc_token(&RtcTokenRequest {
            channel_name: &over,
            ..request()
        }),
        Err(BuildError::StringTooLong {
            field: "channel name",
            len: 65_536
        })
    );
}

#[test]
fn a_privilege_map_with_every_u16_key_is_refused() {
    let mut token = AccessToken2::new(APP_ID.to_owned(), 1, 1, 1);
    token.add_service(Service::Fpa {
        privileges: (0..=u16::MAX).map(|k| (k, 1)).collect(),
    });
    assert!(matches!(
        token.build(CERT),
        Err(BuildError::TooManyEntries { count: 65_536, .. })
    ));
}

#[test]
fn malformed_strings_are_rejected_with_the_matching_error() {
    let valid = build_rtc_token(&request()).unwrap();
    let body = &valid[3..];
    type IsExpected = fn(&DecodeError) -> bool;
    let cases: Vec<(String, IsExpected)> = vec![
        (String::new(), |e| *e == DecodeError::UnsupportedVersion),
        ("00".into(), |e| *e == DecodeError::UnsupportedVersion),
        (format!("006{body}"), |e| {
            *e == DecodeError::UnsupportedVersion
        }),
        (format!(" 007{body}"), |e| {
            *e == DecodeError::UnsupportedVersion
        }),
        ("007".into(), |e| matches!(e, DecodeError::Zlib(_))),
        ("007!!!!".into(), |e| matches!(e, DecodeError::Base64(_))),
        (format!("{valid}\n"), |e| {
            matches!(e, DecodeError::Base64(_))
        }),
        (format!("007{}", URL_SAFE.encode(zlib(&[0xfb; 64]))), |e| {
            matches!(e, DecodeError::Base64(_))
        }),
        (format!("007{}", STANDARD.encode(b"not zlib at all")), |e| {
            matches!(e, DecodeError::Zlib(_))
        }),
        (format!("007{}", STANDARD.encode(zlib(b""))), |e| {
            *e == DecodeError::Truncated { field: "signature" }
        }),
        (format!("007{}", STANDARD.encode(zlib(&[32, 0, 1]))), |e| {
            *e == DecodeError::Truncated { field: "signature" }
        }),
        (
            format!("007{}", STANDARD.encode(zlib(&[0, 0, 2, 0, b'a']))),
            |e| *e == DecodeError::Truncated { field: "app id" },
        ),
    ];
    for (token, expected) in cases {
        let err = decode(&token).expect_err(&token);
        assert!(expected(&err), "{token:?} gave {err:?}");
    }
}

#[test]
fn bytes_after_the_zlib_stream_are_rejected() {
    let valid = build_rtc_token(&request()).unwrap();
    let mut compressed = STANDARD.decode(&valid[3..]).unwrap();
    compressed.push(0);
    let token = format!("007{}", STANDARD.encode(&compressed));
    assert!(matches!(decode(&token), Err(DecodeError::Zlib(_))));
}

#[test]
fn a_token_that_lost_its_base64_padding_still_decodes() {
    let mut padded = 0;
    for salt in 1..20 {
        let valid = build_rtc_token(&RtcTokenRequest { salt, ..request() }).unwrap();
        if !valid.ends_with('=') {
            continue;
        }
        padded += 1;
        let unpadded = valid.trim_end_matches('=');
        assert!(decode(unpadded).unwrap().verify(CERT));
        let compressed = STANDARD.decode(&valid[3..]).unwrap();
        assert_eq!(
            format!("007{}", STANDARD_NO_PAD.encode(&compressed)),
            unpadded
        );
    }
    assert!(padded > 0, "no padded token among the samples");
}

#[test]
fn a_zlib_bomb_is_refused_instead_of_inflated() {
    let bomb = zlib(&vec![0u8; MAX_PAYLOAD_LEN + 1]);
    let token = format!("007{}", STANDARD.encode(&bomb));
    assert_eq!(
        decode(&token),
        Err(DecodeError::TooLarge {
            limit: MAX_PAYLOAD_LEN
        })
    );
}

#[test]
fn non_utf8_token_bytes_are_rejected_not_panicked_on() {
    assert!(decode_bytes(b"007\xff\xfe").is_err());
    assert!(decode_bytes(b"\xff").is_err());
}

#[test]
fn random_salts_stay_in_the_node_range() {
    let salts: Vec<u32> = (0..20_000).map(|_| random_salt()).collect();
    assert!(salts.iter().all(|s| (1..=99_999_999).contains(s)));
    let distinct: std::collections::BTreeSet<_> = salts.iter().collect();
    assert!(distinct.len() > 19_000);
}

#[test]
fn roles_parse_from_names_and_agora_codes() {
    assert_eq!("publisher".parse(), Ok(RtcRole::Publisher));
    assert_eq!("Subscriber".parse(), Ok(RtcRole::Subscriber));
    assert_eq!("1".parse(), Ok(RtcRole::Publisher));
    assert_eq!("2".parse(), Ok(RtcRole::Subscriber));
    assert!("admin".parse::<RtcRole>().is_err());
    assert_eq!(RtcRole::Publisher.to_string(), "publisher");
    assert_eq!(RtcRole::Subscriber.code(), 2);
}

#[test]
fn subscriber_tokens_grant_only_join_and_publisher_tokens_all_four() {
    let sub = decode(&build_rtc_token(&request()).unwrap()).unwrap();
    let publisher = decode(
        &build_rtc_token(&RtcTokenRequest {
            role: RtcRole::Publisher,
            ..request()
        })
        .unwrap(),
    )
    .unwrap();
    assert_eq!(sub.services()[0].privileges(), &BTreeMap::from([(1, 600)]));
    assert_eq!(
        publisher.services()[0].privileges(),
        &BTreeMap::from([(1, 600), (2, 600), (3, 600), (4, 600)])
    );
}

#[test]
fn a_request_never_prints_its_certificate() {
    let printed = format!("{:?}", request());
    assert!(!printed.contains(CERT), "{printed}");
    assert!(printed.contains("alice"));
}
