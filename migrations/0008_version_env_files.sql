-- The text of each env_file a version's manifest names, read beside the manifest by whoever gave
-- it (manifest/env_files.py): the version is parsed with it forever after, like its inline
-- environment. JSON {"path": "text" | {"error": "why"}}; NULL when the manifest names none.
ALTER TABLE versions ADD COLUMN env_files TEXT;
