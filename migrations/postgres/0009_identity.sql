-- Users, roles, role bindings and the audit log (multi-tenancy). Keep in step with
-- ../sqlite/0009_identity.sql.
CREATE TABLE users (
    id             UUID PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    -- argon2id PHC string; NULL: no password login (keys only).
    password_hash  TEXT,
    -- Fleet role: nodes, drain, images, users, projects.
    is_operator    BOOLEAN NOT NULL,
    created_at     TIMESTAMPTZ NOT NULL,
    disabled_at    TIMESTAMPTZ
);

-- Built-in roles have no project; custom roles belong to one.
CREATE TABLE roles (
    id           UUID PRIMARY KEY,
    project_id   UUID REFERENCES projects(id),
    name         TEXT NOT NULL,
    permissions  JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX roles_builtin_name ON roles (name) WHERE project_id IS NULL;
CREATE UNIQUE INDEX roles_project_name ON roles (project_id, name) WHERE project_id IS NOT NULL;

CREATE TABLE role_bindings (
    project_id  UUID NOT NULL REFERENCES projects(id),
    user_id     UUID NOT NULL REFERENCES users(id),
    role_id     UUID NOT NULL REFERENCES roles(id),
    created_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (project_id, user_id, role_id)
);

ALTER TABLE api_keys ADD COLUMN user_id UUID REFERENCES users(id);
-- A rotated key keeps working until then (the overlap window).
ALTER TABLE api_keys ADD COLUMN expires_at TIMESTAMPTZ;

CREATE TABLE audit_log (
    id             UUID PRIMARY KEY,
    at             TIMESTAMPTZ NOT NULL,
    request_id     TEXT NOT NULL,
    project_id     UUID,
    user_id        UUID,
    key_id         UUID,
    action         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT,
    outcome        TEXT NOT NULL,
    status         BIGINT NOT NULL,
    source         TEXT NOT NULL
);
CREATE INDEX audit_log_project ON audit_log (project_id, id);
