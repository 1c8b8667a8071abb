//! Reading calls from rows and writing a command's result back: the SQL shared by every
//! store operation.
//!
//! Everything here takes a plain `&mut AnyConnection`, so it runs the same inside a
//! transaction or on a pooled connection. Writes are diffs against the call as it was loaded:
//! a command touches one or two participants, so only those rows are written.

use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};
use time::OffsetDateTime;

use crate::domain::timefmt::{from_millis, to_millis};
use crate::domain::{
    Audience, Call, CallId, CallStatus, CallType, DomainEvent, EndReason, EventKind, LeftReason,
    Outcome, Participant, ParticipantStatus, Role, TimerChange, TimerKind,
};

use super::StoreError;

pub(crate) const CALL_COLUMNS: &str = "id, chat_room_id, call_type, is_group_call, status, \
     initiator_id, max_participants, created_at, started_at, ended_at, end_reason, ended_by, seq, \
     ring_timeout_seconds, alone_timeout_seconds";

const PARTICIPANT_COLUMNS: &str = "call_id, user_id, role, status, is_mic_muted, is_camera_off, \
     is_sharing_screen, is_connected, is_invitee, has_joined, invited_at, joined_at, left_at, \
     decline_reason, is_removed, in_media, media_uid, media_client_seq, media_seconds, media_since";

/// The SQL condition "the call is live", matching the partial unique index.
pub(crate) const LIVE: &str = "status IN ('ringing', 'active')";

/// `$from, $from+1, …` for `n` values: the placeholders of an `IN (…)` list.
pub(crate) use calls_db::placeholders;

// ----- decoding -----

/// Booleans are BOOLEAN on Postgres and INTEGER 0/1 on SQLite (see the migrations).
fn get_bool(row: &AnyRow, col: &str) -> Result<bool, StoreError> {
    Ok(calls_db::get_bool(row, col)?)
}

fn get_u32(row: &AnyRow, col: &str) -> Result<u32, StoreError> {
    let n: i64 = row.try_get(col)?;
    u32::try_from(n).map_err(|_| StoreError::corrupt(format!("{col} {n}")))
}

fn get_time(row: &AnyRow, col: &str) -> Result<OffsetDateTime, StoreError> {
    let ms: i64 = row.try_get(col)?;
    from_millis(ms).ok_or_else(|| StoreError::corrupt(format!("{col} out of range: {ms}")))
}

fn get_opt_time(row: &AnyRow, col: &str) -> Result<Option<OffsetDateTime>, StoreError> {
    let ms: Option<i64> = row.try_get(col)?;
    ms.map(|ms| {
        from_millis(ms).ok_or_else(|| StoreError::corrupt(format!("{col} out of range: {ms}")))
    })
    .transpose()
}

fn get_enum<T>(row: &AnyRow, col: &str, parse: fn(&str) -> Option<T>) -> Result<T, StoreError> {
    let s: String = row.try_get(col)?;
    parse(&s).ok_or_else(|| StoreError::corrupt(format!("unknown {col} {s:?}")))
}

pub(crate) fn parse_call_id(s: &str) -> Result<CallId, StoreError> {
    CallId::parse_str(s).map_err(|_| StoreError::corrupt(format!("malformed call id {s:?}")))
}

/// A `calls` row, without participants.
pub(crate) fn call_from_row(row: &AnyRow) -> Result<Call, StoreError> {
    let id: String = row.try_get("id")?;
    let max: i64 = row.try_get("max_participants")?;
    let seq: i64 = row.try_get("seq")?;
    let end_reason: Option<String> = row.try_get("end_reason")?;
    Ok(Call {
        id: parse_call_id(&id)?,
        chat_room_id: row.try_get("chat_room_id")?,
        call_type: get_enum(row, "call_type", CallType::parse)?,
        is_group_call: get_bool(row, "is_group_call")?,
        status: get_enum(row, "status", CallStatus::parse)?,
        initiator_id: row.try_get("initiator_id")?,
        max_participants: u32::try_from(max)
            .map_err(|_| StoreError::corrupt(format!("max_participants {max}")))?,
        created_at: get_time(row, "created_at")?,
        started_at: get_opt_time(row, "started_at")?,
        ended_at: get_opt_time(row, "ended_at")?,
        end_reason: end_reason
            .map(|s| {
                EndReason::parse(&s)
                    .ok_or_else(|| StoreError::corrupt(format!("unknown end_reason {s:?}")))
            })
            .transpose()?,
        ended_by: row.try_get("ended_by")?,
        seq: u64::try_from(seq).map_err(|_| StoreError::corrupt(format!("seq {seq}")))?,
        ring_timeout_seconds: get_u32(row, "ring_timeout_seconds")?,
        alone_timeout_seconds: get_u32(row, "alone_timeout_seconds")?,
        // The participants' sum, once they are attached.
        media_seconds: 0,
        participants: Vec::new(),
    })
}

