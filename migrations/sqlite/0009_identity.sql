-- Users, roles, role bindings and the audit log (multi-tenancy). Keep in step with
-- ../postgres/0009_identity.sql.
CREATE TABLE users (
    id             BLOB PRIMARY KEY,
    email          TEXT NOT NULL UNIQUE,
    name           TEXT NOT NULL,
    -- argon2id PHC string; NULL: no password login (keys only).
    password_hash  TEXT,
    -- Fleet role: nodes, drain, images, users, projects.
    is_operator    BOOLEAN NOT NULL,
    created_at     TEXT NOT NULL,
    disabled_at    TEXT
);

-- Built-in roles have no project; custom roles belong to one.
CREATE TABLE roles (
    id           BLOB PRIMARY KEY,
    project_id   BLOB REFERENCES projects(id),
    name         TEXT NOT NULL,
    permissions  TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE UNIQUE INDEX roles_builtin_name ON roles (name) WHERE project_id IS NULL;
CREATE UNIQUE INDEX roles_project_name ON roles (project_id, name) WHERE project_id IS NOT NULL;

CREATE TABLE role_bindings (
    project_id  BLOB NOT NULL REFERENCES projects(id),
    user_id     BLOB NOT NULL REFERENCES users(id),
    role_id     BLOB NOT NULL REFERENCES roles(id),
    created_at  TEXT NOT NULL,
    PRIMARY KEY (project_id, user_id, role_id)
);

ALTER TABLE api_keys ADD COLUMN user_id BLOB REFERENCES users(id);
-- A rotated key keeps working until then (the overlap window).
ALTER TABLE api_keys ADD COLUMN expires_at TEXT;

CREATE TABLE audit_log (
    id             BLOB PRIMARY KEY,
    at             TEXT NOT NULL,
    request_id     TEXT NOT NULL,
    project_id     BLOB,
    user_id        BLOB,
    key_id         BLOB,
    action         TEXT NOT NULL,
    resource_type  TEXT NOT NULL,
    resource_id    TEXT,
    outcome        TEXT NOT NULL,
    status         BIGINT NOT NULL,
    source         TEXT NOT NULL
);
CREATE INDEX audit_log_project ON audit_log (project_id, id);
