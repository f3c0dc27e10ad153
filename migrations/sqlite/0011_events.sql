-- The event stream (state changes, placements, failures); `seq` orders it and lets clients
-- resume. Keep in step with ../postgres/0011_events.sql.
CREATE TABLE events (
    seq            INTEGER PRIMARY KEY AUTOINCREMENT,
    at             TEXT NOT NULL,
    -- NULL: a fleet event (nodes), seen by operators only.
    project_id     BLOB,
    kind           TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    data           TEXT NOT NULL
);
CREATE INDEX events_project ON events (project_id, seq);
