-- Heartbeat times and applied generations change every second on every node; they live in
-- their own table, written by one task, so those writes never contend with the row locks
-- that placement takes on `nodes`. Keep in step with ../sqlite/0003_node_liveness.sql.
CREATE TABLE node_liveness (
    node_id             UUID PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
    last_heartbeat_at   TIMESTAMPTZ,
    applied_generation  BIGINT NOT NULL DEFAULT 0
);
