//! Creating calls, applying commands to them, and reading them back.

use std::collections::BTreeSet;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;
use sqlx::{AssertSqlSafe, Row};
use time::OffsetDateTime;

use crate::domain::timefmt::to_millis;
use crate::domain::{Call, CallId, DomainError, DomainEvent, NewCall, Outcome, Timing, UserId};

use super::rows::{
    CALL_COLUMNS, EventMeta, LIVE, calls_from_rows, insert_call_row, load_call, persist,
    placeholders,
};
use super::{Store, StoreError};

/// How [`Store::initiate`] turned out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Initiated {
    /// A new call (HTTP 201); its events are in the outbox.
    Created {
        /// The call.
        call: Call,
        /// The events written (`incoming_call` to each invitee, or `call_ended` if busy).
        events: Vec<DomainEvent>,
    },
    /// The room already has a live call the caller may see (HTTP 200): a second initiate,
    /// or two people calling each other at once (glare) merged into one call.
    Existing {
        /// The live call.
        call: Call,
    },
    /// The room has a live call the caller may not see (409 `CALL_ALREADY_ACTIVE`).
    AlreadyActiveHidden,
    /// The idempotency key was used before: the first response again.
    Replayed {
        /// Whether the first request created the call (201) or found it (200).
        created: bool,
        /// The call as it was in the first response. Read back from its JSON, so the
        /// internal bookkeeping fields (`is_invitee`, `has_joined`) are `false`: serve it,
        /// do not feed it to the state machine.
        call: Call,
    },
}

/// One page of a user's call history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallPage {
    /// Newest first.
    pub items: Vec<Call>,
    /// Pass as `before` to get the next (older) page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What the idempotency table keeps of a first response.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    created: bool,
    call: Call,
}

/// A lost race is retried at most this many times (a glare winner ending in between, two
/// requests with one idempotency key); each retry sees the other side's committed result.
const INITIATE_ATTEMPTS: usize = 3;

/// The largest page [`Store::calls_for_user`] returns.
pub const MAX_PAGE: u32 = 100;

impl Store {
    /// Creates a call in `new.chat_room_id` unless the room already has a live one.
    ///
    /// Everything happens in one transaction: the idempotency key is looked up (a repeat
    /// returns [`Initiated::Replayed`]), invitees `joined` in another live call are found
    /// (busy), the call is inserted, and on a conflict with another live call in the room the
    /// one that won is returned, [`Initiated::Existing`] if `may_see_existing` says the caller
    /// may see it, else [`Initiated::AlreadyActiveHidden`]. The call id is a fresh UUID v7.
    #[tracing::instrument(name = "db.initiate", skip_all, fields(otel.kind = "client", db.operation.name = "initiate"))]
    pub async fn initiate(
        &self,
        new: NewCall,
        now: OffsetDateTime,
        timing: &Timing,
        idempotency: Option<(&str, &str)>,
        trace_context: Option<&str>,
        may_see_existing: impl Fn(&Call) -> bool + Send + Sync,
    ) -> Result<Initiated, StoreError> {
        for _ in 0..INITIATE_ATTEMPTS {
            match self
                .try_initiate(
                    &new,
                    now,
                    timing,
                    idempotency,
                    trace_context,
                    &may_see_existing,
                )
                .await?
            {
                Some(result) => return Ok(result),
                None => continue,
            }
        }
        // Only reachable if the room keeps changing under us.
        Err(StoreError::Contended)
    }

