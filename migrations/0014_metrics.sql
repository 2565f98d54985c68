-- The day of every instance's numbers at one-minute resolution (issue 17, mariposa/metrics/rollup.py):
-- one row per instance per minute, the averages of that minute's samples (memory: the average and
-- the most), written once a minute; rows older than 24 h are deleted as new ones are written.
-- The last hour at full resolution is in memory (mariposa/metrics/history.py), not here.
CREATE TABLE metric_minutes (
    minute       INTEGER NOT NULL,  -- epoch seconds of the minute's start
    instance_id  TEXT NOT NULL,
    project_id   TEXT NOT NULL,     -- no foreign key: a deleted project's day stays until it ages out
    service      TEXT NOT NULL,
    samples      INTEGER NOT NULL,  -- how many samples the averages are of
    cpu          REAL NOT NULL,     -- percent of one core
    memory       INTEGER NOT NULL,  -- bytes, the average
    memory_max   INTEGER NOT NULL,  -- bytes, the most of any sample
    memory_limit INTEGER,
    net_rx       REAL NOT NULL,     -- bytes per second
    net_tx       REAL NOT NULL,
    block_read   REAL NOT NULL,
    block_write  REAL NOT NULL,
    PRIMARY KEY (minute, instance_id)
) WITHOUT ROWID;
CREATE INDEX metric_minutes_by_service ON metric_minutes (project_id, service, minute);
