-- Node-local volumes. Keep in step with ../postgres/0005_volumes.sql.
CREATE TABLE volumes (
    id                 BLOB PRIMARY KEY,
    project_id         BLOB NOT NULL REFERENCES projects(id),
    name               TEXT NOT NULL,
    size_gb            BIGINT NOT NULL,
    node_id            BLOB REFERENCES nodes(id),
    status             TEXT NOT NULL,
    status_reason      TEXT,
    -- Node generation of the last change the node must carry out (create, delete).
    change_generation  BIGINT NOT NULL DEFAULT 0,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE INDEX volumes_by_node ON volumes(node_id);
