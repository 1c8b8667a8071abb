//! Each service's wire layout, written ([`ServiceOf::encode`]) and read ([`RawService::decode`]).

use super::{RawService, Rtm2Permissions, ServiceOf, service_type, service_type_name};
use crate::wire::{Reader, put_bytes, put_count, put_i16, put_map_u32, put_u16};
use crate::{BuildError, DecodeError};

impl<S: AsRef<[u8]>> ServiceOf<S> {
    /// Appends `u16 type || map_u32(privileges) || fields`.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) -> Result<(), BuildError> {
        put_u16(out, self.service_type());
        put_map_u32(out, self.privileges(), "privileges")?;
        match self {
            Self::Rtc {
                channel_name,
                account,
                ..
            }
            | Self::Streaming {
                channel_name,
                account,
                ..
            }
            | Self::Fcdn {
                channel_name,
                account,
                ..
            } => {
                put_bytes(out, channel_name.as_ref(), "channel name")?;
                put_bytes(out, account.as_ref(), "account")?;
            }
            Self::Rtm { user_id, .. } | Self::Chat { user_id, .. } => {
                put_bytes(out, user_id.as_ref(), "user id")?;
            }
            Self::Apaas {
                room_uuid,
                user_uuid,
                role,
                ..
            } => {
                put_bytes(out, room_uuid.as_ref(), "room uuid")?;
                put_bytes(out, user_uuid.as_ref(), "user uuid")?;
                put_i16(out, *role);
            }
            Self::Rtm2 {
                user_id,
                permissions,
                ..
            } => {
                put_bytes(out, user_id.as_ref(), "user id")?;
                put_count(out, permissions.len(), "RTM2 resource types")?;
                for (&resource_type, perms) in permissions {
                    put_u16(out, resource_type);
                    put_count(out, perms.len(), "RTM2 permission types")?;
                    for (&permission_type, items) in perms {
                        put_u16(out, permission_type);
                        put_count(out, items.len(), "RTM2 resources")?;
                        for item in items {
                            put_bytes(out, item.as_ref(), "RTM2 resource")?;
                        }
                    }
                }
            }
            Self::Fpa { .. } | Self::ConvoAi { .. } | Self::Stt { .. } => {}
        }
        Ok(())
    }

    /// A cheap over-estimate of the encoded size, to size the payload buffer once.
    pub(crate) fn size_hint(&self) -> usize {
        let strings = match self {
            Self::Rtc {
                channel_name,
                account,
                ..
            }
            | Self::Streaming {
                channel_name,
                account,
                ..
            }
            | Self::Fcdn {
                channel_name,
                account,
                ..
            } => 4 + channel_name.as_ref().len() + account.as_ref().len(),
            Self::Rtm { user_id, .. } | Self::Chat { user_id, .. } => 2 + user_id.as_ref().len(),
            Self::Apaas {
                room_uuid,
                user_uuid,
                ..
            } => 6 + room_uuid.as_ref().len() + user_uuid.as_ref().len(),
            Self::Rtm2 {
                user_id,
                permissions,
                ..
            } => {
                let tree: usize = permissions
                    .values()
                    .flat_map(|perms| perms.values())
                    .flat_map(|items| items.iter())
                    .map(|item| 2 + item.as_ref().len())
                    .sum();
                4 + user_id.as_ref().len() + 8 * permissions.len() + tree
            }
            Self::Fpa { .. } | Self::ConvoAi { .. } | Self::Stt { .. } => 0,
        };
        4 + 6 * self.privileges().len() + strings
    }
}

impl RawService {
    /// Reads the service of type `service_type` (already consumed). Returns `Ok(None)` for a
    /// type this crate does not know: like Agora's parser we stop there, since its layout (and
    /// therefore where the next service starts) is unknown.
    pub(crate) fn decode(
        service_type: u16,
        r: &mut Reader<'_>,
    ) -> Result<Option<Self>, DecodeError> {
        // Only the type is known at this point; reject unknown types before reading more.
        if service_type_name(service_type).is_none() {
            return Ok(None);
        }
        let privileges = r.map_u32("service privileges")?;
        let mut text = |field| r.bytes(field).map(<[u8]>::to_vec);
        let service = match service_type {
            service_type::RTC => Self::Rtc {
                channel_name: text("RTC channel name")?,
                account: text("RTC account")?,
                privileges,
            },
            service_type::RTM => Self::Rtm {
                user_id: text("RTM user id")?,
                privileges,
            },
            service_type::STREAMING => Self::Streaming {
                channel_name: text("streaming channel name")?,
                account: text("streaming account")?,
                privileges,
            },
            service_type::FPA => Self::Fpa { privileges },
            service_type::CHAT => Self::Chat {
                user_id: text("chat user id")?,
                privileges,
            },
            service_type::FCDN => Self::Fcdn {
                channel_name: text("FCDN channel name")?,
                account: text("FCDN account")?,
                privileges,
            },
            service_type::APAAS => {
                let room_uuid = text("APaaS room uuid")?;
                let user_uuid = text("APaaS user uuid")?;
                Self::Apaas {
                    room_uuid,
                    user_uuid,
                    role: r.i16("APaaS role")?,
                    privileges,
                }
            }
            service_type::RTM2 => {
                let user_id = text("RTM2 user id")?;
                Self::Rtm2 {
                    user_id,
                    privileges,
                    permissions: decode_rtm2_permissions(r)?,
                }
            }
            service_type::CONVO_AI => Self::ConvoAi { privileges },
            service_type::STT => Self::Stt { privileges },
            _ => return Ok(None),
        };
        Ok(Some(service))
    }
}

fn decode_rtm2_permissions(r: &mut Reader<'_>) -> Result<Rtm2Permissions<Vec<u8>>, DecodeError> {
    const FIELD: &str = "RTM2 permissions";
    let mut permissions = Rtm2Permissions::<Vec<u8>>::new();
    for _ in 0..r.u16(FIELD)? {
        let resource_type = r.u16(FIELD)?;
        // Created even when it lists no permissions, so that re-encoding gives the same bytes.
        let resource = permissions.entry(resource_type).or_default();
        for _ in 0..r.u16(FIELD)? {
            let permission_type = r.u16(FIELD)?;
            // No `with_capacity(count)`: the count is untrusted, each item costs >= 2 bytes.
            let mut items = Vec::new();
            for _ in 0..r.u16(FIELD)? {
                items.push(r.bytes(FIELD)?.to_vec());
            }
            // A repeated (resource, permission) pair replaces the earlier list, as in Node.
            resource.insert(permission_type, items);
        }
    }
    Ok(permissions)
}
