//! media-token: the only holder of the Agora app certificate. It signs Agora AccessToken2 RTC
//! tokens for internal callers over gRPC (`calls.mediatoken.v1.MediaTokenService`) and doubles as
//! a CLI for support engineers (`media-token sign`, `media-token inspect`).
//!
//! Modules:
//! - [`config`]: typed configuration from the environment (`AGORA_*`, `MEDIA_TOKEN_*`).
//! - [`validate`]: Agora's limits on channel names and accounts.
//! - [`signer`]: request → token, shared by the gRPC service and in-process callers.
//! - [`grpc`]: the tonic service, its bearer-credential interceptor and metrics.
//! - [`server`]: `run(config, listener, shutdown)` serving gRPC, health, reflection and `/metrics`.
//! - [`cli`]: the `media-token` command line.

pub mod cli;
pub mod config;
pub mod grpc;
pub mod server;
pub mod signer;
pub mod validate;

pub use config::{AgoraConfig, Config};
pub use server::run;
pub use signer::Signer;
