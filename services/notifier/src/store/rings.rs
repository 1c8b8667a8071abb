//! Consuming a ring event: what notifier knows of the (call, user) ring is updated and the
//! pushes it causes are queued, in one transaction, before the event is acknowledged.
//!
//! Events of one ring can be consumed out of order: replicas share a backlog after an outage,
//! and a redelivered event can arrive after a later one. Each ring row remembers the outbox id
//! of the newest event applied (`last_event_id`); an older event changes nothing, except that
//! a missed-call alert decided by a newer cancel (which carries no caller or room) is sent as
//! soon as the older `incoming_call` supplies them. So:
//! - a cancel consumed before its ring: the ring is never sent;
//! - an event consumed twice: the second time queues nothing (deliveries are unique by
//!   event × device × kind, and the ring row says it was applied).

use sqlx::{AnyConnection, Row};

use super::{Store, StoreError};
use crate::events::{Caller, RingEvent, RingInfo, UserRingEvent};
use crate::plan::{self, NewDelivery};

/// What applying an event did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Deliveries queued in the ring lane.
    pub ring: usize,
    /// Deliveries queued in the bulk lane.
    pub bulk: usize,
    /// Queued ring pushes that this event cancelled.
    pub cancelled: u64,
    /// The event was older than one already applied (or the same one again).
    pub stale: bool,
}

struct RingRow {
    last_event_id: i64,
    info: Option<RingInfo>,
    missed_alert_pending: bool,
}

