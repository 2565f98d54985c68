-- Project meta (rfd36 meta/): a project's key/value configuration, each key with a CAS id that
-- changes on every write, so a caller can say "only if nobody changed it since I read it".
-- A value is text or NULL (a YAML null imported; `meta incr` counts it as 0).
CREATE TABLE project_meta (
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    key        TEXT NOT NULL,
    value      TEXT,
    cas        TEXT NOT NULL,
    updated    REAL NOT NULL,
    author     TEXT,
    PRIMARY KEY (project_id, key)
);
-- What meta a version was made with, never the values themselves: the sha256 of every key the
-- version's templates use, sorted (meta_hash), and per key the sha256 of its value, JSON
-- {"key": "hash" | null} (meta_used, null: the key was null). A service whose fixed fields use a
-- key is a new spec when that key's hash changes, so a meta change rolls out like an update.
ALTER TABLE versions ADD COLUMN meta_hash TEXT;
ALTER TABLE versions ADD COLUMN meta_used TEXT;
