//! The audit trail: a layer over `/v1` that records every mutating request and every
//! authentication or permission failure (who, project, action, resource, outcome, request id,
//! source address), and `GET /v1/audit` for project admins. Rows are written before the
//! response leaves, so an acknowledged change is always audited.

use super::error::{ApiResult, REQUEST_ID};
use super::extract::ApiQuery;
use crate::app::App;
use crate::error::Error;
use crate::services::Caller;
use crate::store::{AuditFilter, NewAuditEntry};
use axum::Json;
use axum::body::Body;
use axum::extract::{ConnectInfo, Extension, MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use cloud_api::{AuditEntry, Page};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use uuid::Uuid;

/// What a public route's response names as the audited resource (a login's email).
#[derive(Debug, Clone)]
pub struct AuditSubject(pub String);

/// Largest response body read back to find a created resource's id.
const MAX_CREATED_BODY: usize = 256 * 1024;

fn outcome(status: StatusCode) -> &'static str {
    match status.as_u16() {
        200..=399 => "success",
        401 | 403 | 429 => "denied",
        _ => "failure",
    }
}

/// (resource type, id) from the route template and the real path: `/v1/volumes/{id}/attach`
/// with `/v1/volumes/abc/attach` → ("volume", "abc").
fn resource_of(template: &str, path: &str) -> (String, Option<String>) {
    let t: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let start = usize::from(t.first() == Some(&"v1"));
    let kind = match (t.get(start), t.get(start + 1)) {
        (Some(&"auth"), Some(what)) => what.to_string(),
        (Some(k), _) => k.to_string(),
        (None, _) => "unknown".into(),
    };
    let kind = kind.strip_suffix('s').unwrap_or(&kind).to_owned();
    let id = t
        .iter()
        .position(|s| s.starts_with('{'))
        .and_then(|i| p.get(i))
        .map(|s| s.to_string());
    (kind, id)
}

/// Records the request when it changes something or was refused.
pub async fn record(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let template = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let path = req.uri().path().to_owned();
    let source = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "unknown".into());
    let resp = next.run(req).await;
    let status = resp.status();
    let mutating = !matches!(method, Method::GET | Method::HEAD | Method::OPTIONS);
    if !mutating && !matches!(status.as_u16(), 401 | 403) {
        return resp;
    }
    match status.as_u16() {
        401 => app
            .metrics
            .auth_failures
            .with_label_values(&["unauthenticated"])
            .inc(),
        403 => app
            .metrics
            .auth_failures
            .with_label_values(&["forbidden"])
            .inc(),
        _ => {}
    }
    let template = template.unwrap_or_else(|| path.clone());
    let (kind, mut id) = resource_of(&template, &path);
    let caller = resp.extensions().get::<Caller>().cloned();
    // Public routes name their subject themselves (the email of a login).
    if id.is_none() {
        id = resp.extensions().get::<AuditSubject>().map(|s| s.0.clone());
    }
    let resp = if id.is_none() && method == Method::POST && status.is_success() {
        let (parts, body) = resp.into_parts();
        match axum::body::to_bytes(body, MAX_CREATED_BODY).await {
            Ok(bytes) => {
                id = serde_json::from_slice::<serde_json::Value>(&bytes)
                    .ok()
                    .and_then(|v| v.get("id")?.as_str().map(str::to_owned));
                Response::from_parts(parts, Body::from(bytes))
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a response back for the audit log");
                Response::from_parts(parts, Body::empty())
            }
        }
    } else {
        resp
    };
    let entry = NewAuditEntry {
        at: Utc::now(),
        request_id: REQUEST_ID.try_with(Clone::clone).unwrap_or_default(),
        project_id: caller.as_ref().map(|c| c.project.0),
        user_id: caller.as_ref().and_then(|c| c.user),
        key_id: caller.as_ref().map(|c| c.key_id.0),
        action: format!("{method} {template}"),
        resource_type: kind,
        resource_id: id,
        outcome: outcome(status).into(),
        status: status.as_u16(),
        source,
    };
    if let Err(e) = app.store.audit_insert(&[entry]).await {
        tracing::error!(error = %e, "cannot write the audit log");
        app.metrics.audit_write_failures.inc();
    }
    resp
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    user: Option<Uuid>,
    resource_type: Option<String>,
    resource_id: Option<String>,
    outcome: Option<String>,
    since: Option<DateTime<Utc>>,
    limit: Option<u32>,
    cursor: Option<Uuid>,
}

/// `GET /v1/audit`: the caller's project's rows, newest first.
pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<Json<Page<AuditEntry>>> {
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::Invalid("limit: must be between 1 and 1000".into()).into());
    }
    let f = AuditFilter {
        user_id: q.user,
        resource_type: q.resource_type,
        resource_id: q.resource_id,
        outcome: q.outcome,
        since: q.since,
        fleet: caller.is_operator(),
    };
    let rows = app
        .store
        .audit_list(caller.project.0, &f, q.cursor, limit)
        .await
        .map_err(Error::from)?;
    let items: Vec<AuditEntry> = rows
        .into_iter()
        .map(|r| AuditEntry {
            id: r.id,
            at: r.at,
            request_id: r.request_id,
            user_id: r.user_id,
            key_id: r.key_id,
            action: r.action,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            outcome: r.outcome,
            status: u16::try_from(r.status).unwrap_or(0),
            source: r.source,
        })
        .collect();
    let next_cursor = (items.len() == limit as usize)
        .then(|| items.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(Page { items, next_cursor }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_come_from_the_route_template() {
        assert_eq!(
            resource_of("/v1/volumes/{id}/attach", "/v1/volumes/abc/attach"),
            ("volume".into(), Some("abc".into()))
        );
        assert_eq!(
            resource_of("/v1/instances", "/v1/instances"),
            ("instance".into(), None)
        );
        assert_eq!(
            resource_of("/v1/auth/keys/{id}", "/v1/auth/keys/k1"),
            ("key".into(), Some("k1".into()))
        );
        assert_eq!(
            resource_of("/v1/auth/login", "/v1/auth/login"),
            ("login".into(), None)
        );
        assert_eq!(outcome(StatusCode::FORBIDDEN), "denied");
        assert_eq!(outcome(StatusCode::UNPROCESSABLE_ENTITY), "failure");
    }
}
