//! Taking someone out of a call's Agora channel, through Agora's kicking-rule RESTful API
//! (`POST {AGORA_REST_URL}/dev/v1/kicking-rule`, CONTRACT section 11).
//!
//! A rule names the App ID, the channel (`call_<callId>`), the user's uid and the privilege
//! `join_channel`: Agora takes that uid out of that channel. With `time_in_seconds` 0 it may
//! come back at once (our token rules then decide: someone who is not a joined participant
//! gets no new token, and a join with an old one is kicked again); otherwise it is banned from
//! the channel for that long. Authenticated with HTTP Basic from the customer id and secret.
//!
//! What Agora answers decides what happens next: 200 with `{"status": "success"}` is done;
//! 401/403 (credentials) and other 4xx (the request itself) will not get better by repeating
//! it; 429 (Agora allows 10 such requests a second per account), 5xx, timeouts and connection
//! errors are retried by the worker with backoff.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::AgoraRestConfig;

/// How long one request may take. Agora advises at least 5 s, better 20, for creating rules
/// (the answer can be slow when the public network is poor).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a kick was not sent.
#[derive(Debug, thiserror::Error)]
pub enum KickError {
    /// Agora refused our credentials (401/403): a configuration problem.
    #[error(
        "Agora refused the credentials ({status}): check AGORA_CUSTOMER_ID / AGORA_CUSTOMER_SECRET"
    )]
    Unauthorized {
        /// The HTTP status.
        status: u16,
    },
    /// Agora refused the request itself (another 4xx); repeating it will not help.
    #[error("Agora refused the kicking rule ({status}): {message}")]
    Rejected {
        /// The HTTP status.
        status: u16,
        /// Agora's `message`, or the body's start.
        message: String,
    },
    /// Worth trying again later: rate limited, Agora unavailable, the network.
    #[error("kicking rule not created, will retry: {0}")]
    Transient(String),
}

impl KickError {
    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }

    /// The metric label of this failure.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unauthorized { .. } => "unauthorized",
            Self::Rejected { .. } => "rejected",
            Self::Transient(_) => "transient",
        }
    }
}

#[derive(Serialize)]
struct KickingRule<'a> {
    appid: &'a str,
    cname: &'a str,
    uid: u32,
    time_in_seconds: u32,
    privileges: [&'static str; 1],
}

#[derive(Deserialize)]
struct RuleCreated {
    status: Option<String>,
    id: Option<u64>,
}

#[derive(Deserialize)]
struct Failure {
    message: Option<String>,
}

/// A client of Agora's kicking-rule API.
#[derive(Clone)]
pub struct AgoraKicker {
    http: reqwest::Client,
    endpoint: String,
    app_id: String,
    customer_id: String,
    customer_secret: common::config::Secret,
    ban_seconds: u32,
}

impl std::fmt::Debug for AgoraKicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgoraKicker")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl AgoraKicker {
    /// A client for `config`, or `None` while kicking is not configured.
    pub fn new(config: &AgoraRestConfig) -> Option<Self> {
        let (Some(app_id), Some(customer_id), Some(secret)) = (
            config.app_id.clone(),
            config.customer_id.clone(),
            config.customer_secret.clone(),
        ) else {
            return None;
        };
        let http = match reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .build()
        {
            Ok(http) => http,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the HTTP client for Agora's RESTful API: kicks are off");
                return None;
            }
        };
        Some(Self {
            http,
            endpoint: format!(
                "{}/dev/v1/kicking-rule",
                config.rest_url.trim_end_matches('/')
            ),
            app_id,
            customer_id,
            customer_secret: secret,
            ban_seconds: config.ban_seconds,
        })
    }

    /// Creates the rule that takes `uid` out of `channel`; returns Agora's rule id.
    pub async fn kick(&self, channel: &str, uid: u32) -> Result<Option<u64>, KickError> {
        let rule = KickingRule {
            appid: &self.app_id,
            cname: channel,
            uid,
            time_in_seconds: self.ban_seconds,
            privileges: ["join_channel"],
        };
        let response = self
            .http
            .post(&self.endpoint)
            .basic_auth(&self.customer_id, Some(self.customer_secret.expose()))
            .json(&rule)
            .send()
            .await
            .map_err(|e| KickError::Transient(describe(&e)))?;
        let status = response.status();
        let body = response.bytes().await.unwrap_or_default();
        if status.is_success() {
            return match serde_json::from_slice::<RuleCreated>(&body) {
                Ok(RuleCreated {
                    status: Some(s),
                    id,
                }) if s == "success" => Ok(id),
                _ => Err(KickError::Transient(format!(
                    "unexpected answer {status}: {}",
                    excerpt(&body)
                ))),
            };
        }
        let code = status.as_u16();
        if code == 401 || code == 403 {
            return Err(KickError::Unauthorized { status: code });
        }
        if code == 429 || status.is_server_error() || code == 408 {
            return Err(KickError::Transient(format!(
                "{status}: {}",
                excerpt(&body)
            )));
        }
        let message = serde_json::from_slice::<Failure>(&body)
            .ok()
            .and_then(|f| f.message)
            .unwrap_or_else(|| excerpt(&body));
        Err(KickError::Rejected {
            status: code,
            message,
        })
    }
}

/// What kind of failure, and reqwest's words (the URL has no credentials in it).
fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    format!("{kind}: {error}")
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    text.chars().take(200).collect()
}
