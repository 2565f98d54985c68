-- What Mariposa remembers about each instance beyond what the runtime reports: restart
-- accounting for restart policies, whether it was retired (taken out of service and kept
-- stopped for inspection), and its last health state.
CREATE TABLE instances (
    id             TEXT PRIMARY KEY,
    project_id     TEXT NOT NULL,
    service        TEXT NOT NULL,
    restarts       INTEGER NOT NULL DEFAULT 0,   -- restarts made by the restart policy
    backoff_step   INTEGER NOT NULL DEFAULT 0,   -- consecutive quick exits: the delay doubles
    last_start_at  REAL,
    last_exit_at   REAL,
    last_exit_code INTEGER,
    retired        INTEGER NOT NULL DEFAULT 0,
    retired_reason TEXT,
    health         TEXT,                         -- starting | healthy | unhealthy; NULL: no checks
    health_since   REAL,
    health_detail  TEXT
);
CREATE INDEX instances_by_service ON instances (project_id, service);

-- Per-service back-off for replacing failed instances, so a service whose every instance
-- fails does not churn the host.
ALTER TABLE services ADD COLUMN replacements INTEGER NOT NULL DEFAULT 0;
ALTER TABLE services ADD COLUMN last_replacement_at REAL;
