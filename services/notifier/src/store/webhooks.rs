//! Webhooks: endpoints, the per-call projection and the delivery queue.
//!
//! - Consuming a call event updates the call's projection and queues one delivery per
//!   endpoint and webhook event, in one transaction, before the event is acknowledged. A call's
//!   events are applied strictly in `seq` order: one consumed ahead of an earlier one waits in
//!   `webhook_call_events` until the gap is filled (or, after [`GAP_WAIT_MS`], is given up on:
//!   a lost event must not hold a call forever).
//! - Deliveries are idempotent by endpoint × `webhook-id` (a redelivered bus event queues
//!   nothing new). An endpoint gets the events that happen after it was created.
//! - A worker may claim a pending delivery only if no earlier pending delivery of the same
//!   call and endpoint exists: a failing event holds back the later events of its call, for
//!   that endpoint only. Claims skip rows other replicas hold (`FOR UPDATE SKIP LOCKED`
//!   semantics through a conditional update) and respect a per-endpoint limit of requests in
//!   flight.

use std::collections::{BTreeMap, HashSet};

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AssertSqlSafe, Row};

use super::{Store, StoreError};
use crate::events::Caller;
use crate::webhooks::model::{EndpointId, EventType, WebhookSecret};
use crate::webhooks::projection::{CallState, CallView, WebhookEvent};
use crate::webhooks::signing::message_id;
use crate::webhooks::stream::{SeqEvent, decode_call_event};

/// How long an event waits for an earlier one of its call before the gap is given up on. JetStream
/// redelivers an unacknowledged event after 30 s, so a gap lasting this long is an event lost
/// (or never published to the stream this consumer reads).
pub const GAP_WAIT_MS: i64 = 120_000;

/// An endpoint, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Its id (`env` for `WEBHOOK_URL`).
    pub id: EndpointId,
    /// Where deliveries go.
    pub url: String,
    /// The signing secrets.
    pub secrets: Vec<WebhookSecret>,
    /// The types it receives; `None` for every type.
    pub event_types: Option<Vec<EventType>>,
    /// Whether deliveries are sent.
    pub enabled: bool,
    /// Why it was disabled, when notifier disabled it (410, failing for the whole window).
    pub disabled_reason: Option<String>,
    /// When it last accepted a delivery.
    pub last_success_ms: Option<i64>,
    /// Unix milliseconds.
    pub created_ms: i64,
    /// Unix milliseconds.
    pub updated_ms: i64,
}

impl Endpoint {
    /// Whether it receives events of `t`.
    pub fn wants(&self, t: EventType) -> bool {
        self.event_types
            .as_ref()
            .is_none_or(|types| types.contains(&t))
    }
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EndpointPatch {
    /// A new URL.
    pub url: Option<String>,
    /// A new set of secrets.
    pub secrets: Option<Vec<WebhookSecret>>,
    /// New types (`Some(None)`: every type).
    pub event_types: Option<Option<Vec<EventType>>>,
    /// Enable or disable.
    pub enabled: Option<bool>,
}

/// What consuming a message did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookApplied {
    /// Webhook events the call's projection produced.
    pub events: usize,
    /// Deliveries queued (pending).
    pub queued: usize,
    /// Already applied (a redelivery, or the snapshot of a call already known).
    pub stale: bool,
    /// Held until an earlier event of the call is consumed.
    pub waiting: bool,
}

/// What the consumer hands the store.
#[derive(Debug, Clone)]
pub enum WebhookInput {
    /// `incoming_call`: the call as created.
    Snapshot {
        /// The call.
        call: Box<CallView>,
        /// The caller.
        from: Caller,
    },
    /// An event of the call's stream.
    Event {
        /// The call.
        call_id: String,
        /// The event.
        event: SeqEvent,
        /// Its payload, kept if it has to wait.
        raw: String,
    },
}

