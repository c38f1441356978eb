-- Sessions are placed on the daemon's libvirt hosts (issue 22): the host a session's VM is on, set when it is
-- opened (sessions from before stay on the daemon's own host), and the labels the admin requires of the hosts
-- an approved origin's sessions go to (a JSON object of strings; '{}': any host).
ALTER TABLE sessions ADD COLUMN host TEXT NOT NULL DEFAULT 'local';
ALTER TABLE origins ADD COLUMN host_labels TEXT NOT NULL DEFAULT '{}';
