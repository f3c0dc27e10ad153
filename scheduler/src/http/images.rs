//! `/v1/images` handlers: parse, call the service, shape the response.

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
use cloud_api::{CreateImageRequest, Image, ImageId, Page, PageQuery};
use std::sync::Arc;

pub async fn list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Image>>> {
    let (after, limit) = page::parse::<ImageId>(&q)?;
    let items = app
        .image_list(&caller, after, limit)
        .await?
        .into_iter()
        .map(views::image)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = page::next_cursor(&items, limit, |i| i.id.to_string());
    Ok(Json(Page { items, next_cursor }))
}

pub async fn create(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateImageRequest>,
) -> ApiResult<impl IntoResponse> {
    let i = views::image(app.image_create(&caller, req).await?)?;
    let location = format!("/v1/images/{}", i.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(i)))
}

pub async fn get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<Image>> {
    Ok(Json(views::image(app.image_lookup(&caller, &id).await?)?))
}

/// 204: unregistered (VMs created from it keep running).
pub async fn delete(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<StatusCode> {
    app.image_delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
