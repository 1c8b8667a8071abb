-- Webhooks to the host application (CONTRACT section 9), PostgreSQL flavour; the SQLite file
-- beside this one mirrors it column for column.

-- Where events go. `secrets` is a JSON array of `whsec_…` strings (several during a rotation:
-- every delivery is signed with each); `event_types` a JSON array, NULL for every type.
-- The endpoint `WEBHOOK_URL` configures has the id `env`.
CREATE TABLE webhook_endpoints (
    id               TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    secrets          TEXT NOT NULL,
    event_types      TEXT,
    enabled          BIGINT NOT NULL,
    disabled_reason  TEXT,
    last_success_at  BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

-- What notifier knows of each call, built from the call's own events applied strictly in
-- `seq` order (`state`: JSON). `applied_seq` is the last event applied, -1 until the call's
-- `incoming_call` (its seq-0 snapshot) is seen; `orphan` marks a call whose snapshot never came.
CREATE TABLE webhook_calls (
    call_id     TEXT PRIMARY KEY,
    applied_seq BIGINT NOT NULL,
    state       TEXT,
    orphan      BIGINT NOT NULL DEFAULT 0,
    ended       BIGINT NOT NULL DEFAULT 0,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX webhook_calls_by_updated ON webhook_calls (updated_at);

-- Call events consumed ahead of an earlier one (replicas share the stream; a redelivery can
-- come late): held here until the gap is filled, or given up on after a while.
CREATE TABLE webhook_call_events (
    call_id     TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    event       TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    PRIMARY KEY (call_id, seq)
);
CREATE INDEX webhook_call_events_by_received ON webhook_call_events (received_at);

-- One row per event per endpoint. `message_id` (the `webhook-id` header) is the same on every
-- attempt and replay. Within one endpoint and call, only the pending row with the lowest
-- `position` (seq order) may be claimed, so a failing event holds back the later events of its
-- call and of no other. Retries run until `window_start` + WEBHOOK_RETRY_HOURS.
CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    endpoint_id     TEXT NOT NULL,
    message_id      TEXT NOT NULL,
    call_id         TEXT NOT NULL,
    position        BIGINT NOT NULL,
    event_type      TEXT NOT NULL,
    body            TEXT NOT NULL,
    status          TEXT NOT NULL,          -- pending | delivered | failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    due_at          BIGINT NOT NULL,
    locked_until    BIGINT,
    window_start    BIGINT NOT NULL,
    event_at        BIGINT NOT NULL,
    last_status     BIGINT,                 -- the endpoint's last HTTP status
    last_error      TEXT,
    last_attempt_at BIGINT,
    created_at      BIGINT NOT NULL,
    finished_at     BIGINT,
    UNIQUE (endpoint_id, message_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (due_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_call_order ON webhook_deliveries (endpoint_id, call_id, position)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, status, created_at);
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at) WHERE status <> 'pending';
