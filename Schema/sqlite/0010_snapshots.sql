-- Snapshots of a session's VM (memory and disk, internal to its qcow2 disk, see LibvirtHypervisor). A row is
-- written 'creating' or 'deleting' before libvirt is touched and confirmed after, so that start-up
-- reconciliation can finish or undo what a killed daemon left. They go with the session: with its row, and
-- when it is closed (its disk and VM are removed then).
CREATE TABLE session_snapshots (
    session_id      TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    name            TEXT NOT NULL,
    client          TEXT NOT NULL,                      -- the session's client, for the per-origin quota
    vm_state        TEXT NOT NULL CHECK (vm_state IN ('running', 'paused')),
    bytes           INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL CHECK (status IN ('creating', 'ready', 'deleting')),
    created_at      DATETIME NOT NULL,
    PRIMARY KEY (session_id, name)
);

CREATE TRIGGER session_snapshots_go_when_closed AFTER UPDATE OF state ON sessions
WHEN NEW.state = 'closed'
BEGIN
    DELETE FROM session_snapshots WHERE session_id = NEW.id;
END;
