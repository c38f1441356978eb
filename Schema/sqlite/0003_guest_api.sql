-- The host port on 127.0.0.1 forwarded to a session's guest API (guest port 80); null when none is set up.
ALTER TABLE sessions ADD COLUMN api_port INTEGER;
