-- Per-project quotas (NULL: unlimited), enforced in the transaction that creates instances
-- and volumes.
CREATE TABLE project_quotas (
    project_id      BLOB PRIMARY KEY REFERENCES projects(id),
    max_instances   BIGINT,
    max_cpu_millis  BIGINT,
    max_memory_mb   BIGINT,
    max_volume_gb   BIGINT
);
