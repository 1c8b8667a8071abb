//! The call state machine: pure code, no I/O, no clock reads.
//!
//! This is the one place where the rules of CONTRACT sections 4 and 10 live (statuses and their
//! transitions, who may do what, how and why a call ends, the roster, which timers run) and
//! where the events of section 5 are decided. The store runs these commands under a row lock and writes
//! their results in one transaction; the API and the bus only translate.
//!
//! - [`model`]: the `Call`/`Participant` resource and its enums, serializing to the contract's
//!   JSON.
//! - [`commands`]: the commands ([`Call::initiate`], [`Call::join`], ...) and their
//!   [`Outcome`] (events and timer changes).
//! - [`events`]: the events with their audiences and exact wire payloads.
//! - [`error`]: why a command was refused, one variant per contract error code.
//! - [`timefmt`]: timestamps as the contract writes them (RFC 3339 UTC, milliseconds).
//!
//! Time is always passed in (`now`) so every rule, including the timers, is testable without
//! waiting. The crate's dependencies (serde, time, uuid, utoipa's derive, thiserror) are the
//! guarantee: nothing here can do I/O, spawn a task or read a clock, so calls-api (which does)
//! is the only place where effects happen.

pub mod commands;
pub mod error;
pub mod events;
pub mod model;
pub mod timefmt;

pub use commands::{
    BUSY_REASON, ChannelNotice, Invitation, MAX_REASON_LEN, MEDIA_LINGER, MediaKick, Outcome,
    RING_TIMEOUT_REASON, TimerChange, check_reason,
};
pub use error::{DomainError, ValidationError};
pub use events::{Audience, DomainEvent, EventKind, MediaTime};
pub use model::{
    Actor, Call, CallId, CallStatus, CallType, Caller, CancelReason, ChatRoomId, EndReason,
    LeftReason, MAX_AVATAR_URL_BYTES, MAX_DISPLAY_NAME_CHARS, MIN_RING_TIMEOUT, MediaPatch,
    NewCall, Participant, ParticipantStatus, Profile, Role, TimerKind, Timing, UserId,
};
