//! Timestamps on the wire and in the state machine.
//!
//! The contract says RFC 3339 UTC. We always write exactly millisecond precision with a `Z`
//! (`2026-02-24T12:00:00.000Z`), which is what the previous Node backend produced
//! (`Date.toISOString()`) and what the mobile apps were written against. Reading accepts any
//! RFC 3339 timestamp.
//!
//! The store keeps timestamps as unix milliseconds, so the state machine truncates every
//! instant to whole milliseconds ([`truncate_millis`]): what a command returns is then exactly
//! what a later read from the database returns.

use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, UtcOffset};

/// `now` in UTC with sub-millisecond precision dropped.
pub fn truncate_millis(t: OffsetDateTime) -> OffsetDateTime {
    let t = t.to_offset(UtcOffset::UTC);
    let nanos = t.nanosecond();
    // Cannot fail: the value stays within the same second.
    t.replace_nanosecond(nanos - nanos % 1_000_000).unwrap_or(t)
}

/// Unix milliseconds, as stored in the database.
pub fn to_millis(t: OffsetDateTime) -> i64 {
    // i128 -> i64 cannot overflow for any representable OffsetDateTime (year ±9999).
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The instant of `millis` unix milliseconds, `None` when out of range.
pub fn from_millis(millis: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok()
}

/// Formats as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format(t: OffsetDateTime) -> String {
    let fmt =
        format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    // Formatting only fails for years outside 0..=9999, which the `time` crate cannot produce
    // with default features; fall back to the general RFC 3339 writer just in case.
    t.to_offset(UtcOffset::UTC)
        .format(&fmt)
        .or_else(|_| t.format(&Rfc3339))
        .unwrap_or_default()
}

/// Serde adapter for `OffsetDateTime` fields (`#[serde(with = "timefmt")]`).
pub fn serialize<S: serde::Serializer>(t: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format(*t))
}

/// Serde adapter for `OffsetDateTime` fields (`#[serde(with = "timefmt")]`).
pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<OffsetDateTime, D::Error> {
    let s = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    OffsetDateTime::parse(&s, &Rfc3339).map_err(serde::de::Error::custom)
}

/// Serde adapter for `Option<OffsetDateTime>` fields, `null` when absent.
pub mod option {
    use time::OffsetDateTime;

    /// Writes `null` or the formatted timestamp.
    pub fn serialize<S: serde::Serializer>(
        t: &Option<OffsetDateTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::format(*t)),
            None => s.serialize_none(),
        }
    }

    /// Reads `null` or an RFC 3339 timestamp.
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<OffsetDateTime>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>> as serde::Deserialize>::deserialize(d)?;
        s.map(|s| {
            OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                .map_err(serde::de::Error::custom)
        })
        .transpose()
    }
}
