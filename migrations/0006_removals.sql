-- A removal under way: marked before the instance is stopped, so a daemon killed between the
-- stop and the delete finishes the removal after its restart, instead of finding a stopped
-- instance (exit 143, our own SIGTERM) and keeping it as a failure.
ALTER TABLE instances ADD COLUMN removing INTEGER NOT NULL DEFAULT 0;