    /// One attempt; `None` when a concurrent transaction won a race and the whole attempt
    /// must be retried to see its result.
    async fn try_initiate(
        &self,
        new: &NewCall,
        now: OffsetDateTime,
        timing: &Timing,
        idempotency: Option<(&str, &str)>,
        trace_context: Option<&str>,
        may_see_existing: &(impl Fn(&Call) -> bool + Send + Sync),
    ) -> Result<Option<Initiated>, StoreError> {
        let mut tx = self.begin_write().await?;

        if let Some((user, key)) = idempotency
            && let Some(replay) = find_snapshot(&mut tx, user, key).await?
        {
            tx.rollback().await?;
            return Ok(Some(replay));
        }

        let result = match live_call_id_in_room(&mut tx, &new.chat_room_id).await? {
            Some(id) => match load_call(&mut tx, id, "").await? {
                Some(existing) => existing_result(existing, may_see_existing),
                None => {
                    tx.rollback().await?;
                    return Ok(None);
                }
            },
            None => {
                let busy = joined_elsewhere(&mut tx, &new.invitee_ids, &new.chat_room_id).await?;
                let (call, outcome) =
                    Call::initiate(new.clone(), &busy, CallId::now_v7(), now, timing)?;
                if insert_call_row(&mut tx, &call).await? {
                    persist(&mut tx, None, &call, &outcome, &trace_context.into()).await?;
                    Initiated::Created {
                        call,
                        events: outcome.events,
                    }
                } else {
                    // Another transaction committed a live call in this room meanwhile
                    // (Postgres waited for it on the unique index): merge into it.
                    match live_call_id_in_room(&mut tx, &new.chat_room_id).await? {
                        Some(id) => match load_call(&mut tx, id, "").await? {
                            Some(existing) => existing_result(existing, may_see_existing),
                            None => {
                                tx.rollback().await?;
                                return Ok(None);
                            }
                        },
                        None => {
                            tx.rollback().await?;
                            return Ok(None);
                        }
                    }
                }
            }
        };

        if let Some((user, key)) = idempotency {
            let snapshot = match &result {
                Initiated::Created { call, .. } => Some(Snapshot {
                    created: true,
                    call: call.clone(),
                }),
                Initiated::Existing { call } => Some(Snapshot {
                    created: false,
                    call: call.clone(),
                }),
                // Refusals are not remembered: a retry should see the room as it is then.
                Initiated::AlreadyActiveHidden | Initiated::Replayed { .. } => None,
            };
            if let Some(snapshot) = snapshot {
                let json = serde_json::to_string(&snapshot)
                    .map_err(|e| StoreError::corrupt(format!("snapshot: {e}")))?;
                let stored = sqlx::query(
                    "INSERT INTO idempotency_keys (user_id, idem_key, response, created_at) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                )
                .bind(user.to_owned())
                .bind(key.to_owned())
                .bind(json)
                .bind(to_millis(now))
                .execute(&mut *tx)
                .await?;
                if stored.rows_affected() == 0 {
                    // The same key committed by a concurrent request: its answer wins.
                    tx.rollback().await?;
                    return Ok(None);
                }
            }
        }
        tx.commit().await?;
        Ok(Some(result))
    }

    /// Runs `command` on the call under a row lock and writes its result (changed rows,
    /// outbox events with their `seq`, timer changes) in one transaction. This is what makes
    /// `maxParticipants` hold under racing joins and `seq` gap-free across replicas.
    ///
    /// A call that does not exist gives `Domain(NotFound)`; a refused command gives its
    /// `Domain` error and writes nothing.
    pub async fn apply<F>(
        &self,
        call_id: CallId,
        command: F,
    ) -> Result<(Call, Vec<DomainEvent>), StoreError>
    where
        F: FnOnce(&mut Call) -> Result<Outcome, DomainError> + Send,
    {
        self.apply_traced(call_id, None, command).await
    }

    /// [`Store::apply`], recording `meta` on the events: the W3C `traceparent` so the relay can
    /// continue the trace, and the socket or device the command came from (see [`EventMeta`]).
    #[tracing::instrument(name = "db.apply_traced", skip_all, fields(otel.kind = "client", db.operation.name = "apply_traced"))]
    pub async fn apply_traced<'m, F>(
        &self,
        call_id: CallId,
        meta: impl Into<EventMeta<'m>>,
        command: F,
    ) -> Result<(Call, Vec<DomainEvent>), StoreError>
    where
        F: FnOnce(&mut Call) -> Result<Outcome, DomainError> + Send,
    {
        let mut tx = self.begin_write().await?;
        let Some(mut call) = load_call(&mut tx, call_id, self.backend.for_update()).await? else {
            tx.rollback().await?;
            return Err(DomainError::NotFound.into());
        };
        let before = call.clone();
        let outcome = match command(&mut call) {
            Ok(outcome) => outcome,
            Err(e) => {
                tx.rollback().await?;
                return Err(e.into());
            }
        };
        persist(&mut tx, Some(&before), &call, &outcome, &meta.into()).await?;
        tx.commit().await?;
        Ok((call, outcome.events))
    }

