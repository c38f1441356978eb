-- Retention (see VMSessionStore/SessionStore+Retention.swift): old events, finished operations, surplus tokens
-- and stale pending origins are pruned. A client that asks to replay events that were pruned is told so:
-- each stream's watermark is the highest event id deleted from it ('*' is the daemon-wide stream).
CREATE TABLE event_watermarks (
    stream          TEXT PRIMARY KEY NOT NULL,          -- a session id, or '*'
    pruned_through  INTEGER NOT NULL
);
CREATE INDEX events_created ON events(created_at);
CREATE INDEX session_tokens_created ON session_tokens(session_id, created_at);
