//! The services a token can carry (SPEC §3): their type ids, privilege ids, and wire layout.
//!
//! [`ServiceOf`] is generic over how its strings are held so that one definition serves three
//! uses: [`Service`] (`String`, what callers read and build with), [`RawService`] (`Vec<u8>`,
//! the exact bytes of a decoded token, which need not be UTF-8) and borrowed `&str` services
//! that the RTC fast path builds without copying.

use std::collections::BTreeMap;

use crate::wire::{Reader, put_bytes, put_count, put_i16, put_map_u32, put_u16};
use crate::{BuildError, DecodeError};

/// Privilege id → expire (seconds relative to the token's `issueTs`; 0 means "bounded only
/// by the token expiry").
pub type Privileges = BTreeMap<u16, u32>;

/// RTM2 permissions: resource type → permission type → resource names.
///
/// Both map levels are written in ascending key order; the names keep their order, as in the
/// official builders.
pub type Rtm2Permissions<S = String> = BTreeMap<u16, BTreeMap<u16, Vec<S>>>;

/// A service whose strings are `String` (lossily decoded when a token holds invalid UTF-8).
pub type Service = ServiceOf<String>;

/// A service holding the exact bytes found in a token.
pub type RawService = ServiceOf<Vec<u8>>;

/// Service type ids (the `u16 serviceType` in front of every service).
pub mod service_type {
    /// Real-time audio/video.
    pub const RTC: u16 = 1;
    /// Real-time messaging (v1).
    pub const RTM: u16 = 2;
    /// Media streaming.
    pub const STREAMING: u16 = 3;
    /// Full-path acceleration.
    pub const FPA: u16 = 4;
    /// Chat.
    pub const CHAT: u16 = 5;
    /// Fusion CDN.
    pub const FCDN: u16 = 6;
    /// Flexible classroom (APaaS).
    pub const APAAS: u16 = 7;
    /// Real-time messaging 2 (with resource permissions).
    pub const RTM2: u16 = 8;
    /// Conversational AI engine.
    pub const CONVO_AI: u16 = 9;
    /// Speech to text.
    pub const STT: u16 = 10;
}

/// Privilege ids, per service type.
pub mod privilege {
    /// RTC: join the channel.
    pub const RTC_JOIN_CHANNEL: u16 = 1;
    /// RTC: publish audio.
    pub const RTC_PUBLISH_AUDIO_STREAM: u16 = 2;
    /// RTC: publish video.
    pub const RTC_PUBLISH_VIDEO_STREAM: u16 = 3;
    /// RTC: publish data streams.
    pub const RTC_PUBLISH_DATA_STREAM: u16 = 4;
    /// RTM, FPA and RTM2: log in.
    pub const LOGIN: u16 = 1;
    /// Streaming: publish a mixed stream.
    pub const STREAMING_PUBLISH_MIX_STREAM: u16 = 1;
    /// Streaming: publish a raw stream.
    pub const STREAMING_PUBLISH_RAW_STREAM: u16 = 2;
    /// Chat: user-level access.
    pub const CHAT_USER: u16 = 1;
    /// Chat: app-level access.
    pub const CHAT_APP: u16 = 2;
    /// FCDN: publish.
    pub const FCDN_PUBLISH: u16 = 1;
    /// FCDN: play.
    pub const FCDN_PLAY: u16 = 2;
    /// APaaS: a user in one room.
    pub const APAAS_ROOM_USER: u16 = 1;
    /// APaaS: a user in any room.
    pub const APAAS_USER: u16 = 2;
    /// APaaS: app-level access.
    pub const APAAS_APP: u16 = 3;
}

