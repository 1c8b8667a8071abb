-- notifier schema, SQLite flavour: the PostgreSQL file beside this one, column for column
-- (ids are TEXT, timestamps BIGINT unix milliseconds, flags BIGINT 0/1), so one set of
-- queries serves both. These tables belong to notifier alone (calls-api never reads them).

-- The device registry (CONTRACT section 8). A push or VoIP token belongs to one device of one
-- user: registering it again under someone else moves it (a phone rings for whoever is
-- logged in on it).
CREATE TABLE devices (
    user_id       TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    platform      TEXT NOT NULL,     -- ios | android
    push_provider TEXT NOT NULL,     -- apns | fcm
    push_token    TEXT NOT NULL,
    voip_token    TEXT,              -- PushKit token, iOS only
    bundle_id     TEXT,              -- NULL: APNS_BUNDLE_ID
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);
CREATE UNIQUE INDEX devices_one_push_token ON devices (push_provider, push_token);
CREATE UNIQUE INDEX devices_one_voip_token ON devices (voip_token) WHERE voip_token IS NOT NULL;
CREATE INDEX devices_by_user ON devices (user_id, updated_at);

-- What notifier knows of each (call, invitee) ring, from the call events. Events of one ring
-- may be consumed out of order by different replicas (after an outage, a backlog is shared):
-- `last_event_id` (the outbox id, increasing per call) makes the newest event win whatever
-- the order of consumption, so a ring consumed after its cancel never rings.
CREATE TABLE rings (
    call_id              TEXT NOT NULL,
    user_id              TEXT NOT NULL,
    last_event_id        BIGINT NOT NULL,
    state                TEXT NOT NULL,      -- ringing | stopped
    stop_reason          TEXT,
    chat_room_id         TEXT,               -- NULL until the incoming_call is consumed
    call_type            TEXT,
    is_group_call        BIGINT,
    caller               TEXT,               -- JSON {userId, displayName?, avatarUrl?}
    ring_deadline        BIGINT,
    missed_alert_pending BIGINT NOT NULL DEFAULT 0,
    updated_at           BIGINT NOT NULL,
    PRIMARY KEY (call_id, user_id)
);
CREATE INDEX rings_by_updated ON rings (updated_at);

-- One row per push to send: written in the transaction that consumes the event (idempotent by
-- `dedupe_key` = event × device × kind), claimed by workers with FOR UPDATE SKIP LOCKED.
-- `lane` keeps ringing pushes apart from slower work so they never queue behind it.
CREATE TABLE deliveries (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    dedupe_key       TEXT NOT NULL UNIQUE,
    lane             TEXT NOT NULL,          -- ring | bulk
    kind             TEXT NOT NULL,          -- incoming_call | incoming_call_cancelled | missed_call
    provider         TEXT NOT NULL,          -- apns | fcm
    call_id          TEXT NOT NULL,
    user_id          TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    token            TEXT NOT NULL,          -- the device token the push goes to
    request          TEXT NOT NULL,          -- JSON: what to send (provider-specific)
    status           TEXT NOT NULL,          -- pending | sent | failed | cancelled | expired
    attempts         BIGINT NOT NULL DEFAULT 0,
    due_at           BIGINT NOT NULL,
    deadline_at      BIGINT NOT NULL,        -- never sent after this
    locked_until     BIGINT,
    event_at         BIGINT NOT NULL,        -- when the event was created (latency metric)
    last_error       TEXT,
    created_at       BIGINT NOT NULL,
    finished_at      BIGINT
);
CREATE INDEX deliveries_due ON deliveries (lane, due_at) WHERE status = 'pending';
CREATE INDEX deliveries_pending_by_ring ON deliveries (call_id, user_id) WHERE status = 'pending';
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE status <> 'pending';
