-- Disk images a session can be opened with, by `version` (the built-in kernel+initrd appliance is not
-- stored here). A `remote` image has a URL and is downloaded (and verified against sha256) before its
-- first use; an `available` image is a file the daemon can use as the backing file of session overlays.
CREATE TABLE images (
    version         TEXT PRIMARY KEY NOT NULL,          -- 1-64 letters, digits, '.', '_', '-'
    format          TEXT NOT NULL CHECK (format IN ('qcow2', 'raw')),
    path            TEXT NOT NULL,                      -- the image file (under <stateDir>/images when downloaded)
    sha256          TEXT NOT NULL,                      -- lowercase hex
    url             TEXT,                               -- http(s) source, null for a registered local file
    size            INTEGER,                            -- bytes, once the file is there
    state           TEXT NOT NULL CHECK (state IN ('available', 'remote')),
    added_at        DATETIME NOT NULL
);
