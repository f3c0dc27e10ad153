//! `/v1/snapshots` handlers: parse, call the service, shape the response.

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::page;
use crate::app::App;
use crate::services::Caller;
use crate::views;
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use cloud_api::{
    CreateSnapshotRequest, Page, PageQuery, RestoreSnapshotRequest, Snapshot, SnapshotId,
};
use std::sync::Arc;

/// `?limit=N&cursor=C&volume=V` (`volume`: id or name; only that volume's snapshots).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
    volume: Option<String>,
}

pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Page<Snapshot>>> {
    let (after, limit) = page::parse::<SnapshotId>(&PageQuery {
        limit: q.limit,
        cursor: q.cursor,
    })?;
    let items = app
        .snapshot_list(&caller, q.volume.as_deref(), after, limit)
        .await?
        .into_iter()
        .map(views::snapshot)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = page::next_cursor(&items, limit, |s| s.id.to_string());
    Ok(Json(Page { items, next_cursor }))
}

/// 201: recorded; the volume's node takes it (`creating` → `available`).
pub async fn create(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateSnapshotRequest>,
) -> ApiResult<impl IntoResponse> {
    let s = views::snapshot(app.snapshot_create(&caller, req).await?)?;
    let location = format!("/v1/snapshots/{}", s.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(s)))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<Snapshot>> {
    Ok(Json(views::snapshot(
        app.snapshot_lookup(&caller, &id).await?,
    )?))
}

/// 202: the node deletes it; the snapshot is gone once it has.
pub async fn delete(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<impl IntoResponse> {
    let s = views::snapshot(app.snapshot_delete(&caller, &id).await?)?;
    Ok((StatusCode::ACCEPTED, Json(s)))
}

/// 201 with the NEW volume (`creating` until its node has restored the content into it).
pub async fn restore(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
    ApiJson(req): ApiJson<RestoreSnapshotRequest>,
) -> ApiResult<impl IntoResponse> {
    let v = views::volume(app.snapshot_restore(&caller, &id, req).await?)?;
    let location = format!("/v1/volumes/{}", v.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(v)))
}