/// A delivery a worker now holds.
#[derive(Debug, Clone)]
pub struct ClaimedWebhook {
    /// Row id.
    pub id: i64,
    /// The endpoint.
    pub endpoint_id: String,
    /// Where to send it.
    pub url: String,
    /// What to sign with.
    pub secrets: Vec<WebhookSecret>,
    /// `webhook-id`.
    pub message_id: String,
    /// The call.
    pub call_id: String,
    /// The event type.
    pub event_type: String,
    /// The body.
    pub body: String,
    /// Attempts so far, this one included.
    pub attempts: i64,
    /// Retries stop at this plus the retry window.
    pub window_start_ms: i64,
    /// When the event happened.
    pub event_ms: i64,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookFinish {
    /// 2xx.
    Delivered {
        /// The status.
        status: u16,
    },
    /// Try again at `due_ms`.
    Retry {
        /// Unix milliseconds.
        due_ms: i64,
        /// The status, when there was an answer.
        status: Option<u16>,
        /// What went wrong.
        error: String,
    },
    /// Dead-lettered (the window ran out) or refused for good (410).
    Failed {
        /// The status, when there was an answer.
        status: Option<u16>,
        /// Why.
        error: String,
    },
}

/// A delivery, as the internal API lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRecord {
    /// Row id (the listing's cursor).
    pub id: i64,
    /// `webhook-id`.
    pub message_id: String,
    /// The call.
    pub call_id: String,
    /// The type.
    pub event_type: String,
    /// `pending`, `delivered`, `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i64,
    /// The endpoint's last status.
    pub last_status: Option<i64>,
    /// The last failure.
    pub last_error: Option<String>,
    /// When queued.
    pub created_ms: i64,
    /// When last tried.
    pub last_attempt_ms: Option<i64>,
    /// When delivered or dead-lettered.
    pub finished_ms: Option<i64>,
    /// The body.
    pub body: String,
}

/// The pending deliveries of one endpoint (for metrics).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointBacklog {
    /// The endpoint.
    pub endpoint_id: String,
    /// Pending deliveries.
    pub pending: i64,
    /// How long the oldest has been pending, milliseconds.
    pub oldest_ms: i64,
}

fn endpoint_row(row: &AnyRow) -> Result<Endpoint, StoreError> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("webhook endpoint {what}"));
    let id: String = row.try_get("id")?;
    let secrets: String = row.try_get("secrets")?;
    let secrets: Vec<String> = serde_json::from_str(&secrets).map_err(|_| corrupt("secrets"))?;
    let secrets = secrets
        .iter()
        .map(|s| WebhookSecret::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| corrupt("secret"))?;
    let types: Option<String> = row.try_get("event_types")?;
    let event_types = match types {
        None => None,
        Some(t) => Some(serde_json::from_str(&t).map_err(|_| corrupt("event types"))?),
    };
    Ok(Endpoint {
        id: EndpointId::parse(&id).map_err(|_| corrupt("id"))?,
        url: row.try_get("url")?,
        secrets,
        event_types,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        disabled_reason: row.try_get("disabled_reason")?,
        last_success_ms: row.try_get("last_success_at")?,
        created_ms: row.try_get("created_at")?,
        updated_ms: row.try_get("updated_at")?,
    })
}

const ENDPOINT_COLUMNS: &str = "id, url, secrets, event_types, enabled, disabled_reason, last_success_at, created_at, updated_at";

fn secrets_json(secrets: &[WebhookSecret]) -> String {
    serde_json::to_string(
        &secrets
            .iter()
            .map(WebhookSecret::expose)
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|_| "[]".into())
}

fn types_json(types: Option<&Vec<EventType>>) -> Option<String> {
    types.map(|t| serde_json::to_string(t).unwrap_or_else(|_| "[]".into()))
}

impl Store {
    // ----- endpoints -----

