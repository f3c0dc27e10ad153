-- Point-in-time snapshots of volumes, and the snapshot a volume was restored from. Keep in
-- step with ../postgres/0007_snapshots.sql.
CREATE TABLE snapshots (
    id                 BLOB PRIMARY KEY,
    project_id         BLOB NOT NULL REFERENCES projects(id),
    name               TEXT NOT NULL,
    -- The volume it was taken of (no foreign key: where the backend allows it, the volume may
    -- be deleted while its snapshots stay).
    volume_id          BLOB NOT NULL,
    node_id            BLOB REFERENCES nodes(id),
    -- Size of the volume a restore creates.
    size_gb            BIGINT NOT NULL,
    status             TEXT NOT NULL,
    status_reason      TEXT,
    -- Node generation of the last change the node must carry out (take, delete).
    change_generation  BIGINT NOT NULL DEFAULT 0,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (project_id, name)
);
CREATE INDEX snapshots_by_node ON snapshots(node_id);
CREATE INDEX snapshots_by_volume ON snapshots(volume_id);
ALTER TABLE volumes ADD COLUMN source_snapshot_id BLOB;
CREATE INDEX volumes_by_source_snapshot ON volumes(source_snapshot_id);
