-- Which instance a volume is mounted in, and where. Keep in step with ../postgres/0006_volume_mounts.sql.
ALTER TABLE volumes ADD COLUMN instance_id BLOB REFERENCES instances(id) ON DELETE SET NULL;
ALTER TABLE volumes ADD COLUMN mount_path TEXT;
CREATE INDEX volumes_by_instance ON volumes(instance_id);
