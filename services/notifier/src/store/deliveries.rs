//! The delivery queue: claimed under a lease, finished with what the provider answered.
//!
//! A claim sets `locked_until` (the lease) and counts the attempt, in one statement over rows
//! locked with `FOR UPDATE SKIP LOCKED`, so replicas never claim the same row. A worker that
//! dies mid-send leaves the row pending; once the lease runs out another worker sends it again
//! (at least once: the provider may then get it twice, which only a crash right after the
//! provider answered can cause).

use sqlx::{AssertSqlSafe, Row};

use super::{Store, StoreError};
use crate::plan::{Lane, PushRequest};

/// A delivery a worker now holds.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Row id.
    pub id: i64,
    /// `incoming_call`, `incoming_call_cancelled`, `missed_call`.
    pub kind: String,
    /// The call.
    pub call_id: String,
    /// The user.
    pub user_id: String,
    /// The device.
    pub device_id: String,
    /// The token to push to.
    pub token: String,
    /// What to send.
    pub request: PushRequest,
    /// Attempts so far, this one included.
    pub attempts: i64,
    /// Never sent after this, unix milliseconds.
    pub deadline_ms: i64,
    /// When the event that caused it was created, unix milliseconds.
    pub event_at_ms: i64,
}

/// How a delivery ends, or when it is tried again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// The provider accepted it.
    Sent,
    /// Refused for good (bad payload, bad credentials, dead token).
    Failed(String),
    /// Its deadline passed before it could be sent.
    Expired,
    /// Try again at `due_ms`.
    Retry {
        /// Unix milliseconds.
        due_ms: i64,
        /// Why the last attempt failed.
        reason: String,
    },
}

impl Store {
    /// Claims up to `limit` due deliveries of `lane` for `lease_ms`.
    pub async fn claim(
        &self,
        lane: Lane,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
    ) -> Result<Vec<Claimed>, StoreError> {
        let sql = format!(
            "UPDATE deliveries SET locked_until = $1, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM deliveries WHERE status = 'pending' AND lane = $2 \
             AND due_at <= $3 AND (locked_until IS NULL OR locked_until <= $3) \
             ORDER BY due_at, id LIMIT $4{}) \
             RETURNING id, kind, call_id, user_id, device_id, token, request, attempts, \
             deadline_at, event_at",
            self.backend.skip_locked()
        );
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(now_ms + lease_ms)
            .bind(lane.as_str())
            .bind(now_ms)
            .bind(i64::from(limit.max(1)))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = row.try_get("id")?;
            let request: String = row.try_get("request")?;
            let Ok(request) = serde_json::from_str::<PushRequest>(&request) else {
                // Written by a different version: failing it is better than retrying forever.
                self.finish(id, &Finish::Failed("undecodable request".into()), now_ms)
                    .await?;
                continue;
            };
            claimed.push(Claimed {
                id,
                kind: row.try_get("kind")?,
                call_id: row.try_get("call_id")?,
                user_id: row.try_get("user_id")?,
                device_id: row.try_get("device_id")?,
                token: row.try_get("token")?,
                request,
                attempts: row.try_get("attempts")?,
                deadline_ms: row.try_get("deadline_at")?,
                event_at_ms: row.try_get("event_at")?,
            });
        }
        Ok(claimed)
    }

    /// Records how an attempt ended. A delivery cancelled meanwhile stays cancelled.
    pub async fn finish(&self, id: i64, finish: &Finish, now_ms: i64) -> Result<(), StoreError> {
        let query = match finish {
            Finish::Sent => sqlx::query(
                "UPDATE deliveries SET status = 'sent', finished_at = $1, locked_until = NULL, \
                 last_error = NULL WHERE id = $2 AND status = 'pending'",
            )
            .bind(now_ms)
            .bind(id),
            Finish::Failed(reason) => sqlx::query(
                "UPDATE deliveries SET status = 'failed', finished_at = $1, locked_until = NULL, \
                 last_error = $3 WHERE id = $2 AND status = 'pending'",
            )
            .bind(now_ms)
            .bind(id)
            .bind(reason.clone()),
            Finish::Expired => sqlx::query(
                "UPDATE deliveries SET status = 'expired', finished_at = $1, locked_until = NULL \
                 WHERE id = $2 AND status = 'pending'",
            )
            .bind(now_ms)
            .bind(id),
            Finish::Retry { due_ms, reason } => sqlx::query(
                "UPDATE deliveries SET due_at = $1, locked_until = NULL, last_error = $3 \
                 WHERE id = $2 AND status = 'pending'",
            )
            .bind(*due_ms)
            .bind(id)
            .bind(reason.clone()),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Pending deliveries of `lane` and the age of the oldest due one (for metrics).
    pub async fn backlog(&self, lane: Lane, now_ms: i64) -> Result<(i64, i64), StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, MIN(due_at) AS oldest FROM deliveries \
             WHERE status = 'pending' AND lane = $1 AND due_at <= $2",
        )
        .bind(lane.as_str())
        .bind(now_ms)
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = row.try_get("n")?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        Ok((n, oldest.map_or(0, |o| (now_ms - o).max(0))))
    }

    /// Every delivery of `user_id`, newest first (for tests and support).
    pub async fn deliveries_of(
        &self,
        user_id: &str,
    ) -> Result<Vec<(String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT device_id, kind, status FROM deliveries WHERE user_id = $1 ORDER BY id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("device_id")?,
                    r.try_get("kind")?,
                    r.try_get("status")?,
                ))
            })
            .collect()
    }
}
