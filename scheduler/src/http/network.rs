//! `/v1/vpcs`, `/v1/vpcs/{vpc}/subnets`, `/v1/security-groups` and the security groups of an
//! instance: parse, call the service, shape the response.

use super::error::ApiResult;
use super::extract::{ApiJson, ApiPath, ApiPath2, ApiQuery};
use super::page;
use crate::app::App;
use crate::services::Caller;
use crate::views;
use axum::Json;
use axum::extract::{Extension, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use cloud_api::{
    AttachSecurityGroupRequest, CreateSecurityGroupRequest, CreateSubnetRequest, CreateVpcRequest,
    Instance, Page, PageQuery, ReplaceRulesRequest, SecurityGroup, SecurityGroupId, Subnet, Vpc,
    VpcId,
};
use std::sync::Arc;

fn created<T: serde::Serialize>(location: String, body: T) -> impl IntoResponse {
    (
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
}

// ---------------------------------------------------------------------- VPCs

pub async fn vpc_list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<Vpc>>> {
    let (after, limit) = page::parse::<VpcId>(&q)?;
    let items: Vec<Vpc> = app
        .vpc_list(&caller, after, limit)
        .await?
        .into_iter()
        .map(views::vpc)
        .collect();
    let next_cursor = page::next_cursor(&items, limit, |v| v.id.to_string());
    Ok(Json(Page { items, next_cursor }))
}

pub async fn vpc_create(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateVpcRequest>,
) -> ApiResult<impl IntoResponse> {
    let vpc = views::vpc(app.vpc_create(&caller, req).await?);
    Ok(created(format!("/v1/vpcs/{}", vpc.id), vpc))
}

pub async fn vpc_get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<Vpc>> {
    Ok(Json(views::vpc(app.vpc_lookup(&caller, &id).await?)))
}

pub async fn vpc_delete(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<StatusCode> {
    app.vpc_delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------- subnets

pub async fn subnet_list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(vpc): ApiPath,
) -> ApiResult<Json<Page<Subnet>>> {
    let items = app
        .subnet_list(&caller, &vpc)
        .await?
        .into_iter()
        .map(views::subnet)
        .collect();
    Ok(Json(Page {
        items,
        next_cursor: None,
    }))
}

pub async fn subnet_create(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(vpc): ApiPath,
    ApiJson(req): ApiJson<CreateSubnetRequest>,
) -> ApiResult<impl IntoResponse> {
    let s = views::subnet(app.subnet_create(&caller, &vpc, req).await?);
    Ok(created(
        format!("/v1/vpcs/{}/subnets/{}", s.vpc_id, s.id),
        s,
    ))
}

pub async fn subnet_get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath2(vpc, subnet): ApiPath2,
) -> ApiResult<Json<Subnet>> {
    Ok(Json(views::subnet(
        app.subnet_lookup(&caller, &vpc, &subnet).await?,
    )))
}

pub async fn subnet_delete(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath2(vpc, subnet): ApiPath2,
) -> ApiResult<StatusCode> {
    app.subnet_delete(&caller, &vpc, &subnet).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------- security groups

async fn sg_view(app: &App, g: crate::store::SecurityGroupRecord) -> ApiResult<SecurityGroup> {
    let mut v = app.sg_views(vec![g]).await?;
    Ok(v.pop()
        .ok_or_else(|| crate::error::Error::internal(anyhow::anyhow!("group view vanished")))?)
}

pub async fn sg_list(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<Page<SecurityGroup>>> {
    let (after, limit) = page::parse::<SecurityGroupId>(&q)?;
    let items = app.sg_list(&caller, after, limit).await?;
    let next_cursor = page::next_cursor(&items, limit, |g| g.id.to_string());
    Ok(Json(Page { items, next_cursor }))
}

pub async fn sg_create(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiJson(req): ApiJson<CreateSecurityGroupRequest>,
) -> ApiResult<impl IntoResponse> {
    let g = sg_view(&app, app.sg_create(&caller, req).await?).await?;
    Ok(created(format!("/v1/security-groups/{}", g.id), g))
}

pub async fn sg_get(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<Json<SecurityGroup>> {
    Ok(Json(
        sg_view(&app, app.sg_lookup(&caller, &id).await?).await?,
    ))
}

pub async fn sg_replace_rules(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
    ApiJson(req): ApiJson<ReplaceRulesRequest>,
) -> ApiResult<Json<SecurityGroup>> {
    let g = app.sg_replace_rules(&caller, &id, &req.rules).await?;
    Ok(Json(sg_view(&app, g).await?))
}

pub async fn sg_delete(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(id): ApiPath,
) -> ApiResult<StatusCode> {
    app.sg_delete(&caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------- instance ports

pub async fn instance_sg_attach(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath(instance): ApiPath,
    ApiJson(req): ApiJson<AttachSecurityGroupRequest>,
) -> ApiResult<Json<Instance>> {
    let r = app
        .instance_set_group(&caller, &instance, &req.security_group, true)
        .await?;
    Ok(Json(app.instance_view(r).await?))
}

pub async fn instance_sg_detach(
    State(app): State<Arc<App>>,
    Extension(caller): Extension<Caller>,
    ApiPath2(instance, group): ApiPath2,
) -> ApiResult<Json<Instance>> {
    let r = app
        .instance_set_group(&caller, &instance, &group, false)
        .await?;
    Ok(Json(app.instance_view(r).await?))
}
