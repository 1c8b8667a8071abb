//! Kicks through Agora's kicking-rule API (CONTRACT section 11), kept until sent.
//!
//! A kick is a row written with the change that calls for it ([`insert_kicks`], from
//! `persist`). Replicas take due rows one at a time ([`Store::claim_media_kick`]): the claim
//! pushes the row's `due_at` ahead by a lease in a short transaction (`FOR UPDATE SKIP LOCKED`
//! on Postgres, serialized writers on SQLite), so no two replicas send the same kick at once
//! and no transaction stays open across the HTTP request. The claim also asks the call whether
//! the kick is still needed ([`crate::domain::Call::kick_still_needed`]): the user may have
//! joined again, or left the channel. A replica that dies mid-send leaves the row to be taken
//! again when the lease runs out.

use sqlx::{AnyConnection, AssertSqlSafe, Row};
use time::OffsetDateTime;

use crate::domain::timefmt::to_millis;
use crate::domain::{CallId, MediaKick};

use super::rows::{load_call, parse_call_id};
use super::{Store, StoreError};

/// A kick a replica took to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedKick {
    /// The row.
    pub id: i64,
    /// The call, whose channel is `call_<id>`.
    pub call_id: CallId,
    /// The Agora account.
    pub user_id: String,
    /// The Agora uid the rule names.
    pub uid: u32,
    /// Sends before this one (0 for the first).
    pub attempts: u32,
    /// False when the call says it is moot: delete it without sending.
    pub needed: bool,
}

pub(super) async fn insert_kicks(
    conn: &mut AnyConnection,
    call_id: CallId,
    kicks: &[MediaKick],
) -> Result<(), StoreError> {
    for kick in kicks {
        sqlx::query(
            "INSERT INTO media_kicks (call_id, user_id, uid, client_seq, due_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(call_id.to_string())
        .bind(kick.user_id.clone())
        .bind(i64::from(kick.uid))
        .bind(kick.client_seq)
        .bind(to_millis(kick.due_at))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

impl Store {
    /// Takes the oldest kick due at `now` for `lease` (another replica takes it again only
    /// after that), or `None` when none is due.
    pub async fn claim_media_kick(
        &self,
        now: OffsetDateTime,
        lease: std::time::Duration,
    ) -> Result<Option<ClaimedKick>, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "SELECT id, call_id, user_id, uid, client_seq, attempts FROM media_kicks \
             WHERE due_at <= $1 ORDER BY due_at, id LIMIT 1{}",
            self.backend.skip_locked()
        );
        let Some(row) = sqlx::query(AssertSqlSafe(sql))
            .bind(to_millis(now))
            .fetch_optional(&mut *tx)
            .await?
        else {
            tx.rollback().await?;
            return Ok(None);
        };
        let id: i64 = row.try_get("id")?;
        let call_id = parse_call_id(&row.try_get::<String, _>("call_id")?)?;
        let user_id: String = row.try_get("user_id")?;
        let uid = u32::try_from(row.try_get::<i64, _>("uid")?)
            .map_err(|_| StoreError::corrupt(format!("media kick {id}: uid out of range")))?;
        let client_seq: Option<i64> = row.try_get("client_seq")?;
        let attempts = u32::try_from(row.try_get::<i32, _>("attempts")?).unwrap_or(0);
        let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
        sqlx::query("UPDATE media_kicks SET due_at = $2, attempts = attempts + 1 WHERE id = $1")
            .bind(id)
            .bind(to_millis(now).saturating_add(lease_ms))
            .execute(&mut *tx)
            .await?;
        // Read without locking the call: a change racing this claim at worst sends a kick a
        // moment after it became moot, which the user's client survives (it may rejoin).
        let needed = load_call(&mut tx, call_id, "")
            .await?
            .is_some_and(|call| call.kick_still_needed(&user_id, client_seq));
        tx.commit().await?;
        Ok(Some(ClaimedKick {
            id,
            call_id,
            user_id,
            uid,
            attempts,
            needed,
        }))
    }

    /// The kick was sent, is moot, or was given up: forget it.
    pub async fn finish_media_kick(&self, id: i64) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM media_kicks WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The kick failed for now: try again at `at`.
    pub async fn retry_media_kick(&self, id: i64, at: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query("UPDATE media_kicks SET due_at = $2 WHERE id = $1")
            .bind(id)
            .bind(to_millis(at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Kicks not yet sent (due or waiting for a retry): a gauge for operators.
    pub async fn pending_media_kicks(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM media_kicks")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }
}
