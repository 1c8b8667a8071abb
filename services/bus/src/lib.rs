//! calls-bus: the message-bus contract between calls-api and signaling.
//!
//! calls-api publishes call and user events and answers commands and presence; signaling
//! subscribes to the events of the calls and users it hosts, sends commands on behalf of its
//! sockets and reports presence. Both sides use this crate, so the subjects and payloads are
//! spelled once.
//!
//! Modules:
//!
//! - [`subjects`]: [`Subjects`] (`{prefix}.evt.call.<callId>`, `{prefix}.evt.user.<userKey>`,
//!   `{prefix}.cmd.<name>`, `{prefix}.presence.<nodeKey>`, `{prefix}.ctl.signaling`) and the id
//!   encodings.
//! - [`wire`]: the JSON payloads ([`EventMessage`], [`CommandRequest`], [`Ack`] /
//!   [`CommandReply`], [`ErrorBody`], [`PresenceMessage`], [`ControlMessage`]), header names and
//!   the shared status-reason limit.
//! - [`bus`]: [`Bus`], one handle over the two implementations, with [`Message`], [`Headers`],
//!   [`Subscription`] and [`BusError`].
//! - [`nats`]: [`NatsBus`], core NATS plus JetStream for event publishes (scaled deployment).
//! - [`local`]: [`LocalBus`], in process with the same semantics (standalone mode, tests).
//! - [`durable`]: [`DurableConsumer`], at-least-once consumption of the event stream for
//!   services that must see every event (notifier): a JetStream durable pull consumer shared
//!   by replicas, or a lossless in-process subscription.
//!
//! Delivery of plain subscriptions is at most once on both: a subscriber that was not subscribed, or was too slow,
//! misses messages. Consumers that need durability read the JetStream stream
//! ([`subjects::EVENTS_STREAM`]); the socket relay reads a call's events back from it
//! ([`Bus::replay`]) only after its connection comes back ([`Bus::connections`]), and otherwise
//! relies on clients resynchronising from the snapshot they get on `join_call`.

pub mod bus;
pub mod durable;
pub mod local;
pub mod nats;
pub mod subjects;
pub mod wire;

pub use bus::{Bus, BusError, Headers, Message, Subscription};
pub use durable::{DurableConsumer, DurableMessage, DurableOptions};
pub use local::LocalBus;
pub use nats::NatsBus;
pub use subjects::{Subjects, node_key, user_key};
pub use wire::{
    Ack, CommandReply, CommandRequest, ControlMessage, ErrorBody, EventMessage, PresenceMessage,
};
