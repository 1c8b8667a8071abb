//! The device registry's model: what an app registers, validated at the edge (pure code).
//!
//! CONTRACT section 8: `deviceId` is chosen by the app (1..=128 of `[A-Za-z0-9._:-]`);
//! `pushToken` is the APNs device token (hex) or the FCM registration token; `voipToken` the
//! PushKit token (iOS only); `bundleId` defaults to `APNS_BUNDLE_ID`.

use common::error::FieldError;
use serde::{Deserialize, Serialize};

/// APNs tokens are 32 bytes today; Apple says their length may change, so anything up to 100
/// bytes (200 hex digits) of whole bytes is accepted.
const APNS_TOKEN_HEX: std::ops::RangeInclusive<usize> = 16..=200;
/// FCM registration tokens are opaque, about 160 characters today.
const MAX_FCM_TOKEN_LEN: usize = 4096;
/// Reverse-DNS bundle ids are at most 155 characters (Apple).
const MAX_BUNDLE_ID_LEN: usize = 155;

pub use common::ids::DeviceId;

/// The phone's operating system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// iPhone, iPad.
    Ios,
    /// Android.
    Android,
}

impl Platform {
    /// The wire and stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Ios => "ios",
            Platform::Android => "android",
        }
    }

    /// The stored form back.
    pub fn parse(s: &str) -> Option<Platform> {
        match s {
            "ios" => Some(Platform::Ios),
            "android" => Some(Platform::Android),
            _ => None,
        }
    }
}

/// Who carries the device's visible pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PushProvider {
    /// Apple Push Notification service (iOS).
    Apns,
    /// Firebase Cloud Messaging (Android; also iOS apps that use Firebase for alerts).
    Fcm,
}

impl PushProvider {
    /// The wire and stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            PushProvider::Apns => "apns",
            PushProvider::Fcm => "fcm",
        }
    }

    /// The stored form back.
    pub fn parse(s: &str) -> Option<PushProvider> {
        match s {
            "apns" => Some(PushProvider::Apns),
            "fcm" => Some(PushProvider::Fcm),
            _ => None,
        }
    }
}

/// `PUT /api/v1/devices/:deviceId` body.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegisterDevice {
    /// `ios` or `android`.
    pub platform: Platform,
    /// `apns` (iOS) or `fcm` (Android, or iOS apps using Firebase for alerts).
    pub push_provider: PushProvider,
    /// The APNs device token (hex) or the FCM registration token.
    pub push_token: String,
    /// The PushKit VoIP token (hex), iOS only: incoming calls ring through it.
    #[serde(default)]
    pub voip_token: Option<String>,
    /// The app's bundle id; default `APNS_BUNDLE_ID`.
    #[serde(default)]
    pub bundle_id: Option<String>,
}

/// A registration that passed validation (tokens normalised: APNs hex lower-case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The OS.
    pub platform: Platform,
    /// The provider of `push_token`.
    pub push_provider: PushProvider,
    /// The push token.
    pub push_token: String,
    /// The VoIP token.
    pub voip_token: Option<String>,
    /// The bundle id, when given.
    pub bundle_id: Option<String>,
}

impl RegisterDevice {
    /// Checks the rules serde cannot: token formats, which provider fits which platform.
    pub fn validate(self) -> Result<Registration, Vec<FieldError>> {
        let mut errors = Vec::new();
        if self.platform == Platform::Android && self.push_provider == PushProvider::Apns {
            errors.push(FieldError::new(
                "pushProvider",
                "Android devices receive pushes through fcm",
            ));
        }
        let push_token = match self.push_provider {
            PushProvider::Apns => apns_token(&self.push_token),
            PushProvider::Fcm => fcm_token(&self.push_token),
        }
        .map_err(|m| errors.push(FieldError::new("pushToken", m)))
        .ok();
        let voip_token = match (&self.voip_token, self.platform) {
            (None, _) => None,
            (Some(_), Platform::Android) => {
                errors.push(FieldError::new(
                    "voipToken",
                    "VoIP tokens are for iOS (PushKit); Android devices ring through pushToken",
                ));
                None
            }
            (Some(t), Platform::Ios) => apns_token(t)
                .map_err(|m| errors.push(FieldError::new("voipToken", m)))
                .ok(),
        };
        let bundle_id = match &self.bundle_id {
            None => None,
            Some(b) if valid_bundle_id(b) => Some(b.clone()),
            Some(_) => {
                errors.push(FieldError::new(
                    "bundleId",
                    "must be a reverse-DNS bundle id of letters, digits, . and -",
                ));
                None
            }
        };
        match (errors.is_empty(), push_token) {
            (true, Some(push_token)) => Ok(Registration {
                platform: self.platform,
                push_provider: self.push_provider,
                push_token,
                voip_token,
                bundle_id,
            }),
            _ => Err(errors),
        }
    }
}

