//! notifier: what leaves the system for the outside world after the fact. Today: pushes that
//! ring phones whose app is asleep (CONTRACT section 8) — the device registry, APNs VoIP and
//! alert pushes, FCM messages — from the call event stream.
//!
//! - [`config`]: typed configuration from the environment.
//! - [`devices`]: the registry's model and its validation (pure).
//! - [`events`]: the ring events, decoded from the bus (pure).
//! - [`plan`]: which pushes an event causes and their payloads (pure).
//! - [`store`]: devices, rings and the delivery queue on PostgreSQL or SQLite.
//! - [`consumer`]: the durable consumer of the event stream: events become deliveries before
//!   they are acknowledged.
//! - [`workers`]: the lanes that claim and send deliveries, retry, expire and clean up.
//! - [`sender`]: the configured APNs and FCM clients.
//! - [`api`]: `/api/v1/devices`, the OpenAPI fragment, health and metrics.
//! - [`metrics`]: the counters and histograms.

pub mod api;
pub mod config;
pub mod consumer;
pub mod devices;
pub mod events;
pub mod metrics;
pub mod plan;
pub mod sender;
pub mod store;
pub mod workers;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use calls_bus::Bus;
use common::auth::JwtVerifier;
use common::shutdown::CancellationToken;
use tokio::net::TcpListener;
use tokio::sync::Notify;

pub use config::Config;

/// Why notifier could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A variable is missing or invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The database.
    #[error("database: {0}")]
    Store(#[from] store::StoreError),
    /// NATS.
    #[error("NATS: {0}")]
    Bus(#[from] calls_bus::BusError),
    /// The push providers' credentials.
    #[error("{0}")]
    Push(#[from] sender::PushersError),
    /// The listener.
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
    serve(config, bus, None, listener, shutdown).await
}

/// [`run_with_bus`] with the event consumer already open ([`consumer::open`]): the standalone
/// process opens it before calls-api starts, so no event of the in-process bus is missed.
pub async fn serve(
    config: Config,
    bus: Bus,
    events: Option<calls_bus::DurableConsumer>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    config.validate().map_err(RunError::Config)?;
    let _ = common::metrics::prometheus();
    let jwt = JwtVerifier::from_config(&config.jwt).map_err(|e| RunError::Config(e.to_string()))?;
    let pushers = sender::Pushers::from_config(&config.push)?;
    let store = store::Store::connect(
        config.database.url.expose(),
        config.database.max_connections,
        config.database.acquire_timeout(),
    )
    .await?;
    store.migrate().await?;

    let ring_wake = Arc::new(Notify::new());
    let bulk_wake = Arc::new(Notify::new());
    let consumer = consumer::Consumer {
        bus: bus.clone(),
        subjects: config.subjects.clone(),
        store: store.clone(),
        default_bundle: config.push.apns_bundle_id.clone(),
        ring_wake: ring_wake.clone(),
        bulk_wake: bulk_wake.clone(),
        stream_replicas: usize::from(config.nats_stream_replicas),
    };
    let first = match events {
        Some(events) => events,
        None => {
            consumer::open(
                &bus,
                &config.subjects,
                usize::from(config.nats_stream_replicas),
            )
            .await?
        }
    };

    let stop = CancellationToken::new();
    let lease = Duration::from_millis(config.push.push_timeout_ms.saturating_mul(2) + 5_000);
    let mut tasks = workers::Workers {
        store: store.clone(),
        pushers: pushers.clone(),
        ring_wake,
        bulk_wake,
        poll: config.workers.poll(),
        lease,
    }
    .spawn(
        config.workers.ring_concurrency,
        config.workers.bulk_concurrency,
        &stop,
    );
    let consuming = {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = consumer.run(Some(first)) => {}
                () = stop.cancelled() => {}
            }
        })
    };
    tasks.push(consuming);

    let state = api::AppState {
        store: store.clone(),
        jwt: Arc::new(jwt),
        devices_per_user: config.devices_per_user,
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
        apns = pushers.apns_enabled(),
        fcm = pushers.fcm_enabled(),
        "notifier listening"
    );
    if !pushers.apns_enabled() {
        tracing::info!(
            "APNs is off (set APNS_KEY_FILE, APNS_KEY_ID, APNS_TEAM_ID to ring iPhones)"
        );
    }
    if !pushers.fcm_enabled() {
        tracing::info!("FCM is off (set FCM_SERVICE_ACCOUNT_FILE to ring Android phones)");
    }
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
    tracing::info!("notifier stopped");
    served.map_err(RunError::from)
}
