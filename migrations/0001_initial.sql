-- Goal state, the task queue and the event log. The runtimes are the truth about what runs;
-- these tables are the truth about what should.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE projects (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    created         REAL NOT NULL,
    current_version TEXT,
    desired         TEXT NOT NULL DEFAULT 'running',   -- running | stopped | deleting
    source          TEXT                               -- 'api' or the manifest file it came from
);

-- Immutable: a version row is written once and never changed.
CREATE TABLE versions (
    id         TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    seq        INTEGER NOT NULL,
    hash       TEXT NOT NULL,       -- sha256 of the verbatim manifest text
    manifest   TEXT NOT NULL,       -- verbatim, as the user wrote it
    filename   TEXT,
    created    REAL NOT NULL,
    author     TEXT,
    summary    TEXT,
    UNIQUE (project_id, seq)
);

CREATE TABLE services (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    name          TEXT NOT NULL,
    scale         INTEGER NOT NULL,
    desired       TEXT NOT NULL DEFAULT 'running',     -- running | stopped | absent
    frozen        INTEGER NOT NULL DEFAULT 0,
    frozen_reason TEXT,
    created       REAL NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE tasks (
    id           TEXT PRIMARY KEY,
    project_id   TEXT NOT NULL,
    project_name TEXT NOT NULL,
    service      TEXT,                -- NULL for project-wide tasks
    kind         TEXT NOT NULL,       -- start | stop | scale | reprovision | converge | delete
    state        TEXT NOT NULL,       -- queued | active | completed | failed | terminated
    params       TEXT NOT NULL DEFAULT '{}',
    created      REAL NOT NULL,
    started      REAL,
    ended        REAL,
    message      TEXT,
    progress     TEXT,
    author       TEXT
);
CREATE INDEX tasks_by_state ON tasks (state, created);
CREATE INDEX tasks_by_project ON tasks (project_id, created);

CREATE TABLE events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    time       REAL NOT NULL,
    project_id TEXT,
    service    TEXT,
    instance   TEXT,
    task_id    TEXT,
    type       TEXT NOT NULL,
    message    TEXT NOT NULL,
    author     TEXT
);
CREATE INDEX events_by_project ON events (project_id, id);