fn apns_token(token: &str) -> Result<String, &'static str> {
    let len = token.len();
    if !APNS_TOKEN_HEX.contains(&len) || !len.is_multiple_of(2) {
        return Err("must be an APNs device token: 32 to 200 hexadecimal digits");
    }
    if !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("must be an APNs device token: hexadecimal digits only");
    }
    Ok(token.to_ascii_lowercase())
}

fn fcm_token(token: &str) -> Result<String, &'static str> {
    if token.is_empty() || token.len() > MAX_FCM_TOKEN_LEN {
        return Err("must be an FCM registration token (1 to 4096 characters)");
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'))
    {
        return Err("must be an FCM registration token: letters, digits and _ - : . only");
    }
    Ok(token.to_owned())
}

fn valid_bundle_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_BUNDLE_ID_LEN
        && id.split('.').all(|part| {
            !part.is_empty() && part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// A registered device, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// The app-chosen id.
    #[schema(value_type = String, example = "iphone-8F2C")]
    pub device_id: DeviceId,
    /// `ios` or `android`.
    pub platform: Platform,
    /// `apns` or `fcm`.
    pub push_provider: PushProvider,
    /// The push token.
    pub push_token: String,
    /// The PushKit VoIP token (iOS).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voip_token: Option<String>,
    /// The bundle id, when registered with one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bundle_id: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// A token for logs: never whole (CONTRACT section 8), enough to tell two apart.
pub fn redact_token(token: &str) -> String {
    let head: String = token.chars().take(6).collect();
    format!("{head}…({} chars)", token.chars().count())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn body(platform: Platform, provider: PushProvider, token: &str) -> RegisterDevice {
        RegisterDevice {
            platform,
            push_provider: provider,
            push_token: token.to_owned(),
            voip_token: None,
            bundle_id: None,
        }
    }

    const HEX: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

    #[test]
    fn device_ids_are_short_and_of_a_safe_alphabet() {
        assert!(DeviceId::parse("iphone-8F2C:main_1.2").is_ok());
        assert!(DeviceId::parse("").is_err());
        assert!(DeviceId::parse(&"a".repeat(129)).is_err());
        assert!(DeviceId::parse(&"a".repeat(128)).is_ok());
        assert!(DeviceId::parse("my phone").is_err());
        assert!(DeviceId::parse("a/b").is_err());
    }

    #[test]
    fn an_iphone_with_a_voip_token_is_accepted_and_hex_is_lower_cased() {
        let mut b = body(Platform::Ios, PushProvider::Apns, &HEX.to_uppercase());
        b.voip_token = Some(HEX.to_owned());
        b.bundle_id = Some("com.example.chat".into());
        let r = b.validate().unwrap();
        assert_eq!(r.push_token, HEX);
        assert_eq!(r.voip_token.as_deref(), Some(HEX));
    }

    #[test]
    fn an_apns_token_that_is_not_hex_is_refused() {
        let errors = body(Platform::Ios, PushProvider::Apns, &"zz".repeat(32))
            .validate()
            .unwrap_err();
        assert_eq!(errors[0].field, "pushToken");
        let errors = body(Platform::Ios, PushProvider::Apns, "abc")
            .validate()
            .unwrap_err();
        assert_eq!(errors[0].field, "pushToken");
    }

    #[test]
    fn a_voip_token_on_android_is_refused() {
        let mut b = body(Platform::Android, PushProvider::Fcm, "fcm-token:APA91b");
        b.voip_token = Some(HEX.to_owned());
        let errors = b.validate().unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].field, "voipToken");
    }

    #[test]
    fn android_cannot_use_apns_and_fcm_tokens_keep_their_alphabet() {
        let errors = body(Platform::Android, PushProvider::Apns, HEX)
            .validate()
            .unwrap_err();
        assert_eq!(errors[0].field, "pushProvider");
        assert!(
            body(Platform::Android, PushProvider::Fcm, "bad token")
                .validate()
                .is_err()
        );
        assert!(
            body(Platform::Ios, PushProvider::Fcm, "dGVzdA:APA91bH-x_y.z")
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn bundle_ids_must_be_reverse_dns() {
        let mut b = body(Platform::Ios, PushProvider::Apns, HEX);
        b.bundle_id = Some("com..example".into());
        assert_eq!(b.validate().unwrap_err()[0].field, "bundleId");
    }

    #[test]
    fn tokens_are_never_logged_whole() {
        let shown = redact_token(HEX);
        assert!(!shown.contains(&HEX[6..]));
        assert!(shown.starts_with("a1b2c3"));
    }
}
