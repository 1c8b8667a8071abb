-- A live call's roster (CONTRACT section 10).
-- Each call keeps its ring timeout (the initiate request's `ringTimeoutSeconds`, else the
-- configured one) and the alone timeout configured when it began, so a restart with other
-- settings does not change calls already running. Calls live during the upgrade get the
-- documented default ring timeout and no alone timer.
ALTER TABLE calls ADD COLUMN ring_timeout_seconds BIGINT NOT NULL DEFAULT 45;
ALTER TABLE calls ADD COLUMN alone_timeout_seconds BIGINT NOT NULL DEFAULT 0;
-- Removed by the host: may not see, follow or rejoin the call until invited again.
ALTER TABLE call_participants ADD COLUMN is_removed BOOLEAN NOT NULL DEFAULT FALSE;
