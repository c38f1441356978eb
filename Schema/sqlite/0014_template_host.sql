-- Templates on remote hosts (issues 21, 22): the libvirt host a template's files (memory image, base disk) are on,
-- the host of the session it was made from; every session from it is placed there. Templates from before were
-- all made on the daemon's own host.
ALTER TABLE templates ADD COLUMN host TEXT NOT NULL DEFAULT 'local';
