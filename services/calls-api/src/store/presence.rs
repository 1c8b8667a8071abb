//! Socket presence, as reported by signaling nodes, turned into the disconnect grace.
//!
//! A user is connected while they have at least one socket on any node. When the last one
//! goes, every live call where they are `joined` gets `presence(user, false)` (which starts
//! the grace timer); when one comes back, `presence(user, true)`. A node that stops sending
//! heartbeats is expired with all its sockets, so a crashed node's users get the same
//! treatment as users who hung up their sockets.
//!
//! Race-freedom: every presence transaction first locks the live calls the affected users are
//! joined in (in id order), then changes the socket rows, then counts sockets. Two
//! transactions about the same user therefore run one after the other, and the second counts
//! the sockets the first left. Lock order is node row, then calls, then sockets, everywhere.

use std::collections::BTreeSet;
use std::time::Duration;

use sqlx::AnyConnection;
use sqlx::{AssertSqlSafe, Row};
use time::OffsetDateTime;

use crate::domain::timefmt::to_millis;
use crate::domain::{CallId, DomainEvent, Timing};

use super::rows::{EventMeta, LIVE, load_call, parse_call_id, persist, placeholders};
use super::{Store, StoreError};

/// What [`Store::expire_dead_nodes`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeExpiry {
    /// The nodes declared dead (their sockets are gone).
    pub nodes: Vec<String>,
    /// The events caused by the users who lost their last socket with them.
    pub events: Vec<DomainEvent>,
}

impl Store {
    /// `socket` of `user` connected on `node` (which counts as a heartbeat of the node).
    /// Returns the events caused (`participant_reconnected` if this ended a disconnect).
    #[tracing::instrument(name = "db.socket_connected", skip_all, fields(otel.kind = "client", db.operation.name = "socket_connected"))]
    pub async fn socket_connected(
        &self,
        node: &str,
        socket: &str,
        user: &str,
        now: OffsetDateTime,
        timing: &Timing,
    ) -> Result<Vec<DomainEvent>, StoreError> {
        let mut tx = self.begin_write().await?;
        upsert_node(&mut tx, node, now).await?;
        // A reused socket id moves from its previous user, who may lose their last socket.
        let previous = socket_user(&mut tx, node, socket).await?;
        let mut users: BTreeSet<String> = BTreeSet::from([user.to_owned()]);
        users.extend(previous);
        let calls = self.lock_calls_of(&mut tx, &users).await?;
        sqlx::query(
            "INSERT INTO signaling_sockets (node_id, socket_id, user_id, connected_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (node_id, socket_id) \
             DO UPDATE SET user_id = excluded.user_id, connected_at = excluded.connected_at",
        )
        .bind(node.to_owned())
        .bind(socket.to_owned())
        .bind(user.to_owned())
        .bind(to_millis(now))
        .execute(&mut *tx)
        .await?;
        let events = reconcile(&mut tx, &users, &calls, now, timing).await?;
        tx.commit().await?;
        Ok(events)
    }

    /// `socket` on `node` disconnected. Returns the events caused
    /// (`participant_disconnected` in each live call the user is joined in, if it was their
    /// last socket). Unknown sockets are ignored.
    #[tracing::instrument(name = "db.socket_disconnected", skip_all, fields(otel.kind = "client", db.operation.name = "socket_disconnected"))]
    pub async fn socket_disconnected(
        &self,
        node: &str,
        socket: &str,
        now: OffsetDateTime,
        timing: &Timing,
    ) -> Result<Vec<DomainEvent>, StoreError> {
        let mut tx = self.begin_write().await?;
        let Some(user) = socket_user(&mut tx, node, socket).await? else {
            tx.rollback().await?;
            return Ok(Vec::new());
        };
        let users = BTreeSet::from([user]);
        let calls = self.lock_calls_of(&mut tx, &users).await?;
        sqlx::query("DELETE FROM signaling_sockets WHERE node_id = $1 AND socket_id = $2")
            .bind(node.to_owned())
            .bind(socket.to_owned())
            .execute(&mut *tx)
            .await?;
        let events = reconcile(&mut tx, &users, &calls, now, timing).await?;
        tx.commit().await?;
        Ok(events)
    }

