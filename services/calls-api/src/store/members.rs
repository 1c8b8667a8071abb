//! Chat-room membership (`MEMBERSHIP_MODE=table`), written by the chat backend through the
//! internal API, and the housekeeping of idempotency keys.

use sqlx::Row;
use time::OffsetDateTime;

use crate::domain::UserId;
use crate::domain::timefmt::to_millis;

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
    #[tracing::instrument(name = "db.replace_room_members", skip_all, fields(otel.kind = "client", db.operation.name = "replace_room_members"))]
    pub async fn replace_room_members(
        &self,
        room: &str,
        users: &[UserId],
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
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
        tx.commit().await?;
        Ok(())
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

    /// Removes `user` from `room` (idempotent). Calls in progress are not touched.
    #[tracing::instrument(name = "db.remove_room_member", skip_all, fields(otel.kind = "client", db.operation.name = "remove_room_member"))]
    pub async fn remove_room_member(&self, room: &str, user: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM room_members WHERE chat_room_id = $1 AND user_id = $2")
            .bind(room.to_owned())
            .bind(user.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
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
