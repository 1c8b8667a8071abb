//! The push providers, as configured: APNs and FCM clients built from the key files, and the
//! translation of a stored [`PushRequest`] into a provider request.

use std::time::Duration;

use calls_push::PushOutcome;
use calls_push::apns::{ApnsClient, ApnsConfig, ApnsNotification, ApnsPriority, ApnsPushType};
use calls_push::fcm::{
    AndroidPriority, FcmClient, FcmConfig, FcmMessage, FcmNotification, ServiceAccountKey,
};
use common::config::Secret;

use crate::config::PushConfig;
use crate::plan::PushRequest;

/// The configured providers; a provider that is `None` is off.
#[derive(Clone, Default)]
pub struct Pushers {
    apns: Option<ApnsClient>,
    fcm: Option<FcmClient>,
    /// `APNS_BUNDLE_ID`.
    pub default_bundle: Option<String>,
}

/// Why the providers could not be set up; messages name the variable, never a secret.
#[derive(Debug, thiserror::Error)]
pub enum PushersError {
    /// The APNs key file cannot be read or is not a P-256 key.
    #[error("APNS_KEY_FILE: {0}")]
    Apns(String),
    /// The service-account file cannot be read or parsed.
    #[error("FCM_SERVICE_ACCOUNT_FILE: {0}")]
    Fcm(String),
}

/// What a send came to, beyond the provider's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The provider answered (or the attempt failed in a way it classifies).
    Outcome(PushOutcome),
    /// The provider is not configured: nothing was sent.
    Skipped,
}

impl Pushers {
    /// Builds the clients of every configured provider.
    pub fn from_config(config: &PushConfig) -> Result<Pushers, PushersError> {
        let timeout = Duration::from_millis(config.push_timeout_ms);
        let apns = match (
            &config.apns_key_file,
            &config.apns_key_id,
            &config.apns_team_id,
        ) {
            (Some(file), Some(key_id), Some(team_id)) => {
                let pem = std::fs::read_to_string(file).map_err(|e| {
                    PushersError::Apns(format!("cannot read {}: {e}", file.display()))
                })?;
                let mut apns = ApnsConfig::new(
                    Secret::new(pem),
                    key_id.clone(),
                    team_id.clone(),
                    config.apns_environment,
                );
                apns.base_url = config.apns_url.clone();
                apns.timeout = timeout;
                Some(ApnsClient::new(apns).map_err(|e| PushersError::Apns(e.to_string()))?)
            }
            _ => None,
        };
        let fcm = match &config.fcm_service_account_file {
            Some(file) => {
                let key = ServiceAccountKey::from_file(file)
                    .map_err(|e| PushersError::Fcm(e.to_string()))?;
                let mut fcm = FcmConfig::new(key);
                fcm.base_url = config.fcm_url.clone();
                fcm.timeout = timeout;
                Some(FcmClient::new(fcm).map_err(|e| PushersError::Fcm(e.to_string()))?)
            }
            None => None,
        };
        Ok(Pushers {
            apns,
            fcm,
            default_bundle: config.apns_bundle_id.clone(),
        })
    }

    /// Whether APNs is configured.
    pub fn apns_enabled(&self) -> bool {
        self.apns.is_some()
    }

    /// Whether FCM is configured.
    pub fn fcm_enabled(&self) -> bool {
        self.fcm.is_some()
    }

    /// Sends `request` to `token`; an FCM message's TTL is the time left to `deadline_ms`.
    pub async fn send(
        &self,
        token: &str,
        request: &PushRequest,
        deadline_ms: i64,
        now_ms: i64,
    ) -> Sent {
        match request {
            PushRequest::Apns {
                topic,
                push_type,
                priority,
                expiration,
                collapse_id,
                payload,
            } => {
                let Some(apns) = &self.apns else {
                    return Sent::Skipped;
                };
                let notification = ApnsNotification {
                    device_token: token.to_owned(),
                    topic: topic.clone(),
                    push_type: if push_type == "voip" {
                        ApnsPushType::Voip
                    } else {
                        ApnsPushType::Alert
                    },
                    priority: if *priority >= 10 {
                        ApnsPriority::High
                    } else {
                        ApnsPriority::Normal
                    },
                    expiration: expiration.and_then(|e| u64::try_from(e).ok()),
                    collapse_id: collapse_id.clone(),
                    apns_id: None,
                    payload: payload.clone(),
                };
                Sent::Outcome(apns.send(&notification).await)
            }
            PushRequest::Fcm { data, notification } => {
                let Some(fcm) = &self.fcm else {
                    return Sent::Skipped;
                };
                let left = u64::try_from((deadline_ms - now_ms).max(0)).unwrap_or(0);
                let message = FcmMessage {
                    token: token.to_owned(),
                    data: data.clone(),
                    priority: AndroidPriority::High,
                    // Whole seconds, at least one: FCM treats 0 as "now or never", which a
                    // phone waking a moment later would miss.
                    ttl: Some(Duration::from_secs(left.div_ceil(1000).max(1))),
                    notification: notification.as_ref().map(|(title, body)| FcmNotification {
                        title: title.clone(),
                        body: body.clone(),
                    }),
                };
                Sent::Outcome(fcm.send(&message).await)
            }
        }
    }
}
