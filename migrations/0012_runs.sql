-- Runs of scheduled and event services (issue 16, mariposa/runs/): every firing, catch-up,
-- manual run or trigger is one row. A firing is recorded before its instance is made, with the
-- instance id it will have, so after a crash the run is matched with its instance (or made
-- then, once) and a firing is never run twice: at most one row per (service, firing, attempt).
CREATE TABLE runs (
    id              TEXT PRIMARY KEY,
    project_id      TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    service         TEXT NOT NULL,
    trigger         TEXT NOT NULL,     -- schedule | catch-up | manual | event | url
    scheduled       REAL NOT NULL,     -- the firing's time (when asked, for a manual run)
    queued          REAL NOT NULL,     -- when the row was written
    started         REAL,              -- when its instance was running
    ended           REAL,
    exit_code       INTEGER,
    state           TEXT NOT NULL,     -- queued | running | succeeded | failed | missed | skipped | stopped
    instance_id     TEXT,              -- chosen before the instance is made
    attempt         INTEGER NOT NULL DEFAULT 0,  -- 0, then 1.. for retries (the same firing)
    not_before      REAL,              -- a retry waits out its back-off
    stop_requested  INTEGER NOT NULL DEFAULT 0,  -- run stop, replace, timeout: the scheduler stops it
    idempotency_key TEXT,
    env             TEXT,              -- JSON [[KEY, VALUE], ...] given with a manual run
    reason          TEXT,              -- why it was skipped, missed, stopped or failed
    author          TEXT,
    logs            BLOB               -- the instance's output, kept when it ends (pruned with the row)
);
CREATE UNIQUE INDEX runs_one_per_firing ON runs (project_id, service, scheduled, attempt)
    WHERE trigger IN ('schedule', 'catch-up');
CREATE INDEX runs_of_service ON runs (project_id, service, queued);
CREATE INDEX runs_open ON runs (state) WHERE state IN ('queued', 'running');
CREATE INDEX runs_by_key ON runs (project_id, service, idempotency_key) WHERE idempotency_key IS NOT NULL;
-- How far each scheduled service's firings are recorded: catch-up after downtime (or a stop)
-- starts from here, never from "now".
CREATE TABLE schedule_cursors (
    project_id    TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    service       TEXT NOT NULL,
    fired_through REAL NOT NULL,
    PRIMARY KEY (project_id, service)
);
