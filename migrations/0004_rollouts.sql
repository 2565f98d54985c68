-- Image content ids resolved when a version is made: a tag moved later never changes what a
-- version runs.
CREATE TABLE version_images (
    version_id TEXT NOT NULL REFERENCES versions(id) ON DELETE CASCADE,
    image      TEXT NOT NULL,
    image_id   TEXT,                 -- NULL: the image was not on the host then
    PRIMARY KEY (version_id, image)
);

-- After a canary (reprovision --count), the instances left on older versions stay until the
-- next reprovision instead of being replaced by the reconciler.
ALTER TABLE services ADD COLUMN keep_stale INTEGER NOT NULL DEFAULT 0;
