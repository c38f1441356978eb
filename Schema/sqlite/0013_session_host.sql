-- Sessions are placed on the daemon's libvirt hosts (issue 22): the host a session's VM is on, set when it is
-- opened. Sessions from before stay on the daemon's own host.
ALTER TABLE sessions ADD COLUMN host TEXT NOT NULL DEFAULT 'local';
