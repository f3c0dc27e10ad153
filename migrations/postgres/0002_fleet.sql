-- Fleet-scale placement: multi-use join tokens, placement constraints, node status times and a
-- placement generation that only changes when a node's capacity for new work may shrink.
-- Keep in step with ../sqlite/0002_fleet.sql.
ALTER TABLE join_tokens ADD COLUMN max_uses BIGINT NOT NULL DEFAULT 1;
ALTER TABLE join_tokens ADD COLUMN uses BIGINT NOT NULL DEFAULT 0;
UPDATE join_tokens SET uses = 1 WHERE used_at IS NOT NULL;

ALTER TABLE nodes ADD COLUMN placement_generation BIGINT NOT NULL DEFAULT 0;
ALTER TABLE nodes ADD COLUMN status_changed_at TIMESTAMPTZ;

ALTER TABLE instances ADD COLUMN node_selector JSONB NOT NULL DEFAULT '{}'::jsonb;
ALTER TABLE instances ADD COLUMN placement_group TEXT;
ALTER TABLE instances ADD COLUMN placement_policy TEXT;
ALTER TABLE instances ADD COLUMN placement_strategy TEXT;

CREATE INDEX instances_by_group ON instances(project_id, placement_group);
