-- An origin the user approved as privileged may also change the idle-aware controller (the plugin's
-- "privileged domain": writable idleTime, start() and stop() of the daemon), without the admin token.
ALTER TABLE origins ADD COLUMN privileged INTEGER NOT NULL DEFAULT 0;
