//! A JSON-friendly view of a decoded token, for `media-token inspect` and logs.
//!
//! ```json
//! {"version":"007","appId":"...","issueTs":1111111,"expire":600,"expiresAt":1111711,"salt":1,
//!  "services":[{"type":"rtc","serviceType":1,"channelName":"...","account":"...",
//!               "privileges":{"joinChannel":{"expire":600,"expiresAt":1111711}}}],
//!  "signatureValid":true}
//! ```

use std::borrow::Cow;

use serde::Serialize;
use serde::ser::{SerializeMap as _, Serializer};

use crate::builder::VERSION;
use crate::decode::DecodedToken;
use crate::service::{
    Rtm2Permissions, Service, ServiceOf, privilege_name, rtm2_permission_type_name,
    rtm2_resource_type_name,
};

/// What [`DecodedToken::inspect`] returns; serialises to camelCase JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inspection {
    /// Always `"007"`.
    pub version: &'static str,
    /// App id (lossy UTF-8).
    pub app_id: String,
    /// Unix seconds.
    pub issue_ts: u32,
    /// Lifetime in seconds from `issue_ts`.
    pub expire: u32,
    /// `issue_ts + expire`.
    pub expires_at: u64,
    /// Key-derivation salt.
    pub salt: u32,
    /// Parsed services, in token order.
    pub services: Vec<ServiceInspection>,
    /// Present when parsing stopped at a service type this crate does not know.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unknown_service_type: Option<u16>,
    /// `None` (JSON `null`) when no certificate was given.
    pub signature_valid: Option<bool>,
}

/// One service: `type`, `serviceType`, the type's own fields, then `privileges`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceInspection {
    /// The service with its strings (lossy UTF-8).
    pub service: Service,
    /// Its privileges, ascending by id, with their absolute end times.
    pub privileges: Vec<PrivilegeInspection>,
}

/// One privilege of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivilegeInspection {
    /// Privilege id.
    pub id: u16,
    /// camelCase name from SPEC §3, or the id as a decimal string when undocumented.
    pub name: Cow<'static, str>,
    /// The stored value: seconds from the token's `issueTs`.
    pub expire: u32,
    /// When the privilege ends (unix seconds): `issueTs + expire`, except that 0 ("no limit of
    /// its own") and values past the token's expiry end with the token.
    pub expires_at: u64,
}

impl DecodedToken {
    /// A serialisable summary; `signatureValid` is checked only when a certificate is given.
    pub fn inspect(&self, app_certificate: Option<&str>) -> Inspection {
        let token_expires_at = self.expires_at();
        let services = self
            .services()
            .iter()
            .map(|service| ServiceInspection {
                privileges: service
                    .privileges()
                    .iter()
                    .map(|(&id, &expire)| PrivilegeInspection {
                        id,
                        name: privilege_name(service.service_type(), id)
                            .map_or_else(|| Cow::Owned(id.to_string()), Cow::Borrowed),
                        expire,
                        expires_at: if expire == 0 || expire > self.expire() {
                            token_expires_at
                        } else {
                            u64::from(self.issue_ts()) + u64::from(expire)
                        },
                    })
                    .collect(),
                service: service.clone(),
            })
            .collect();
        Inspection {
            version: VERSION,
            app_id: self.app_id().to_owned(),
            issue_ts: self.issue_ts(),
            expire: self.expire(),
            expires_at: token_expires_at,
            salt: self.salt(),
            services,
            unknown_service_type: self.unknown_service_type(),
            signature_valid: app_certificate.map(|cert| self.verify(cert)),
        }
    }
}

impl Serialize for ServiceInspection {
    // Hand-written so that the keys come out in a fixed, readable order and the type-specific
    // fields sit between `serviceType` and `privileges`.
    fn serialize<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("type", self.service.name())?;
        map.serialize_entry("serviceType", &self.service.service_type())?;
        match &self.service {
            ServiceOf::Rtc {
                channel_name,
                account,
                ..
            }
            | ServiceOf::Streaming {
                channel_name,
                account,
                ..
            }
            | ServiceOf::Fcdn {
                channel_name,
                account,
                ..
            } => {
                map.serialize_entry("channelName", channel_name)?;
                map.serialize_entry("account", account)?;
            }
            ServiceOf::Rtm { user_id, .. } | ServiceOf::Chat { user_id, .. } => {
                map.serialize_entry("userId", user_id)?;
            }
            ServiceOf::Apaas {
                room_uuid,
                user_uuid,
                role,
                ..
            } => {
                map.serialize_entry("roomUuid", room_uuid)?;
                map.serialize_entry("userUuid", user_uuid)?;
                map.serialize_entry("role", role)?;
            }
            ServiceOf::Rtm2 {
                user_id,
                permissions,
                ..
            } => {
                map.serialize_entry("userId", user_id)?;
                map.serialize_entry("permissions", &Rtm2Json(permissions))?;
            }
            ServiceOf::Fpa { .. } | ServiceOf::ConvoAi { .. } | ServiceOf::Stt { .. } => {}
        }
        map.serialize_entry("privileges", &PrivilegesJson(&self.privileges))?;
        map.end()
    }
}

/// `{"joinChannel": {"expire": 600, "expiresAt": 1111711}, ...}` in id order.
struct PrivilegesJson<'a>(&'a [PrivilegeInspection]);

impl Serialize for PrivilegesJson<'_> {
    fn serialize<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Entry {
            expire: u32,
            expires_at: u64,
        }
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for p in self.0 {
            map.serialize_entry(
                &p.name,
                &Entry {
                    expire: p.expire,
                    expires_at: p.expires_at,
                },
            )?;
        }
        map.end()
    }
}

/// `{"messageChannels": {"read": ["a", "b"]}}`, unknown types as their number.
struct Rtm2Json<'a>(&'a Rtm2Permissions<String>);

impl Serialize for Rtm2Json<'_> {
    fn serialize<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
        struct Perms<'a>(&'a std::collections::BTreeMap<u16, Vec<String>>);
        impl Serialize for Perms<'_> {
            fn serialize<Ser: Serializer>(&self, serializer: Ser) -> Result<Ser::Ok, Ser::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for (&perm, items) in self.0 {
                    map.serialize_entry(
                        &name_or_number(rtm2_permission_type_name(perm), perm),
                        items,
                    )?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (&resource, perms) in self.0 {
            map.serialize_entry(
                &name_or_number(rtm2_resource_type_name(resource), resource),
                &Perms(perms),
            )?;
        }
        map.end()
    }
}

fn name_or_number(name: Option<&'static str>, id: u16) -> Cow<'static, str> {
    name.map_or_else(|| Cow::Owned(id.to_string()), Cow::Borrowed)
}