/// One service of a token. `S` is the string representation (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServiceOf<S> {
    /// Type 1: `bytes(channelName) bytes(account)`.
    Rtc {
        /// Channel name.
        channel_name: S,
        /// User account; a numeric uid as its decimal string, `""` for uid 0.
        account: S,
        /// Privilege id → expire.
        privileges: Privileges,
    },
    /// Type 2: `bytes(userId)`.
    Rtm {
        /// RTM user id.
        user_id: S,
        /// Privilege id → expire.
        privileges: Privileges,
    },
    /// Type 3: `bytes(channelName) bytes(account)`.
    Streaming {
        /// Channel name.
        channel_name: S,
        /// Account.
        account: S,
        /// Privilege id → expire.
        privileges: Privileges,
    },
    /// Type 4: no fields.
    Fpa {
        /// Privilege id → expire.
        privileges: Privileges,
    },
    /// Type 5: `bytes(userId)`.
    Chat {
        /// Chat user id (empty for an app token).
        user_id: S,
        /// Privilege id → expire.
        privileges: Privileges,
    },
    /// Type 6: `bytes(channelName) bytes(account)`.
    Fcdn {
        /// Channel name.
        channel_name: S,
        /// Account.
        account: S,
        /// Privilege id → expire.
        privileges: Privileges,
    },
    /// Type 7: `bytes(roomUuid) bytes(userUuid) i16 role`.
    Apaas {
        /// Room UUID.
        room_uuid: S,
        /// User UUID.
        user_uuid: S,
        /// Role in the room (`-1` when unset in the official builders).
        role: i16,
        /// Privilege id → expire.
        privileges: Privileges,
    },
    /// Type 8: `bytes(userId)` followed by the permission tree.
    Rtm2 {
        /// RTM user id.
        user_id: S,
        /// Privilege id → expire.
        privileges: Privileges,
        /// Resource permissions.
        permissions: Rtm2Permissions<S>,
    },
    /// Type 9: no fields.
    ConvoAi {
        /// Privilege id → expire.
        privileges: Privileges,
    },
    /// Type 10: no fields.
    Stt {
        /// Privilege id → expire.
        privileges: Privileges,
    },
}

/// Upper bound on the known service type ids, used to emit services sorted by type without
/// allocating (the known ids are exactly `1..=MAX_SERVICE_TYPE`).
pub(crate) const MAX_SERVICE_TYPE: u16 = service_type::STT;

impl<S> ServiceOf<S> {
    /// The `u16` service type written in front of this service.
    pub fn service_type(&self) -> u16 {
        match self {
            Self::Rtc { .. } => service_type::RTC,
            Self::Rtm { .. } => service_type::RTM,
            Self::Streaming { .. } => service_type::STREAMING,
            Self::Fpa { .. } => service_type::FPA,
            Self::Chat { .. } => service_type::CHAT,
            Self::Fcdn { .. } => service_type::FCDN,
            Self::Apaas { .. } => service_type::APAAS,
            Self::Rtm2 { .. } => service_type::RTM2,
            Self::ConvoAi { .. } => service_type::CONVO_AI,
            Self::Stt { .. } => service_type::STT,
        }
    }

