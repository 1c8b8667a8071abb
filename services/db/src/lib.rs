//! calls-db: how a service that owns tables connects to its database, so every such service
//! (calls-api, notifier) behaves the same when the database is a file, one server, or a
//! replicated cluster that fails over.
//!
//! [`Database::connect`] takes a `DATABASE_URL` and a [`PoolConfig`] and answers an sqlx
//! [`AnyPool`]:
//! - `sqlite:…`: the file is created if missing (unless the URL sets `mode`), in WAL mode with a
//!   busy timeout and foreign keys on; `sqlite::memory:` keeps one never-recycled connection.
//! - `postgres://…` with one host: a plain pool.
//! - `postgres://user@h1:5432,h2:5432/db?target_session_attrs=read-write` (libpq's multi-host
//!   form, which sqlx does not parse): the pool follows whichever host is the primary, across a
//!   failover ([`follow`]). `target_session_attrs` may be `read-write` (what a writer wants),
//!   `primary` or `any` (the first host that answers).
//!
//! Modules: [`hosts`] (splitting a multi-host URL), [`follow`] (the follower task and the pool
//! hooks).

pub mod follow;
pub mod hosts;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool, Executor};

pub use follow::{CHECK_INTERVAL, SWITCHES_METRIC, UP_METRIC};
pub use hosts::Target;

/// How SQLite waits for the write lock. Writers hold it for a few milliseconds, so this only
/// runs out under pathological load.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 15_000;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://…` / `postgresql://…`
    Postgres,
    /// `sqlite:…`
    Sqlite,
}

impl Backend {
    /// The backend of a `DATABASE_URL`.
    pub fn from_url(url: &str) -> Result<Backend, ConnectError> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(ConnectError::UnsupportedUrl)
        }
    }
}

/// How big the pool is and how long callers wait for a connection.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// At most this many connections (at least 1; an in-memory SQLite database always has 1).
    pub max_connections: u32,
    /// How long acquiring a connection may take before it fails with
    /// [`sqlx::Error::PoolTimedOut`]: while the database is down, or while a failover has left
    /// no primary, every query fails after this long (answer 503 and let the client retry).
    /// Also bounds how long [`Database::connect`] looks for a usable host.
    pub acquire_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_connections: 10,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Why [`Database::connect`] failed. Messages never repeat the URL (it holds credentials).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Neither `postgres://…` nor `sqlite:…`.
    #[error("unsupported database URL: expected postgres://… or sqlite:…")]
    UnsupportedUrl,
    /// A Postgres URL this crate cannot honour (an unsupported `target_session_attrs`, …).
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// No host of the URL accepted a session that meets `target_session_attrs` within the
    /// acquire timeout (a failover in progress, or every host down). Retrying may succeed.
    #[error("none of the {hosts} database hosts offered a {target} session")]
    NoSuitableHost { hosts: usize, target: &'static str },
    /// The driver failed (unreachable server, refused credentials, …).
    #[error(transparent)]
    Database(sqlx::Error),
}

/// A connected pool; cheap to clone. Keep a clone for as long as the pool is used: for a
/// followed Postgres URL the follower task stops when the last clone is dropped (or when the
/// pool is closed).
#[derive(Clone)]
pub struct Database {
    pool: AnyPool,
    backend: Backend,
    follower: Option<Arc<follow::FollowerGuard>>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("backend", &self.backend)
            .field("follows_primary", &self.follower.is_some())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Connects to `url` (see the crate docs for the forms), with at least one connection
    /// established (or, for a followed URL, a usable host found) within
    /// `config.acquire_timeout`.
    pub async fn connect(url: &str, config: &PoolConfig) -> Result<Database, ConnectError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::from_url(url)?;
        let options = AnyPoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .acquire_timeout(config.acquire_timeout);
        match backend {
            Backend::Sqlite => {
                let pool = connect_sqlite(url, options).await?;
                Ok(Database {
                    pool,
                    backend,
                    follower: None,
                })
            }
            Backend::Postgres => {
                let parsed = hosts::parse(url)?;
                if !parsed.follows {
                    let pool = options.connect(url).await.map_err(ConnectError::Database)?;
                    return Ok(Database {
                        pool,
                        backend,
                        follower: None,
                    });
                }
                let (pool, guard) =
                    follow::connect(parsed, options, config.acquire_timeout).await?;
                Ok(Database {
                    pool,
                    backend,
                    follower: Some(Arc::new(guard)),
                })
            }
        }
    }

    /// The pool.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }
}

async fn connect_sqlite(url: &str, options: AnyPoolOptions) -> Result<AnyPool, ConnectError> {
    let mut options = options;
    let mut url = Cow::Borrowed(url);
    let in_memory = url.contains(":memory:") || url.contains("mode=memory");
    if in_memory {
        // Each connection to an in-memory database sees its own empty database.
        options = options
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None);
    } else if !url.contains("mode=") {
        let sep = if url.contains('?') { '&' } else { '?' };
        url = Cow::Owned(format!("{url}{sep}mode=rwc"));
    }
    options
        .after_connect(move |conn: &mut AnyConnection, _meta| {
            Box::pin(async move {
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}"
                )))
                .await?;
                if !in_memory {
                    // WAL persists in the file; setting it again is a cheap no-op.
                    conn.execute("PRAGMA journal_mode = WAL").await?;
                    // Durable across application crashes; only an OS crash may lose the last
                    // transactions, the usual trade-off for WAL.
                    conn.execute("PRAGMA synchronous = NORMAL").await?;
                }
                conn.execute("PRAGMA foreign_keys = ON").await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
        .map_err(ConnectError::Database)
}
