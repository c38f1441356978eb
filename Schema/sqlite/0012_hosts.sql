-- The libvirt hosts the daemon knows (issue 22): its own ('local', the embedded driver unless libvirtUri says
-- otherwise), the config file's ('config', rewritten from the file at every start) and those the admin added
-- through the API ('admin'). What a host is doing (connected, unreachable, its capacity) is not kept: the
-- daemon learns it again from the host. labels: a JSON object of strings.
CREATE TABLE hosts (
    name            TEXT PRIMARY KEY,
    uri             TEXT NOT NULL,
    labels          TEXT NOT NULL DEFAULT '{}',
    max_sessions    INTEGER,
    draining        INTEGER NOT NULL DEFAULT 0,
    source          TEXT NOT NULL CHECK (source IN ('local', 'config', 'admin')),
    created_at      DATETIME NOT NULL
);
