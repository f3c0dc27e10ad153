-- The Cloud: initial schema (PostgreSQL). Keep in step with ../sqlite/0001_init.sql.
CREATE TABLE projects (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TIMESTAMPTZ NOT NULL
);

CREATE TABLE api_keys (
    id           UUID PRIMARY KEY,
    project_id   UUID NOT NULL REFERENCES projects(id),
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL UNIQUE,
    secret_hash  BYTEA NOT NULL,
    is_admin     BOOLEAN NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    revoked_at   TIMESTAMPTZ
);

CREATE TABLE join_tokens (
    id            UUID PRIMARY KEY,
    token_hash    BYTEA NOT NULL UNIQUE,
    is_bootstrap  BOOLEAN NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ,
    used_at       TIMESTAMPTZ,
    used_by_node  UUID
);

CREATE TABLE nodes (
    id                  UUID PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    hostname            TEXT NOT NULL,
    status              TEXT NOT NULL,
    cpu_millis          BIGINT NOT NULL,
    memory_mb           BIGINT NOT NULL,
    disk_gb             BIGINT NOT NULL,
    drivers             JSONB NOT NULL,
    labels              JSONB NOT NULL,
    agent_version       TEXT,
    generation          BIGINT NOT NULL,
    applied_generation  BIGINT NOT NULL,
    cert_serial         TEXT NOT NULL,
    last_heartbeat_at   TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL
);

CREATE TABLE instances (
    id                 UUID PRIMARY KEY,
    project_id         UUID NOT NULL REFERENCES projects(id),
    name               TEXT NOT NULL,
    kind               TEXT NOT NULL,
    image              TEXT NOT NULL,
    command            JSONB NOT NULL,
    env                JSONB NOT NULL,
    cpu_millis         BIGINT NOT NULL,
    memory_mb          BIGINT NOT NULL,
    restart_policy     TEXT NOT NULL,
    desired_state      TEXT NOT NULL,
    status             TEXT NOT NULL,
    status_reason      TEXT,
    node_id            UUID REFERENCES nodes(id),
    change_generation  BIGINT NOT NULL,
    runtime_id         TEXT,
    started_at         TIMESTAMPTZ,
    exit_code          INTEGER,
    created_at         TIMESTAMPTZ NOT NULL,
    updated_at         TIMESTAMPTZ NOT NULL,
    UNIQUE (project_id, name)
);

CREATE INDEX instances_by_node ON instances(node_id);
