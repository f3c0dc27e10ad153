-- VM images (a base disk at the same path on every node, optionally booted from a kernel),
-- and the VM part of instances (image, root disk size, cloud-init user-data) as JSON. Keep in
-- step with ../postgres/0008_vms.sql.
CREATE TABLE images (
    id          BLOB PRIMARY KEY,
    project_id  BLOB NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL,
    path        TEXT NOT NULL,
    format      TEXT NOT NULL,
    kernel      TEXT,
    initrd      TEXT,
    cmdline     TEXT,
    created_at  TEXT NOT NULL,
    UNIQUE (project_id, name)
);
ALTER TABLE instances ADD COLUMN vm_spec TEXT;
