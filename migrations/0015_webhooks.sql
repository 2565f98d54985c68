-- Outgoing webhooks (issue 17, mariposa/webhooks/). The dispatcher follows the event log from
-- `webhook_cursor` and writes one delivery per (event, webhook) that wants it, moving the cursor
-- in the same transaction: after a crash the events past the cursor are read again and nothing
-- before it, so a restart neither skips an event nor makes its deliveries twice. The cursor
-- starts at the newest event when this migration runs: webhooks announce what happens from now
-- on, not an upgraded store's history.
CREATE TABLE webhook_cursor (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    event_id INTEGER NOT NULL
);
INSERT INTO webhook_cursor (id, event_id) SELECT 1, COALESCE(MAX(id), 0) FROM events;

-- One POST to make, at least once. The body is written once, when the delivery is made, so every
-- attempt (and a redelivery) sends the same bytes under the same delivery id: the receiver drops
-- repeats by id. The secret is named, never copied: it is read from the vault at each attempt.
CREATE TABLE webhook_deliveries (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,  -- order of making: of those due, the oldest goes first
    id           TEXT NOT NULL UNIQUE,   -- the delivery id (X-Mariposa-Delivery, "delivery" in the body)
    project_id   TEXT REFERENCES projects(id) ON DELETE CASCADE,
    event_id     INTEGER NOT NULL,
    event        TEXT NOT NULL,          -- the webhook event: start | stop | health | down | ...
    url          TEXT NOT NULL,
    secret_from  TEXT,                   -- the project secret that signs it (X-Mariposa-Signature)
    body         TEXT NOT NULL,          -- the JSON sent, exactly
    state        TEXT NOT NULL,          -- pending | delivered | failed | dropped
    attempts     INTEGER NOT NULL DEFAULT 0,
    created      REAL NOT NULL,
    deadline     REAL NOT NULL,          -- given up (failed) after this: created (or redelivered) + 24 h
    next_attempt REAL NOT NULL,
    last_attempt REAL,
    last_status  INTEGER,                -- the receiver's HTTP status of the last attempt
    last_error   TEXT,                   -- or why the last attempt got none (refused, timed out)
    delivered    REAL
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (url, next_attempt, seq) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_by_project ON webhook_deliveries (project_id, seq);
