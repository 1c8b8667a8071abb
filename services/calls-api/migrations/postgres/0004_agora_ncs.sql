-- Agora's view of the media (CONTRACT section 11), from Agora's Notification Center.
-- Whether the participant's client is in the call's Agora channel, the Agora uid it joined
-- with, and the clientSeq of the last notice applied (older notices are ignored).
ALTER TABLE call_participants ADD COLUMN in_media BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE call_participants ADD COLUMN media_uid BIGINT;
ALTER TABLE call_participants ADD COLUMN media_client_seq BIGINT;
-- Notices already applied, by Agora's noticeId: a notice delivered twice (or to two replicas)
-- is applied once. Purged after a day (Agora retries within minutes).
CREATE TABLE agora_notices (
    notice_id TEXT PRIMARY KEY,
    event_type BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);
CREATE INDEX agora_notices_by_age ON agora_notices (received_at);