    /// Creates an endpoint.
    pub async fn create_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, url, secrets, event_types, enabled, \
             disabled_reason, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, NULL, $6, $6)",
        )
        .bind(endpoint.id.as_str())
        .bind(&endpoint.url)
        .bind(secrets_json(&endpoint.secrets))
        .bind(types_json(endpoint.event_types.as_ref()))
        .bind(i64::from(endpoint.enabled))
        .bind(endpoint.created_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Makes the endpoint `env` match `WEBHOOK_URL` / `WEBHOOK_SECRET`. A new URL enables it
    /// again; the same URL keeps whatever state it was left in (disabled after a 410 stays
    /// disabled until someone enables it).
    pub async fn configure_env_endpoint(
        &self,
        url: &str,
        secrets: &[WebhookSecret],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.begin_write().await?;
        let current: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT url FROM webhook_endpoints WHERE id = 'env'{}",
            self.backend.for_update()
        )))
        .fetch_optional(&mut *tx)
        .await?;
        match current {
            None => {
                sqlx::query(
                    "INSERT INTO webhook_endpoints (id, url, secrets, event_types, enabled, \
                     created_at, updated_at) VALUES ('env', $1, $2, NULL, 1, $3, $3)",
                )
                .bind(url)
                .bind(secrets_json(secrets))
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
            Some(old) if old == url => {
                sqlx::query("UPDATE webhook_endpoints SET secrets = $1 WHERE id = 'env'")
                    .bind(secrets_json(secrets))
                    .execute(&mut *tx)
                    .await?;
            }
            Some(_) => {
                sqlx::query(
                    "UPDATE webhook_endpoints SET url = $1, secrets = $2, enabled = 1, \
                     disabled_reason = NULL, updated_at = $3 WHERE id = 'env'",
                )
                .bind(url)
                .bind(secrets_json(secrets))
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every endpoint, oldest first.
    pub async fn endpoints(&self) -> Result<Vec<Endpoint>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
        )))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(endpoint_row).collect()
    }

    /// One endpoint.
    pub async fn endpoint(&self, id: &EndpointId) -> Result<Option<Endpoint>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
        )))
        .bind(id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(endpoint_row).transpose()
    }

    /// Applies `patch`; `None` when there is no such endpoint. Disabling fails the endpoint's
    /// pending deliveries (a replay sends them once it is enabled again); enabling clears the
    /// reason it was disabled for.
    pub async fn update_endpoint(
        &self,
        id: &EndpointId,
        patch: &EndpointPatch,
        now_ms: i64,
    ) -> Result<Option<Endpoint>, StoreError> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1{}",
            self.backend.for_update()
        )))
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(mut endpoint) = row.as_ref().map(endpoint_row).transpose()? else {
            return Ok(None);
        };
        if let Some(url) = &patch.url {
            endpoint.url.clone_from(url);
        }
        if let Some(secrets) = &patch.secrets {
            endpoint.secrets.clone_from(secrets);
        }
        if let Some(types) = &patch.event_types {
            endpoint.event_types.clone_from(types);
        }
        let disabling = patch.enabled == Some(false) && endpoint.enabled;
        if let Some(enabled) = patch.enabled {
            if enabled {
                endpoint.disabled_reason = None;
            } else if disabling {
                endpoint.disabled_reason = Some("disabled through the API".into());
            }
            endpoint.enabled = enabled;
        }
        endpoint.updated_ms = now_ms;
        sqlx::query(
            "UPDATE webhook_endpoints SET url = $1, secrets = $2, event_types = $3, enabled = $4, \
             disabled_reason = $5, updated_at = $6 WHERE id = $7",
        )
        .bind(&endpoint.url)
        .bind(secrets_json(&endpoint.secrets))
        .bind(types_json(endpoint.event_types.as_ref()))
        .bind(i64::from(endpoint.enabled))
        .bind(endpoint.disabled_reason.clone())
        .bind(now_ms)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await?;
        if disabling {
            fail_pending(
                &mut tx,
                id.as_str(),
                "endpoint disabled through the API",
                now_ms,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Some(endpoint))
    }

    /// Deletes an endpoint and its deliveries; `false` when there was none.
    pub async fn delete_endpoint(&self, id: &EndpointId) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query("DELETE FROM webhook_deliveries WHERE endpoint_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Disables an endpoint that refused for good (410) or failed for a whole retry window,
    /// failing its pending deliveries. `false` when it was disabled already.
    pub async fn disable_endpoint(
        &self,
        id: &str,
        reason: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE webhook_endpoints SET enabled = 0, disabled_reason = $1, updated_at = $2 \
             WHERE id = $3 AND enabled = 1",
        )
        .bind(reason)
        .bind(now_ms)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n > 0 {
            fail_pending(&mut tx, id, &format!("endpoint disabled: {reason}"), now_ms).await?;
        }
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Records that the endpoint accepted a delivery.
    pub async fn endpoint_succeeded(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE webhook_endpoints SET last_success_at = $1 WHERE id = $2")
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// How many endpoints are disabled (for the alert).
    pub async fn disabled_endpoints(&self) -> Result<i64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_endpoints WHERE enabled = 0")
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    // ----- consuming -----

    /// Applies a message of the call stream (see the module docs).
    pub async fn apply_webhook(
        &self,
        input: &WebhookInput,
        now_ms: i64,
    ) -> Result<WebhookApplied, StoreError> {
        let call_id = match input {
            WebhookInput::Snapshot { call, .. } => call.id.as_str(),
            WebhookInput::Event { call_id, .. } => call_id.as_str(),
        };
        let mut tx = self.begin_write().await?;
        let mut call = self.lock_call(&mut tx, call_id, now_ms).await?;
        let mut applied = WebhookApplied::default();
        let mut events = Vec::new();
        if call.orphan {
            applied.stale = true;
        } else {
            match input {
                WebhookInput::Snapshot { call: view, from } => {
                    if call.state.is_some() {
                        applied.stale = true;
                    } else {
                        let (state, first) = CallState::start((**view).clone(), from.clone());
                        call.applied_seq = i64::try_from(state.call.seq).unwrap_or(i64::MAX);
                        call.state = Some(state);
                        events.extend(first);
                        sqlx::query(
                            "DELETE FROM webhook_call_events WHERE call_id = $1 AND seq <= $2",
                        )
                        .bind(call_id)
                        .bind(call.applied_seq)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                WebhookInput::Event { event, raw, .. } => {
                    let seq = i64::try_from(event.seq).unwrap_or(i64::MAX);
                    match call.state.as_mut() {
                        _ if seq <= call.applied_seq => applied.stale = true,
                        Some(state) if seq == call.applied_seq + 1 => {
                            events.extend(state.apply(event));
                            call.applied_seq = seq;
                        }
                        _ => {
                            sqlx::query(
                                "INSERT INTO webhook_call_events (call_id, seq, event, received_at) \
                                 VALUES ($1, $2, $3, $4) ON CONFLICT (call_id, seq) DO NOTHING",
                            )
                            .bind(call_id)
                            .bind(seq)
                            .bind(raw)
                            .bind(now_ms)
                            .execute(&mut *tx)
                            .await?;
                            applied.waiting = true;
                        }
                    }
                }
            }
            drain(&mut tx, call_id, &mut call, &mut events).await?;
        }
        save_call(&mut tx, call_id, &call, now_ms).await?;
        applied.events = events.len();
        applied.queued = fan_out(&mut tx, call_id, &events, now_ms).await?;
        tx.commit().await?;
        Ok(applied)
    }

    /// Gives up on gaps older than `wait_ms`: a call whose snapshot never came is set aside
    /// (its waiting events dropped); a call missing an event goes on from the next one it has.
    /// Returns (calls moved on, calls set aside, deliveries queued).
    pub async fn skip_gaps(
        &self,
        now_ms: i64,
        wait_ms: i64,
    ) -> Result<(u64, u64, usize), StoreError> {
        let stuck: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT call_id FROM webhook_call_events WHERE received_at < $1",
        )
        .bind(now_ms - wait_ms)
        .fetch_all(&self.pool)
        .await?;
        let (mut moved, mut orphaned, mut queued) = (0, 0, 0);
        for call_id in stuck {
            let mut tx = self.begin_write().await?;
            let mut call = self.lock_call(&mut tx, &call_id, now_ms).await?;
            let first: Option<i64> =
                sqlx::query_scalar("SELECT MIN(seq) FROM webhook_call_events WHERE call_id = $1")
                    .bind(&call_id)
                    .fetch_one(&mut *tx)
                    .await?;
            let mut events = Vec::new();
            match (first, call.state.is_some()) {
                (None, _) => {}
                (Some(_), false) => {
                    call.orphan = true;
                    sqlx::query("DELETE FROM webhook_call_events WHERE call_id = $1")
                        .bind(&call_id)
                        .execute(&mut *tx)
                        .await?;
                    orphaned += 1;
                }
                (Some(first), true) => {
                    call.applied_seq = call.applied_seq.max(first - 1);
                    drain(&mut tx, &call_id, &mut call, &mut events).await?;
                    moved += 1;
                }
            }
            save_call(&mut tx, &call_id, &call, now_ms).await?;
            queued += fan_out(&mut tx, &call_id, &events, now_ms).await?;
            tx.commit().await?;
        }
        Ok((moved, orphaned, queued))
    }

    async fn lock_call(
        &self,
        tx: &mut AnyConnection,
        call_id: &str,
        now_ms: i64,
    ) -> Result<CallRow, StoreError> {
        // The row exists before it is locked, so replicas consuming events of one call at once
        // serialize on it instead of racing to insert.
        sqlx::query(
            "INSERT INTO webhook_calls (call_id, applied_seq, state, orphan, ended, updated_at) \
             VALUES ($1, -1, NULL, 0, 0, $2) ON CONFLICT (call_id) DO NOTHING",
        )
        .bind(call_id)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT applied_seq, state, orphan FROM webhook_calls WHERE call_id = $1{}",
            self.backend.for_update()
        )))
        .bind(call_id)
        .fetch_one(&mut *tx)
        .await?;
        let state: Option<String> = row.try_get("state")?;
        let state = match state {
            None => None,
            Some(s) => Some(
                serde_json::from_str::<CallState>(&s)
                    .map_err(|e| StoreError::Corrupt(format!("call projection: {e}")))?,
            ),
        };
        Ok(CallRow {
            applied_seq: row.try_get("applied_seq")?,
            state,
            orphan: row.try_get::<i64, _>("orphan")? != 0,
        })
    }

    // ----- delivering -----

    /// Claims up to `limit` deliveries that may go now, at most `per_endpoint` in flight per
    /// endpoint, for `lease_ms`.
    pub async fn claim_webhooks(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: u32,
        per_endpoint: u32,
    ) -> Result<Vec<ClaimedWebhook>, StoreError> {
        let mut tx = self.begin_write().await?;
        // The heads (earliest pending event of each call and endpoint) that are due, at most
        // `per_endpoint` of each endpoint, so a large backlog of one endpoint cannot crowd the
        // others out of a claim.
        let candidates = sqlx::query(
            "SELECT id, endpoint_id FROM (SELECT d.id, d.endpoint_id, d.due_at, \
                 ROW_NUMBER() OVER (PARTITION BY d.endpoint_id ORDER BY d.due_at, d.id) AS place \
               FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id \
               WHERE d.status = 'pending' AND e.enabled = 1 AND d.due_at <= $1 \
               AND (d.locked_until IS NULL OR d.locked_until <= $1) \
               AND NOT EXISTS (SELECT 1 FROM webhook_deliveries p \
                   WHERE p.endpoint_id = d.endpoint_id AND p.call_id = d.call_id \
                   AND p.status = 'pending' AND p.position < d.position)) heads \
             WHERE place <= $2 ORDER BY due_at, id LIMIT $3",
        )
        .bind(now_ms)
        .bind(i64::from(per_endpoint.max(1)))
        .bind(i64::from(limit.max(1)) * 4)
        .fetch_all(&mut *tx)
        .await?;
        if candidates.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        let busy = sqlx::query(
            "SELECT endpoint_id, COUNT(*) AS n FROM webhook_deliveries \
             WHERE status = 'pending' AND locked_until > $1 GROUP BY endpoint_id",
        )
        .bind(now_ms)
        .fetch_all(&mut *tx)
        .await?;
        let mut in_flight: BTreeMap<String, i64> = BTreeMap::new();
        for row in &busy {
            in_flight.insert(row.try_get("endpoint_id")?, row.try_get("n")?);
        }
        let mut chosen = Vec::new();
        for row in &candidates {
            if chosen.len() >= limit.max(1) as usize {
                break;
            }
            let endpoint: String = row.try_get("endpoint_id")?;
            let n = in_flight.entry(endpoint).or_insert(0);
            if *n < i64::from(per_endpoint.max(1)) {
                *n += 1;
                chosen.push(row.try_get::<i64, _>("id")?);
            }
        }
        if chosen.is_empty() {
            tx.commit().await?;
            return Ok(Vec::new());
        }
        // Re-checked under the row lock: a replica that claimed the same row first wins.
        let sql = format!(
            "UPDATE webhook_deliveries SET locked_until = $1, attempts = attempts + 1, \
             last_attempt_at = $2 WHERE id IN ({}) AND status = 'pending' \
             AND (locked_until IS NULL OR locked_until <= $2) \
             RETURNING id, endpoint_id, message_id, call_id, event_type, body, attempts, \
             window_start, event_at",
            calls_db::placeholders(3, chosen.len())
        );
        let mut q = sqlx::query(AssertSqlSafe(sql))
            .bind(now_ms + lease_ms)
            .bind(now_ms);
        for id in &chosen {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&mut *tx).await?;
        let endpoint_ids: HashSet<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>("endpoint_id"))
            .collect::<Result<_, _>>()?;
        let mut endpoints: BTreeMap<String, (String, Vec<WebhookSecret>)> = BTreeMap::new();
        for id in endpoint_ids {
            let row = sqlx::query(AssertSqlSafe(format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
            )))
            .bind(&id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(e) = row.as_ref().map(endpoint_row).transpose()? {
                endpoints.insert(id, (e.url, e.secrets));
            }
        }
        tx.commit().await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for row in &rows {
            let endpoint_id: String = row.try_get("endpoint_id")?;
            let Some((url, secrets)) = endpoints.get(&endpoint_id) else {
                continue;
            };
            claimed.push(ClaimedWebhook {
                id: row.try_get("id")?,
                endpoint_id,
                url: url.clone(),
                secrets: secrets.clone(),
                message_id: row.try_get("message_id")?,
                call_id: row.try_get("call_id")?,
                event_type: row.try_get("event_type")?,
                body: row.try_get("body")?,
                attempts: row.try_get("attempts")?,
                window_start_ms: row.try_get("window_start")?,
                event_ms: row.try_get("event_at")?,
            });
        }
        Ok(claimed)
    }

    /// Records how attempt `attempts` of delivery `id` ended. A worker whose lease ran out
    /// (another worker has tried since) changes nothing, except to record a delivery.
    pub async fn finish_webhook(
        &self,
        id: i64,
        attempts: i64,
        finish: &WebhookFinish,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let query = match finish {
            WebhookFinish::Delivered { status } => sqlx::query(
                "UPDATE webhook_deliveries SET status = 'delivered', finished_at = $1, \
                 locked_until = NULL, last_status = $2, last_error = NULL \
                 WHERE id = $3 AND status <> 'delivered'",
            )
            .bind(now_ms)
            .bind(i64::from(*status))
            .bind(id),
            WebhookFinish::Retry {
                due_ms,
                status,
                error,
            } => sqlx::query(
                "UPDATE webhook_deliveries SET due_at = $1, locked_until = NULL, last_status = $2, \
                 last_error = $3 WHERE id = $4 AND status = 'pending' AND attempts = $5",
            )
            .bind(*due_ms)
            .bind(status.map(i64::from))
            .bind(error.clone())
            .bind(id)
            .bind(attempts),
            WebhookFinish::Failed { status, error } => sqlx::query(
                "UPDATE webhook_deliveries SET status = 'failed', finished_at = $1, \
                 locked_until = NULL, last_status = $2, last_error = $3 \
                 WHERE id = $4 AND status = 'pending' AND attempts = $5",
            )
            .bind(now_ms)
            .bind(status.map(i64::from))
            .bind(error.clone())
            .bind(id)
            .bind(attempts),
        };
        query.execute(&self.pool).await?;
        Ok(())
    }

    /// Deliveries of an endpoint, newest first, optionally of one status, before a cursor.
    pub async fn webhook_deliveries(
        &self,
        endpoint: &EndpointId,
        status: Option<&str>,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, message_id, call_id, event_type, status, attempts, last_status, \
             last_error, created_at, last_attempt_at, finished_at, body FROM webhook_deliveries \
             WHERE endpoint_id = $1 AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id < $3) \
             ORDER BY id DESC LIMIT $4",
        )
        .bind(endpoint.as_str())
        .bind(status)
        .bind(before_id)
        .bind(i64::from(limit.max(1)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeliveryRecord {
                    id: r.try_get("id")?,
                    message_id: r.try_get("message_id")?,
                    call_id: r.try_get("call_id")?,
                    event_type: r.try_get("event_type")?,
                    status: r.try_get("status")?,
                    attempts: r.try_get("attempts")?,
                    last_status: r.try_get("last_status")?,
                    last_error: r.try_get("last_error")?,
                    created_ms: r.try_get("created_at")?,
                    last_attempt_ms: r.try_get("last_attempt_at")?,
                    finished_ms: r.try_get("finished_at")?,
                    body: r.try_get("body")?,
                })
            })
            .collect()
    }

    /// Queues again the failed deliveries of an endpoint created at or after `since_ms`, with
    /// a fresh retry window and their original `webhook-id`s; returns how many.
    pub async fn replay(
        &self,
        endpoint: &EndpointId,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let n = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', attempts = 0, due_at = $1, \
             window_start = $1, locked_until = NULL, finished_at = NULL \
             WHERE endpoint_id = $2 AND status = 'failed' AND created_at >= $3",
        )
        .bind(now_ms)
        .bind(endpoint.as_str())
        .bind(since_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    /// Pending deliveries per endpoint and the age of each one's oldest (for metrics).
    pub async fn webhook_backlog(&self, now_ms: i64) -> Result<Vec<EndpointBacklog>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.id AS endpoint_id, COUNT(d.id) AS n, MIN(d.window_start) AS oldest \
             FROM webhook_endpoints e LEFT JOIN webhook_deliveries d \
             ON d.endpoint_id = e.id AND d.status = 'pending' GROUP BY e.id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let oldest: Option<i64> = r.try_get("oldest")?;
                Ok(EndpointBacklog {
                    endpoint_id: r.try_get("endpoint_id")?,
                    pending: r.try_get("n")?,
                    oldest_ms: oldest.map_or(0, |o| (now_ms - o).max(0)),
                })
            })
            .collect()
    }

    /// Forgets delivered rows finished before `delivered_before_ms`, dead letters finished
    /// before `failed_before_ms`, and call projections not touched since `calls_before_ms`.
    pub async fn prune_webhooks(
        &self,
        delivered_before_ms: i64,
        failed_before_ms: i64,
        calls_before_ms: i64,
    ) -> Result<u64, StoreError> {
        let mut n = sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status = 'delivered' AND finished_at < $1",
        )
        .bind(delivered_before_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        n += sqlx::query(
            "DELETE FROM webhook_deliveries WHERE status = 'failed' AND finished_at < $1",
        )
        .bind(failed_before_ms)
        .execute(&self.pool)
        .await?
        .rows_affected();
        n += sqlx::query("DELETE FROM webhook_calls WHERE updated_at < $1")
            .bind(calls_before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        n += sqlx::query("DELETE FROM webhook_call_events WHERE received_at < $1")
            .bind(calls_before_ms)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n)
    }

    /// The calls' projections, for tests: `(applied_seq, orphan)`.
    pub async fn webhook_call(&self, call_id: &str) -> Result<Option<(i64, bool)>, StoreError> {
        let row = sqlx::query("SELECT applied_seq, orphan FROM webhook_calls WHERE call_id = $1")
            .bind(call_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok((
                r.try_get("applied_seq")?,
                r.try_get::<i64, _>("orphan")? != 0,
            ))
        })
        .transpose()
    }
}

