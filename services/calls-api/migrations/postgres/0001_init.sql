-- calls-api schema, PostgreSQL flavour. The SQLite file beside this one mirrors it column for
-- column: ids are TEXT, timestamps BIGINT unix milliseconds, so one set of queries serves both.

-- One row per call. `seq` is the call's event counter, bumped under the row lock.
CREATE TABLE calls (
    id               TEXT PRIMARY KEY,
    chat_room_id     TEXT NOT NULL,
    call_type        TEXT NOT NULL,
    is_group_call    BOOLEAN NOT NULL,
    status           TEXT NOT NULL,
    initiator_id     TEXT NOT NULL,
    max_participants BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    ended_at         BIGINT,
    end_reason       TEXT,
    ended_by         TEXT,
    seq              BIGINT NOT NULL DEFAULT 0
);
-- One live call per chat room, whatever the number of replicas: initiate inserts and, on
-- conflict, reads the call that won.
CREATE UNIQUE INDEX calls_one_live_per_room ON calls (chat_room_id)
    WHERE status IN ('ringing', 'active');
CREATE INDEX calls_by_created ON calls (created_at, id);

CREATE TABLE call_participants (
    call_id           TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    user_id           TEXT NOT NULL,
    position          BIGINT NOT NULL,   -- order in the call's participant list
    role              TEXT NOT NULL,
    status            TEXT NOT NULL,
    is_mic_muted      BOOLEAN NOT NULL,
    is_camera_off     BOOLEAN NOT NULL,
    is_sharing_screen BOOLEAN NOT NULL,
    is_connected      BOOLEAN NOT NULL,
    is_invitee        BOOLEAN NOT NULL,
    has_joined        BOOLEAN NOT NULL,
    invited_at        BIGINT NOT NULL,
    joined_at         BIGINT,
    left_at           BIGINT,
    decline_reason    TEXT,
    PRIMARY KEY (call_id, user_id)
);
-- History, busy detection and presence all start from a user.
CREATE INDEX call_participants_by_user ON call_participants (user_id, status);

-- The outbox: one row per event and audience, written in the transaction that caused it.
CREATE TABLE call_events (
    id            BIGSERIAL PRIMARY KEY,
    call_id       TEXT NOT NULL,
    seq           BIGINT,            -- NULL for user-addressed events
    audience      TEXT NOT NULL,     -- 'call' or 'user'
    audience_id   TEXT NOT NULL,     -- the call id or the user id
    event         TEXT NOT NULL,     -- wire name
    payload       TEXT NOT NULL,     -- exact wire JSON
    trace_context TEXT,              -- W3C traceparent of the request that caused it
    created_at    BIGINT NOT NULL,
    published_at  BIGINT
);
CREATE INDEX call_events_unpublished ON call_events (id) WHERE published_at IS NULL;
CREATE INDEX call_events_by_call ON call_events (call_id, seq);

-- Server-side timers as rows: any replica may fire them, and they survive restarts.
CREATE TABLE call_timers (
    id      BIGSERIAL PRIMARY KEY,
    call_id TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    kind    TEXT NOT NULL,
    user_id TEXT,                    -- the participant, for disconnect-grace timers
    due_at  BIGINT NOT NULL
);
-- NULLs are distinct in a plain unique index, hence the COALESCE.
CREATE UNIQUE INDEX call_timers_one_per_kind ON call_timers (call_id, kind, COALESCE(user_id, ''));
CREATE INDEX call_timers_due ON call_timers (due_at, id);

-- Written by the chat backend through the internal API (MEMBERSHIP_MODE=table).
CREATE TABLE room_members (
    chat_room_id TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    added_at     BIGINT NOT NULL,
    PRIMARY KEY (chat_room_id, user_id)
);

CREATE TABLE idempotency_keys (
    user_id    TEXT NOT NULL,
    idem_key   TEXT NOT NULL,
    response   TEXT NOT NULL,        -- JSON snapshot of the first response
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, idem_key)
);
CREATE INDEX idempotency_keys_by_created ON idempotency_keys (created_at);

-- Socket presence reported by signaling nodes; a node whose heartbeats stop loses its sockets.
CREATE TABLE signaling_nodes (
    node_id        TEXT PRIMARY KEY,
    last_heartbeat BIGINT NOT NULL
);

CREATE TABLE signaling_sockets (
    node_id      TEXT NOT NULL,
    socket_id    TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    connected_at BIGINT NOT NULL,
    PRIMARY KEY (node_id, socket_id)
);
CREATE INDEX signaling_sockets_by_user ON signaling_sockets (user_id);
