//! standalone: every calls service in one process, for a laptop and for small deployments.
//!
//! The gateway listens on `GATEWAY_LISTEN` (default 0.0.0.0:8080); calls-api, signaling and
//! media-token listen on loopback ports chosen by the OS and are reached through it, exactly as
//! in the scaled topology, so apps see the same API. What changes: SQLite in a local file by
//! default (`DATABASE_URL` still wins), the in-process bus instead of NATS, and a random
//! media-token service credential made at start-up.
//!
//! Every service reads the same environment variables it reads when run alone (CONTRACT
//! section 7): the standalone binary only supplies the wiring (listen addresses, upstream URLs,
//! the bus, the service credential).
//!
//! Modules:
//! - [`cli`]: `calls-backend [serve]`, `calls-backend token <user>` and `calls-backend openapi`.
//! - [`system`]: starts the four services and stops them together.

pub mod cli;
pub mod system;

pub use system::{Running, StartError, start};