struct CallRow {
    applied_seq: i64,
    state: Option<CallState>,
    orphan: bool,
}

/// Applies the waiting events that now follow without a gap.
async fn drain(
    tx: &mut AnyConnection,
    call_id: &str,
    call: &mut CallRow,
    events: &mut Vec<WebhookEvent>,
) -> Result<(), StoreError> {
    let Some(state) = call.state.as_mut() else {
        return Ok(());
    };
    loop {
        let next = call.applied_seq + 1;
        let raw: Option<String> = sqlx::query_scalar(
            "SELECT event FROM webhook_call_events WHERE call_id = $1 AND seq = $2",
        )
        .bind(call_id)
        .bind(next)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(raw) = raw else {
            break;
        };
        // It decoded when it was stored; a row that no longer does is skipped, not retried.
        if let Ok(event) = decode_call_event(&raw) {
            events.extend(state.apply(&event));
        }
        call.applied_seq = next;
    }
    sqlx::query("DELETE FROM webhook_call_events WHERE call_id = $1 AND seq <= $2")
        .bind(call_id)
        .bind(call.applied_seq)
        .execute(&mut *tx)
        .await?;
    Ok(())
}

async fn save_call(
    tx: &mut AnyConnection,
    call_id: &str,
    call: &CallRow,
    now_ms: i64,
) -> Result<(), StoreError> {
    let state = match &call.state {
        Some(s) => Some(
            serde_json::to_string(s)
                .map_err(|e| StoreError::Corrupt(format!("call projection: {e}")))?,
        ),
        None => None,
    };
    let ended = call.state.as_ref().is_some_and(CallState::is_ended);
    sqlx::query(
        "UPDATE webhook_calls SET applied_seq = $1, state = $2, orphan = $3, ended = $4, \
         updated_at = $5 WHERE call_id = $6",
    )
    .bind(call.applied_seq)
    .bind(state)
    .bind(i64::from(call.orphan))
    .bind(i64::from(ended))
    .bind(now_ms)
    .bind(call_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// Fails the pending deliveries of an endpoint (it is being disabled).
async fn fail_pending(
    tx: &mut AnyConnection,
    endpoint_id: &str,
    why: &str,
    now_ms: i64,
) -> Result<u64, StoreError> {
    Ok(sqlx::query(
        "UPDATE webhook_deliveries SET status = 'failed', finished_at = $1, locked_until = NULL, \
         last_error = $2 WHERE endpoint_id = $3 AND status = 'pending'",
    )
    .bind(now_ms)
    .bind(why)
    .bind(endpoint_id)
    .execute(&mut *tx)
    .await?
    .rows_affected())
}

/// Queues `events` for every endpoint that wants them; returns how many went out pending. A
/// disabled endpoint's rows are written failed, so a replay after it is enabled again covers
/// the time it was off.
async fn fan_out(
    tx: &mut AnyConnection,
    call_id: &str,
    events: &[WebhookEvent],
    now_ms: i64,
) -> Result<usize, StoreError> {
    if events.is_empty() {
        return Ok(0);
    }
    let rows = sqlx::query(AssertSqlSafe(format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints"
    )))
    .fetch_all(&mut *tx)
    .await?;
    let endpoints: Vec<Endpoint> = rows.iter().map(endpoint_row).collect::<Result<_, _>>()?;
    let mut queued = 0;
    for event in events {
        let body = event.body();
        let message = message_id(call_id, event.position);
        for endpoint in &endpoints {
            if endpoint.created_ms > event.at_ms || !endpoint.wants(event.event_type) {
                continue;
            }
            let (status, error, finished) = if endpoint.enabled {
                ("pending", None, None)
            } else {
                ("failed", Some("endpoint disabled"), Some(now_ms))
            };
            let inserted = sqlx::query(
                "INSERT INTO webhook_deliveries (endpoint_id, message_id, call_id, position, \
                 event_type, body, status, attempts, due_at, window_start, event_at, last_error, \
                 created_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, $8, $8, $9, $10, \
                 $8, $11) ON CONFLICT (endpoint_id, message_id) DO NOTHING",
            )
            .bind(endpoint.id.as_str())
            .bind(&message)
            .bind(call_id)
            .bind(event.position)
            .bind(event.event_type.as_str())
            .bind(&body)
            .bind(status)
            .bind(now_ms)
            .bind(event.at_ms)
            .bind(error)
            .bind(finished)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted > 0 && endpoint.enabled {
                queued += 1;
            }
        }
    }
    Ok(queued)
}