    /// Short lowercase name, as used in [`crate::Inspection`] (`"rtc"`, `"rtm2"`, ...).
    pub fn name(&self) -> &'static str {
        service_type_name(self.service_type()).unwrap_or("unknown")
    }

    /// Privilege id → expire.
    pub fn privileges(&self) -> &Privileges {
        match self {
            Self::Rtc { privileges, .. }
            | Self::Rtm { privileges, .. }
            | Self::Streaming { privileges, .. }
            | Self::Fpa { privileges }
            | Self::Chat { privileges, .. }
            | Self::Fcdn { privileges, .. }
            | Self::Apaas { privileges, .. }
            | Self::Rtm2 { privileges, .. }
            | Self::ConvoAi { privileges }
            | Self::Stt { privileges } => privileges,
        }
    }

    /// Mutable access to the privileges, e.g. to add one after construction.
    pub fn privileges_mut(&mut self) -> &mut Privileges {
        match self {
            Self::Rtc { privileges, .. }
            | Self::Rtm { privileges, .. }
            | Self::Streaming { privileges, .. }
            | Self::Fpa { privileges }
            | Self::Chat { privileges, .. }
            | Self::Fcdn { privileges, .. }
            | Self::Apaas { privileges, .. }
            | Self::Rtm2 { privileges, .. }
            | Self::ConvoAi { privileges }
            | Self::Stt { privileges } => privileges,
        }
    }

    /// Converts every string with `f`, keeping everything else.
    pub fn map_strings<T>(&self, mut f: impl FnMut(&S) -> T) -> ServiceOf<T> {
        match self {
            Self::Rtc {
                channel_name,
                account,
                privileges,
            } => ServiceOf::Rtc {
                channel_name: f(channel_name),
                account: f(account),
                privileges: privileges.clone(),
            },
            Self::Rtm {
                user_id,
                privileges,
            } => ServiceOf::Rtm {
                user_id: f(user_id),
                privileges: privileges.clone(),
            },
            Self::Streaming {
                channel_name,
                account,
                privileges,
            } => ServiceOf::Streaming {
                channel_name: f(channel_name),
                account: f(account),
                privileges: privileges.clone(),
            },
            Self::Fpa { privileges } => ServiceOf::Fpa {
                privileges: privileges.clone(),
            },
            Self::Chat {
                user_id,
                privileges,
            } => ServiceOf::Chat {
                user_id: f(user_id),
                privileges: privileges.clone(),
            },
            Self::Fcdn {
                channel_name,
                account,
                privileges,
            } => ServiceOf::Fcdn {
                channel_name: f(channel_name),
                account: f(account),
                privileges: privileges.clone(),
            },
            Self::Apaas {
                room_uuid,
                user_uuid,
                role,
                privileges,
            } => ServiceOf::Apaas {
                room_uuid: f(room_uuid),
                user_uuid: f(user_uuid),
                role: *role,
                privileges: privileges.clone(),
            },
            Self::Rtm2 {
                user_id,
                privileges,
                permissions,
            } => ServiceOf::Rtm2 {
                user_id: f(user_id),
                privileges: privileges.clone(),
                permissions: permissions
                    .iter()
                    .map(|(&res, perms)| {
                        let perms = perms
                            .iter()
                            .map(|(&perm, items)| (perm, items.iter().map(&mut f).collect()))
                            .collect();
                        (res, perms)
                    })
                    .collect(),
            },
            Self::ConvoAi { privileges } => ServiceOf::ConvoAi {
                privileges: privileges.clone(),
            },
            Self::Stt { privileges } => ServiceOf::Stt {
                privileges: privileges.clone(),
            },
        }
    }
}

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

/// Short name of a known service type.
pub fn service_type_name(service_type: u16) -> Option<&'static str> {
    Some(match service_type {
        service_type::RTC => "rtc",
        service_type::RTM => "rtm",
        service_type::STREAMING => "streaming",
        service_type::FPA => "fpa",
        service_type::CHAT => "chat",
        service_type::FCDN => "fcdn",
        service_type::APAAS => "apaas",
        service_type::RTM2 => "rtm2",
        service_type::CONVO_AI => "convoai",
        service_type::STT => "stt",
        _ => return None,
    })
}

/// camelCase name of a privilege of a service type (SPEC §3), `None` if not documented.
pub fn privilege_name(service: u16, privilege: u16) -> Option<&'static str> {
    use self::service_type as t;
    Some(match (service, privilege) {
        (t::RTC, 1) => "joinChannel",
        (t::RTC, 2) => "publishAudioStream",
        (t::RTC, 3) => "publishVideoStream",
        (t::RTC, 4) => "publishDataStream",
        (t::RTM | t::FPA | t::RTM2, 1) => "login",
        (t::STREAMING, 1) => "publishMixStream",
        (t::STREAMING, 2) => "publishRawStream",
        (t::CHAT, 1) => "user",
        (t::CHAT, 2) => "app",
        (t::FCDN, 1) => "publish",
        (t::FCDN, 2) => "play",
        (t::APAAS, 1) => "roomUser",
        (t::APAAS, 2) => "user",
        (t::APAAS, 3) => "app",
        _ => return None,
    })
}

/// camelCase name of an RTM2 resource type (`Rtm2Permissions.k*` in the Node package).
pub fn rtm2_resource_type_name(resource_type: u16) -> Option<&'static str> {
    Some(match resource_type {
        0 => "messageChannels",
        1 => "streamChannels",
        2 => "groupChannels",
        3 => "serverGroups",
        4 => "users",
        _ => return None,
    })
}

/// Name of an RTM2 permission type.
pub fn rtm2_permission_type_name(permission_type: u16) -> Option<&'static str> {
    Some(match permission_type {
        0 => "read",
        1 => "write",
        _ => return None,
    })
}
