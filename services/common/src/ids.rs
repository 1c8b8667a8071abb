//! Identifier newtypes: parse at the edge, trust inside.
//!
//! User and chat-room ids come from the host application and are opaque strings, so the only
//! rules are the ones that keep them safe to store, log and put in NATS subjects after encoding:
//! non-empty, at most [`MAX_ID_BYTES`] bytes, no control characters. Call ids are ours: UUIDv7,
//! so they sort by creation time and index well.
//!
//! Every type validates in `FromStr`, `TryFrom<String>` and `Deserialize`, so a value of one of
//! these types has always passed the rules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

/// The longest user or chat-room id accepted, in bytes (a `VARCHAR(255)` fits it).
pub const MAX_ID_BYTES: usize = 255;

/// Why a string is not a valid id. Messages name the kind of id, never echo the value (it may be
/// long or hostile).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id is the empty string.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// The id is longer than [`MAX_ID_BYTES`].
    #[error("{0} must be at most 255 bytes")]
    TooLong(&'static str),
    /// The id contains a control character.
    #[error("{0} must not contain control characters")]
    ControlCharacter(&'static str),
    /// The id is not a UUID.
    #[error("{0} must be a UUID")]
    NotUuid(&'static str),
}

fn check_opaque(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty(kind));
    }
    if s.len() > MAX_ID_BYTES {
        return Err(IdError::TooLong(kind));
    }
    if s.chars().any(char::is_control) {
        return Err(IdError::ControlCharacter(kind));
    }
    Ok(())
}

macro_rules! opaque_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal) => {
        $(#[$meta])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Consumes the id, returning the inner string.
            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                check_opaque($kind, s)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                check_opaque($kind, &s)?;
                Ok(Self(s))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;

            fn try_from(s: &str) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                Self::try_from(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

opaque_id!(
    /// A user: the `sub` claim of the access token. Opaque to this system.
    UserId,
    "user id"
);

opaque_id!(
    /// A chat room of the host application. Calls happen in a room; membership decides who may
    /// call whom.
    ChatRoomId,
    "chat room id"
);

/// A call. UUIDv7, printed in lowercase hyphenated form.
///
/// The text form is kept next to the UUID so [`CallId::as_str`] can lend it out without
/// allocating, like the other id types; the type stays `Copy`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId {
    uuid: Uuid,
    text: [u8; uuid::fmt::Hyphenated::LENGTH],
}

impl CallId {
    /// A fresh id: UUIDv7, so ids sort by creation time.
    #[allow(clippy::new_without_default)] // a Default that is random would surprise
    pub fn new() -> Self {
        Self::from_uuid(Uuid::now_v7())
    }

    /// Wraps an existing UUID (for instance one read from the database).
    pub fn from_uuid(uuid: Uuid) -> Self {
        let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
        uuid.hyphenated().encode_lower(&mut text);
        Self { uuid, text }
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.uuid
    }

    /// The lowercase hyphenated text form.
    pub fn as_str(&self) -> &str {
        // The buffer is always ASCII written by `encode_lower`, so this never falls back.
        std::str::from_utf8(&self.text).unwrap_or_default()
    }
}

impl fmt::Debug for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CallId({})", self.as_str())
    }
}

impl fmt::Display for CallId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Uuid> for CallId {
    fn from(uuid: Uuid) -> Self {
        Self::from_uuid(uuid)
    }
}

impl From<CallId> for Uuid {
    fn from(id: CallId) -> Uuid {
        id.uuid
    }
}

impl FromStr for CallId {
    type Err = IdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Only the canonical 36-character form: ids appear in URLs and logs, and one spelling
        // per call keeps caches, idempotency keys and greps honest.
        if s.len() != uuid::fmt::Hyphenated::LENGTH {
            return Err(IdError::NotUuid("call id"));
        }
        Uuid::try_parse(s)
            .map(Self::from_uuid)
            .map_err(|_| IdError::NotUuid("call id"))
    }
}

