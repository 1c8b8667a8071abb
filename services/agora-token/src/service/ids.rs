//! The ids a token carries (SPEC §3): service types, privileges per service, RTM2 resource and
//! permission types, and the names [`crate::Inspection`] shows for them.

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

/// Upper bound on the known service type ids, used to emit services sorted by type without
/// allocating (the known ids are exactly `1..=MAX_SERVICE_TYPE`).
pub(crate) const MAX_SERVICE_TYPE: u16 = service_type::STT;

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
    use self::privilege as p;
    use self::service_type as t;
    Some(match (service, privilege) {
        (t::RTC, p::RTC_JOIN_CHANNEL) => "joinChannel",
        (t::RTC, p::RTC_PUBLISH_AUDIO_STREAM) => "publishAudioStream",
        (t::RTC, p::RTC_PUBLISH_VIDEO_STREAM) => "publishVideoStream",
        (t::RTC, p::RTC_PUBLISH_DATA_STREAM) => "publishDataStream",
        (t::RTM | t::FPA | t::RTM2, p::LOGIN) => "login",
        (t::STREAMING, p::STREAMING_PUBLISH_MIX_STREAM) => "publishMixStream",
        (t::STREAMING, p::STREAMING_PUBLISH_RAW_STREAM) => "publishRawStream",
        (t::CHAT, p::CHAT_USER) => "user",
        (t::CHAT, p::CHAT_APP) => "app",
        (t::FCDN, p::FCDN_PUBLISH) => "publish",
        (t::FCDN, p::FCDN_PLAY) => "play",
        (t::APAAS, p::APAAS_ROOM_USER) => "roomUser",
        (t::APAAS, p::APAAS_USER) => "user",
        (t::APAAS, p::APAAS_APP) => "app",
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
