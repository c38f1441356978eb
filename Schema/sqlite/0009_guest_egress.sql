-- The guest's network is a sandbox with an egress policy (none, internet, open), no longer a TCP port
-- forwarded on the host's loopback: the daemon reaches the guest's API on a Unix socket it derives from the
-- session. The policy a VM was started with is shown with the session; an admin may set one per origin
-- (NULL: the daemon's default).
ALTER TABLE sessions DROP COLUMN api_port;
ALTER TABLE sessions ADD COLUMN egress TEXT;
ALTER TABLE origins ADD COLUMN egress TEXT;
