//! calls-db: the database plumbing every service that owns tables shares (calls-api, notifier).
//!
//! One set of SQL serves PostgreSQL (deployments) and SQLite (the embedded default) through
//! sqlx's `Any` driver: ids are TEXT, timestamps BIGINT unix milliseconds, `$n` placeholders
//! work on both. The differences are confined to [`Backend`]: how a writing transaction starts
//! (`BEGIN IMMEDIATE` on SQLite, which takes the single write lock up front instead of failing
//! on upgrade), the row-locking suffixes (Postgres only; SQLite write transactions are already
//! serialized), the migrations and a few connection pragmas.
//!
//! Each service keeps its own migrations table ([`migrator`]), so two services may share one
//! database (one Postgres holding both schemas, or the standalone process's SQLite file)
//! without their migration histories colliding.
//!
//! - [`DatabaseConfig`]: `DATABASE_URL` and the pool settings, flattened into each service's
//!   configuration.
//! - [`connect`]: a pool for a `DATABASE_URL`, with the SQLite pragmas and in-memory handling.
//! - [`begin_write`], [`Backend::for_update`], [`Backend::skip_locked`]: writing transactions.
//! - [`migrator`]: a service's embedded migrations under its own table.
//! - [`is_transient`]: the errors worth a 503 and a retry, as opposed to bugs.
//! - [`placeholders`], [`get_bool`], [`to_millis`], [`from_millis`]: row encoding helpers.

use std::borrow::Cow;
use std::time::Duration;

use common::config::Secret;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{Any, AnyConnection, AnyPool, Executor, Row, SqlSafeStr, Transaction};
use time::OffsetDateTime;

/// Which database a pool talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `postgres://…` / `postgresql://…`
    Postgres,
    /// `sqlite:…`
    Sqlite,
}

/// A `DATABASE_URL` that is neither `postgres://…` nor `sqlite:…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unsupported database URL: expected postgres://… or sqlite://…")]
pub struct UnsupportedUrl;

impl Backend {
    /// The backend a `DATABASE_URL` names.
    pub fn from_url(url: &str) -> Result<Backend, UnsupportedUrl> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else {
            Err(UnsupportedUrl)
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

/// How long SQLite waits for the write lock. Writers hold it for a few milliseconds, so this
/// only runs out under pathological load.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 15_000;

/// Why [`connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL names no supported database.
    #[error(transparent)]
    UnsupportedUrl(#[from] UnsupportedUrl),
    /// The database refused or could not be reached.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

/// A pool of at most `max_connections` connections to `url` (`postgres://…` or `sqlite:…`),
/// whose requests wait at most `acquire_timeout` for a connection (and so how long a request
/// takes to fail while the database is down).
///
/// A SQLite file is created if missing (unless the URL sets `mode`) and runs in WAL mode so
/// readers do not wait for the writer. An in-memory SQLite database (`sqlite::memory:`) uses a
/// single, never-recycled connection, since each connection would otherwise see its own empty
/// database.
pub async fn connect(
    url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<(AnyPool, Backend), ConnectError> {
    sqlx::any::install_default_drivers();
    let backend = Backend::from_url(url)?;
    let mut options = AnyPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(acquire_timeout);
    let mut url = Cow::Borrowed(url);
    if backend == Backend::Sqlite {
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        if in_memory {
            options = options
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
        } else if !url.contains("mode=") {
            let sep = if url.contains('?') { '&' } else { '?' };
            url = Cow::Owned(format!("{url}{sep}mode=rwc"));
        }
        options = options.after_connect(move |conn: &mut AnyConnection, _meta| {
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
        });
    }
    let pool = options.connect(&url).await?;
    Ok((pool, backend))
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
            code.starts_with("08")
                || code.starts_with("53")
                || matches!(code, "57P01" | "57P02" | "57P03" | "40001" | "40P01")
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
    /// `postgres://user@host/db` or `sqlite://path/to/calls.db`.
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
        assert_eq!(Backend::from_url("postgres://h/db"), Ok(Backend::Postgres));
        assert_eq!(
            Backend::from_url("postgresql://h/db"),
            Ok(Backend::Postgres)
        );
        assert_eq!(Backend::from_url("sqlite://data/x.db"), Ok(Backend::Sqlite));
        assert_eq!(Backend::from_url("sqlite::memory:"), Ok(Backend::Sqlite));
        assert_eq!(Backend::from_url("mysql://h/db"), Err(UnsupportedUrl));
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
        let (pool, backend) = connect("sqlite::memory:", 1, Duration::from_secs(5))
            .await
            .expect("in-memory sqlite");
        assert_eq!(backend, Backend::Sqlite);
        let a = migrator("_a_migrations", &[(1, "init", "CREATE TABLE a (x TEXT)")]);
        let b = migrator("_b_migrations", &[(1, "init", "CREATE TABLE b (y TEXT)")]);
        a.run(&pool).await.expect("a migrates");
        b.run(&pool).await.expect("b migrates beside a");
        a.run(&pool).await.expect("a again is a no-op");
        sqlx::query("INSERT INTO b (y) VALUES ('ok')")
            .execute(&pool)
            .await
            .expect("b's table exists");
    }
}
