//! calls-api: the authority over calls. It owns the REST API, the call state machine and all
//! persistence; it publishes every event through an outbox and answers signaling's commands.
//!
//! - [`config`]: typed configuration from the environment.
//! - [`domain`]: the pure call state machine (no I/O, no clock reads), re-exported from the
//!   `calls-domain` crate, whose dependencies keep it pure. Every rule of the client contract
//!   about statuses, end reasons, timers and events lives there and nowhere else.
//! - [`store`]: persistence on PostgreSQL or SQLite (sqlx): applies domain commands under a row
//!   lock in one transaction together with the outbox events and timer rows they cause.
//! - [`service`]: what a user may do (membership, authorization), shared by REST and the bus.
//! - [`api`]: the HTTP surface (`/api/v1`, `/internal/v1`, `/webhooks/agora`, `/api/docs`,
//!   health, metrics).
//! - [`commands`]: socket commands and presence from signaling, over bus request/reply.
//! - [`workers`]: the outbox relay, the timer loop, dead-node expiry, housekeeping.
//! - [`media`]: the media-token gRPC client behind `POST /calls/:id/media/session`.

pub mod api;
pub mod commands;
pub mod config;
pub mod kicks;
pub mod media;
pub mod service;
pub mod store;
pub mod workers;

/// The call state machine (the `calls-domain` crate), at its historical path.
pub use calls_domain as domain;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use calls_bus::{Bus, Subjects};
use common::auth::JwtVerifier;
use common::shutdown::CancellationToken;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use config::{CallRules, Config, DatabaseConfig, MembershipMode};

/// Why calls-api could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("database: {0}")]
    Store(#[from] store::StoreError),
    #[error("NATS: {0}")]
    Bus(#[from] calls_bus::BusError),
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Connects to NATS (`NATS_URL`) and serves until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let bus = Bus::connect(&config.nats_url).await?;
    run_with_bus(config, bus, listener, shutdown).await
}

/// Serves with the given bus (NATS, or the in-process bus of the standalone binary).
pub async fn run_with_bus(
    config: Config,
    bus: Bus,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate().map_err(RunError::Config)?;
    // Install the Prometheus recorder before anything is counted: until it exists, every
    // `metrics::counter!` goes to the no-op recorder, so the calls, requests and events of a
    // fresh process would be missing from `/metrics` until its first scrape.
    let _ = common::metrics::prometheus();
    let jwt = JwtVerifier::from_config(&config.jwt).map_err(|e| RunError::Config(e.to_string()))?;
    let subjects = Subjects::validated(&config.nats_subject_prefix)
        .map_err(|e| RunError::Config(format!("NATS_SUBJECT_PREFIX: {e}")))?;
    let media = media::MediaClient::new(
        config.media_token_url.as_deref(),
        config.media_token_service_token.clone(),
        Duration::from_millis(config.media_token_timeout_ms.max(1)),
    )
    .map_err(RunError::Config)?;

    let store = store::Store::connect_with(
        config.database.url.expose(),
        config.database.max_connections,
        config.database.acquire_timeout(),
    )
    .await?;
    store.migrate().await?;
    bus.ensure_stream(
        &workers::stream_name(&subjects),
        vec![subjects.all_events()],
        usize::from(config.nats_stream_replicas),
    )
    .await?;

    let timing = config.calls.timing();
    let relay = Arc::new(Notify::new());
    let calls = service::Calls::new(
        store.clone(),
        config.membership_mode,
        timing,
        config.calls.max_participants,
        config.calls.max_invitees,
        relay.clone(),
    );

    let stop = CancellationToken::new();
    let mut tasks = workers::Workers {
        store: store.clone(),
        bus: bus.clone(),
        subjects: subjects.clone(),
        timing,
        relay,
        poll: Duration::from_millis(config.worker_poll_ms.max(10)),
        stream_replicas: usize::from(config.nats_stream_replicas),
        ensuring_stream: Arc::default(),
        heartbeat: config.heartbeat(),
        kicker: kicks::AgoraKicker::new(&config.agora_rest),
    }
    .spawn(&stop);
    let bus_task = {
        let (bus, subjects, calls, stop) =
            (bus.clone(), subjects.clone(), calls.clone(), stop.clone());
        tokio::spawn(async move {
            if let Err(e) = commands::serve(bus, subjects, calls, stop).await {
                tracing::error!(error = %e, "command subscription ended");
            }
        })
    };
    tasks.push(bus_task);

    let state = api::AppState {
        calls,
        jwt: Arc::new(jwt),
        media,
        internal_token: config.internal_api_token.clone(),
        ncs_secret: config.agora_ncs_secret.clone(),
    };
    let ready = {
        let (store, bus) = (store.clone(), bus.clone());
        move || {
            let (store, bus) = (store.clone(), bus.clone());
            async move {
                store.ping().await.map_err(|_| "database".to_owned())?;
                if bus.is_connected() {
                    Ok(())
                } else {
                    Err("nats".to_owned())
                }
            }
        }
    };
    let app = api::router(state, config.max_body_bytes, ready);
    tracing::info!(
        addr = %listener.local_addr()?,
        backend = ?store.backend(),
        membership = ?config.membership_mode,
        media = config.media_token_url.is_some(),
        "calls-api listening"
    );
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    stop.cancel();
    for task in tasks {
        let _ = task.await;
    }
    store.close().await;
    tracing::info!("calls-api stopped");
    served.map_err(RunError::from)
}

#[cfg(test)]
mod tests {
    /// REST (the state machine) and sockets (signaling, which checks before asking calls-api)
    /// must refuse the same reasons.
    #[test]
    fn rest_and_sockets_allow_reasons_of_the_same_length() {
        assert_eq!(
            crate::domain::MAX_REASON_LEN,
            calls_bus::wire::MAX_REASON_CHARS
        );
    }
}
