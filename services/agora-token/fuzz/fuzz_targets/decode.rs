//! Feeds arbitrary bytes to the parser twice: as a token string (exercising the version check,
//! base64 and zlib) and as an already-inflated payload (so the fuzzer reaches the field parser
//! without first having to discover valid zlib). Any panic is a bug: `decode` must reject
//! garbage with an error.
#![no_main]

use agora_token::{DecodedToken, ServiceOf, decode_bytes};
use libfuzzer_sys::fuzz_target;

const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = decode_bytes(data) {
        exercise(&token);
    }
    if let Ok(token) = DecodedToken::from_payload(data.to_vec()) {
        exercise(&token);
    }
});

fn exercise(token: &DecodedToken) {
    let _ = token.verify(CERT);
    let _ = token.verify("");
    let _ = token.signature();
    let _ = token.expires_at();
    for cert in [None, Some(CERT)] {
        let json =
            serde_json::to_string(&token.inspect(cert)).expect("an inspection always serialises");
        assert!(json.starts_with("{\"version\":\"007\""));
    }

    // Differential check: building from the parsed fields and parsing again gives the same
    // fields (bytes may differ: duplicate or unsorted keys are normalised by the parse).
    if let Ok(rebuilt) = token.to_builder().build_payload(CERT) {
        let rebuilt = DecodedToken::from_payload(rebuilt).expect("our own payload parses");
        assert!(rebuilt.verify(CERT));
        assert_eq!(rebuilt.app_id(), token.app_id());
        assert_eq!(
            (rebuilt.issue_ts(), rebuilt.expire(), rebuilt.salt()),
            (token.issue_ts(), token.expire(), token.salt())
        );
        let mut expected = token.raw_services().to_vec();
        expected.sort_by_key(ServiceOf::service_type);
        assert_eq!(rebuilt.raw_services(), &expected[..]);
    }
}