fn participant_from_row(row: &AnyRow) -> Result<Participant, StoreError> {
    Ok(Participant {
        user_id: row.try_get("user_id")?,
        role: get_enum(row, "role", Role::parse)?,
        status: get_enum(row, "status", ParticipantStatus::parse)?,
        is_mic_muted: get_bool(row, "is_mic_muted")?,
        is_camera_off: get_bool(row, "is_camera_off")?,
        is_sharing_screen: get_bool(row, "is_sharing_screen")?,
        invited_at: get_time(row, "invited_at")?,
        joined_at: get_opt_time(row, "joined_at")?,
        left_at: get_opt_time(row, "left_at")?,
        decline_reason: row.try_get("decline_reason")?,
        is_connected: get_bool(row, "is_connected")?,
        is_invitee: get_bool(row, "is_invitee")?,
        has_joined: get_bool(row, "has_joined")?,
        is_removed: get_bool(row, "is_removed")?,
        in_media: get_bool(row, "in_media")?,
        media_uid: row
            .try_get::<Option<i64>, _>("media_uid")?
            .map(|uid| {
                u32::try_from(uid).map_err(|_| StoreError::corrupt(format!("media_uid {uid}")))
            })
            .transpose()?,
        media_client_seq: row.try_get("media_client_seq")?,
        media_seconds: {
            let secs: i64 = row.try_get("media_seconds")?;
            u64::try_from(secs).map_err(|_| StoreError::corrupt(format!("media_seconds {secs}")))?
        },
        media_since: get_opt_time(row, "media_since")?,
    })
}

