//! What the state-machine test files share: a fixed clock, the deployment's timers, and readers
//! of a call's state and of the events an outcome carries.

#![allow(dead_code)]

use std::time::Duration;

use calls_domain::{Call, DomainEvent, EndReason, EventKind, Outcome, ParticipantStatus, Timing};
use time::OffsetDateTime;
use time::macros::datetime;

pub const T0: OffsetDateTime = datetime!(2026-03-01 12:00:00 UTC);

/// `secs` seconds after [`T0`].
pub fn at(secs: i64) -> OffsetDateTime {
    T0 + time::Duration::seconds(secs)
}

/// The defaults of a deployment, without the media grace.
pub fn timing() -> Timing {
    Timing {
        ring_timeout: Duration::from_secs(45),
        disconnect_grace: Duration::from_secs(30),
        max_duration: Some(Duration::from_secs(3600)),
        alone_timeout: Some(Duration::from_secs(120)),
        media_grace: None,
    }
}

pub fn status(c: &Call, name: &str) -> Option<ParticipantStatus> {
    c.participant(name).map(|p| p.status)
}

pub fn names(events: &[DomainEvent]) -> Vec<&'static str> {
    events.iter().map(DomainEvent::name).collect()
}

/// How and by whom the call ended, if this outcome ended it.
pub fn ended(out: &Outcome) -> Option<(EndReason, Option<String>)> {
    out.events.iter().find_map(|e| match &e.kind {
        EventKind::CallEnded {
            reason, ended_by, ..
        } => Some((*reason, ended_by.clone())),
        _ => None,
    })
}
