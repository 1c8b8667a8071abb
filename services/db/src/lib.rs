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
//! The rest is what every store built on it needs: [`DatabaseConfig`] (`DATABASE_URL` and the
//! pool's limits, flattened into each service's configuration), [`begin_write`] and the row-lock
//! suffixes of [`Backend`], [`migrator`] (each service records its migrations in a table of its
//! own, so two services can share one database), [`is_transient`] (the errors worth a 503 and a
//! retry, as opposed to bugs) and row encoding helpers ([`placeholders`], [`get_bool`],
//! [`to_millis`], [`from_millis`]).
//!
//! Modules: [`hosts`] (splitting a multi-host URL), [`follow`] (the follower task and the pool
//! hooks).

pub mod follow;
pub mod hosts;

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use common::config::Secret;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row, SqlSafeStr, Transaction};
use time::OffsetDateTime;

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

    /// Locks the selected rows until the transaction ends (Postgres; SQLite write
    /// transactions hold the database lock already).
    pub fn for_update(self) -> &'static str {
        match self {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }

    /// Locks the selected rows, skipping rows another transaction holds, so replicas share
    /// work instead of queueing for it.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
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

/// Starts a transaction that will write. On SQLite it takes the write lock at once, so
/// concurrent writers queue on `busy_timeout` instead of failing when a read lock cannot be
/// upgraded; this also serializes read-modify-write sequences, which is what a row lock does
/// on Postgres.
pub async fn begin_write(
    pool: &AnyPool,
    backend: Backend,
) -> Result<Transaction<'static, Any>, sqlx::Error> {
    match backend {
        Backend::Postgres => pool.begin().await,
        Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
    }
}

/// One embedded migration: version, description, SQL.
pub type MigrationSource = (i64, &'static str, &'static str);

/// A migrator for `migrations`, recording what it applied in `table` (each service its own, so
/// several services can share one database).
pub fn migrator(table: &'static str, migrations: &[MigrationSource]) -> Migrator {
    let migrations = migrations
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                sqlx::AssertSqlSafe(*sql).into_sql_str(),
                false,
            )
        })
        .collect();
    let mut migrator = Migrator::with_migrations(migrations);
    if table != "_sqlx_migrations" {
        // "dangerous" in sqlx's naming only because changing the table of an existing
        // database would re-run everything; each service has used its table from the start.
        migrator.dangerous_set_table_name(table);
    }
    migrator
}

/// Connection-level and contention failures (retrying later may succeed), as opposed to errors
/// in what we asked.
pub fn is_transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else {
                return false;
            };
            let code = code.as_ref();
            // SQLite reports numeric result codes (possibly extended: low byte is the primary
            // code). BUSY(5)/LOCKED(6) are contention; IOERR(10)/FULL(13)/CANTOPEN(14) mean
            // the file is not usable right now.
            if let Ok(n) = code.parse::<u32>() {
                return matches!(n & 0xff, 5 | 6 | 10 | 13 | 14);
            }
            // Postgres SQLSTATE: 08 connection exception, 53 insufficient resources,
            // 57P01-03 shutdown / cannot connect now, 40001/40P01 serialization / deadlock.
            // 25006 is a write that reached a node just demoted to a standby (the pool leaves it
            // within a second; see `follow`).
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(
                    code,
                    "57P01" | "57P02" | "57P03" | "40001" | "40P01" | "25006"
                )
        }
        _ => false,
    }
}

/// Whether `e` is a unique-constraint violation (Postgres 23505, SQLite 2067/1555).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(
            db.code().as_deref(),
            Some("23505") | Some("2067") | Some("1555")
        ),
        _ => false,
    }
}

/// `$from, $from+1, …` (`n` of them), for `IN (…)` lists.
pub fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads a boolean column: BOOLEAN on Postgres, INTEGER 0/1 on SQLite.
pub fn get_bool(row: &AnyRow, col: &str) -> Result<bool, sqlx::Error> {
    match row.try_get::<bool, _>(col) {
        Ok(b) => Ok(b),
        Err(_) => Ok(row.try_get::<i64, _>(col)? != 0),
    }
}

/// Unix milliseconds, as stored.
pub fn to_millis(t: OffsetDateTime) -> i64 {
    // i128 -> i64 cannot overflow for any representable OffsetDateTime (year ±9999).
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The instant of `millis` unix milliseconds, `None` when out of range.
pub fn from_millis(millis: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(millis) * 1_000_000).ok()
}

/// Where a service keeps its tables (`DATABASE_URL` and the pool's limits).
#[derive(clap::Args, Clone, Debug)]
pub struct DatabaseConfig {
    /// `postgres://user@host/db` or `sqlite://path/to/calls.db`. For a replicated Postgres,
    /// list every host and ask for the primary:
    /// `postgres://user@db1:5432,db2:5432/calls?target_session_attrs=read-write` (connections
    /// follow the primary across a failover).
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    pub url: Secret,
    /// Connection pool size.
    #[arg(
        long = "database-max-connections",
        env = "DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before answering 503
    /// `DEPENDENCY_UNAVAILABLE`; while the database is down, every request waits this long
    #[arg(
        long = "database-acquire-timeout-ms",
        env = "DATABASE_ACQUIRE_TIMEOUT_MS",
        default_value_t = 5000
    )]
    pub acquire_timeout_ms: u64,
}

impl DatabaseConfig {
    /// The pool's acquire timeout (at least 1 ms).
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.acquire_timeout_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend_and_anything_else_is_refused() {
        assert_eq!(
            Backend::from_url("postgres://h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("postgresql://h/db").ok(),
            Some(Backend::Postgres)
        );
        assert_eq!(
            Backend::from_url("sqlite://data/x.db").ok(),
            Some(Backend::Sqlite)
        );
        assert_eq!(
            Backend::from_url("sqlite::memory:").ok(),
            Some(Backend::Sqlite)
        );
        assert!(Backend::from_url("mysql://h/db").is_err());
    }

    #[test]
    fn placeholders_number_from_the_given_index() {
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(placeholders(1, 0), "");
    }

    #[test]
    fn milliseconds_round_trip() {
        let t = from_millis(1_767_225_600_123).expect("in range");
        assert_eq!(to_millis(t), 1_767_225_600_123);
    }

    #[tokio::test]
    async fn two_services_migrate_one_database_without_colliding() {
        let db = Database::connect("sqlite::memory:", &PoolConfig::default())
            .await
            .expect("in-memory sqlite");
        assert_eq!(db.backend(), Backend::Sqlite);
        let pool = db.pool();
        let a = migrator("_a_migrations", &[(1, "init", "CREATE TABLE a (x TEXT)")]);
        let b = migrator("_b_migrations", &[(1, "init", "CREATE TABLE b (y TEXT)")]);
        a.run(pool).await.expect("a migrates");
        b.run(pool).await.expect("b migrates beside a");
        a.run(pool).await.expect("a again is a no-op");
        sqlx::query("INSERT INTO b (y) VALUES ('ok')")
            .execute(pool)
            .await
            .expect("b's table exists");
    }
}
