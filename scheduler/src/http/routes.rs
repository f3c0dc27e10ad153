//! The `/v1` route table. Routes get into `/v1` only through [`Routes`], and every method of
//! it takes the route's [`Access`]: an endpoint without a declared permission does not compile.
//! Authenticated routes sit behind the API-key layer and a per-route permission check; public
//! ones (login, registration) are declared as such. The table is also listed (method, path,
//! access) for the RBAC and cross-tenant tests, so a new endpoint is covered by them at once.

use super::doc::Doc;
use super::error::ApiError;
use crate::app::App;
use crate::authz::Access;
use crate::error::Error;
use crate::services::Caller;
use axum::Router;
use axum::extract::Request;
use axum::handler::Handler;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use std::sync::Arc;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// No key (login, registration).
    Public,
    /// A valid key with this access.
    Key(Access),
}

/// One row of the route table.
#[derive(Debug, Clone)]
pub struct RouteInfo {
    pub method: &'static str,
    /// Under `/v1`, with `{param}` placeholders.
    pub path: &'static str,
    pub gate: Gate,
    pub doc: Doc,
}

/// Builds `/v1`: the authenticated and the public routes, and their table.
#[derive(Default)]
pub struct Routes {
    secured: Router<Arc<App>>,
    public: Router<Arc<App>>,
    table: Vec<RouteInfo>,
}

/// Checks the caller (put there by the API-key layer) against the route's access.
async fn authorize(access: Access, req: Request, next: Next) -> Response {
    let allowed = req
        .extensions()
        .get::<Caller>()
        .map(|c| c.permissions.permits(access));
    match allowed {
        Some(true) => next.run(req).await,
        Some(false) => ApiError(Error::Forbidden(format!(
            "this key's roles do not allow {access} in its project"
        )))
        .into_response(),
        None => ApiError(Error::Unauthorized("a valid API key is required".into())).into_response(),
    }
}

macro_rules! method {
    ($name:ident, $verb:literal, $make:ident) => {
        pub fn $name<H, T>(self, path: &'static str, gate: Gate, doc: Doc, handler: H) -> Self
        where
            H: Handler<T, Arc<App>>,
            T: 'static,
        {
            self.add($verb, path, gate, doc, $make(handler))
        }
    };
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    fn add(
        mut self,
        method: &'static str,
        path: &'static str,
        gate: Gate,
        doc: Doc,
        route: MethodRouter<Arc<App>>,
    ) -> Self {
        self.table.push(RouteInfo {
            method,
            path,
            gate,
            doc,
        });
        match gate {
            Gate::Public => self.public = self.public.route(path, route),
            Gate::Key(access) => {
                let route = route.route_layer(axum::middleware::from_fn(
                    move |req: Request, next: Next| authorize(access, req, next),
                ));
                self.secured = self.secured.route(path, route);
            }
        }
        self
    }

    method!(get, "GET", get);
    method!(post, "POST", post);
    method!(put, "PUT", put);
    method!(delete, "DELETE", delete);

    pub fn table(&self) -> &[RouteInfo] {
        &self.table
    }

    /// (authenticated routes, public routes).
    pub fn into_routers(self) -> (Router<Arc<App>>, Router<Arc<App>>) {
        (self.secured, self.public)
    }
}
