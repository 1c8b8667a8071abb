//! signaling: the Socket.IO namespace `/calls` (CONTRACT section 5), relayed across nodes
//! through the bus.
//!
//! Each node authenticates sockets at the handshake, turns their events into calls-api commands
//! (request/reply on the bus), relays call and user events from the bus to the sockets that
//! want them, and reports socket presence so calls-api can run the disconnect grace. It holds
//! no authoritative state: a node can die and its clients reconnect to another.
//!
//! Modules:
//!
//! - [`config`]: [`Config`] from the environment (`SIGNALING_*`, `NATS_*`, `JWT_*`, ...).
//! - [`server`]: [`run`] / [`run_with_bus`], the HTTP listener and the graceful drain.
//! - [`namespace`]: the `/calls` handshake, event dispatch and disconnects; where the
//!   socketioxide traps are handled.
//! - [`commands`]: client payload validation and the calls-api commands they become.
//! - [`relay`]: bus subscriptions per call and per user, ordered delivery to sockets.
//! - [`presence`]: connected / disconnected / heartbeat / node_down reports.
//! - [`control`]: instructions from calls-api to every node (end a user's subscription to a
//!   call).
//! - [`state`]: node-wide and per-socket state.
//! - [`metrics`]: metric names.

pub mod commands;
pub mod config;
pub mod control;
pub mod metrics;
pub mod namespace;
pub mod presence;
pub mod relay;
pub mod server;
pub mod state;

pub use config::Config;
pub use server::{ServeError, run, run_with_bus};
