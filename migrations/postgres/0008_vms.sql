-- VM images (a base disk at the same path on every node, optionally booted from a kernel),
-- and the VM part of instances (image, root disk size, cloud-init user-data) as JSON. Keep in
-- step with ../sqlite/0008_vms.sql.
CREATE TABLE images (
    id          UUID PRIMARY KEY,
    project_id  UUID NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL,
    path        TEXT NOT NULL,
    format      TEXT NOT NULL,
    kernel      TEXT,
    initrd      TEXT,
    cmdline     TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (project_id, name)
);
ALTER TABLE instances ADD COLUMN vm_spec JSONB;
