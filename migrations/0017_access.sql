-- Users, organisations, roles and who may do what (issue 18, mariposa/access/). Every project
-- belongs to exactly one organisation; the projects made before this migration go to `default`,
-- which always exists. Project names stay unique on the host (every ref in the store, the runtimes'
-- labels and the watched directory name a project by it): an organisation groups projects for
-- access, it is not a namespace.
CREATE TABLE orgs (
    name    TEXT PRIMARY KEY,
    created REAL NOT NULL
);
INSERT INTO orgs (name, created) VALUES ('default', strftime('%s', 'now'));

-- (SQLite will not add a column that REFERENCES another table with a default other than NULL:
-- `org rm` refuses an organisation that still has projects, in one transaction.)
ALTER TABLE projects ADD COLUMN org TEXT NOT NULL DEFAULT 'default';
CREATE INDEX projects_by_org ON projects (org);

CREATE TABLE users (
    name    TEXT PRIMARY KEY,
    created REAL NOT NULL
);

-- A unix uid is one user's; uid 0 is the built-in root and is never mapped.
CREATE TABLE user_uids (
    uid  INTEGER PRIMARY KEY CHECK (uid > 0),
    user TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE
);

-- Custom roles (`role define FILE`); the built-in ones live in code (access/capabilities.py).
CREATE TABLE roles (
    name         TEXT PRIMARY KEY,
    description  TEXT,
    capabilities TEXT NOT NULL,   -- JSON list, as written (wildcards kept; expanded when read)
    created      REAL NOT NULL
);

-- A grant of a role, or a deny of one capability, to a user on an organisation ('*': all of
-- them, and the host) or on one project of one.
CREATE TABLE bindings (
    id         TEXT PRIMARY KEY,
    user       TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    effect     TEXT NOT NULL CHECK (effect IN ('grant', 'deny')),
    role       TEXT,              -- for a grant
    capability TEXT,              -- for a deny
    org        TEXT NOT NULL,
    project_id TEXT REFERENCES projects(id) ON DELETE CASCADE,
    created    REAL NOT NULL,
    author     TEXT,
    CHECK ((effect = 'grant') = (role IS NOT NULL)),
    CHECK ((effect = 'deny') = (capability IS NOT NULL))
);
CREATE INDEX bindings_by_user ON bindings (user);

-- API tokens: stored as the sha256 of their secret part, shown once when made.
CREATE TABLE tokens (
    id       TEXT PRIMARY KEY,       -- the public part, in the token itself: mrp_<id>_<secret>
    user     TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    name     TEXT,
    hash     TEXT NOT NULL,
    created  REAL NOT NULL,
    expires  REAL,                   -- NULL: never
    revoked  REAL,
    last_used REAL,
    author   TEXT
);
CREATE INDEX tokens_by_user ON tokens (user);

-- Every decision of authorize(): who, what, on what, and why it was allowed or refused.
CREATE TABLE audit (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    time    REAL NOT NULL,
    user    TEXT,                    -- NULL: a uid no user is mapped to
    uid     INTEGER,
    address TEXT,                    -- a remote caller's address
    via     TEXT NOT NULL,           -- unix | tls | watch | internal ...
    action  TEXT NOT NULL,           -- the control action (service.scale)
    capability TEXT,                 -- what it needs (service:scale)
    target  TEXT,                    -- org.project, org, or 'host'
    allowed INTEGER NOT NULL,
    why     TEXT NOT NULL
);
CREATE INDEX audit_by_time ON audit (time);
