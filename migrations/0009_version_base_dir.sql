-- The directory the version's manifest was read from (the CLI's manifest file, or the watched
-- directory): relative bind-mount paths start there, as in compose, forever after.
ALTER TABLE versions ADD COLUMN base_dir TEXT;
