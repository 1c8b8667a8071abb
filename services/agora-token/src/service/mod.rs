//! The services a token can carry (SPEC §3): their type ids, privilege ids, and wire layout.
//!
//! [`ServiceOf`] is generic over how its strings are held so that one definition serves three
//! uses: [`Service`] (`String`, what callers read and build with), [`RawService`] (`Vec<u8>`,
//! the exact bytes of a decoded token, which need not be UTF-8) and borrowed `&str` services
//! that the RTC fast path builds without copying.
//!
//! The ids and their names are in `ids` (re-exported here: [`service_type`], [`privilege`],
//! [`service_type_name`], ...); the wire layout of each service, both ways, in `codec`.

mod codec;
mod ids;

use std::collections::BTreeMap;

pub(crate) use ids::MAX_SERVICE_TYPE;
pub use ids::{
    privilege, privilege_name, rtm2_permission_type_name, rtm2_resource_type_name, service_type,
    service_type_name,
};

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
