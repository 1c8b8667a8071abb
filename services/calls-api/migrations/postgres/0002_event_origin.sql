-- Where a state change came from, kept with its events: `incoming_call_cancelled` goes to the
-- user's *other* devices, so the socket and the device that answered or declined are left out
-- (published as the Calls-Origin-Socket / Calls-Origin-Device headers).
ALTER TABLE call_events ADD COLUMN origin_socket TEXT;
ALTER TABLE call_events ADD COLUMN origin_device TEXT;

-- A socket that connects is sent the ring events of its user from the last ring timeout
-- (a phone woken by a push learns at once whether the call is still ringing).
CREATE INDEX call_events_rings_by_user ON call_events (audience_id, created_at)
    WHERE audience = 'user';
