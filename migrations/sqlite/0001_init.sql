-- The Cloud: initial schema (SQLite). Keep in step with ../postgres/0001_init.sql.
CREATE TABLE projects (
    id          BLOB PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    created_at  TEXT NOT NULL
);

CREATE TABLE api_keys (
    id           BLOB PRIMARY KEY,
    project_id   BLOB NOT NULL REFERENCES projects(id),
    name         TEXT NOT NULL,
    prefix       TEXT NOT NULL UNIQUE,
    secret_hash  BLOB NOT NULL,
    is_admin     BOOLEAN NOT NULL,
    created_at   TEXT NOT NULL,
    revoked_at   TEXT
);

CREATE TABLE join_tokens (
    id            BLOB PRIMARY KEY,
    token_hash    BLOB NOT NULL UNIQUE,
    is_bootstrap  BOOLEAN NOT NULL,
    created_at    TEXT NOT NULL,
    expires_at    TEXT,
    used_at       TEXT,
    used_by_node  BLOB
);

CREATE TABLE nodes (
    id                  BLOB PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    hostname            TEXT NOT NULL,
    status              TEXT NOT NULL,
    cpu_millis          BIGINT NOT NULL,
    memory_mb           BIGINT NOT NULL,
    disk_gb             BIGINT NOT NULL,
    drivers             TEXT NOT NULL,
    labels              TEXT NOT NULL,
    agent_version       TEXT,
    generation          BIGINT NOT NULL,
    applied_generation  BIGINT NOT NULL,
    cert_serial         TEXT NOT NULL,
    last_heartbeat_at   TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

CREATE TABLE instances (
    id                 BLOB PRIMARY KEY,
    project_id         BLOB NOT NULL REFERENCES projects(id),
    name               TEXT NOT NULL,
    kind               TEXT NOT NULL,
    image              TEXT NOT NULL,
    command            TEXT NOT NULL,
    env                TEXT NOT NULL,
    cpu_millis         BIGINT NOT NULL,
    memory_mb          BIGINT NOT NULL,
    restart_policy     TEXT NOT NULL,
    desired_state      TEXT NOT NULL,
    status             TEXT NOT NULL,
    status_reason      TEXT,
    node_id            BLOB REFERENCES nodes(id),
    change_generation  BIGINT NOT NULL,
    runtime_id         TEXT,
    started_at         TEXT,
    exit_code          INTEGER,
    created_at         TEXT NOT NULL,
    updated_at         TEXT NOT NULL,
    UNIQUE (project_id, name)
);

CREATE INDEX instances_by_node ON instances(node_id);
