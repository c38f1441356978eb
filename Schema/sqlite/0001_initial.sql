-- vmsessiond's first schema: sessions, their tokens, operations and the event history.
-- Applied once, in file-name order with the other files of this folder (see VMSessionStore/SessionStore.swift).

CREATE TABLE sessions (
    id              TEXT PRIMARY KEY NOT NULL,          -- lowercase UUID
    name            TEXT NOT NULL UNIQUE,               -- the first requester owns it
    secret_kdf      TEXT NOT NULL,                      -- e.g. "scrypt:16384:8:1"
    secret_salt     BLOB NOT NULL,
    secret_hash     BLOB NOT NULL,                      -- never the secret itself
    state           TEXT NOT NULL,
    pending_action  TEXT,                               -- action under way (written before libvirt is touched)
    cpus            INTEGER,
    memory          INTEGER,                            -- MiB
    disk            INTEGER,                            -- MiB
    version         TEXT,
    execution_cap   INTEGER NOT NULL DEFAULT 100 CHECK (execution_cap BETWEEN 1 AND 100),
    daemon_controlled INTEGER NOT NULL DEFAULT 0,
    daemon_min_cap  INTEGER NOT NULL DEFAULT 0,
    daemon_max_cap  INTEGER NOT NULL DEFAULT 100,
    daemon_flags    INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    operation_id    TEXT,
    created_at      DATETIME NOT NULL,
    updated_at      DATETIME NOT NULL
);

-- Bearer tokens handed out by POST /sessions; only their SHA-256 is kept.
CREATE TABLE session_tokens (
    token_hash      BLOB PRIMARY KEY NOT NULL,
    session_id      TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    created_at      DATETIME NOT NULL
);
CREATE INDEX session_tokens_session ON session_tokens(session_id);

CREATE TABLE operations (
    id              TEXT PRIMARY KEY NOT NULL,
    session_id      TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    action          TEXT NOT NULL,
    status          TEXT NOT NULL,                      -- running | succeeded | failed
    progress_done   INTEGER NOT NULL,
    progress_total  INTEGER NOT NULL,
    progress_message TEXT NOT NULL,
    error_code      TEXT,
    error_legacy_code INTEGER,
    error_message   TEXT,
    created_at      DATETIME NOT NULL,
    updated_at      DATETIME NOT NULL
);
CREATE INDEX operations_session ON operations(session_id, created_at);
CREATE INDEX operations_running ON operations(status) WHERE status = 'running';

-- The event history. AUTOINCREMENT: ids only grow and are never reused, so a client's Last-Event-ID
-- stays meaningful across restarts.
CREATE TABLE events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,
    payload         TEXT NOT NULL,                      -- JSON object
    created_at      DATETIME NOT NULL
);
CREATE INDEX events_session ON events(session_id, id);

-- Guest properties set through the API (the plugin's setProperty/getProperty).
CREATE TABLE session_properties (
    session_id      TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    value           TEXT NOT NULL,
    PRIMARY KEY (session_id, name)
);

-- Daemon-wide settings (idleTime, …), one row per key.
CREATE TABLE settings (
    key             TEXT PRIMARY KEY NOT NULL,
    value           TEXT NOT NULL
);
