//! What each route documents in the OpenAPI document: a summary, the request body, the
//! success status and response, and query parameters. Given to `Routes` next to the route's
//! access, so a route without its description does not compile either.

use schemars::{JsonSchema, Schema, SchemaGenerator};

/// Makes the schema of a type (registered in the generator's definitions).
pub type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

fn schema<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

#[derive(Clone, Copy)]
pub enum Body {
    Json(SchemaFn),
    Empty,
    Text,
    WebSocket,
}

#[derive(Clone, Copy)]
pub struct Doc {
    pub summary: &'static str,
    pub request: Option<SchemaFn>,
    pub status: u16,
    pub response: Body,
    /// (name, JSON type) of query parameters.
    pub query: &'static [(&'static str, &'static str)],
}

impl std::fmt::Debug for Doc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Doc")
            .field("summary", &self.summary)
            .field("status", &self.status)
            .finish()
    }
}

const PAGE: &[(&str, &str)] = &[("limit", "integer"), ("cursor", "string")];

impl Doc {
    /// 200 with a `T`.
    pub fn get<T: JsonSchema>(summary: &'static str) -> Self {
        Self {
            summary,
            request: None,
            status: 200,
            response: Body::Json(schema::<T>),
            query: &[],
        }
    }

    /// 200 with a page of `T` (`?limit=&cursor=`).
    pub fn list<T: JsonSchema>(summary: &'static str) -> Self {
        Self {
            query: PAGE,
            ..Self::get::<cloud_api::Page<T>>(summary)
        }
    }

    /// A `B` body answered with `status` and a `T`.
    pub fn send<B: JsonSchema, T: JsonSchema>(summary: &'static str, status: u16) -> Self {
        Self {
            summary,
            request: Some(schema::<B>),
            status,
            response: Body::Json(schema::<T>),
            query: &[],
        }
    }

    /// A `B` body answered with an empty `status` (201/204).
    pub fn send_empty<B: JsonSchema>(summary: &'static str, status: u16) -> Self {
        Self {
            summary,
            request: Some(schema::<B>),
            status,
            response: Body::Empty,
            query: &[],
        }
    }

    /// No body; an empty `status` (204, or 202 for deletions that take time).
    pub fn empty(summary: &'static str, status: u16) -> Self {
        Self {
            summary,
            request: None,
            status,
            response: Body::Empty,
            query: &[],
        }
    }

    /// No body; `status` with a `T` (202 for asynchronous changes).
    pub fn act<T: JsonSchema>(summary: &'static str, status: u16) -> Self {
        Self {
            status,
            ..Self::get::<T>(summary)
        }
    }

    pub fn text(summary: &'static str) -> Self {
        Self {
            summary,
            request: None,
            status: 200,
            response: Body::Text,
            query: &[],
        }
    }

    pub fn websocket(summary: &'static str) -> Self {
        Self {
            summary,
            request: None,
            status: 101,
            response: Body::WebSocket,
            query: &[],
        }
    }

    pub fn query(self, query: &'static [(&'static str, &'static str)]) -> Self {
        Self { query, ..self }
    }
}
