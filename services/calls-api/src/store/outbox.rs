//! The outbox: events written with the state change that caused them, read by the relay,
//! published to the bus, then marked.
//!
//! Delivery is at-least-once: a relay that dies between publishing and marking publishes
//! again, so it publishes with the row id as message id and the bus deduplicates.

use std::time::Duration;

use sqlx::{AssertSqlSafe, Row};
use time::OffsetDateTime;

use crate::domain::timefmt::{from_millis, to_millis};
use crate::domain::{Audience, CallId};

use super::rows::{parse_call_id, placeholders};
use super::{Backend, Store, StoreError};

/// One event for one audience, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEvent {
    /// Row id: increasing in commit order per call; use it as the bus message id.
    pub id: i64,
    /// The call the event is about.
    pub call_id: CallId,
    /// The call's event counter; `None` for user-addressed events.
    pub seq: Option<u64>,
    /// Where to publish: the call's subject or a user's.
    pub audience: Audience,
    /// The Socket.IO event name.
    pub event: String,
    /// The exact wire JSON.
    pub payload: String,
    /// The W3C `traceparent` of the request that caused the event.
    pub trace_context: Option<String>,
    /// The socket whose command caused it (see [`super::EventMeta`]).
    pub origin_socket: Option<String>,
    /// The device that caused it, when the app said.
    pub origin_device: Option<String>,
    /// When the event happened.
    pub created_at: OffsetDateTime,
}

/// What one [`Store::relay_step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayStep {
    /// Another replica is relaying right now.
    Busy,
    /// `count` events published; `more` when a full batch was read (call again at once);
    /// `stopped` when the publisher refused one (the bus is down).
    Published {
        count: usize,
        more: bool,
        stopped: bool,
    },
}

/// Advisory-lock key of the relay ("calls-outbox" as an arbitrary fixed 63-bit number).
const RELAY_LOCK_KEY: i64 = 0x63616c6c_6f757462;

const UNPUBLISHED_SQL: &str = "SELECT id, call_id, seq, audience, audience_id, event, payload, trace_context, \
     created_at, origin_socket, origin_device FROM call_events WHERE published_at IS NULL ORDER BY id LIMIT $1";

fn outbox_row(row: &sqlx::any::AnyRow) -> Result<OutboxEvent, StoreError> {
    let call_id = parse_call_id(&row.try_get::<String, _>("call_id")?)?;
    let audience_kind: String = row.try_get("audience")?;
    let target: String = row.try_get("audience_id")?;
    let audience = match audience_kind.as_str() {
        "call" => Audience::Call(parse_call_id(&target)?),
        "user" => Audience::User(target),
        "nodes" => Audience::SignalingNodes,
        other => {
            return Err(StoreError::corrupt(format!("unknown audience {other:?}")));
        }
    };
    let seq: Option<i64> = row.try_get("seq")?;
    let created_ms: i64 = row.try_get("created_at")?;
    Ok(OutboxEvent {
        id: row.try_get("id")?,
        call_id,
        seq: seq
            .map(|s| u64::try_from(s).map_err(|_| StoreError::corrupt(format!("event seq {s}"))))
            .transpose()?,
        audience,
        event: row.try_get("event")?,
        payload: row.try_get("payload")?,
        trace_context: row.try_get("trace_context")?,
        origin_socket: row.try_get("origin_socket")?,
        origin_device: row.try_get("origin_device")?,
        created_at: from_millis(created_ms)
            .ok_or_else(|| StoreError::corrupt(format!("created_at {created_ms}")))?,
    })
}