    /// [`Store::apply_traced`] for commands that need to know which of `users` are busy
    /// (`joined` in another live call), found in the same transaction under the call's lock:
    /// an invitation into a live call.
    #[tracing::instrument(name = "db.apply_with_busy", skip_all, fields(otel.kind = "client", db.operation.name = "apply_with_busy"))]
    pub async fn apply_with_busy<'m, F>(
        &self,
        call_id: CallId,
        meta: impl Into<EventMeta<'m>>,
        users: &[UserId],
        command: F,
    ) -> Result<(Call, Vec<DomainEvent>), StoreError>
    where
        F: FnOnce(&mut Call, BTreeSet<UserId>) -> Result<Outcome, DomainError> + Send,
    {
        let mut tx = self.begin_write().await?;
        let Some(mut call) = load_call(&mut tx, call_id, self.backend.for_update()).await? else {
            tx.rollback().await?;
            return Err(DomainError::NotFound.into());
        };
        // The call's own room is left out: its one live call is this one.
        let busy = joined_elsewhere(&mut tx, users, &call.chat_room_id).await?;
        let before = call.clone();
        let outcome = match command(&mut call, busy) {
            Ok(outcome) => outcome,
            Err(e) => {
                tx.rollback().await?;
                return Err(e.into());
            }
        };
        persist(&mut tx, Some(&before), &call, &outcome, &meta.into()).await?;
        tx.commit().await?;
        Ok((call, outcome.events))
    }

    /// The call, whoever may see it (visibility is the caller's check).
    #[tracing::instrument(name = "db.get_call", skip_all, fields(otel.kind = "client", db.operation.name = "get_call"))]
    pub async fn get_call(&self, id: CallId) -> Result<Option<Call>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_call(&mut conn, id, "").await
    }

    /// The room's ringing or active call, if any.
    #[tracing::instrument(name = "db.active_call_in_room", skip_all, fields(otel.kind = "client", db.operation.name = "active_call_in_room"))]
    pub async fn active_call_in_room(&self, room: &str) -> Result<Option<Call>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        match live_call_id_in_room(&mut conn, room).await? {
            Some(id) => load_call(&mut conn, id, "").await,
            None => Ok(None),
        }
    }

    /// The calls `user` took part in (invited, hosted or joined), newest first, `limit`
    /// (1..=100) per page. `before` is a `next_cursor` from a previous page; a malformed one
    /// is a validation error on `before`.
    #[tracing::instrument(name = "db.calls_for_user", skip_all, fields(otel.kind = "client", db.operation.name = "calls_for_user"))]
    pub async fn calls_for_user(
        &self,
        user: &str,
        limit: u32,
        before: Option<&str>,
    ) -> Result<CallPage, StoreError> {
        let limit = limit.clamp(1, MAX_PAGE);
        let cursor = before.map(decode_cursor).transpose()?;
        let c_columns = CALL_COLUMNS
            .split(", ")
            .map(|c| format!("c.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        let mut conn = self.pool.acquire().await?;
        // Fetch one more than asked to know whether another page follows.
        let rows = match &cursor {
            None => {
                let sql = format!(
                    "SELECT {c_columns} FROM calls c \
                     JOIN call_participants p ON p.call_id = c.id \
                     WHERE p.user_id = $1 \
                     ORDER BY c.created_at DESC, c.id DESC LIMIT $2"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(user.to_owned())
                    .bind(i64::from(limit) + 1)
                    .fetch_all(&mut *conn)
                    .await?
            }
            Some((created_at, id)) => {
                let sql = format!(
                    "SELECT {c_columns} FROM calls c \
                     JOIN call_participants p ON p.call_id = c.id \
                     WHERE p.user_id = $1 \
                       AND (c.created_at < $2 OR (c.created_at = $2 AND c.id < $3)) \
                     ORDER BY c.created_at DESC, c.id DESC LIMIT $4"
                );
                sqlx::query(AssertSqlSafe(sql))
                    .bind(user.to_owned())
                    .bind(*created_at)
                    .bind(id.clone())
                    .bind(i64::from(limit) + 1)
                    .fetch_all(&mut *conn)
                    .await?
            }
        };
        let mut items = calls_from_rows(&mut conn, &rows).await?;
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(encode_cursor)
        } else {
            None
        };
        Ok(CallPage { items, next_cursor })
    }

    /// Whether `user` is `joined` in a live call other than `except`: such a user is busy.
    #[tracing::instrument(name = "db.user_joined_elsewhere", skip_all, fields(otel.kind = "client", db.operation.name = "user_joined_elsewhere"))]
    pub async fn user_joined_elsewhere(
        &self,
        user: &str,
        except: Option<CallId>,
    ) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        let sql = format!(
            "SELECT COUNT(*) AS n FROM call_participants p JOIN calls c ON c.id = p.call_id \
             WHERE p.user_id = $1 AND p.status = 'joined' AND c.{LIVE} AND c.id <> $2"
        );
        let n: i64 = sqlx::query(AssertSqlSafe(sql))
            .bind(user.to_owned())
            .bind(except.map(|id| id.to_string()).unwrap_or_default())
            .fetch_one(&mut *conn)
            .await?
            .try_get("n")?;
        Ok(n > 0)
    }
}

