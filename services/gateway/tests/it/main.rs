//! The gateway against real sockets: fake upstreams (axum) and the gateway in-process.

#![allow(clippy::unwrap_used)]

mod auth;
mod limits;
mod pools;
mod routing;
mod shutdown;
mod socketio;
mod support;