    /// Records that `node` is alive at `now`. Returns `false` if the node was unknown: new,
    /// or already expired, in which case its sockets were forgotten and it should report
    /// them again.
    pub async fn node_heartbeat(
        &self,
        node: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let updated =
            sqlx::query("UPDATE signaling_nodes SET last_heartbeat = $2 WHERE node_id = $1")
                .bind(node.to_owned())
                .bind(to_millis(now))
                .execute(&self.pool)
                .await?;
        if updated.rows_affected() > 0 {
            return Ok(true);
        }
        let mut conn = self.pool.acquire().await?;
        upsert_node(&mut conn, node, now).await?;
        Ok(false)
    }

    /// Expires every node whose last heartbeat is older than `now - older_than`: its sockets
    /// are deleted, and users left without any socket are disconnected from their calls.
    pub async fn expire_dead_nodes(
        &self,
        now: OffsetDateTime,
        older_than: Duration,
        timing: &Timing,
    ) -> Result<NodeExpiry, StoreError> {
        let older_ms = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let cutoff = to_millis(now).saturating_sub(older_ms);
        let rows = sqlx::query(
            "SELECT node_id FROM signaling_nodes WHERE last_heartbeat < $1 ORDER BY node_id",
        )
        .bind(cutoff)
        .fetch_all(&self.pool)
        .await?;
        let candidates: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>("node_id"))
            .collect::<Result<_, _>>()?;

        let mut expiry = NodeExpiry::default();
        for node in candidates {
            if let Some(events) = self.remove_node(&node, Some(cutoff), now, timing).await? {
                expiry.nodes.push(node);
                expiry.events.extend(events);
            }
        }
        Ok(expiry)
    }

    /// A node shut down gracefully: all its sockets are gone now (no need to wait for its
    /// heartbeats to stop). Returns the events caused.
    #[tracing::instrument(name = "db.node_down", skip_all, fields(otel.kind = "client", db.operation.name = "node_down"))]
    pub async fn node_down(
        &self,
        node: &str,
        now: OffsetDateTime,
        timing: &Timing,
    ) -> Result<Vec<DomainEvent>, StoreError> {
        Ok(self
            .remove_node(node, None, now, timing)
            .await?
            .unwrap_or_default())
    }

    /// Removes `node` with its sockets and reconciles its users' calls, in one transaction.
    /// With `cutoff`, only if its last heartbeat is still older than that (re-checked under
    /// the lock: a heartbeat may have arrived since the scan); `None` when it was not removed.
    async fn remove_node(
        &self,
        node: &str,
        cutoff: Option<i64>,
        now: OffsetDateTime,
        timing: &Timing,
    ) -> Result<Option<Vec<DomainEvent>>, StoreError> {
        let mut tx = self.begin_write().await?;
        let sql = format!(
            "SELECT node_id FROM signaling_nodes WHERE node_id = $1 AND last_heartbeat < $2{}",
            self.backend.for_update()
        );
        let present = sqlx::query(AssertSqlSafe(sql))
            .bind(node.to_owned())
            .bind(cutoff.unwrap_or(i64::MAX))
            .fetch_optional(&mut *tx)
            .await?;
        if present.is_none() {
            tx.rollback().await?;
            return Ok(None);
        }
        let rows = sqlx::query("SELECT DISTINCT user_id FROM signaling_sockets WHERE node_id = $1")
            .bind(node.to_owned())
            .fetch_all(&mut *tx)
            .await?;
        let users: BTreeSet<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>("user_id"))
            .collect::<Result<_, _>>()?;
        let calls = self.lock_calls_of(&mut tx, &users).await?;
        sqlx::query("DELETE FROM signaling_sockets WHERE node_id = $1")
            .bind(node.to_owned())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM signaling_nodes WHERE node_id = $1")
            .bind(node.to_owned())
            .execute(&mut *tx)
            .await?;
        let events = reconcile(&mut tx, &users, &calls, now, timing).await?;
        tx.commit().await?;
        Ok(Some(events))
    }

    /// Whether `user` has any socket on any node.
    pub async fn user_has_socket(&self, user: &str) -> Result<bool, StoreError> {
        let mut conn = self.pool.acquire().await?;
        Ok(socket_count(&mut conn, user).await? > 0)
    }

    /// Locks, in id order, the live calls any of `users` is joined in.
    async fn lock_calls_of(
        &self,
        conn: &mut AnyConnection,
        users: &BTreeSet<String>,
    ) -> Result<Vec<CallId>, StoreError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        // A subquery rather than a join: Postgres refuses FOR UPDATE with DISTINCT.
        let sql = format!(
            "SELECT id FROM calls WHERE {LIVE} AND id IN (SELECT call_id FROM \
             call_participants WHERE status = 'joined' AND user_id IN ({})) ORDER BY id{}",
            placeholders(1, users.len()),
            self.backend.for_update()
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for u in users {
            q = q.bind(u.clone());
        }
        let rows = q.fetch_all(&mut *conn).await?;
        rows.iter()
            .map(|r| parse_call_id(&r.try_get::<String, _>("id")?))
            .collect()
    }
}

