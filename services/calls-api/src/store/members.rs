//! Chat-room membership (`MEMBERSHIP_MODE=table`), written by the chat backend through the
//! internal API, and the housekeeping of idempotency keys.

use std::collections::HashSet;

use sqlx::{AnyConnection, Row};
use time::OffsetDateTime;

use crate::domain::UserId;
use crate::domain::timefmt::to_millis;

use super::rows::{insert_end_subscription, parse_call_id};
use super::{Store, StoreError};

impl Store {
    /// Whether `user` is a member of `room`.
    #[tracing::instrument(name = "db.is_room_member", skip_all, fields(otel.kind = "client", db.operation.name = "is_room_member"))]
    pub async fn is_room_member(&self, room: &str, user: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM room_members WHERE chat_room_id = $1 AND user_id = $2",
        )
        .bind(room.to_owned())
        .bind(user.to_owned())
        .fetch_one(&self.pool)
        .await?
        .try_get("n")?;
        Ok(n > 0)
    }

    /// The members of `room`, sorted.
    #[tracing::instrument(name = "db.room_members", skip_all, fields(otel.kind = "client", db.operation.name = "room_members"))]
    pub async fn room_members(&self, room: &str) -> Result<Vec<UserId>, StoreError> {
        let rows = sqlx::query(
            "SELECT user_id FROM room_members WHERE chat_room_id = $1 ORDER BY user_id",
        )
        .bind(room.to_owned())
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("user_id").map_err(StoreError::from))
            .collect()
    }

    /// Makes `users` the exact member set of `room`, atomically (duplicates are ignored).
    ///
    /// With `end_subscriptions` (`MEMBERSHIP_MODE=table`), every member removed by the change
    /// stops following the room's live call if they may no longer see it (see
    /// [`Store::remove_room_member`]). Returns how many such instructions were written.
    #[tracing::instrument(name = "db.replace_room_members", skip_all, fields(otel.kind = "client", db.operation.name = "replace_room_members"))]
    pub async fn replace_room_members(
        &self,
        room: &str,
        users: &[UserId],
        now: OffsetDateTime,
        end_subscriptions: bool,
    ) -> Result<usize, StoreError> {
        let mut tx = self.begin_write().await?;
        let before: Vec<String> = if end_subscriptions {
            sqlx::query("SELECT user_id FROM room_members WHERE chat_room_id = $1")
                .bind(room.to_owned())
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>("user_id"))
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        sqlx::query("DELETE FROM room_members WHERE chat_room_id = $1")
            .bind(room.to_owned())
            .execute(&mut *tx)
            .await?;
        for user in users {
            sqlx::query(
                "INSERT INTO room_members (chat_room_id, user_id, added_at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(room.to_owned())
            .bind(user.clone())
            .bind(to_millis(now))
            .execute(&mut *tx)
            .await?;
        }
        let kept: HashSet<&str> = users.iter().map(String::as_str).collect();
        let removed: Vec<&str> = before
            .iter()
            .map(String::as_str)
            .filter(|u| !kept.contains(u))
            .collect();
        let ended = end_unseen_subscriptions(&mut tx, room, &removed, now).await?;
        tx.commit().await?;
        Ok(ended)
    }

    /// Adds `user` to `room` (idempotent).
    #[tracing::instrument(name = "db.add_room_member", skip_all, fields(otel.kind = "client", db.operation.name = "add_room_member"))]
    pub async fn add_room_member(
        &self,
        room: &str,
        user: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO room_members (chat_room_id, user_id, added_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(room.to_owned())
        .bind(user.to_owned())
        .bind(to_millis(now))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Removes `user` from `room` (idempotent). Calls in progress keep their participants.
    ///
    /// With `end_subscriptions` (`MEMBERSHIP_MODE=table`), the user's sockets stop following the
    /// room's live call if the user may no longer see it, that is unless they are one of its
    /// participants (whom the host removes through the call itself): an instruction to every
    /// signaling node is written to the outbox in the same transaction. Returns how many were
    /// written.
    #[tracing::instrument(name = "db.remove_room_member", skip_all, fields(otel.kind = "client", db.operation.name = "remove_room_member"))]
    pub async fn remove_room_member(
        &self,
        room: &str,
        user: &str,
        now: OffsetDateTime,
        end_subscriptions: bool,
    ) -> Result<usize, StoreError> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM room_members WHERE chat_room_id = $1 AND user_id = $2")
            .bind(room.to_owned())
            .bind(user.to_owned())
            .execute(&mut *tx)
            .await?;
        let ended = if end_subscriptions {
            end_unseen_subscriptions(&mut tx, room, &[user], now).await?
        } else {
            0
        };
        tx.commit().await?;
        Ok(ended)
    }

    /// Forgets idempotency keys created before `before` (retries come within minutes; a day
    /// is plenty). Returns how many were deleted.
    pub async fn purge_idempotency_keys(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(to_millis(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}

/// For each of `users` just removed from `room`: the room's live calls in which they have no
/// participant record (so no longer visible to them) get an end-of-subscription instruction.
/// A room has at most one live call, so this is one query plus one per removed user.
async fn end_unseen_subscriptions(
    conn: &mut AnyConnection,
    room: &str,
    users: &[&str],
    now: OffsetDateTime,
) -> Result<usize, StoreError> {
    if users.is_empty() {
        return Ok(0);
    }
    let live: Vec<String> = sqlx::query(
        "SELECT id FROM calls WHERE chat_room_id = $1 AND status IN ('ringing', 'active')",
    )
    .bind(room.to_owned())
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.try_get::<String, _>("id"))
    .collect::<Result<_, _>>()?;
    let mut written = 0;
    for call in live {
        let participants: HashSet<String> =
            sqlx::query("SELECT user_id FROM call_participants WHERE call_id = $1")
                .bind(call.clone())
                .fetch_all(&mut *conn)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>("user_id"))
                .collect::<Result<_, _>>()?;
        let call_id = parse_call_id(&call)?;
        for user in users.iter().filter(|u| !participants.contains(**u)) {
            insert_end_subscription(conn, call_id, user, None, now, None).await?;
            written += 1;
        }
    }
    Ok(written)
}
