-- What the image file was when it was verified: "device:inode:size:mtime_ns:ctime_ns" of the file itself
-- (never of a symlink). Each use re-checks it by descriptor; null for images stored before this existed,
-- which are re-hashed at each use instead.
ALTER TABLE images ADD COLUMN identity TEXT;
