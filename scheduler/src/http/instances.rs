//! `/v1/instances` handlers: parse, call the service, shape the response.

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::page;
use crate::app::App;
use crate::error::Error;
use crate::services::Caller;
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use cloud_api::{CreateInstanceRequest, Instance, InstanceId, Page, PageQuery};
use serde::Deserialize;
use std::sync::Arc;

pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Instance>>> {
    let (after, limit) = page::parse::<InstanceId>(&q)?;
    let records = app.instance_list(&caller, after, limit).await?;
    let items = app.instance_views(records).await?;
    let next_cursor = page::next_cursor(&items, limit, |i| i.id.to_string());
    Ok(Json(Page { items, next_cursor }))
}

pub async fn create(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateInstanceRequest>,
) -> ApiResult<impl IntoResponse> {
    let inst = app
        .instance_view(app.instance_create(&caller, req).await?)
        .await?;
    let location = format!("/v1/instances/{}", inst.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(inst),
    ))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<Instance>> {
    Ok(Json(
        app.instance_view(app.instance_lookup(&caller, &id).await?)
            .await?,
    ))
}

pub async fn delete(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<impl IntoResponse> {
    let inst = app
        .instance_view(app.instance_delete(&caller, &id).await?)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(inst)))
}

pub async fn stop(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<impl IntoResponse> {
    let inst = app
        .instance_view(app.instance_stop(&caller, &id).await?)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(inst)))
}

pub async fn start(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<impl IntoResponse> {
    let inst = app
        .instance_view(app.instance_start(&caller, &id).await?)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(inst)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogsQuery {
    /// Last N lines; all when absent.
    tail: Option<u32>,
    follow: Option<bool>,
}

pub async fn logs(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
    ApiQuery(q): ApiQuery<LogsQuery>,
    ws: Result<
        axum::extract::ws::WebSocketUpgrade,
        axum::extract::ws::rejection::WebSocketUpgradeRejection,
    >,
) -> ApiResult<axum::response::Response> {
    if q.follow == Some(true) {
        let ws = ws.map_err(|_| {
            Error::Invalid(
                "follow: following logs is a WebSocket: connect with Upgrade: websocket (cloud instance logs -f)".into(),
            )
        })?;
        return super::follow::logs(app, caller, id, q.tail.unwrap_or(0), ws).await;
    }
    let bytes = app.instance_logs(&caller, &id, q.tail.unwrap_or(0)).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], bytes).into_response())
}
