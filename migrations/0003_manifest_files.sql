-- The watched manifest directory: what each file last said, so a broken edit is visible
-- (and never applied), and a file is applied once per content, not once per rescan.
CREATE TABLE manifest_files (
    path    TEXT PRIMARY KEY,
    project TEXT NOT NULL,
    hash    TEXT NOT NULL,
    state   TEXT NOT NULL,          -- applied | invalid | refused | removed
    error   TEXT,
    details TEXT,                   -- JSON list of problems with line and column
    seen    REAL NOT NULL
);

-- 'orphaned': the project came from a file that has since been removed.
ALTER TABLE projects ADD COLUMN source_state TEXT;
