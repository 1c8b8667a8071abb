//! `run(config, listener, shutdown)`: Socket.IO on `/socket.io/` plus `/healthz`, `/readyz`,
//! `/metrics`, until `shutdown` completes, then a drain that hands clients to other nodes.
//!
//! Shutdown order, and why:
//!
//! 1. mark the node draining (`/readyz` fails, so the load balancer stops sending new clients)
//!    and stop accepting connections;
//! 2. clean up every socket while they still exist (unsubscribe its rooms): socketioxide's
//!    `io.close()` does not run disconnect handlers (trap 4), so this cannot wait for them;
//! 3. `io.close()`: every transport gets an engine.io `close`, which official clients treat as
//!    "transport close" and answer by reconnecting, through the load balancer, to another node;
//! 4. one `node_down` presence request tells calls-api all of this node's sockets are gone
//!    (instead of one `disconnected` per socket);
//! 5. wait for the HTTP server to finish.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::serve::ListenerExt;
use calls_bus::{Bus, BusError};
use common::auth::JwtVerifier;
use socketioxide::SocketIo;
use socketioxide::handler::ConnectHandler;
use tokio::net::TcpListener;

use crate::config::{Config, UserSubscriptions};
use crate::namespace::{self, NAMESPACE};
use crate::presence::Presence;
use crate::relay::Relay;
use crate::state::{Registry, Shared};

/// How long `io.close()` may take before the node stops waiting for slow transports.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the HTTP server may take to finish in-flight requests after the sockets are closed.
const SERVER_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the service could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Bad configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The bus could not be reached at start-up.
    #[error("NATS: {0}")]
    Bus(#[from] BusError),
    /// Listener I/O.
    #[error("server I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Connects to NATS (`NATS_URL`) and serves until `shutdown` completes.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    // Checked before connecting so a configuration mistake is reported as such.
    JwtVerifier::from_config(&config.jwt).map_err(|e| ServeError::Config(e.to_string()))?;
    let bus = Bus::connect(&config.nats_url).await?;
    run_with_bus(config, bus, listener, shutdown).await
}

/// Serves with the given bus (the standalone binary hands in a `LocalBus` shared with
/// calls-api) until `shutdown` completes.
pub async fn run_with_bus(
    config: Config,
    bus: Bus,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let verifier =
        JwtVerifier::from_config(&config.jwt).map_err(|e| ServeError::Config(e.to_string()))?;
    let node_id = config.resolved_node_id();
    let limit = config.transport_limit_bytes();
    let shared = Arc::new(Shared {
        node_id: node_id.clone(),
        relay: Relay::new(bus.clone(), Duration::from_millis(config.reorder_window_ms)),
        presence: Presence::new(
            bus.clone(),
            &config.subjects,
            &node_id,
            config.command_timeout(),
        ),
        bus,
        subjects: config.subjects.clone(),
        verifier,
        sockets: Registry::default(),
        draining: false.into(),
        command_timeout: config.command_timeout(),
        max_payload_bytes: usize::try_from(config.max_payload_bytes).unwrap_or(usize::MAX),
        events_per_second: config.events_per_second,
        events_burst: config.events_burst,
    });

    shared.relay.resync_on_reconnect();

    if config.user_subscriptions == UserSubscriptions::Shared {
        let wildcard = format!("{}.evt.user.*", config.subjects.prefix());
        shared.relay.share_user_events(&wildcard).await?;
    }

    let (layer, io) = SocketIo::builder()
        .with_state(shared.clone())
        .max_payload(limit)
        .ws_read_buffer_size(usize::try_from(config.ws_read_buffer_bytes).unwrap_or(4096))
        .max_buffer_size(usize::try_from(config.socket_buffer_packets).unwrap_or(128))
        .ws_max_message_size(usize::try_from(limit).unwrap_or(usize::MAX))
        .ws_max_frame_size(usize::try_from(limit).unwrap_or(usize::MAX))
        .build_layer();
    io.ns(
        NAMESPACE,
        namespace::connected.with(namespace::authenticate),
    );

    let ready = shared.clone();
    let app = axum::Router::new()
        .merge(common::health::router(move || {
            let state = ready.clone();
            async move {
                if state.draining.load(Ordering::SeqCst) {
                    Err("signaling (shutting down)".to_owned())
                } else if !state.bus.is_connected() {
                    Err("nats".to_owned())
                } else {
                    Ok(())
                }
            }
        }))
        .layer(layer);
    let _ = common::metrics::prometheus();

    let control = crate::control::listen(&shared).await?;
    let heartbeat = tokio::spawn(heartbeat_loop(
        shared.clone(),
        Duration::from_secs(config.heartbeat_seconds),
    ));

    tracing::info!(addr = %listener.local_addr()?, node_id = %node_id, "signaling listening");
    // Nagle's algorithm held small event frames back by tens of milliseconds (trap 1).
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
    });
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    let early_exit = tokio::select! {
        () = shutdown => None,
        result = &mut server => Some(result),
    };
    if let Some(result) = early_exit {
        heartbeat.abort();
        control.abort();
        return match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(ServeError::Io(err)),
            Err(err) => Err(ServeError::Io(std::io::Error::other(err))),
        };
    }

    tracing::info!(sockets = shared.sockets.len(), "signaling draining");
    shared.draining.store(true, Ordering::SeqCst);
    heartbeat.abort();
    control.abort();
    let _ = stop.send(());
    for (socket, ctx) in shared.sockets.snapshot() {
        shared.cleanup(&socket, &ctx);
    }
    if tokio::time::timeout(CLOSE_TIMEOUT, io.close())
        .await
        .is_err()
    {
        tracing::warn!("some transports did not close in time");
    }
    shared.relay.clear();
    if !shared.presence.node_down().await {
        tracing::warn!(
            "node_down was not acknowledged; calls-api will notice the missing heartbeats"
        );
    }
    let _ = shared.bus.flush().await;
    match tokio::time::timeout(SERVER_STOP_TIMEOUT, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => return Err(ServeError::Io(err)),
        Ok(Err(err)) => tracing::warn!(error = %err, "HTTP server task failed"),
        Err(_) => tracing::warn!("HTTP server did not stop in time"),
    }
    tracing::info!("signaling stopped");
    Ok(())
}

async fn heartbeat_loop(shared: Arc<Shared>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        shared.sweep();
        if shared.presence.heartbeat(shared.sockets.len() as u64).await == Some(false)
            && !shared.draining.load(std::sync::atomic::Ordering::SeqCst)
        {
            let sockets = shared.sockets.snapshot();
            tracing::warn!(
                sockets = sockets.len(),
                "calls-api had expired this node; reporting its sockets again"
            );
            for (socket, ctx) in sockets {
                shared
                    .presence
                    .reannounce(socket.id.to_string(), ctx.user.to_string());
            }
        }
    }
}
