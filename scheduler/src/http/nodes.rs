//! `/v1/nodes` handlers.

use super::error::ApiResult;
use super::extract::ApiQuery;
use super::extract::{ApiJson, ApiPath};
use super::page;
use crate::app::App;
use crate::views;
use axum::Json;
use axum::extract::State;
use cloud_api::{
    CreateJoinTokenRequest, DrainMode, DrainQuery, JoinToken, Node, NodeId, Page, PageQuery,
};
use std::sync::Arc;

pub async fn list(
    State(app): State<Arc<App>>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Node>>> {
    let (after, limit) = page::parse::<NodeId>(&q)?;
    let records = app.store.node_list(after, limit).await?;
    let items = records
        .into_iter()
        .map(|r| views::node(r, &app.sessions))
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = page::next_cursor(&items, limit, |n| n.id.to_string());
    Ok(Json(Page { items, next_cursor }))
}

pub async fn get(State(app): State<Arc<App>>, ApiPath(id): ApiPath) -> ApiResult<Json<Node>> {
    Ok(Json(views::node(
        app.node_lookup(&id).await?,
        &app.sessions,
    )?))
}

pub async fn drain(
    State(app): State<Arc<App>>,
    ApiPath(id): ApiPath,
    ApiQuery(q): ApiQuery<DrainQuery>,
) -> ApiResult<Json<Node>> {
    let mode = if q.keep_instances == Some(true) {
        DrainMode::KeepInstances
    } else {
        DrainMode::Evacuate
    };
    Ok(Json(views::node(
        app.node_drain(&id, mode).await?,
        &app.sessions,
    )?))
}

pub async fn undrain(State(app): State<Arc<App>>, ApiPath(id): ApiPath) -> ApiResult<Json<Node>> {
    Ok(Json(views::node(
        app.node_undrain(&id).await?,
        &app.sessions,
    )?))
}

pub async fn create_join_token(
    State(app): State<Arc<App>>,
    ApiJson(req): ApiJson<CreateJoinTokenRequest>,
) -> ApiResult<(axum::http::StatusCode, Json<JoinToken>)> {
    let uses = req.uses.unwrap_or(1);
    let ttl = std::time::Duration::from_secs(req.ttl_seconds.unwrap_or(3600));
    let (token, expires_at) = app.join_token_create(uses, ttl).await?;
    Ok((
        axum::http::StatusCode::CREATED,
        Json(JoinToken {
            token,
            uses,
            expires_at,
        }),
    ))
}
