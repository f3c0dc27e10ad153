//! The public REST API (axum): routing and middleware. Handlers are thin: parse → service →
//! response. Every `/v1` route declares its access in `v1_routes` (see `routes`).

mod audit;
mod console;
pub mod error;
mod events;
mod extract;
mod follow;
mod identity;
mod images;
mod instances;
mod middleware;
mod network;
mod nodes;
mod page;
pub mod routes;
mod snapshots;
mod volumes;

use crate::app::App;
use crate::error::Error;
use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use error::ApiError;
use routes::Routes;
use std::sync::Arc;

/// Largest request body accepted (JSON requests are small).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every `/v1` route with the access it needs. The only way routes get into `/v1`.
pub fn v1_routes() -> Routes {
    use crate::authz::*;
    use routes::Gate::{Key, Public};
    let need = |p: Permission| Key(Access::Need(p));
    let any = Key(Access::AnyCaller);
    Routes::new()
        .get("/instances", need(INSTANCE_READ), instances::list)
        .post("/instances", need(INSTANCE_WRITE), instances::create)
        .get("/instances/{id}", need(INSTANCE_READ), instances::get)
        .delete("/instances/{id}", need(INSTANCE_WRITE), instances::delete)
        .post(
            "/instances/{id}/stop",
            need(INSTANCE_WRITE),
            instances::stop,
        )
        .post(
            "/instances/{id}/start",
            need(INSTANCE_WRITE),
            instances::start,
        )
        .get("/instances/{id}/logs", need(INSTANCE_READ), instances::logs)
        .get("/instances/{id}/stats", need(INSTANCE_READ), follow::stats)
        // Interactive: a console can change the guest.
        .get(
            "/instances/{id}/console",
            need(INSTANCE_WRITE),
            console::console,
        )
        .post(
            "/instances/{id}/security-groups",
            need(INSTANCE_WRITE),
            network::instance_sg_attach,
        )
        .delete(
            "/instances/{id}/security-groups/{group}",
            need(INSTANCE_WRITE),
            network::instance_sg_detach,
        )
        .get("/vpcs", need(NETWORK_READ), network::vpc_list)
        .post("/vpcs", need(NETWORK_WRITE), network::vpc_create)
        .get("/vpcs/{id}", need(NETWORK_READ), network::vpc_get)
        .delete("/vpcs/{id}", need(NETWORK_WRITE), network::vpc_delete)
        .get(
            "/vpcs/{id}/subnets",
            need(NETWORK_READ),
            network::subnet_list,
        )
        .post(
            "/vpcs/{id}/subnets",
            need(NETWORK_WRITE),
            network::subnet_create,
        )
        .get(
            "/vpcs/{id}/subnets/{subnet}",
            need(NETWORK_READ),
            network::subnet_get,
        )
        .delete(
            "/vpcs/{id}/subnets/{subnet}",
            need(NETWORK_WRITE),
            network::subnet_delete,
        )
        .get("/security-groups", need(NETWORK_READ), network::sg_list)
        .post("/security-groups", need(NETWORK_WRITE), network::sg_create)
        .get("/security-groups/{id}", need(NETWORK_READ), network::sg_get)
        .delete(
            "/security-groups/{id}",
            need(NETWORK_WRITE),
            network::sg_delete,
        )
        .put(
            "/security-groups/{id}/rules",
            need(NETWORK_WRITE),
            network::sg_replace_rules,
        )
        .get("/volumes", need(VOLUME_READ), volumes::list)
        .post("/volumes", need(VOLUME_WRITE), volumes::create)
        .get("/volumes/{id}", need(VOLUME_READ), volumes::get)
        .delete("/volumes/{id}", need(VOLUME_WRITE), volumes::delete)
        .post("/volumes/{id}/resize", need(VOLUME_WRITE), volumes::resize)
        .post("/volumes/{id}/attach", need(VOLUME_WRITE), volumes::attach)
        .post("/volumes/{id}/detach", need(VOLUME_WRITE), volumes::detach)
        .get("/images", need(IMAGE_READ), images::list)
        .post("/images", need(IMAGE_WRITE), images::create)
        .get("/images/{id}", need(IMAGE_READ), images::get)
        .delete("/images/{id}", need(IMAGE_WRITE), images::delete)
        .get("/snapshots", need(SNAPSHOT_READ), snapshots::list)
        .post("/snapshots", need(SNAPSHOT_WRITE), snapshots::create)
        .get("/snapshots/{id}", need(SNAPSHOT_READ), snapshots::get)
        .delete("/snapshots/{id}", need(SNAPSHOT_WRITE), snapshots::delete)
        .post(
            "/snapshots/{id}/restore",
            need(SNAPSHOT_WRITE),
            snapshots::restore,
        )
        .get("/nodes", need(NODE_READ), nodes::list)
        .post(
            "/nodes/join-tokens",
            need(NODE_ADMIN),
            nodes::create_join_token,
        )
        .get("/nodes/{id}", need(NODE_READ), nodes::get)
        .post("/nodes/{id}/drain", need(NODE_ADMIN), nodes::drain)
        .post("/nodes/{id}/undrain", need(NODE_ADMIN), nodes::undrain)
        .post("/auth/register", Public, identity::register)
        .post("/auth/login", Public, identity::login)
        .get("/auth/keys", any, identity::key_list)
        .post("/auth/keys", any, identity::key_create)
        .delete("/auth/keys/{id}", any, identity::key_revoke)
        .post("/auth/keys/{id}/rotate", any, identity::key_rotate)
        .get("/users", need(USER_READ), identity::user_list)
        .post("/users", need(USER_WRITE), identity::user_create)
        .post(
            "/users/{id}/keys",
            need(USER_WRITE),
            identity::user_key_create,
        )
        .get("/projects", any, identity::project_list)
        .post("/projects", need(PROJECT_WRITE), identity::project_create)
        .put(
            "/projects/{id}/quota",
            need(PROJECT_WRITE),
            identity::quota_set,
        )
        .get("/quota", any, identity::quota_get)
        .get("/roles", need(ROLE_READ), identity::role_list)
        .post("/roles", need(ROLE_WRITE), identity::role_create)
        .delete("/roles/{id}", need(ROLE_WRITE), identity::role_delete)
        .get("/bindings", need(BINDING_READ), identity::binding_list)
        .post("/bindings", need(BINDING_WRITE), identity::binding_create)
        .delete("/bindings", need(BINDING_WRITE), identity::binding_delete)
        .get("/audit", need(AUDIT_READ), audit::list)
        .get("/events", need(EVENT_READ), events::list)
        .get("/ws/events", need(EVENT_READ), events::stream)
}

pub fn router(app: Arc<App>) -> Router {
    let (secured, public) = v1_routes().into_routers();
    let v1 = secured
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::require_api_key,
        ))
        .merge(public)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            audit::record,
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
