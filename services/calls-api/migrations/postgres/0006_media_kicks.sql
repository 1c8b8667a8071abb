-- Kicks through Agora's kicking-rule REST API (CONTRACT section 11): someone in a call's Agora
-- channel who may not be there. Written in the transaction of the change that calls for it
-- (a removal, a join notice of someone who is not a joined participant, a departure or the
-- end while in the channel) and deleted once sent, moot or given up. due_at is pushed ahead
-- while one replica sends it (a lease), and to the next retry after a failure.
CREATE TABLE media_kicks (
    id         BIGSERIAL PRIMARY KEY,
    call_id    TEXT NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL,
    uid        BIGINT NOT NULL,
    client_seq BIGINT,                 -- the participant's last notice when decided
    due_at     BIGINT NOT NULL,
    attempts   INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);
CREATE INDEX media_kicks_due ON media_kicks (due_at, id);
