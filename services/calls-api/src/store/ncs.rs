//! Agora's channel notices (CONTRACT section 11), applied once each.
//!
//! Agora's Notification Center may deliver a notice more than once, and the gateway may hand
//! the copies to different replicas. The notice's id is inserted (if absent) into
//! `agora_notices` in the same transaction as the change it causes: on Postgres a second
//! replica inserting the same id waits on the primary key for the first to commit and then
//! finds it; on SQLite writers are serialized. Either way one copy changes the call and the
//! others change nothing.

use time::OffsetDateTime;

use crate::domain::timefmt::to_millis;
use crate::domain::{CallId, ChannelNotice, DomainEvent, Timing};

use super::rows::{load_call, persist};
use super::{Store, StoreError};

/// How [`Store::apply_channel_notice`] turned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoticeApplied {
    /// This `noticeId` was applied before: nothing changed.
    Duplicate,
    /// No call has this id: the notice is recorded, nothing else changed.
    UnknownCall,
    /// Applied to the call; `events` (maybe none: a stale or repeated notice, or a user who is
    /// not a participant) are in the outbox.
    Applied {
        /// The events written.
        events: Vec<DomainEvent>,
        /// How many kicks it called for (someone in the channel who may not be).
        kicks: usize,
    },
}

impl Store {
    /// Records `notice_id` and applies `notice` to the call, in one transaction; a notice id
    /// seen before changes nothing.
    #[tracing::instrument(name = "db.apply_channel_notice", skip_all, fields(otel.kind = "client", db.operation.name = "apply_channel_notice"))]
    pub async fn apply_channel_notice(
        &self,
        notice_id: &str,
        event_type: i64,
        call_id: CallId,
        notice: &ChannelNotice,
        now: OffsetDateTime,
        timing: &Timing,
    ) -> Result<NoticeApplied, StoreError> {
        let mut tx = self.begin_write().await?;
        let recorded = sqlx::query(
            "INSERT INTO agora_notices (notice_id, event_type, received_at) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(notice_id.to_owned())
        .bind(event_type)
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        if recorded.rows_affected() == 0 {
            tx.rollback().await?;
            return Ok(NoticeApplied::Duplicate);
        }
        let Some(mut call) = load_call(&mut tx, call_id, self.backend.for_update()).await? else {
            tx.commit().await?;
            return Ok(NoticeApplied::UnknownCall);
        };
        let before = call.clone();
        let outcome = call.channel_notice(notice, now, timing);
        persist(&mut tx, Some(&before), &call, &outcome, &None.into()).await?;
        tx.commit().await?;
        Ok(NoticeApplied::Applied {
            events: outcome.events,
            kicks: outcome.kicks.len(),
        })
    }

    /// Forgets notice ids recorded before `before` (Agora retries within minutes; a day is
    /// ample). Returns how many were deleted.
    pub async fn purge_agora_notices(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM agora_notices WHERE received_at < $1")
            .bind(to_millis(before))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
