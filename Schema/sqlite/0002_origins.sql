-- Web origins that asked to use the daemon, and what the user decided. Only approved origins get CORS
-- headers and may act; the first request of an unknown origin is refused and recorded as pending.
CREATE TABLE origins (
    origin          TEXT PRIMARY KEY NOT NULL,          -- scheme://host[:port], lowercase, as browsers send it
    status          TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied')),
    first_seen      DATETIME NOT NULL,
    last_seen       DATETIME NOT NULL,
    decided_at      DATETIME,
    requests        INTEGER NOT NULL DEFAULT 0          -- refused requests while not approved
);
