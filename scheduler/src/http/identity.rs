//! Identity handlers: registration, login, API keys, users, projects, roles and bindings.

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::app::App;
use crate::error::Error;
use crate::services::Caller;
use crate::store::{ApiKeyRecord, BindingRecord, ProjectRecord, RoleRecord, UserRecord};
use axum::Json;
use axum::extract::{ConnectInfo, Extension, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use cloud_api::{
    ApiKey, CreateApiKeyRequest, CreateBindingRequest, CreateProjectRequest, CreateRoleRequest,
    CreateUserRequest, CreatedApiKey, LoginRequest, Project, RegisterRequest, Role, RoleBinding,
    RotateApiKeyRequest, User,
};
use serde::Deserialize;

fn u(v: Option<i64>) -> Option<u64> {
    v.map(|x| u64::try_from(x).unwrap_or(0))
}

fn i(v: Option<u64>) -> Option<i64> {
    v.map(|x| i64::try_from(x).unwrap_or(i64::MAX))
}

/// `GET /v1/quota`.
pub async fn quota_get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<cloud_api::QuotaStatus>> {
    let q = app
        .store
        .quota_get(caller.project)
        .await
        .map_err(Error::from)?;
    let used = app
        .store
        .quota_usage(caller.project)
        .await
        .map_err(Error::from)?;
    let n = |v: i64| u64::try_from(v).unwrap_or(0);
    Ok(Json(cloud_api::QuotaStatus {
        project_id: caller.project.0,
        limits: cloud_api::Quota {
            max_instances: u(q.max_instances),
            max_cpu_millis: u(q.max_cpu_millis),
            max_memory_mb: u(q.max_memory_mb),
            max_volume_gb: u(q.max_volume_gb),
        },
        usage: cloud_api::ProjectUsage {
            instances: n(used.instances),
            cpu_millis: n(used.cpu_millis),
            memory_mb: n(used.memory_mb),
            volume_gb: n(used.volume_gb),
        },
    }))
}

/// `PUT /v1/projects/{id}/quota` (operators): replaces the limits.
pub async fn quota_set(
    State(app): State<Arc<App>>,
    ApiPath(project): ApiPath,
    ApiJson(q): ApiJson<cloud_api::Quota>,
) -> ApiResult<Json<cloud_api::Quota>> {
    let p = app
        .store
        .project_get(&project)
        .await
        .map_err(|_| Error::NotFound(format!("project {project} not found")))?;
    let rec = crate::store::QuotaRecord {
        max_instances: i(q.max_instances),
        max_cpu_millis: i(q.max_cpu_millis),
        max_memory_mb: i(q.max_memory_mb),
        max_volume_gb: i(q.max_volume_gb),
    };
    app.store
        .quota_set(cloud_api::ProjectId(p.id), &rec)
        .await
        .map_err(Error::from)?;
    Ok(Json(q))
}
use std::net::SocketAddr;
use std::sync::Arc;

fn key_view(r: ApiKeyRecord) -> ApiKey {
    ApiKey {
        id: r.id,
        name: r.name,
        prefix: r.prefix,
        project_id: r.project_id,
        created_at: r.created_at,
        expires_at: r.expires_at,
    }
}

fn created((r, key): (ApiKeyRecord, String)) -> impl IntoResponse {
    (
        StatusCode::CREATED,
        Json(CreatedApiKey {
            info: key_view(r),
            key,
        }),
    )
}

fn user_view(u: UserRecord) -> User {
    User {
        id: u.id,
        email: u.email,
        name: u.name,
        operator: u.is_operator,
        created_at: u.created_at,
    }
}

fn project_view(p: ProjectRecord) -> Project {
    Project {
        id: p.id,
        name: p.name,
        created_at: p.created_at,
    }
}

fn role_view(r: RoleRecord) -> Role {
    Role {
        id: r.id,
        name: r.name,
        permissions: r.permissions.0,
        builtin: r.project_id.is_none(),
    }
}

fn binding_view(b: BindingRecord) -> RoleBinding {
    RoleBinding {
        user_id: b.user_id,
        email: b.email,
        role_id: b.role_id,
        role: b.role,
        created_at: b.created_at,
    }
}

pub async fn register(
    State(app): State<Arc<App>>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(created(app.register(req).await?))
}

pub async fn login(
    State(app): State<Arc<App>>,
    source: Option<Extension<ConnectInfo<SocketAddr>>>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<impl IntoResponse> {
    let source = source.map(|Extension(ConnectInfo(a))| a.ip());
    // Audited even when it is not an email address: bounded, not validated.
    let email = crate::services::identity::normalize_email(&req.email)
        .chars()
        .take(254)
        .collect::<String>();
    let mut resp = match app.login(req, source).await {
        Ok(k) => created(k).into_response(),
        Err(e) => super::error::ApiError(e).into_response(),
    };
    // Who tried: failed logins are audited with the attempted email.
    resp.extensions_mut()
        .insert(super::audit::AuditSubject(email));
    Ok(resp)
}

pub async fn key_create(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateApiKeyRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(created(app.key_create(&caller, req).await?))
}

pub async fn key_list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<ApiKey>>> {
    Ok(Json(
        app.key_list(&caller)
            .await?
            .into_iter()
            .map(key_view)
            .collect(),
    ))
}

pub async fn key_revoke(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<StatusCode> {
    app.key_revoke(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn key_rotate(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
    ApiJson(req): ApiJson<RotateApiKeyRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(created(app.key_rotate(&caller, &id, req).await?))
}

pub async fn user_create(
    State(app): State<Arc<App>>,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(user_view(app.user_create(req).await?)),
    ))
}

pub async fn user_list(State(app): State<Arc<App>>) -> ApiResult<Json<Vec<User>>> {
    Ok(Json(
        app.store
            .user_list()
            .await
            .map_err(Error::from)?
            .into_iter()
            .map(user_view)
            .collect(),
    ))
}

pub async fn user_key_create(
    State(app): State<Arc<App>>,
    ApiPath(user): ApiPath,
    ApiJson(req): ApiJson<CreateApiKeyRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok(created(app.user_key_create(&user, req).await?))
}

pub async fn project_create(
    State(app): State<Arc<App>>,
    ApiJson(req): ApiJson<CreateProjectRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(project_view(app.project_create(req).await?)),
    ))
}

pub async fn project_list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<Project>>> {
    Ok(Json(
        app.project_list_for(&caller)
            .await?
            .into_iter()
            .map(project_view)
            .collect(),
    ))
}

pub async fn role_list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<Role>>> {
    Ok(Json(
        app.store
            .role_list(caller.project)
            .await
            .map_err(Error::from)?
            .into_iter()
            .map(role_view)
            .collect(),
    ))
}

pub async fn role_create(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateRoleRequest>,
) -> ApiResult<impl IntoResponse> {
    Ok((
        StatusCode::CREATED,
        Json(role_view(app.role_create(&caller, req).await?)),
    ))
}

pub async fn role_delete(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<StatusCode> {
    app.role_delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn binding_list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Json<Vec<RoleBinding>>> {
    Ok(Json(
        app.store
            .binding_list(caller.project)
            .await
            .map_err(Error::from)?
            .into_iter()
            .map(binding_view)
            .collect(),
    ))
}

pub async fn binding_create(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateBindingRequest>,
) -> ApiResult<StatusCode> {
    app.binding_create(&caller, req).await?;
    Ok(StatusCode::CREATED)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingQuery {
    user: String,
    role: String,
}

pub async fn binding_delete(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<BindingQuery>,
) -> ApiResult<StatusCode> {
    app.binding_delete(&caller, &q.user, &q.role).await?;
    Ok(StatusCode::NO_CONTENT)
}
