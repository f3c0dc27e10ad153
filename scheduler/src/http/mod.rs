//! The public REST API (axum): routing and middleware. Handlers are thin: parse → service →
//! response. Every `/v1` route requires an API key.

mod console;
pub mod error;
mod extract;
mod images;
mod instances;
mod middleware;
mod network;
mod nodes;
mod page;
mod snapshots;
mod volumes;

use crate::app::App;
use crate::error::Error;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{delete, get, post, put};
use error::ApiError;
use std::sync::Arc;

/// Largest request body accepted (JSON requests are small).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

pub fn router(app: Arc<App>) -> Router {
    let v1 = Router::new()
        .route("/instances", get(instances::list).post(instances::create))
        .route(
            "/instances/{id}",
            get(instances::get).delete(instances::delete),
        )
        .route("/instances/{id}/stop", post(instances::stop))
        .route("/instances/{id}/start", post(instances::start))
        .route("/instances/{id}/logs", get(instances::logs))
        .route("/instances/{id}/console", get(console::console))
        .route(
            "/instances/{id}/security-groups",
            post(network::instance_sg_attach),
        )
        .route(
            "/instances/{id}/security-groups/{group}",
            delete(network::instance_sg_detach),
        )
        .route("/vpcs", get(network::vpc_list).post(network::vpc_create))
        .route(
            "/vpcs/{id}",
            get(network::vpc_get).delete(network::vpc_delete),
        )
        .route(
            "/vpcs/{id}/subnets",
            get(network::subnet_list).post(network::subnet_create),
        )
        .route(
            "/vpcs/{id}/subnets/{subnet}",
            get(network::subnet_get).delete(network::subnet_delete),
        )
        .route(
            "/security-groups",
            get(network::sg_list).post(network::sg_create),
        )
        .route(
            "/security-groups/{id}",
            get(network::sg_get).delete(network::sg_delete),
        )
        .route(
            "/security-groups/{id}/rules",
            put(network::sg_replace_rules),
        )
        .route("/volumes", get(volumes::list).post(volumes::create))
        .route("/volumes/{id}", get(volumes::get).delete(volumes::delete))
        .route("/volumes/{id}/resize", post(volumes::resize))
        .route("/volumes/{id}/attach", post(volumes::attach))
        .route("/volumes/{id}/detach", post(volumes::detach))
        .route("/images", get(images::list).post(images::create))
        .route("/images/{id}", get(images::get).delete(images::delete))
        .route("/snapshots", get(snapshots::list).post(snapshots::create))
        .route(
            "/snapshots/{id}",
            get(snapshots::get).delete(snapshots::delete),
        )
        .route("/snapshots/{id}/restore", post(snapshots::restore))
        .route("/nodes", get(nodes::list))
        .route("/nodes/join-tokens", post(nodes::create_join_token))
        .route("/nodes/{id}", get(nodes::get))
        .route("/nodes/{id}/drain", post(nodes::drain))
        .route("/nodes/{id}/undrain", post(nodes::undrain))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::require_api_key,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .nest("/v1", v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::request_context,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready when the store answers.
async fn readyz(State(app): State<Arc<App>>) -> Result<&'static str, ApiError> {
    app.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "readiness check: the store does not answer");
        ApiError(Error::Unavailable("the store does not answer".into()))
    })?;
    Ok("ready\n")
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    crate::tasks::refresh_state_gauges(&app).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}

async fn not_found() -> ApiError {
    ApiError(Error::NotFound("no such endpoint".into()))
}

async fn method_not_allowed() -> impl IntoResponse {
    let mut resp = ApiError(Error::Malformed(
        "method not allowed on this endpoint".into(),
    ))
    .into_response();
    *resp.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    resp
}
