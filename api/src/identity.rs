//! Identity and access: users, login and registration, API keys, roles, role bindings,
//! projects, and the audit log.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `POST /v1/auth/register` (when the scheduler allows self-registration): a new user who is
/// the admin of a new project, and a first key acting in it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    pub password: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Name of the new project (default: derived from the email).
    #[serde(default)]
    pub project: Option<String>,
}

/// `POST /v1/auth/login`: a key (expiring, see `LOGIN_KEY_HOURS`) for email + password.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
    /// Project (name or id) the key acts in; needed when the user is in several.
    #[serde(default)]
    pub project: Option<String>,
}

/// How long a key from `login` works.
pub const LOGIN_KEY_HOURS: i64 = 12;

/// `POST /v1/auth/keys`: a new key of the caller's user.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKeyRequest {
    pub name: String,
    /// Project (name or id) it acts in (default: the caller's).
    #[serde(default)]
    pub project: Option<String>,
    /// Lifetime in seconds (default: no expiry).
    #[serde(default)]
    pub expires_in_seconds: Option<u64>,
}

/// `POST /v1/auth/keys/{id}/rotate`: a new key; the old one keeps working for the overlap.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateApiKeyRequest {
    /// Seconds the old key keeps working (default 3600, at most 30 days; 0: stops now).
    #[serde(default)]
    pub overlap_seconds: Option<u64>,
}

/// An API key as listed (never the secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub name: String,
    /// The public part of the key (`tc_<prefix>_…`).
    pub prefix: String,
    pub project_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key just made: the only time its secret is shown.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub info: ApiKey,
    pub key: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub operator: bool,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/users` (operators): a user, optionally bound to a role in a project.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub email: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Without one the user can only use keys made for them.
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub operator: bool,
    /// Bind the user to `role` in this project (name or id).
    #[serde(default)]
    pub project: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Project {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/projects` (operators).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProjectRequest {
    pub name: String,
    /// Email of an existing user to make its admin.
    #[serde(default)]
    pub admin: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct Role {
    pub id: Uuid,
    pub name: String,
    /// `resource:action`, `resource:*` or `*`.
    pub permissions: Vec<String>,
    pub builtin: bool,
}

/// `POST /v1/roles` (project admins): a custom role of the caller's project.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleRequest {
    pub name: String,
    pub permissions: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct RoleBinding {
    pub user_id: Uuid,
    pub email: String,
    pub role_id: Uuid,
    pub role: String,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/bindings` (project admins): bind a user (email or id) to a role (name or id) in
/// the caller's project. `DELETE /v1/bindings?user=…&role=…` removes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBindingRequest {
    pub user: String,
    pub role: String,
}

/// One audit row.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct AuditEntry {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub request_id: String,
    pub user_id: Option<Uuid>,
    pub key_id: Option<Uuid>,
    /// `METHOD /route`, e.g. `POST /v1/instances`.
    pub action: String,
    pub resource_type: String,
    pub resource_id: Option<String>,
    /// `success`, `denied` or `failure`.
    pub outcome: String,
    pub status: u16,
    pub source: String,
}

/// A project's limits (`null`: unlimited). `PUT /v1/projects/{id}/quota` (operators).
#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    #[serde(default)]
    pub max_instances: Option<u64>,
    /// Sum of the instances' `cpu_millis`.
    #[serde(default)]
    pub max_cpu_millis: Option<u64>,
    #[serde(default)]
    pub max_memory_mb: Option<u64>,
    #[serde(default)]
    pub max_volume_gb: Option<u64>,
}

#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema,
)]
pub struct QuotaUsage {
    pub instances: u64,
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub volume_gb: u64,
}

/// `GET /v1/quota`: the caller's project's limits and what it uses.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
pub struct QuotaStatus {
    pub project_id: Uuid,
    pub limits: Quota,
    pub usage: QuotaUsage,
}