impl Store {
    /// Up to `limit` unpublished events in id order. Within a call, id order is `seq` order
    /// (a call's events are written under its row lock, so they also commit in that order).
    pub async fn unpublished_events(&self, limit: u32) -> Result<Vec<OutboxEvent>, StoreError> {
        let rows = sqlx::query(UNPUBLISHED_SQL)
            .bind(i64::from(limit.max(1)))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// Publishes the oldest unpublished events through `publish` and marks the ones it
    /// accepted, as one relay step. `publish` returns `false` to stop (the bus is down); the
    /// events from there on stay for the next step, so order is kept.
    ///
    /// Only one relay step runs at a time across all replicas (a transaction-scoped Postgres
    /// advisory lock; on SQLite the single write lock): two relays publishing concurrently
    /// would deliver a call's events twice or out of order to the sockets. A replica that finds
    /// the lock taken gets [`RelayStep::Busy`] and tries again shortly.
    pub async fn relay_step<F, Fut>(
        &self,
        limit: u32,
        mut publish: F,
    ) -> Result<RelayStep, StoreError>
    where
        F: FnMut(OutboxEvent) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
                .bind(RELAY_LOCK_KEY)
                .fetch_one(&mut *tx)
                .await?;
            if !locked {
                tx.rollback().await?;
                return Ok(RelayStep::Busy);
            }
        }
        let rows = sqlx::query(UNPUBLISHED_SQL)
            .bind(i64::from(limit.max(1)))
            .fetch_all(&mut *tx)
            .await?;
        let events: Vec<OutboxEvent> = rows.iter().map(outbox_row).collect::<Result<_, _>>()?;
        let fetched = events.len();
        let mut published = Vec::with_capacity(fetched);
        let mut stopped = false;
        for event in events {
            let id = event.id;
            if !publish(event).await {
                stopped = true;
                break;
            }
            published.push(id);
        }
        let now = to_millis(OffsetDateTime::now_utc());
        for chunk in published.chunks(500) {
            let sql = format!(
                "UPDATE call_events SET published_at = $1 WHERE id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(now);
            for id in chunk {
                q = q.bind(*id);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(RelayStep::Published {
            count: published.len(),
            more: !stopped && fetched == limit.max(1) as usize,
            stopped,
        })
    }

    /// Marks events as published at `now`.
    pub async fn mark_published(&self, ids: &[i64], now: OffsetDateTime) -> Result<(), StoreError> {
        // Bounded batches keep the statement under every backend's parameter limit.
        for chunk in ids.chunks(500) {
            let sql = format!(
                "UPDATE call_events SET published_at = $1 WHERE id IN ({})",
                placeholders(2, chunk.len())
            );
            let mut q = sqlx::query(AssertSqlSafe(sql)).bind(to_millis(now));
            for id in chunk {
                q = q.bind(*id);
            }
            q.execute(&self.pool).await?;
        }
        Ok(())
    }

    /// How many calls are live (ringing or active) right now, for the `calls_active` gauge.
    pub async fn live_call_count(&self) -> Result<u64, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM calls WHERE status IN ('ringing', 'active')")
                .fetch_one(&self.pool)
                .await?;
        let n: i64 = row.try_get("n")?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// How long the oldest unpublished event has waited (zero when none waits): the relay's
    /// lag, for metrics and alerts.
    pub async fn outbox_lag(&self, now: OffsetDateTime) -> Result<Duration, StoreError> {
        let row = sqlx::query(
            "SELECT MIN(created_at) AS oldest FROM call_events WHERE published_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await?;
        let oldest: Option<i64> = row.try_get("oldest")?;
        let lag_ms = oldest.map_or(0, |o| to_millis(now).saturating_sub(o).max(0));
        Ok(Duration::from_millis(u64::try_from(lag_ms).unwrap_or(0)))
    }

    /// Deletes events published before `before` (the outbox is not an archive). Returns how
    /// many were deleted.
    pub async fn purge_published_events(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM call_events WHERE published_at IS NOT NULL AND published_at < $1",
        )
        .bind(to_millis(before))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The ring events (`incoming_call`, `incoming_call_cancelled`) of `user_id` created since
    /// `since`, the newest per call, oldest call first, as `(event, payload JSON, origin
    /// device)`: what a socket that connects is told about calls that rang it meanwhile.
    pub async fn recent_rings(
        &self,
        user_id: &str,
        since: OffsetDateTime,
    ) -> Result<Vec<(String, String, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, call_id, event, payload, origin_device FROM call_events \
             WHERE audience = 'user' AND audience_id = $1 AND created_at >= $2 \
             AND event IN ('incoming_call', 'incoming_call_cancelled') ORDER BY id",
        )
        .bind(user_id)
        .bind(to_millis(since))
        .fetch_all(&self.pool)
        .await?;
        // The newest event of each call wins; calls keep the order of their newest event.
        let mut newest: Vec<(String, String, String, Option<String>)> = Vec::new();
        for row in &rows {
            let call_id: String = row.try_get("call_id")?;
            newest.retain(|(c, ..)| *c != call_id);
            newest.push((
                call_id,
                row.try_get("event")?,
                row.try_get("payload")?,
                row.try_get("origin_device")?,
            ));
        }
        Ok(newest
            .into_iter()
            .map(|(_, event, payload, device)| (event, payload, device))
            .collect())
    }
}