/// Loads one call with its participants; `lock_suffix` is `" FOR UPDATE"` on Postgres when
/// the caller is about to change it.
pub(crate) async fn load_call(
    conn: &mut AnyConnection,
    id: CallId,
    lock_suffix: &str,
) -> Result<Option<Call>, StoreError> {
    let sql = format!("SELECT {CALL_COLUMNS} FROM calls WHERE id = $1{lock_suffix}");
    let Some(row) = sqlx::query(AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut call = call_from_row(&row)?;
    let sql = format!(
        "SELECT {PARTICIPANT_COLUMNS} FROM call_participants WHERE call_id = $1 ORDER BY position"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(id.to_string())
        .fetch_all(&mut *conn)
        .await?;
    call.participants = rows
        .iter()
        .map(participant_from_row)
        .collect::<Result<_, _>>()?;
    call.sum_media_seconds();
    Ok(Some(call))
}

/// Fills in the participants of calls read from `calls` rows (one query for all of them).
pub(crate) async fn attach_participants(
    conn: &mut AnyConnection,
    calls: &mut [Call],
) -> Result<(), StoreError> {
    if calls.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT {PARTICIPANT_COLUMNS} FROM call_participants WHERE call_id IN ({}) \
         ORDER BY call_id, position",
        placeholders(1, calls.len())
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for c in calls.iter() {
        q = q.bind(c.id.to_string());
    }
    let rows = q.fetch_all(&mut *conn).await?;
    for row in &rows {
        let call_id = parse_call_id(&row.try_get::<String, _>("call_id")?)?;
        let p = participant_from_row(row)?;
        if let Some(c) = calls.iter_mut().find(|c| c.id == call_id) {
            c.participants.push(p);
        }
    }
    for c in calls.iter_mut() {
        c.sum_media_seconds();
    }
    Ok(())
}

/// Reads full calls for rows of `SELECT {CALL_COLUMNS} …`, in row order.
pub(crate) async fn calls_from_rows(
    conn: &mut AnyConnection,
    rows: &[AnyRow],
) -> Result<Vec<Call>, StoreError> {
    let mut calls = rows
        .iter()
        .map(call_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    attach_participants(conn, &mut calls).await?;
    Ok(calls)
}

// ----- writing -----

/// Inserts a new call row. Returns `false` when the room already has a live call (the
/// partial unique index), in which case nothing was written.
pub(crate) async fn insert_call_row(
    conn: &mut AnyConnection,
    c: &Call,
) -> Result<bool, StoreError> {
    let sql = format!(
        "INSERT INTO calls ({CALL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, \
         $11, $12, $13, $14, $15) ON CONFLICT DO NOTHING"
    );
    let done = sqlx::query(AssertSqlSafe(sql))
        .bind(c.id.to_string())
        .bind(c.chat_room_id.clone())
        .bind(c.call_type.as_str())
        .bind(c.is_group_call)
        .bind(c.status.as_str())
        .bind(c.initiator_id.clone())
        .bind(i64::from(c.max_participants))
        .bind(to_millis(c.created_at))
        .bind(c.started_at.map(to_millis))
        .bind(c.ended_at.map(to_millis))
        .bind(c.end_reason.map(|r| r.as_str()))
        .bind(c.ended_by.clone())
        .bind(seq_i64(c.seq))
        .bind(i64::from(c.ring_timeout_seconds))
        .bind(i64::from(c.alone_timeout_seconds))
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

fn media_seconds_i64(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn seq_i64(seq: u64) -> i64 {
    i64::try_from(seq).unwrap_or(i64::MAX)
}

fn call_row_changed(a: &Call, b: &Call) -> bool {
    a.status != b.status
        || a.started_at != b.started_at
        || a.ended_at != b.ended_at
        || a.end_reason != b.end_reason
        || a.ended_by != b.ended_by
        || a.seq != b.seq
        || a.max_participants != b.max_participants
        || a.is_group_call != b.is_group_call
}

/// What is recorded with the events of one change besides their payload.
///
/// The origin matters for `incoming_call_cancelled`: the contract sends it to the user's *other*
/// devices, so the socket and the device that answered or declined are left out (signaling and
/// notifier read them from the event's headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EventMeta<'a> {
    /// The W3C `traceparent` of the request or socket event that caused the change.
    pub trace_context: Option<&'a str>,
    /// The Socket.IO socket whose command caused it.
    pub origin_socket: Option<&'a str>,
    /// The device (the app's `deviceId`) that caused it, when the app said.
    pub origin_device: Option<&'a str>,
}

impl<'a> From<Option<&'a str>> for EventMeta<'a> {
    /// Only a trace context (timers, presence, and callers that know no origin).
    fn from(trace_context: Option<&'a str>) -> Self {
        EventMeta {
            trace_context,
            ..EventMeta::default()
        }
    }
}

/// Writes what a command changed: the call row, the participants that differ from `before`
/// (`None`: the call row exists but no participant does yet), the events into the outbox and
/// the timer changes.
pub(crate) async fn persist(
    conn: &mut AnyConnection,
    before: Option<&Call>,
    after: &Call,
    outcome: &Outcome,
    meta: &EventMeta<'_>,
) -> Result<(), StoreError> {
    if let Some(before) = before
        && call_row_changed(before, after)
    {
        sqlx::query(
            "UPDATE calls SET status = $2, started_at = $3, ended_at = $4, end_reason = $5, \
             ended_by = $6, seq = $7, max_participants = $8, is_group_call = $9 WHERE id = $1",
        )
        .bind(after.id.to_string())
        .bind(after.status.as_str())
        .bind(after.started_at.map(to_millis))
        .bind(after.ended_at.map(to_millis))
        .bind(after.end_reason.map(|r| r.as_str()))
        .bind(after.ended_by.clone())
        .bind(seq_i64(after.seq))
        .bind(i64::from(after.max_participants))
        .bind(after.is_group_call)
        .execute(&mut *conn)
        .await?;
    }

    for (position, p) in after.participants.iter().enumerate() {
        let old = before.and_then(|b| b.participant(&p.user_id));
        match old {
            Some(old) if old == p => {}
            Some(_) => update_participant(conn, after.id, p).await?,
            None => insert_participant(conn, after.id, position, p).await?,
        }
    }

    insert_events(conn, &outcome.events, meta).await?;
    apply_timer_changes(conn, after.id, &outcome.timers).await?;
    super::kicks::insert_kicks(conn, after.id, &outcome.kicks).await?;
    // Every state change passes here (REST, socket commands, timers, presence), so the call
    // metrics are counted once each whatever caused them. Recorded before the commit: a commit
    // that then fails (the database went away mid-transaction) over-counts by one, which a
    // metric can afford and a second code path per caller could not.
    record_change(before, after);
    Ok(())
}

/// Time to answer (ringing → active) and, when a call ends, how many took part and how long it
/// lasted.
fn record_change(before: Option<&Call>, after: &Call) {
    let call_type = after.call_type.as_str();
    if let Some(started) = after.started_at
        && before.is_none_or(|b| b.started_at.is_none())
    {
        metrics::histogram!("calls_time_to_answer_seconds", "type" => call_type)
            .record((started - after.created_at).as_seconds_f64().max(0.0));
    }
    if let Some(ended) = after.ended_at
        && before.is_none_or(|b| b.ended_at.is_none())
    {
        let took_part = after
            .participants
            .iter()
            .filter(|p| p.joined_at.is_some())
            .count();
        metrics::histogram!(common::metrics::PARTICIPANTS_METRIC, "type" => call_type)
            .record(took_part as f64);
        if let Some(started) = after.started_at {
            metrics::histogram!("calls_duration_seconds", "type" => call_type)
                .record((ended - started).as_seconds_f64().max(0.0));
        }
    }
}

async fn insert_participant(
    conn: &mut AnyConnection,
    call_id: CallId,
    position: usize,
    p: &Participant,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO call_participants (call_id, user_id, position, role, status, is_mic_muted, \
         is_camera_off, is_sharing_screen, is_connected, is_invitee, has_joined, invited_at, \
         joined_at, left_at, decline_reason, is_removed, in_media, media_uid, media_client_seq, \
         media_seconds, media_since) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
         $18, $19, $20, $21)",
    )
    .bind(call_id.to_string())
    .bind(p.user_id.clone())
    .bind(i64::try_from(position).unwrap_or(i64::MAX))
    .bind(p.role.as_str())
    .bind(p.status.as_str())
    .bind(p.is_mic_muted)
    .bind(p.is_camera_off)
    .bind(p.is_sharing_screen)
    .bind(p.is_connected)
    .bind(p.is_invitee)
    .bind(p.has_joined)
    .bind(to_millis(p.invited_at))
    .bind(p.joined_at.map(to_millis))
    .bind(p.left_at.map(to_millis))
    .bind(p.decline_reason.clone())
    .bind(p.is_removed)
    .bind(p.in_media)
    .bind(p.media_uid.map(i64::from))
    .bind(p.media_client_seq)
    .bind(media_seconds_i64(p.media_seconds))
    .bind(p.media_since.map(to_millis))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn update_participant(
    conn: &mut AnyConnection,
    call_id: CallId,
    p: &Participant,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE call_participants SET role = $3, status = $4, is_mic_muted = $5, \
         is_camera_off = $6, is_sharing_screen = $7, is_connected = $8, is_invitee = $9, \
         has_joined = $10, invited_at = $11, joined_at = $12, left_at = $13, \
         decline_reason = $14, is_removed = $15, in_media = $16, media_uid = $17, \
         media_client_seq = $18, media_seconds = $19, media_since = $20 \
         WHERE call_id = $1 AND user_id = $2",
    )
    .bind(call_id.to_string())
    .bind(p.user_id.clone())
    .bind(p.role.as_str())
    .bind(p.status.as_str())
    .bind(p.is_mic_muted)
    .bind(p.is_camera_off)
    .bind(p.is_sharing_screen)
    .bind(p.is_connected)
    .bind(p.is_invitee)
    .bind(p.has_joined)
    .bind(to_millis(p.invited_at))
    .bind(p.joined_at.map(to_millis))
    .bind(p.left_at.map(to_millis))
    .bind(p.decline_reason.clone())
    .bind(p.is_removed)
    .bind(p.in_media)
    .bind(p.media_uid.map(i64::from))
    .bind(p.media_client_seq)
    .bind(media_seconds_i64(p.media_seconds))
    .bind(p.media_since.map(to_millis))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// One outbox row per event and audience, in event order (the row id then follows `seq`
/// within a call, because all of a call's events are written under its row lock).
///
/// A participant who leaves because they were removed may no longer follow the call: right
/// after their `participant_left` (which they still receive) comes the instruction that makes
/// every signaling node drop their sockets' subscriptions to it.
async fn insert_events(
    conn: &mut AnyConnection,
    events: &[DomainEvent],
    meta: &EventMeta<'_>,
) -> Result<(), StoreError> {
    for e in events {
        let payload = e.payload_json();
        for audience in &e.audiences {
            let (kind, target) = match audience {
                Audience::Call(id) => ("call", id.to_string()),
                Audience::User(user) => ("user", user.clone()),
                Audience::SignalingNodes => ("nodes", String::new()),
            };
            sqlx::query(
                "INSERT INTO call_events (call_id, seq, audience, audience_id, event, payload, \
                 trace_context, created_at, origin_socket, origin_device) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(e.call_id.to_string())
            .bind(e.seq.map(seq_i64))
            .bind(kind)
            .bind(target)
            .bind(e.name())
            .bind(payload.clone())
            .bind(meta.trace_context.map(str::to_owned))
            .bind(to_millis(e.at))
            .bind(meta.origin_socket.map(str::to_owned))
            .bind(meta.origin_device.map(str::to_owned))
            .execute(&mut *conn)
            .await?;
        }
        if let EventKind::ParticipantLeft {
            user_id,
            reason: LeftReason::Removed,
        } = &e.kind
        {
            insert_end_subscription(conn, e.call_id, user_id, e.seq, e.at, meta.trace_context)
                .await?;
        }
    }
    Ok(())
}

/// Writes the outbox row that tells every signaling node to stop relaying `call_id` to the
/// sockets of `user_id` (`calls_bus::ControlMessage::EndSubscription`), published in commit
/// order with the call's events. `after_seq` is the event the sockets must still be relayed
/// first (the user's removal), which signaling receives on another subscription.
pub(super) async fn insert_end_subscription(
    conn: &mut AnyConnection,
    call_id: CallId,
    user_id: &str,
    after_seq: Option<u64>,
    at: OffsetDateTime,
    trace_context: Option<&str>,
) -> Result<(), StoreError> {
    let message = calls_bus::ControlMessage::EndSubscription {
        call_id: call_id.to_string(),
        user_id: user_id.to_owned(),
        after_seq,
    };
    let payload =
        serde_json::to_string(&message).map_err(|e| StoreError::corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO call_events (call_id, seq, audience, audience_id, event, payload, \
         trace_context, created_at) VALUES ($1, NULL, 'nodes', $2, 'end_subscription', $3, $4, $5)",
    )
    .bind(call_id.to_string())
    .bind(user_id.to_owned())
    .bind(payload)
    .bind(trace_context.map(str::to_owned))
    .bind(to_millis(at))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Timer rows are only ever changed under the call's row lock, so "delete then insert" is
/// race-free and needs no upsert on the expression index.
async fn apply_timer_changes(
    conn: &mut AnyConnection,
    call_id: CallId,
    changes: &[TimerChange],
) -> Result<(), StoreError> {
    for change in changes {
        match change {
            TimerChange::Schedule {
                kind,
                user_id,
                due_at,
            } => {
                delete_timer(conn, call_id, *kind, user_id.as_deref()).await?;
                sqlx::query(
                    "INSERT INTO call_timers (call_id, kind, user_id, due_at) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(call_id.to_string())
                .bind(kind.as_str())
                .bind(user_id.clone())
                .bind(to_millis(*due_at))
                .execute(&mut *conn)
                .await?;
            }
            TimerChange::Cancel { kind, user_id } => {
                delete_timer(conn, call_id, *kind, user_id.as_deref()).await?;
            }
            TimerChange::CancelAll => {
                sqlx::query("DELETE FROM call_timers WHERE call_id = $1")
                    .bind(call_id.to_string())
                    .execute(&mut *conn)
                    .await?;
            }
        }
    }
    Ok(())
}

async fn delete_timer(
    conn: &mut AnyConnection,
    call_id: CallId,
    kind: TimerKind,
    user_id: Option<&str>,
) -> Result<(), StoreError> {
    let q = match user_id {
        Some(user) => {
            sqlx::query("DELETE FROM call_timers WHERE call_id = $1 AND kind = $2 AND user_id = $3")
                .bind(call_id.to_string())
                .bind(kind.as_str())
                .bind(user.to_owned())
        }
        None => sqlx::query(
            "DELETE FROM call_timers WHERE call_id = $1 AND kind = $2 AND user_id IS NULL",
        )
        .bind(call_id.to_string())
        .bind(kind.as_str()),
    };
    q.execute(&mut *conn).await?;
    Ok(())
}
