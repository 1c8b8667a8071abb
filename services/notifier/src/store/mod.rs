//! Persistence on PostgreSQL or SQLite (sqlx `Any`, through `calls-db`): the device registry,
//! what notifier knows of each ring, and the delivery queue.
//!
//! - `devices`: register (moving a token from whoever had it), list, delete, remove a
//!   device whose token the provider refused.
//! - `rings`: consuming a ring event: its deliveries are written in one transaction, and the
//!   newest event of each (call, user) wins whatever the order of consumption.
//! - `deliveries`: workers claim due rows with `FOR UPDATE SKIP LOCKED` under a lease, and
//!   record what the provider answered.
//! - `webhooks`: webhook endpoints, each call's projection (applied in `seq` order), and the
//!   webhook delivery queue (claimed in each call's order).
//!
//! The migration history is kept in `_notifier_migrations`, so notifier can share calls-api's
//! database (or the standalone process's SQLite file) without the two colliding.

mod deliveries;
mod devices;
mod rings;
mod webhooks;

use std::time::Duration;

use calls_db::Backend;
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Transaction};

pub use deliveries::{Claimed, Finish};
pub use devices::Registered;
pub use rings::Applied;
pub use webhooks::{
    ClaimedWebhook, DeliveryRecord, Endpoint, EndpointBacklog, EndpointPatch, GAP_WAIT_MS,
    WebhookApplied, WebhookFinish, WebhookInput,
};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or is overloaded; safe to retry.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// Any other database error (a bug).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// `DATABASE_URL` cannot be used, or no host offered a read-write session in time.
    #[error(transparent)]
    Connect(calls_db::ConnectError),
    /// A stored row does not decode.
    #[error("inconsistent stored data: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether retrying later may succeed (the API answers 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_)
                | StoreError::Connect(calls_db::ConnectError::NoSuitableHost { .. })
        )
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if calls_db::is_transient(&e) {
            StoreError::Unavailable(e)
        } else {
            StoreError::Database(e)
        }
    }
}

/// A handle to notifier's tables; cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Owns the pool's primary follower (a multi-host Postgres URL), which stops with the
    /// last clone.
    _database: calls_db::Database,
}

impl Store {
    /// Connects to `url` with at most `max_connections` pooled connections, waiting at most
    /// `acquire_timeout` for one.
    pub async fn connect(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Store, StoreError> {
        let database = calls_db::Database::connect(
            url,
            &calls_db::PoolConfig {
                max_connections,
                acquire_timeout,
            },
        )
        .await
        .map_err(|e| match e {
            calls_db::ConnectError::Database(e) => StoreError::from(e),
            other => StoreError::Connect(other),
        })?;
        Ok(Store {
            pool: database.pool().clone(),
            backend: database.backend(),
            _database: database,
        })
    }

    /// Which database this store uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the pending migrations (idempotent; replicas serialize on sqlx's lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator(self.backend).run(&self.pool).await?;
        Ok(())
    }

    /// Checks the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(calls_db::begin_write(&self.pool, self.backend).await?)
    }
}

fn migrator(backend: Backend) -> Migrator {
    let (init, webhooks) = match backend {
        Backend::Postgres => (
            include_str!("../../migrations/postgres/0001_init.sql"),
            include_str!("../../migrations/postgres/0002_webhooks.sql"),
        ),
        Backend::Sqlite => (
            include_str!("../../migrations/sqlite/0001_init.sql"),
            include_str!("../../migrations/sqlite/0002_webhooks.sql"),
        ),
    };
    calls_db::migrator(
        "_notifier_migrations",
        &[(1, "init", init), (2, "webhooks", webhooks)],
    )
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    calls_db::to_millis(time::OffsetDateTime::now_utc())
}
