//! Firing due timers (ring timeout, disconnect grace, max duration) exactly once across
//! replicas.
//!
//! Each timer fires in its own short transaction: claim one due row with
//! `FOR UPDATE SKIP LOCKED` (replicas never claim the same row), lock its call with
//! `SKIP LOCKED` too, run the domain command, delete the row, commit. Locking the call
//! without waiting matters: [`Store::apply`] locks the call first and then touches timer
//! rows, so waiting here (timer row, then call) could deadlock with it. A call that is busy
//! is skipped for this round and picked up on the next poll.
//!
//! On SQLite every writing transaction is serialized (`BEGIN IMMEDIATE`), which gives the same
//! guarantee for any number of pollers on one database file.

use sqlx::{AssertSqlSafe, Row};
use time::OffsetDateTime;

use crate::domain::timefmt::{from_millis, to_millis};
use crate::domain::{CallId, DomainEvent, TimerKind};

use super::rows::{EventMeta, load_call, parse_call_id, persist, placeholders};
use super::{Store, StoreError};

/// A timer that fired, and what it caused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredTimer {
    /// The call.
    pub call_id: CallId,
    /// Which timer.
    pub kind: TimerKind,
    /// The participant, for disconnect-grace timers.
    pub user_id: Option<String>,
    /// When it was due.
    pub due_at: OffsetDateTime,
    /// The events the command produced (already in the outbox).
    pub events: Vec<DomainEvent>,
}

impl Store {
    /// Fires up to `limit` timers due at `now`, oldest first. Safe to call from every replica
    /// at once: each timer fires exactly once. Timers whose call is being changed right now
    /// are left for the next call.
    pub async fn fire_due_timers(
        &self,
        now: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<FiredTimer>, StoreError> {
        let now_ms = to_millis(now);
        let mut fired = Vec::new();
        // Timers skipped this round because their call was locked; excluded from later
        // claims so the loop moves on to other timers.
        let mut skipped: Vec<i64> = Vec::new();
        while fired.len() < limit {
            let mut tx = self.begin_write().await?;
            let exclude = if skipped.is_empty() {
                String::new()
            } else {
                format!("AND id NOT IN ({})", placeholders(2, skipped.len()))
            };
            let sql = format!(
                "SELECT id, call_id, kind, user_id, due_at FROM call_timers \
                 WHERE due_at <= $1 {exclude} ORDER BY due_at, id LIMIT 1{}",
                self.backend.skip_locked()
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now_ms);
            for id in &skipped {
                q = q.bind(*id);
            }
            let Some(row) = q.fetch_optional(&mut *tx).await? else {
                tx.rollback().await?;
                break;
            };
            let timer_id: i64 = row.try_get("id")?;
            let call_id = parse_call_id(&row.try_get::<String, _>("call_id")?)?;
            let kind_text: String = row.try_get("kind")?;
            let user_id: Option<String> = row.try_get("user_id")?;
            let due_ms: i64 = row.try_get("due_at")?;

            let lock = format!(
                "SELECT id FROM calls WHERE id = $1{}",
                self.backend.skip_locked()
            );
            let locked = sqlx::query(AssertSqlSafe(lock))
                .bind(call_id.to_string())
                .fetch_optional(&mut *tx)
                .await?;
            if locked.is_none() {
                tx.rollback().await?;
                skipped.push(timer_id);
                continue;
            }

            sqlx::query("DELETE FROM call_timers WHERE id = $1")
                .bind(timer_id)
                .execute(&mut *tx)
                .await?;
            let Some(kind) = TimerKind::parse(&kind_text) else {
                // Not ours to interpret (a newer version's timer?): drop it rather than
                // retrying it forever.
                tracing::warn!(%call_id, kind = %kind_text, "dropping timer of unknown kind");
                tx.commit().await?;
                continue;
            };
            let Some(mut call) = load_call(&mut tx, call_id, "").await? else {
                tx.commit().await?;
                continue;
            };
            let before = call.clone();
            let outcome = call.fire_timer(kind, user_id.as_deref(), now);
            persist(
                &mut tx,
                Some(&before),
                &call,
                &outcome,
                &EventMeta::default(),
            )
            .await?;
            tx.commit().await?;
            fired.push(FiredTimer {
                call_id,
                kind,
                user_id,
                due_at: from_millis(due_ms).unwrap_or(now),
                events: outcome.events,
            });
        }
        Ok(fired)
    }

    /// When the next timer is due, if any: lets a poller sleep until then.
    pub async fn next_timer_due(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        let row = sqlx::query("SELECT MIN(due_at) AS due FROM call_timers")
            .fetch_one(&self.pool)
            .await?;
        let due: Option<i64> = row.try_get("due")?;
        Ok(due.and_then(from_millis))
    }
}
