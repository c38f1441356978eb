-- Templates: prepared VMs (memory image and disk, in <state>/templates/<name>/) that sessions start warm
-- from. A row is written 'creating' or 'deleting' before the hypervisor is touched and confirmed after, so
-- that start-up reconciliation can finish or undo what a killed daemon left. A template outlives the session
-- it was made from (no reference to it).
CREATE TABLE templates (
    name            TEXT PRIMARY KEY,
    from_session    TEXT NOT NULL,
    base_version    TEXT NOT NULL,
    cpus            INTEGER NOT NULL,
    memory          INTEGER NOT NULL,
    disk            INTEGER NOT NULL,
    bytes           INTEGER NOT NULL DEFAULT 0,
    status          TEXT NOT NULL CHECK (status IN ('creating', 'ready', 'deleting')),
    created_at      DATETIME NOT NULL
);

-- The sessions opened from a template: its users (a template is not deleted while it has any, and the
-- reference below makes the database refuse it too). A row goes when its session is closed (its overlay is
-- deleted then) or deleted. has_run: the session's VM ran, so its disk moved on from the template's memory.
CREATE TABLE template_sessions (
    session_id      TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    template        TEXT NOT NULL REFERENCES templates(name),
    has_run         INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX template_sessions_by_template ON template_sessions(template);

CREATE TRIGGER template_sessions_go_when_closed AFTER UPDATE OF state ON sessions
WHEN NEW.state = 'closed'
BEGIN
    DELETE FROM template_sessions WHERE session_id = NEW.id;
END;
