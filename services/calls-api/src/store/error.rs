//! Store errors, sorted by what the API should answer: a refused command (the domain's
//! error, passed through), "try again later" (`Unavailable` → 503 `DEPENDENCY_UNAVAILABLE`),
//! or a bug/inconsistency (500).

use crate::domain::DomainError;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The state machine refused the command; nothing was written.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The database cannot be reached or is overloaded (connection refused or lost, pool
    /// exhausted, SQLite busy, Postgres shutting down). Safe to retry.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A race kept being lost (the room's live call changing under a retried initiate).
    /// Safe to retry.
    #[error("too much contention, try again")]
    Contended,
    /// Any other database error (a bug: bad SQL, constraint the code did not expect).
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    /// Applying the migrations failed.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A stored row does not decode (unknown enum value, malformed id): data written by
    /// something else, or a schema mismatch.
    #[error("inconsistent stored data: {0}")]
    Corrupt(String),
    /// `DATABASE_URL` is neither `postgres://…` nor `sqlite:…`.
    #[error("unsupported database URL: expected postgres://… or sqlite://…")]
    UnsupportedUrl,
    /// `DATABASE_URL` asks for something the connection layer does not support.
    #[error("{0}")]
    InvalidUrl(String),
    /// No database host offered a read-write session in time (a failover in progress, or
    /// every host down). Safe to retry.
    #[error("{0}")]
    NoPrimary(String),
}

impl StoreError {
    /// Whether retrying later may succeed (the API answers 503).
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_) | StoreError::Contended | StoreError::NoPrimary(_)
        )
    }

    pub(crate) fn corrupt(what: impl Into<String>) -> Self {
        StoreError::Corrupt(what.into())
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

impl From<calls_db::ConnectError> for StoreError {
    fn from(e: calls_db::ConnectError) -> Self {
        use calls_db::ConnectError as E;
        match e {
            E::UnsupportedUrl => StoreError::UnsupportedUrl,
            E::InvalidUrl(why) => StoreError::InvalidUrl(why),
            e @ E::NoSuitableHost { .. } => StoreError::NoPrimary(e.to_string()),
            E::Database(e) => e.into(),
        }
    }
}
