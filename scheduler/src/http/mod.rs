//! The public REST API (axum): routing and middleware. Handlers are thin: parse → service →
//! response. Every `/v1` route declares its access in `v1_routes` (see `routes`).

mod audit;
mod console;
pub mod doc;
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
pub mod openapi;
mod page;
pub mod routes;
mod snapshots;
mod volumes;
mod ws;

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

/// Every `/v1` route with the access it needs and its description (for `/openapi.json`).
/// The only way routes get into `/v1`.
pub fn v1_routes() -> Routes {
    use crate::authz::*;
    use cloud_api as api;
    use doc::Doc;
    use routes::Gate::{Key, Public};
    let need = |p: Permission| Key(Access::Need(p));
    let any = Key(Access::AnyCaller);
    let logs_q: &'static [(&'static str, &'static str)] =
        &[("tail", "integer"), ("follow", "boolean")];
    let events_q: &'static [(&'static str, &'static str)] = &[
        ("after", "integer"),
        ("cursor", "integer"),
        ("limit", "integer"),
    ];
    let audit_q: &'static [(&'static str, &'static str)] = &[
        ("user", "string"),
        ("resource_type", "string"),
        ("resource_id", "string"),
        ("outcome", "string"),
        ("since", "string"),
        ("limit", "integer"),
        ("cursor", "string"),
    ];
    Routes::new()
        .get(
            "/instances",
            need(INSTANCE_READ),
            Doc::list::<api::Instance>("List the project's instances"),
            instances::list,
        )
        .post(
            "/instances",
            need(INSTANCE_WRITE),
            Doc::send::<api::CreateInstanceRequest, api::Instance>(
                "Create an instance (container or VM)",
                201,
            ),
            instances::create,
        )
        .get(
            "/instances/{id}",
            need(INSTANCE_READ),
            Doc::get::<api::Instance>("Show an instance"),
            instances::get,
        )
        .delete(
            "/instances/{id}",
            need(INSTANCE_WRITE),
            Doc::act::<api::Instance>("Delete an instance", 202),
            instances::delete,
        )
        .post(
            "/instances/{id}/stop",
            need(INSTANCE_WRITE),
            Doc::act::<api::Instance>("Stop an instance", 202),
            instances::stop,
        )
        .post(
            "/instances/{id}/start",
            need(INSTANCE_WRITE),
            Doc::act::<api::Instance>("Start an instance", 202),
            instances::start,
        )
        .get(
            "/instances/{id}/logs",
            need(INSTANCE_READ),
            Doc::text("An instance's output (serial console for VMs); ?follow=true is a WebSocket")
                .query(logs_q),
            instances::logs,
        )
        .get(
            "/instances/{id}/stats",
            need(INSTANCE_READ),
            Doc::get::<api::InstanceUsage>("The latest usage sample; ?follow=true is a WebSocket")
                .query(&[("follow", "boolean")]),
            follow::stats,
        )
        // Interactive: a console can change the guest.
        .get(
            "/instances/{id}/console",
            need(INSTANCE_WRITE),
            Doc::websocket("A VM's VNC console (RFB over WebSocket)"),
            console::console,
        )
        .post(
            "/instances/{id}/security-groups",
            need(INSTANCE_WRITE),
            Doc::send::<api::AttachSecurityGroupRequest, api::Instance>(
                "Add a security group to an instance",
                200,
            ),
            network::instance_sg_attach,
        )
        .delete(
            "/instances/{id}/security-groups/{group}",
            need(INSTANCE_WRITE),
            Doc::act::<api::Instance>("Remove a security group from an instance", 200),
            network::instance_sg_detach,
        )
        .get(
            "/vpcs",
            need(NETWORK_READ),
            Doc::list::<api::Vpc>("List VPCs"),
            network::vpc_list,
        )
        .post(
            "/vpcs",
            need(NETWORK_WRITE),
            Doc::send::<api::CreateVpcRequest, api::Vpc>("Create a VPC", 201),
            network::vpc_create,
        )
        .get(
            "/vpcs/{id}",
            need(NETWORK_READ),
            Doc::get::<api::Vpc>("Show a VPC"),
            network::vpc_get,
        )
        .delete(
            "/vpcs/{id}",
            need(NETWORK_WRITE),
            Doc::empty("Delete a VPC", 204),
            network::vpc_delete,
        )
        .get(
            "/vpcs/{id}/subnets",
            need(NETWORK_READ),
            Doc::list::<api::Subnet>("List a VPC's subnets"),
            network::subnet_list,
        )
        .post(
            "/vpcs/{id}/subnets",
            need(NETWORK_WRITE),
            Doc::send::<api::CreateSubnetRequest, api::Subnet>("Create a subnet", 201),
            network::subnet_create,
        )
        .get(
            "/vpcs/{id}/subnets/{subnet}",
            need(NETWORK_READ),
            Doc::get::<api::Subnet>("Show a subnet"),
            network::subnet_get,
        )
        .delete(
            "/vpcs/{id}/subnets/{subnet}",
            need(NETWORK_WRITE),
            Doc::empty("Delete a subnet", 204),
            network::subnet_delete,
        )
        .get(
            "/security-groups",
            need(NETWORK_READ),
            Doc::list::<api::SecurityGroup>("List security groups"),
            network::sg_list,
        )
        .post(
            "/security-groups",
            need(NETWORK_WRITE),
            Doc::send::<api::CreateSecurityGroupRequest, api::SecurityGroup>(
                "Create a security group",
                201,
            ),
            network::sg_create,
        )
        .get(
            "/security-groups/{id}",
            need(NETWORK_READ),
            Doc::get::<api::SecurityGroup>("Show a security group"),
            network::sg_get,
        )
        .delete(
            "/security-groups/{id}",
            need(NETWORK_WRITE),
            Doc::empty("Delete a security group", 204),
            network::sg_delete,
        )
        .put(
            "/security-groups/{id}/rules",
            need(NETWORK_WRITE),
            Doc::send::<api::ReplaceRulesRequest, api::SecurityGroup>(
                "Replace a security group's rules",
                200,
            ),
            network::sg_replace_rules,
        )
        .get(
            "/volumes",
            need(VOLUME_READ),
            Doc::list::<api::Volume>("List volumes"),
            volumes::list,
        )
        .post(
            "/volumes",
            need(VOLUME_WRITE),
            Doc::send::<api::CreateVolumeRequest, api::Volume>("Create a volume", 201),
            volumes::create,
        )
        .get(
            "/volumes/{id}",
            need(VOLUME_READ),
            Doc::get::<api::Volume>("Show a volume"),
            volumes::get,
        )
        .delete(
            "/volumes/{id}",
            need(VOLUME_WRITE),
            Doc::act::<api::Volume>("Delete a volume", 202),
            volumes::delete,
        )
        .post(
            "/volumes/{id}/resize",
            need(VOLUME_WRITE),
            Doc::send::<api::ResizeVolumeRequest, api::Volume>("Grow a volume", 200),
            volumes::resize,
        )
        .post(
            "/volumes/{id}/attach",
            need(VOLUME_WRITE),
            Doc::send::<api::AttachVolumeRequest, api::Volume>(
                "Attach a volume to an instance",
                200,
            ),
            volumes::attach,
        )
        .post(
            "/volumes/{id}/detach",
            need(VOLUME_WRITE),
            Doc::send::<volumes::DetachVolumeRequest, api::Volume>("Detach a volume", 200),
            volumes::detach,
        )
        .get(
            "/images",
            need(IMAGE_READ),
            Doc::list::<api::Image>("List VM images"),
            images::list,
        )
        // Images name files on the nodes, which QEMU then reads: only operators (image:write)
        // register or remove them, or a tenant could point a VM at another tenant's disk.
        .post(
            "/images",
            need(IMAGE_WRITE),
            Doc::send::<api::CreateImageRequest, api::Image>(
                "Register a VM image (operators)",
                201,
            ),
            images::create,
        )
        .get(
            "/images/{id}",
            need(IMAGE_READ),
            Doc::get::<api::Image>("Show a VM image"),
            images::get,
        )
        .delete(
            "/images/{id}",
            need(IMAGE_WRITE),
            Doc::empty("Unregister a VM image (operators)", 204),
            images::delete,
        )
        .get(
            "/snapshots",
            need(SNAPSHOT_READ),
            Doc::list::<api::Snapshot>("List snapshots").query(&[
                ("volume", "string"),
                ("limit", "integer"),
                ("cursor", "string"),
            ]),
            snapshots::list,
        )
        .post(
            "/snapshots",
            need(SNAPSHOT_WRITE),
            Doc::send::<api::CreateSnapshotRequest, api::Snapshot>("Snapshot a volume", 201),
            snapshots::create,
        )
        .get(
            "/snapshots/{id}",
            need(SNAPSHOT_READ),
            Doc::get::<api::Snapshot>("Show a snapshot"),
            snapshots::get,
        )
        .delete(
            "/snapshots/{id}",
            need(SNAPSHOT_WRITE),
            Doc::act::<api::Snapshot>("Delete a snapshot", 202),
            snapshots::delete,
        )
        .post(
            "/snapshots/{id}/restore",
            need(SNAPSHOT_WRITE),
            Doc::send::<api::RestoreSnapshotRequest, api::Volume>(
                "Restore a snapshot into a new volume",
                201,
            ),
            snapshots::restore,
        )
        .get(
            "/nodes",
            need(NODE_READ),
            Doc::list::<api::Node>("List nodes (operators)"),
            nodes::list,
        )
        .post(
            "/nodes/join-tokens",
            need(NODE_ADMIN),
            Doc::send::<api::CreateJoinTokenRequest, api::JoinToken>(
                "Make a join token (operators)",
                201,
            ),
            nodes::create_join_token,
        )
        .get(
            "/nodes/{id}",
            need(NODE_READ),
            Doc::get::<api::Node>("Show a node (operators)"),
            nodes::get,
        )
        .post(
            "/nodes/{id}/drain",
            need(NODE_ADMIN),
            Doc::act::<api::Node>(
                "Drain a node (operators): place nothing new on it and move its instances away, or with keep_instances=true leave them running (agent upgrades)",
                200,
            )
            .query(&[("keep_instances", "boolean")]),
            nodes::drain,
        )
        .post(
            "/nodes/{id}/undrain",
            need(NODE_ADMIN),
            Doc::act::<api::Node>("Undrain a node (operators)", 200),
            nodes::undrain,
        )
        .post(
            "/auth/register",
            Public,
            Doc::send::<api::RegisterRequest, api::CreatedApiKey>(
                "Create an account and a project (when enabled)",
                201,
            ),
            identity::register,
        )
        .post(
            "/auth/login",
            Public,
            Doc::send::<api::LoginRequest, api::CreatedApiKey>("Log in: a 12-hour API key", 201),
            identity::login,
        )
        .get(
            "/auth/keys",
            any,
            Doc::get::<Vec<api::ApiKey>>("List your API keys"),
            identity::key_list,
        )
        .post(
            "/auth/keys",
            any,
            Doc::send::<api::CreateApiKeyRequest, api::CreatedApiKey>("Make an API key", 201),
            identity::key_create,
        )
        .delete(
            "/auth/keys/{id}",
            any,
            Doc::empty("Revoke one of your API keys", 204),
            identity::key_revoke,
        )
        .post(
            "/auth/keys/{id}/rotate",
            any,
            Doc::send::<api::RotateApiKeyRequest, api::CreatedApiKey>("Rotate an API key", 201),
            identity::key_rotate,
        )
        .get(
            "/users",
            need(USER_READ),
            Doc::get::<Vec<api::User>>("List users (operators)"),
            identity::user_list,
        )
        .post(
            "/users",
            need(USER_WRITE),
            Doc::send::<api::CreateUserRequest, api::User>("Create a user (operators)", 201),
            identity::user_create,
        )
        .post(
            "/users/{id}/keys",
            need(USER_WRITE),
            Doc::send::<api::CreateApiKeyRequest, api::CreatedApiKey>(
                "Make a key for a user (operators)",
                201,
            ),
            identity::user_key_create,
        )
        .get(
            "/projects",
            any,
            Doc::get::<Vec<api::Project>>("Your projects (all, for operators)"),
            identity::project_list,
        )
        .post(
            "/projects",
            need(PROJECT_WRITE),
            Doc::send::<api::CreateProjectRequest, api::Project>(
                "Create a project (operators)",
                201,
            ),
            identity::project_create,
        )
        .put(
            "/projects/{id}/quota",
            need(PROJECT_WRITE),
            Doc::send::<api::Quota, api::Quota>("Set a project's quota (operators)", 200),
            identity::quota_set,
        )
        .get(
            "/quota",
            any,
            Doc::get::<api::QuotaStatus>("Your project's quota and usage"),
            identity::quota_get,
        )
        .get(
            "/roles",
            need(ROLE_READ),
            Doc::get::<Vec<api::Role>>("Built-in and custom roles"),
            identity::role_list,
        )
        .post(
            "/roles",
            need(ROLE_WRITE),
            Doc::send::<api::CreateRoleRequest, api::Role>("Create a custom role", 201),
            identity::role_create,
        )
        .delete(
            "/roles/{id}",
            need(ROLE_WRITE),
            Doc::empty("Delete a custom role", 204),
            identity::role_delete,
        )
        .get(
            "/bindings",
            need(BINDING_READ),
            Doc::get::<Vec<api::RoleBinding>>("The project's role bindings"),
            identity::binding_list,
        )
        .post(
            "/bindings",
            need(BINDING_WRITE),
            Doc::send_empty::<api::CreateBindingRequest>("Bind a user to a role", 201),
            identity::binding_create,
        )
        .delete(
            "/bindings",
            need(BINDING_WRITE),
            Doc::empty("Remove a binding (?user=&role=)", 204)
                .query(&[("user", "string"), ("role", "string")]),
            identity::binding_delete,
        )
        .get(
            "/audit",
            need(AUDIT_READ),
            Doc::get::<api::Page<api::AuditEntry>>("The project's audit log, newest first")
                .query(audit_q),
            audit::list,
        )
        .get(
            "/events",
            need(EVENT_READ),
            Doc::get::<api::Page<api::Event>>("Events after a seq, oldest first").query(events_q),
            events::list,
        )
        .get(
            "/ws/events",
            need(EVENT_READ),
            Doc::websocket("Live events (replay from ?after=SEQ)").query(&[("after", "integer")]),
            events::stream,
        )
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
        .route("/openapi.json", get(openapi_json))
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

/// The same `/v1` routes with a fixed caller in place of the API-key layer (no key lookup,
/// no hashing, no rate limit, no audit): only for measuring what those checks cost
/// (`api-bench`). The scheduler never serves it; nothing in its configuration can turn it on.
#[doc(hidden)]
pub fn router_without_auth(app: Arc<App>, caller: crate::services::Caller) -> Router {
    let (secured, public) = v1_routes().into_routers();
    let v1 = secured
        .route_layer(axum::middleware::from_fn(
            move |mut req: axum::extract::Request, next: axum::middleware::Next| {
                let caller = caller.clone();
                async move {
                    req.extensions_mut().insert(caller);
                    next.run(req).await
                }
            },
        ))
        .merge(public);
    Router::new()
        .nest("/v1", v1)
        .layer(axum::middleware::from_fn_with_state(
            app.clone(),
            middleware::request_context,
        ))
        .with_state(app)
}

/// The OpenAPI document of this build (public: it holds no data).
async fn openapi_json() -> impl IntoResponse {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    axum::Json(
        DOC.get_or_init(|| openapi::document(v1_routes().table()))
            .clone(),
    )
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
