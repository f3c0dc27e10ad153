//! `/v1/volumes` handlers: parse, call the service, shape the response.

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
    AttachVolumeRequest, CreateVolumeRequest, Page, PageQuery, ResizeVolumeRequest, Volume,
    VolumeId,
};
use std::sync::Arc;

pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Volume>>> {
    let (after, limit) = page::parse::<VolumeId>(&q)?;
    let items = app
        .volume_list(&caller, after, limit)
        .await?
        .into_iter()
        .map(views::volume)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = page::next_cursor(&items, limit, |v| v.id.to_string());
    Ok(Json(Page { items, next_cursor }))
}

pub async fn create(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateVolumeRequest>,
) -> ApiResult<impl IntoResponse> {
    let v = views::volume(app.volume_create(&caller, req).await?)?;
    let location = format!("/v1/volumes/{}", v.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(v)))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<Volume>> {
    Ok(Json(views::volume(app.volume_lookup(&caller, &id).await?)?))
}

/// 202: the node deletes it; the volume is gone once it has.
pub async fn delete(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<impl IntoResponse> {
    let v = views::volume(app.volume_delete(&caller, &id).await?)?;
    Ok((StatusCode::ACCEPTED, Json(v)))
}

pub async fn resize(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
    ApiJson(req): ApiJson<ResizeVolumeRequest>,
) -> ApiResult<Json<Volume>> {
    Ok(Json(views::volume(
        app.volume_resize(&caller, &id, req.size_gb).await?,
    )?))
}

pub async fn attach(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
    ApiJson(req): ApiJson<AttachVolumeRequest>,
) -> ApiResult<Json<Volume>> {
    let v = app
        .volume_attach(&caller, &id, Some((&req.instance_id, &req.mount_path)))
        .await?;
    Ok(Json(views::volume(v)?))
}

/// Empty body.
#[derive(serde::Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetachVolumeRequest {}

pub async fn detach(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
    ApiJson(_req): ApiJson<DetachVolumeRequest>,
) -> ApiResult<Json<Volume>> {
    Ok(Json(views::volume(
        app.volume_attach(&caller, &id, None).await?,
    )?))
}