async fn upsert_node(
    conn: &mut AnyConnection,
    node: &str,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO signaling_nodes (node_id, last_heartbeat) VALUES ($1, $2) \
         ON CONFLICT (node_id) DO UPDATE SET last_heartbeat = excluded.last_heartbeat",
    )
    .bind(node.to_owned())
    .bind(to_millis(now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn socket_user(
    conn: &mut AnyConnection,
    node: &str,
    socket: &str,
) -> Result<Option<String>, StoreError> {
    let row =
        sqlx::query("SELECT user_id FROM signaling_sockets WHERE node_id = $1 AND socket_id = $2")
            .bind(node.to_owned())
            .bind(socket.to_owned())
            .fetch_optional(&mut *conn)
            .await?;
    Ok(row.map(|r| r.try_get::<String, _>("user_id")).transpose()?)
}

async fn socket_count(conn: &mut AnyConnection, user: &str) -> Result<i64, StoreError> {
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM signaling_sockets WHERE user_id = $1")
        .bind(user.to_owned())
        .fetch_one(&mut *conn)
        .await?
        .try_get("n")?;
    Ok(n)
}

/// Applies each user's current connectedness to the (locked) calls and writes the results.
async fn reconcile(
    conn: &mut AnyConnection,
    users: &BTreeSet<String>,
    calls: &[CallId],
    now: OffsetDateTime,
    timing: &Timing,
) -> Result<Vec<DomainEvent>, StoreError> {
    if calls.is_empty() {
        return Ok(Vec::new());
    }
    let mut connected = Vec::with_capacity(users.len());
    for user in users {
        connected.push((user, socket_count(conn, user).await? > 0));
    }
    let mut events = Vec::new();
    for id in calls {
        let Some(mut call) = load_call(conn, *id, "").await? else {
            continue;
        };
        let before = call.clone();
        let mut outcome = crate::domain::Outcome::default();
        for (user, is_connected) in &connected {
            let o = call.presence(user, *is_connected, now, timing);
            outcome.events.extend(o.events);
            outcome.timers.extend(o.timers);
        }
        if outcome.events.is_empty() && outcome.timers.is_empty() {
            continue;
        }
        persist(conn, Some(&before), &call, &outcome, &EventMeta::default()).await?;
        events.extend(outcome.events);
    }
    Ok(events)
}