impl TryFrom<String> for CallId {
    type Error = IdError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl TryFrom<&str> for CallId {
    type Error = IdError;

    fn try_from(s: &str) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl Serialize for CallId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CallId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The longest device id, in characters (CONTRACT section 8).
pub const MAX_DEVICE_ID_LEN: usize = 128;

/// A device id chosen by the app (CONTRACT section 8): 1..=128 characters of
/// `[A-Za-z0-9._:-]`. The device registry keys devices by it, and `X-Device-Id` (REST) or
/// `auth.deviceId` (Socket.IO) name the device an action came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

impl DeviceId {
    /// Parses a device id.
    pub fn parse(value: &str) -> Result<DeviceId, &'static str> {
        if value.is_empty() || value.len() > MAX_DEVICE_ID_LEN {
            return Err("must be 1 to 128 characters");
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        {
            return Err("may contain only letters, digits and . _ : -");
        }
        Ok(DeviceId(value.to_owned()))
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DeviceId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn user_id_accepts_ordinary_strings() {
        let id: UserId = "user-42@example.com".parse().unwrap();
        assert_eq!(id.as_str(), "user-42@example.com");
        assert_eq!(id.to_string(), "user-42@example.com");
    }

    #[test]
    fn empty_user_id_is_rejected() {
        assert_eq!("".parse::<UserId>(), Err(IdError::Empty("user id")));
    }

    #[test]
    fn user_id_longer_than_255_bytes_is_rejected() {
        assert!(UserId::try_from("a".repeat(255)).is_ok());
        assert_eq!(
            UserId::try_from("a".repeat(256)),
            Err(IdError::TooLong("user id"))
        );
        // 128 two-byte characters: 128 chars but 256 bytes.
        assert!(UserId::try_from("é".repeat(128)).is_err());
    }

    #[test]
    fn id_with_control_characters_is_rejected() {
        assert_eq!(
            "a\nb".parse::<ChatRoomId>(),
            Err(IdError::ControlCharacter("chat room id"))
        );
        assert!("a\u{0}b".parse::<UserId>().is_err());
        assert!("a\u{7f}".parse::<UserId>().is_err());
    }

    #[test]
    fn ids_deserialize_with_validation() {
        let id: ChatRoomId = serde_json::from_str("\"room-42\"").unwrap();
        assert_eq!(id.as_str(), "room-42");
        assert!(serde_json::from_str::<ChatRoomId>("\"\"").is_err());
        assert!(serde_json::from_str::<UserId>("42").is_err());
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"room-42\"");
    }

    #[test]
    fn new_call_ids_are_uuid_v7_and_sort_by_creation() {
        let a = CallId::new();
        let b = CallId::new();
        assert_eq!(a.as_uuid().get_version_num(), 7);
        assert!(a < b || a.as_uuid().get_timestamp() == b.as_uuid().get_timestamp());
    }

    #[test]
    fn call_id_round_trips_through_text_and_json() {
        let id = CallId::new();
        let parsed: CallId = id.as_str().parse().unwrap();
        assert_eq!(parsed, id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(serde_json::from_str::<CallId>(&json).unwrap(), id);
    }

    #[test]
    fn call_id_text_is_lowercase_hyphenated() {
        let id: CallId = "0193A2B4-0000-7000-8000-000000000001".parse().unwrap();
        assert_eq!(id.as_str(), "0193a2b4-0000-7000-8000-000000000001");
    }

    #[test]
    fn malformed_call_id_is_rejected() {
        assert_eq!("nope".parse::<CallId>(), Err(IdError::NotUuid("call id")));
        assert!("0193a2b400007000800000000000000".parse::<CallId>().is_err());
        assert!(
            "{0193a2b4-0000-7000-8000-00000000001}"
                .parse::<CallId>()
                .is_err()
        );
        assert!(serde_json::from_str::<CallId>("\"x\"").is_err());
    }
}