fn existing_result(existing: Call, may_see: &(impl Fn(&Call) -> bool + Send + Sync)) -> Initiated {
    if may_see(&existing) {
        Initiated::Existing { call: existing }
    } else {
        Initiated::AlreadyActiveHidden
    }
}

async fn find_snapshot(
    conn: &mut AnyConnection,
    user: &str,
    key: &str,
) -> Result<Option<Initiated>, StoreError> {
    let row =
        sqlx::query("SELECT response FROM idempotency_keys WHERE user_id = $1 AND idem_key = $2")
            .bind(user.to_owned())
            .bind(key.to_owned())
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let json: String = row.try_get("response")?;
    let s: Snapshot = serde_json::from_str(&json)
        .map_err(|e| StoreError::corrupt(format!("idempotency snapshot: {e}")))?;
    Ok(Some(Initiated::Replayed {
        created: s.created,
        call: s.call,
    }))
}

pub(crate) async fn live_call_id_in_room(
    conn: &mut AnyConnection,
    room: &str,
) -> Result<Option<CallId>, StoreError> {
    let sql = format!("SELECT id FROM calls WHERE chat_room_id = $1 AND {LIVE}");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(room.to_owned())
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|r| super::rows::parse_call_id(&r.try_get::<String, _>("id")?))
        .transpose()
}

/// Of `users`, those `joined` in a live call of another room.
///
/// A live call in `room` itself does not make anyone busy: it can only be one that committed
/// after this transaction looked for the room's live call, that is, the other side of a glare.
/// Counting it would create a second call, ended `busy`, next to it; leaving it out lets the
/// insert below conflict on the one-live-call-per-room index and merge into it.
async fn joined_elsewhere(
    conn: &mut AnyConnection,
    users: &[UserId],
    room: &str,
) -> Result<BTreeSet<UserId>, StoreError> {
    if users.is_empty() {
        return Ok(BTreeSet::new());
    }
    let sql = format!(
        "SELECT p.user_id FROM call_participants p JOIN calls c ON c.id = p.call_id \
         WHERE p.status = 'joined' AND c.{LIVE} AND c.chat_room_id <> $1 AND p.user_id IN ({})",
        placeholders(2, users.len())
    );
    let mut q = sqlx::query(AssertSqlSafe(sql)).bind(room.to_owned());
    for u in users {
        q = q.bind(u.clone());
    }
    let rows = q.fetch_all(&mut *conn).await?;
    rows.iter()
        .map(|r| r.try_get::<String, _>("user_id").map_err(StoreError::from))
        .collect()
}

/// Opaque to clients: base64url of `<created_at ms>:<call id>`, the position of the last item.
fn encode_cursor(call: &Call) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}:{}", to_millis(call.created_at), call.id))
}

fn decode_cursor(cursor: &str) -> Result<(i64, String), StoreError> {
    let invalid = || {
        DomainError::Validation(crate::domain::ValidationError {
            field: "before",
            message: "is not a cursor returned by this API".into(),
        })
    };
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (ms, id) = text.split_once(':').ok_or_else(invalid)?;
    let ms: i64 = ms.parse().map_err(|_| invalid())?;
    let id = CallId::parse_str(id).map_err(|_| invalid())?;
    Ok((ms, id.to_string()))
}
