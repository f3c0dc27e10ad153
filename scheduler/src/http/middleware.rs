//! Request context (request id, access metrics) and API-key authentication.

use super::error::{ApiError, REQUEST_ID};
use crate::app::App;
use crate::error::Error;
use crate::secrets;
use crate::services::Caller;
use crate::store::StoreError;
use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cloud_api::{API_KEY_HEADER, REQUEST_ID_HEADER};
use std::sync::Arc;
use std::time::Instant;

/// A client-supplied request id is kept when it is short and plain; otherwise we make one.
fn request_id_from(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// Gives every request an id (in the `X-Request-Id` response header and in error bodies),
/// records the request in the metrics, and logs it.
pub async fn request_context(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let id = request_id_from(&req);
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let path = req.uri().path().to_string();
    let started = Instant::now();
    let mut resp = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    let elapsed = started.elapsed();
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let status = resp.status().as_u16();
    app.metrics
        .http_requests
        .with_label_values(&[method.as_str(), route.as_str(), &status.to_string()])
        .inc();
    app.metrics
        .http_duration
        .with_label_values(&[method.as_str(), route.as_str()])
        .observe(elapsed.as_secs_f64());
    tracing::debug!(request_id = %id, %method, %path, status, ms = elapsed.as_millis() as u64, "request");
    resp
}

fn presented_key(req: &Request) -> Option<&str> {
    if let Some(v) = req.headers().get(API_KEY_HEADER) {
        return v.to_str().ok();
    }
    req.headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Requires a valid API key; puts the `Caller` in the request extensions. Every `/v1` route
/// sits behind this layer, so an endpoint cannot forget authentication.
pub async fn require_api_key(
    State(app): State<Arc<App>>,
    mut req: Request,
    next: Next,
) -> Response {
    let key = presented_key(&req).map(str::to_string);
    match authenticate(&app, key.as_deref()).await {
        Ok(caller) => {
            // The bootstrap admin key (`*`) is the operator's tool and is not limited.
            let limited = if caller.permissions.is_all() {
                Ok(())
            } else {
                app.api_limiter.check(&caller.key_id.to_string())
            };
            if let Err(wait) = limited {
                app.metrics.rate_limited.inc();
                let secs = crate::ratelimit::retry_after_secs(wait);
                let mut resp = ApiError(Error::RateLimited(
                    format!("this API key is over its rate limit; retry in {secs} s"),
                    secs,
                ))
                .into_response();
                resp.extensions_mut().insert(caller);
                return resp;
            }
            req.extensions_mut().insert(caller.clone());
            let mut resp = next.run(req).await;
            // For the audit layer outside: who made this request.
            resp.extensions_mut().insert(caller);
            resp
        }
        Err(e) => ApiError(e).into_response(),
    }
}

async fn authenticate(app: &App, key: Option<&str>) -> Result<Caller, Error> {
    let unauthorized = || {
        Error::Unauthorized(
            "a valid API key is required (header X-API-Key or Authorization: Bearer)".into(),
        )
    };
    let key = key.ok_or_else(unauthorized)?.trim();
    let prefix = secrets::api_key_prefix(key).ok_or_else(unauthorized)?;
    let entry = match app.key_cache.lookup(prefix) {
        Some(cached) => cached.ok_or_else(unauthorized)?,
        None => {
            let entry = match app.store.api_key_get_by_prefix(prefix).await {
                Ok(r) => Some(crate::services::identity::resolve_key(app, r).await?),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e.into()),
            };
            app.key_cache.put(prefix, entry.clone());
            entry.ok_or_else(unauthorized)?
        }
    };
    // The hash is compared on every request, in constant time; only the lookup is cached.
    let expired = entry.expires_at.is_some_and(|t| t <= chrono::Utc::now());
    if entry.revoked || expired || !secrets::api_key_matches(key, &entry.secret_hash) {
        return Err(unauthorized());
    }
    Ok(entry.caller)
}
