//! notifier: what leaves the system for the outside world after the fact: pushes that ring
//! phones whose app is asleep (CONTRACT section 8) — the device registry, APNs VoIP and alert
//! pushes, FCM messages — and webhooks that tell the host application about calls (section 9),
//! both from the call event stream.
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
//! - [`webhooks`]: webhooks: the call projection, signing, the consumer, the delivery lane and
//!   the internal API `/internal/v1/webhooks…`.

pub mod api;
pub mod config;
pub mod consumer;
pub mod devices;
pub mod events;
pub mod metrics;
pub mod plan;
pub mod sender;
pub mod store;
pub mod webhooks;
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

/// The durable consumers, opened ahead of [`serve`] (see [`open_consumers`]).
#[derive(Debug)]
pub struct Consumers {
    /// Ring events, for pushes.
    pub rings: calls_bus::DurableConsumer,
    /// Every event, for webhooks.
    pub webhooks: calls_bus::DurableConsumer,
}

/// Opens both durable consumers. On the in-process bus, events published before this returns
/// are missed: the standalone process opens them before starting calls-api and hands them to
/// [`serve`].
pub async fn open_consumers(
    bus: &Bus,
    subjects: &calls_bus::Subjects,
    stream_replicas: usize,
) -> Result<Consumers, calls_bus::BusError> {
    Ok(Consumers {
        rings: consumer::open(bus, subjects, stream_replicas).await?,
        webhooks: webhooks::consumer::open(bus, subjects, stream_replicas).await?,
    })
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

/// [`run_with_bus`] with the event consumers already open ([`open_consumers`]): the standalone
/// process opens them before calls-api starts, so no event of the in-process bus is missed.
pub async fn serve(
    config: Config,
    bus: Bus,
    events: Option<Consumers>,
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
    let webhook_client = webhooks::client::WebhookClient::new(
        config.webhooks.allow_private,
        config.webhooks.timeout(),
    )
    .map_err(RunError::Config)?;
    if let (Some(url), Some(secret)) = (&config.webhooks.url, &config.webhooks.secret) {
        let secrets = webhooks::model::parse_secrets(config::env_secrets(secret))
            .map_err(|e| RunError::Config(format!("WEBHOOK_SECRET: {e}")))?;
        store
            .configure_env_endpoint(url, &secrets, store::now_ms())
            .await?;
    }

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
    let (first, first_webhooks) = match events {
        Some(events) => (events.rings, events.webhooks),
        None => {
            let opened = open_consumers(
                &bus,
                &config.subjects,
                usize::from(config.nats_stream_replicas),
            )
            .await?;
            (opened.rings, opened.webhooks)
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

    // Webhooks: their own consumer, lane and concurrency, apart from the ringing pushes.
    let webhook_wake = Arc::new(Notify::new());
    tasks.extend(
        webhooks::worker::WebhookWorkers {
            store: store.clone(),
            client: webhook_client,
            wake: webhook_wake.clone(),
            poll: config.workers.poll(),
            retry_window: config.webhooks.retry_window(),
            retry_base: Duration::from_millis(config.webhooks.retry_base_ms),
            timeout: config.webhooks.timeout(),
            concurrency: config.webhooks.concurrency,
            endpoint_concurrency: config.webhooks.endpoint_concurrency,
        }
        .spawn(&stop),
    );
    let webhook_consumer = webhooks::consumer::WebhookConsumer {
        bus: bus.clone(),
        subjects: config.subjects.clone(),
        store: store.clone(),
        wake: webhook_wake.clone(),
        stream_replicas: usize::from(config.nats_stream_replicas),
    };
    tasks.push({
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = webhook_consumer.run(Some(first_webhooks)) => {}
                () = stop.cancelled() => {}
            }
        })
    });

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
    let internal = webhooks::api::router(webhooks::api::InternalState {
        store: store.clone(),
        token: config.internal_api_token.clone(),
        allow_private: config.webhooks.allow_private,
        wake: webhook_wake,
    });
    let app = api::router(state, internal, config.max_body_bytes, ready);
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
    if config.webhooks.url.is_some() {
        tracing::info!("webhooks go to WEBHOOK_URL (endpoint `env`)");
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