impl Store {
    /// Applies `event` (see the module docs); `default_bundle` is `APNS_BUNDLE_ID`.
    pub async fn apply_ring_event(
        &self,
        event: &UserRingEvent,
        now_ms: i64,
        default_bundle: Option<&str>,
    ) -> Result<Applied, StoreError> {
        let mut tx = self.begin_write().await?;
        // The row exists before it is locked, so two replicas applying events of one ring at
        // once serialize on it instead of racing to insert.
        sqlx::query(
            "INSERT INTO rings (call_id, user_id, last_event_id, state, updated_at) \
             VALUES ($1, $2, 0, 'new', $3) ON CONFLICT (call_id, user_id) DO NOTHING",
        )
        .bind(&event.call_id)
        .bind(&event.user_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let row = load(&mut tx, &event.call_id, &event.user_id, self.backend).await?;
        let targets = Store::targets(&mut tx, &event.user_id).await?;
        let mut applied = Applied::default();
        let mut queue: Vec<NewDelivery> = Vec::new();
        let key_event = event.event_id;

        if event.event_id <= row.last_event_id {
            applied.stale = true;
            // An older `incoming_call` still tells us who called, for a missed-call alert a
            // newer cancel had to put off.
            if let RingEvent::Incoming(info) = &event.event
                && row.info.is_none()
            {
                save_info(&mut tx, event, info, now_ms).await?;
                if row.missed_alert_pending {
                    queue.extend(plan::missed(
                        &event.call_id,
                        info,
                        now_ms,
                        &targets,
                        default_bundle,
                    ));
                    sqlx::query(
                        "UPDATE rings SET missed_alert_pending = 0 WHERE call_id = $1 AND user_id = $2",
                    )
                    .bind(&event.call_id)
                    .bind(&event.user_id)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            let keyed = row.last_event_id;
            applied = insert_all(&mut tx, event, keyed, &queue, now_ms, applied).await?;
            tx.commit().await?;
            return Ok(applied);
        }

        match &event.event {
            RingEvent::Incoming(info) => {
                save_info(&mut tx, event, info, now_ms).await?;
                sqlx::query(
                    "UPDATE rings SET state = 'ringing', stop_reason = NULL, last_event_id = $1, \
                     missed_alert_pending = 0, updated_at = $2 WHERE call_id = $3 AND user_id = $4",
                )
                .bind(event.event_id)
                .bind(now_ms)
                .bind(&event.call_id)
                .bind(&event.user_id)
                .execute(&mut *tx)
                .await?;
                if info.ring_deadline_ms > now_ms {
                    queue.extend(plan::ring(&event.call_id, info, &targets, default_bundle));
                }
            }
            RingEvent::Stopped {
                reason,
                origin_device,
            } => {
                applied.cancelled = sqlx::query(
                    "UPDATE deliveries SET status = 'cancelled', finished_at = $1, \
                     last_error = 'ringing stopped' WHERE status = 'pending' \
                     AND call_id = $2 AND user_id = $3 AND kind = 'incoming_call'",
                )
                .bind(now_ms)
                .bind(&event.call_id)
                .bind(&event.user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                queue.extend(plan::stopped(
                    &event.call_id,
                    reason,
                    origin_device.as_deref(),
                    row.info.as_ref().map(|i| i.ring_deadline_ms),
                    now_ms,
                    &targets,
                ));
                let mut alert_pending = false;
                if event.event.is_missed() {
                    match &row.info {
                        Some(info) => queue.extend(plan::missed(
                            &event.call_id,
                            info,
                            now_ms,
                            &targets,
                            default_bundle,
                        )),
                        // The `incoming_call` has not been consumed yet (see module docs).
                        None => alert_pending = true,
                    }
                }
                sqlx::query(
                    "UPDATE rings SET state = 'stopped', stop_reason = $1, last_event_id = $2, \
                     missed_alert_pending = $3, updated_at = $4 WHERE call_id = $5 AND user_id = $6",
                )
                .bind(reason)
                .bind(event.event_id)
                .bind(i64::from(alert_pending))
                .bind(now_ms)
                .bind(&event.call_id)
                .bind(&event.user_id)
                .execute(&mut *tx)
                .await?;
            }
        }
        applied = insert_all(&mut tx, event, key_event, &queue, now_ms, applied).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Forgets rings and finished deliveries older than `before_ms` (housekeeping).
    pub async fn prune(&self, before_ms: i64) -> Result<u64, StoreError> {
        let rings = sqlx::query("DELETE FROM rings WHERE updated_at < $1")
            .bind(before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        let deliveries =
            sqlx::query("DELETE FROM deliveries WHERE status <> 'pending' AND finished_at < $1")
                .bind(before_ms)
                .execute(&self.pool)
                .await?
                .rows_affected();
        Ok(rings + deliveries)
    }
}

async fn load(
    conn: &mut AnyConnection,
    call_id: &str,
    user_id: &str,
    backend: calls_db::Backend,
) -> Result<RingRow, StoreError> {
    let sql = format!(
        "SELECT last_event_id, chat_room_id, call_type, is_group_call, caller, \
         ring_deadline, missed_alert_pending FROM rings WHERE call_id = $1 AND user_id = $2{}",
        backend.for_update()
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(call_id)
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await?;
    let chat_room_id: Option<String> = row.try_get("chat_room_id")?;
    let info = match chat_room_id {
        None => None,
        Some(chat_room_id) => {
            let caller: Option<String> = row.try_get("caller")?;
            let caller: Caller = caller
                .and_then(|c| serde_json::from_str(&c).ok())
                .ok_or_else(|| StoreError::Corrupt("ring caller".into()))?;
            Some(RingInfo {
                chat_room_id,
                call_type: row
                    .try_get::<Option<String>, _>("call_type")?
                    .unwrap_or_default(),
                is_group_call: row.try_get::<Option<i64>, _>("is_group_call")?.unwrap_or(0) != 0,
                caller,
                ring_deadline_ms: row.try_get::<Option<i64>, _>("ring_deadline")?.unwrap_or(0),
            })
        }
    };
    Ok(RingRow {
        last_event_id: row.try_get("last_event_id")?,
        info,
        missed_alert_pending: row.try_get::<i64, _>("missed_alert_pending")? != 0,
    })
}

async fn save_info(
    conn: &mut AnyConnection,
    event: &UserRingEvent,
    info: &RingInfo,
    now_ms: i64,
) -> Result<(), StoreError> {
    let caller = serde_json::to_string(&info.caller).unwrap_or_else(|_| "{}".into());
    sqlx::query(
        "UPDATE rings SET chat_room_id = $1, call_type = $2, is_group_call = $3, caller = $4, \
         ring_deadline = $5, updated_at = $6 WHERE call_id = $7 AND user_id = $8",
    )
    .bind(&info.chat_room_id)
    .bind(&info.call_type)
    .bind(i64::from(info.is_group_call))
    .bind(caller)
    .bind(info.ring_deadline_ms)
    .bind(now_ms)
    .bind(&event.call_id)
    .bind(&event.user_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn insert_all(
    conn: &mut AnyConnection,
    event: &UserRingEvent,
    key_event: i64,
    queue: &[NewDelivery],
    now_ms: i64,
    mut applied: Applied,
) -> Result<Applied, StoreError> {
    for d in queue {
        let request = serde_json::to_string(&d.request)
            .map_err(|e| StoreError::Corrupt(format!("push request: {e}")))?;
        let inserted = sqlx::query(
            "INSERT INTO deliveries (dedupe_key, lane, kind, provider, call_id, user_id, \
             device_id, token, request, status, attempts, due_at, deadline_at, event_at, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', 0, $10, $11, \
             $12, $10) ON CONFLICT (dedupe_key) DO NOTHING",
        )
        .bind(format!("{key_event}/{}/{}", d.device_id, d.kind.as_str()))
        .bind(d.kind.lane().as_str())
        .bind(d.kind.as_str())
        .bind(d.request.provider())
        .bind(&event.call_id)
        .bind(&event.user_id)
        .bind(&d.device_id)
        .bind(&d.token)
        .bind(request)
        .bind(now_ms)
        .bind(d.deadline_ms)
        .bind(event.created_at_ms)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted > 0 {
            match d.kind.lane() {
                plan::Lane::Ring => applied.ring += 1,
                plan::Lane::Bulk => applied.bulk += 1,
            }
        }
    }
    Ok(applied)
}
