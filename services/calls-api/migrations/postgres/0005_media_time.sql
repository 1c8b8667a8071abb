-- Media time (CONTRACT section 11): whole seconds each participant spent in the call's Agora
-- channel over the stays that have ended, and when the open stay began (the join notice's
-- `ts`, unix milliseconds) while they are in it. The call's total is their sum, worked out
-- on load rather than stored twice.
ALTER TABLE call_participants ADD COLUMN media_seconds BIGINT NOT NULL DEFAULT 0;
ALTER TABLE call_participants ADD COLUMN media_since BIGINT;
