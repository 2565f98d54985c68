-- Secrets, encrypted at rest (mariposa/vault/): a project's secrets, the registry logins and the
-- daemon's own (the salt of the audit trail's HMACs). ``token`` is a Fernet token: nothing here
-- is readable without the key file, which lives outside the state directory.
CREATE TABLE secrets (
    kind       TEXT NOT NULL,             -- 'project' | 'registry' | 'daemon'
    scope      TEXT NOT NULL DEFAULT '',  -- the project's name for kind 'project', else ''
    name       TEXT NOT NULL,
    token      TEXT NOT NULL,
    version    INTEGER NOT NULL DEFAULT 1,
    created    REAL NOT NULL,
    created_by TEXT,
    updated    REAL NOT NULL,
    updated_by TEXT,
    PRIMARY KEY (kind, scope, name)
);
