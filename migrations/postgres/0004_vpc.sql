-- VPC networking: VPCs (one VXLAN id each), subnets, security groups and their rules, and
-- each instance's port (subnet, address, MAC). Keep in step with ../sqlite/0004_vpc.sql.
CREATE TABLE vpcs (
    id          UUID PRIMARY KEY,
    project_id  UUID NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL,
    cidr        TEXT NOT NULL,
    vni         BIGINT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE subnets (
    id          UUID PRIMARY KEY,
    project_id  UUID NOT NULL REFERENCES projects(id),
    vpc_id      UUID NOT NULL REFERENCES vpcs(id),
    name        TEXT NOT NULL,
    cidr        TEXT NOT NULL,
    gateway     TEXT NOT NULL,
    nat_egress  BOOLEAN NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    UNIQUE (vpc_id, name)
);

CREATE TABLE security_groups (
    id           UUID PRIMARY KEY,
    project_id   UUID NOT NULL REFERENCES projects(id),
    name         TEXT NOT NULL,
    description  TEXT NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (project_id, name)
);

CREATE TABLE security_group_rules (
    id               UUID PRIMARY KEY,
    group_id         UUID NOT NULL REFERENCES security_groups(id) ON DELETE CASCADE,
    direction        TEXT NOT NULL,
    protocol         TEXT NOT NULL,
    port_min         INTEGER NOT NULL,
    port_max         INTEGER NOT NULL,
    cidr             TEXT,
    source_group_id  UUID REFERENCES security_groups(id),
    created_at       TIMESTAMPTZ NOT NULL
);

CREATE TABLE instance_security_groups (
    instance_id  UUID NOT NULL REFERENCES instances(id) ON DELETE CASCADE,
    group_id     UUID NOT NULL REFERENCES security_groups(id),
    PRIMARY KEY (instance_id, group_id)
);

ALTER TABLE instances ADD COLUMN subnet_id UUID REFERENCES subnets(id);
ALTER TABLE instances ADD COLUMN private_ip TEXT;
ALTER TABLE instances ADD COLUMN mac TEXT;
CREATE UNIQUE INDEX instances_subnet_ip ON instances(subnet_id, private_ip);
CREATE INDEX isg_by_group ON instance_security_groups(group_id);
CREATE INDEX sgr_by_source ON security_group_rules(source_group_id);

ALTER TABLE nodes ADD COLUMN underlay_ip TEXT;
ALTER TABLE nodes ADD COLUMN underlay_mtu BIGINT;
