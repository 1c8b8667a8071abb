//! Persistence: PostgreSQL for deployments, SQLite for the embedded default, chosen by URL.
//!
//! The store is what makes the state machine's rules hold across replicas. Every change goes
//! through [`Store::apply`]: load the call under a row lock, run a pure domain command, write
//! the changed rows, the events (the outbox) and the timer rows, all in one transaction. The
//! rest is built on the same pattern:
//! - [`Store::initiate`]: one live call per room, enforced by a partial unique index (insert,
//!   and on conflict read the call that won: the glare merge); busy detection and the
//!   idempotency key in the same transaction.
//! - [`Store::fire_due_timers`]: timers are rows claimed with `FOR UPDATE SKIP LOCKED`, so
//!   each fires once however many replicas poll, and none is lost to a restart.
//! - presence ([`Store::socket_connected`], …): sockets reported by signaling nodes; a user
//!   whose last socket goes (or whose node stops heartbeating) is disconnected from their
//!   live calls, which starts the disconnect grace.
//! - the outbox ([`Store::unpublished_events`], [`Store::mark_published`]) for the relay.
//! - Agora's channel notices ([`Store::apply_channel_notice`]): deduplicated by `noticeId` in
//!   the same transaction as the change they cause.
//!
//! One set of SQL serves both backends through sqlx's `Any` driver: ids are TEXT, timestamps
//! BIGINT unix milliseconds, `$n` placeholders work on both. The differences are confined to
//! [`Backend`]: how a writing transaction starts (`BEGIN IMMEDIATE` on SQLite, which takes the
//! single write lock up front instead of failing on upgrade) and the row-locking suffixes
//! (Postgres only; SQLite transactions are already serialized), plus the migrations.
//! Connecting (SQLite pragmas, following a Postgres primary) is [`calls_db`]'s, shared with the
//! other services that own tables.

mod calls;
mod error;
mod kicks;
mod members;
mod ncs;
mod outbox;
mod presence;
mod rows;
mod timers;

use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Transaction};

pub use calls::{CallPage, Initiated, MAX_PAGE};
pub use error::StoreError;
pub use kicks::ClaimedKick;
pub use ncs::NoticeApplied;
pub use outbox::{OutboxEvent, RelayStep};
pub use presence::NodeExpiry;
pub use rows::EventMeta;
pub use timers::FiredTimer;

pub use calls_db::Backend;

/// How long a request waits for a pooled connection before the store reports the database
/// unavailable, unless configured (`DATABASE_ACQUIRE_TIMEOUT_MS`): long enough to ride out a
/// burst, short enough to answer 503 promptly.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// A handle to the calls database; cheap to clone (a connection pool).
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Owns the pool's primary follower (a multi-host Postgres URL), which stops with the
    /// last clone.
    _database: calls_db::Database,
}

impl Store {
    /// Connects to `url` (`postgres://…` or `sqlite:…`) with at most `max_connections`
    /// pooled connections. A SQLite file is created if missing (unless the URL sets `mode`),
    /// and runs in WAL mode so readers do not wait for the writer. A Postgres URL may list
    /// several hosts with `target_session_attrs=read-write`: the pool then follows the
    /// primary across a failover (see [`calls_db`]).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store, StoreError> {
        Self::connect_with(url, max_connections, DEFAULT_ACQUIRE_TIMEOUT).await
    }

    /// [`Store::connect`] with how long a request may wait for a pooled connection (and so
    /// how long a request takes to answer 503 while the database is down).
    pub async fn connect_with(
        url: &str,
        max_connections: u32,
        acquire_timeout: Duration,
    ) -> Result<Store, StoreError> {
        let backend = Backend::from_url(url)?;
        let database = calls_db::Database::connect(
            url,
            &calls_db::PoolConfig {
                max_connections,
                acquire_timeout,
            },
        )
        .await?;
        Ok(Store {
            pool: database.pool().clone(),
            backend,
            _database: database,
        })
    }

    /// Which database this store uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Applies the pending migrations of this backend (idempotent; on Postgres concurrent
    /// replicas serialize on an advisory lock).
    pub async fn migrate(&self) -> Result<(), StoreError> {
        migrator(self.backend).run(&self.pool).await?;
        Ok(())
    }

    /// Checks the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock at once, so
    /// concurrent writers queue on `busy_timeout` instead of failing when a read lock cannot
    /// be upgraded; this also serializes the read-modify-write of a call, which is what a
    /// row lock does on Postgres.
    async fn begin_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(calls_db::begin_write(&self.pool, self.backend).await?)
    }
}

/// The embedded migrations of a backend.
fn migrator(backend: Backend) -> Migrator {
    let (init, origin, roster, ncs, media_time, kicks) = match backend {
        Backend::Postgres => (
            include_str!("../../migrations/postgres/0001_init.sql"),
            include_str!("../../migrations/postgres/0002_event_origin.sql"),
            include_str!("../../migrations/postgres/0003_roster.sql"),
            include_str!("../../migrations/postgres/0004_agora_ncs.sql"),
            include_str!("../../migrations/postgres/0005_media_time.sql"),
            include_str!("../../migrations/postgres/0006_media_kicks.sql"),
        ),
        Backend::Sqlite => (
            include_str!("../../migrations/sqlite/0001_init.sql"),
            include_str!("../../migrations/sqlite/0002_event_origin.sql"),
            include_str!("../../migrations/sqlite/0003_roster.sql"),
            include_str!("../../migrations/sqlite/0004_agora_ncs.sql"),
            include_str!("../../migrations/sqlite/0005_media_time.sql"),
            include_str!("../../migrations/sqlite/0006_media_kicks.sql"),
        ),
    };
    // sqlx's default table: databases migrated before the table became per service keep it.
    calls_db::migrator(
        "_sqlx_migrations",
        &[
            (1, "init", init),
            (2, "event origin", origin),
            (3, "roster", roster),
            (4, "agora ncs", ncs),
            (5, "media time", media_time),
            (6, "media kicks", kicks),
        ],
    )
}
