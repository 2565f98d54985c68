-- Public triggers (issue 16, mariposa/triggers/): one row per trigger of a project's current
-- version. The token itself is never stored: only its sha256, which a POST's token is looked up
-- by. Until `trigger list --reveal` shows it once, the token waits encrypted under the secret
-- key (a Fernet token, as secrets are), then that column is cleared.
CREATE TABLE triggers (
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name       TEXT NOT NULL,     -- unique in the project (manifest/validate.py)
    service    TEXT NOT NULL,
    action     TEXT NOT NULL,     -- run | start | stop | scale
    scale      TEXT,              -- N, +N or -N for action scale
    token_hash TEXT NOT NULL UNIQUE,  -- hex sha256 of the token
    pending    TEXT,              -- the token, encrypted, until revealed once; NULL after
    created    REAL NOT NULL,
    rotated    REAL,
    PRIMARY KEY (project_id, name)
);
