//! The one place that holds the Agora app certificate and turns a token request into a token.
//!
//! Both the gRPC service and the standalone binary's in-process path sign through [`Signer`], so
//! validation, TTL limits and expiry arithmetic are the same everywhere.

use std::time::{SystemTime, UNIX_EPOCH};

use agora_token::{RtcRole, RtcTokenRequest};
use common::config::Secret;

use crate::config::AgoraConfig;
use crate::validate;

/// Longest token lifetime we sign: Agora documents 24 hours as the maximum.
pub const MAX_TTL_SECONDS: u32 = 86_400;

/// Who the token is for: a string account, or a numeric uid (0 = any uid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    Account(String),
    Uid(u32),
}

/// A request to sign an RTC token.
#[derive(Clone, Debug)]
pub struct RtcTokenSpec {
    pub channel_name: String,
    pub identity: Identity,
    pub role: RtcRole,
    /// `None` means the configured default (`AGORA_TOKEN_TTL_SECONDS`).
    pub token_ttl: Option<u32>,
    /// `None` means the same as the token lifetime.
    pub privilege_ttl: Option<u32>,
}

/// A signed token and what the caller needs to use it.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub token: String,
    pub app_id: String,
    pub issued_at: u32,
    /// Unix seconds.
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("media provider not configured: set AGORA_APP_ID and AGORA_APP_CERTIFICATE")]
    NotConfigured,
    #[error("{0}")]
    InvalidArgument(String),
    #[error("token could not be built: {0}")]
    Build(#[from] agora_token::BuildError),
}

/// Signs Agora RTC tokens with the configured app id and certificate.
#[derive(Clone)]
pub struct Signer {
    credentials: Option<(String, Secret)>,
    default_ttl: u32,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("app_id", &self.app_id())
            .field("default_ttl", &self.default_ttl)
            .finish_non_exhaustive()
    }
}

impl Signer {
    pub fn new(config: &AgoraConfig) -> Self {
        let credentials = match (&config.app_id, &config.app_certificate) {
            (Some(id), Some(cert)) => Some((id.clone(), cert.clone())),
            _ => None,
        };
        Signer {
            credentials,
            default_ttl: config.token_ttl_seconds,
        }
    }

    pub fn app_id(&self) -> Option<&str> {
        self.credentials.as_ref().map(|(id, _)| id.as_str())
    }

    /// The certificate, for verifying tokens; never leaves this crate's callers' process.
    pub(crate) fn certificate(&self) -> Option<&Secret> {
        self.credentials.as_ref().map(|(_, cert)| cert)
    }

    pub fn default_ttl(&self) -> u32 {
        self.default_ttl
    }

    /// Validates the request against Agora's limits and signs it, issued now.
    pub fn issue(&self, spec: &RtcTokenSpec) -> Result<IssuedToken, SignError> {
        self.issue_at(spec, unix_now())
    }

    pub fn issue_at(&self, spec: &RtcTokenSpec, now: u32) -> Result<IssuedToken, SignError> {
        let (app_id, cert) = self.credentials.as_ref().ok_or(SignError::NotConfigured)?;
        validate::channel_name(&spec.channel_name).map_err(SignError::InvalidArgument)?;
        let account = match &spec.identity {
            Identity::Account(account) => {
                validate::account(account).map_err(SignError::InvalidArgument)?;
                account.clone()
            }
            Identity::Uid(uid) => agora_token::account_for_uid(*uid),
        };
        let token_ttl = match spec.token_ttl {
            None | Some(0) => self.default_ttl,
            Some(ttl) if ttl > MAX_TTL_SECONDS => {
                return Err(SignError::InvalidArgument(format!(
                    "token ttl {ttl}s is over the maximum of {MAX_TTL_SECONDS}s"
                )));
            }
            Some(ttl) => ttl,
        };
        let privilege_ttl = match spec.privilege_ttl {
            None | Some(0) => token_ttl,
            Some(ttl) if ttl > token_ttl => {
                return Err(SignError::InvalidArgument(format!(
                    "privilege ttl {ttl}s is longer than the token ttl {token_ttl}s"
                )));
            }
            Some(ttl) => ttl,
        };
        let token = agora_token::build_rtc_token(&RtcTokenRequest {
            app_id,
            app_certificate: cert.expose(),
            channel_name: &spec.channel_name,
            account: &account,
            role: spec.role,
            token_expire: token_ttl,
            privilege_expire: privilege_ttl,
            issue_ts: now,
            salt: agora_token::random_salt(),
        })?;
        Ok(IssuedToken {
            token,
            app_id: app_id.clone(),
            issued_at: now,
            expires_at: i64::from(now) + i64::from(token_ttl),
        })
    }
}

/// Seconds since the epoch as AccessToken2 stores them (u32, good until 2106).
pub fn unix_now() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// Formats unix seconds as RFC 3339 UTC (`2026-02-24T12:00:00Z`).
pub fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const APP_ID: &str = "970CA35de60c44645bbae8a215061b33";
    const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";

    fn signer() -> Signer {
        Signer::new(&AgoraConfig {
            app_id: Some(APP_ID.into()),
            app_certificate: Some(CERT.parse().unwrap()),
            token_ttl_seconds: 3600,
        })
    }

    fn spec(identity: Identity) -> RtcTokenSpec {
        RtcTokenSpec {
            channel_name: "call_1".into(),
            identity,
            role: RtcRole::Publisher,
            token_ttl: None,
            privilege_ttl: None,
        }
    }

    #[test]
    fn a_signed_token_verifies_and_carries_the_default_ttl() {
        let issued = signer()
            .issue_at(&spec(Identity::Account("u1".into())), 1_700_000_000)
            .unwrap();
        assert_eq!(issued.expires_at, 1_700_003_600);
        let decoded = agora_token::decode(&issued.token).unwrap();
        assert!(decoded.verify(CERT));
        assert_eq!(decoded.expire(), 3600);
        assert_eq!(decoded.issue_ts(), 1_700_000_000);
    }

    #[test]
    fn uid_zero_means_any_uid() {
        let issued = signer()
            .issue_at(&spec(Identity::Uid(0)), 1_700_000_000)
            .unwrap();
        let decoded = agora_token::decode(&issued.token).unwrap();
        match &decoded.services()[0] {
            agora_token::Service::Rtc { account, .. } => assert_eq!(account, ""),
            other => panic!("unexpected service {other:?}"),
        }
    }

    #[test]
    fn an_unconfigured_signer_refuses_to_sign() {
        let signer = Signer::new(&AgoraConfig {
            app_id: None,
            app_certificate: None,
            token_ttl_seconds: 3600,
        });
        assert!(matches!(
            signer.issue(&spec(Identity::Uid(1))),
            Err(SignError::NotConfigured)
        ));
    }

    #[test]
    fn ttls_over_a_day_or_privileges_outliving_the_token_are_refused() {
        let mut s = spec(Identity::Uid(1));
        s.token_ttl = Some(86_401);
        assert!(matches!(
            signer().issue(&s),
            Err(SignError::InvalidArgument(_))
        ));
        s.token_ttl = Some(600);
        s.privilege_ttl = Some(601);
        assert!(matches!(
            signer().issue(&s),
            Err(SignError::InvalidArgument(_))
        ));
    }

    #[test]
    fn the_certificate_never_appears_in_debug_output() {
        let text = format!("{:?}", signer());
        assert!(!text.contains(CERT));
    }
}
