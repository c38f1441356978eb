-- Who created each session: the web origin of the page, or 'local' for programs without one. Quotas
-- (sessions and resources per origin) count by it; sessions made before it existed count as local.
ALTER TABLE sessions ADD COLUMN client TEXT NOT NULL DEFAULT 'local';
