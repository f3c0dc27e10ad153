//! The OpenAPI 3.0 document, generated from the route table (paths, methods, access,
//! descriptions) and the API types' JSON schemas (schemars). Served at `/openapi.json` and
//! checked into the repository (`api/openapi.json`); a test fails when the two differ.

use super::doc::Body;
use super::routes::{Gate, RouteInfo};
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

/// The document for `routes`.
pub fn document(routes: &[RouteInfo]) -> Value {
    let mut generator = SchemaSettings::openapi3().into_generator();
    let error = generator.subschema_for::<cloud_api::ErrorEnvelope>();
    let mut paths: Map<String, Value> = Map::new();
    for r in routes {
        let path = format!("/v1{}", r.path);
        let op = operation(r, &mut generator, &error);
        let entry = paths
            .entry(path)
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(m) = entry {
            m.insert(r.method.to_ascii_lowercase(), op);
        }
    }
    let schemas = generator.take_definitions(true);
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "The Cloud API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Containers, VMs, VPCs and volumes. Authenticate with an API key in X-API-Key (or Authorization: Bearer). Errors carry {error: {code, message}, request_id}.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "apiKey": { "type": "apiKey", "in": "header", "name": "X-API-Key" }
            }
        }
    })
}

fn operation(
    r: &RouteInfo,
    generator: &mut schemars::SchemaGenerator,
    error: &schemars::Schema,
) -> Value {
    let doc = &r.doc;
    let mut params: Vec<Value> = r
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| {
            json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
        })
        .collect();
    params.extend(doc.query.iter().map(|(name, ty)| {
        json!({"name": name, "in": "query", "required": false, "schema": {"type": ty}})
    }));
    let mut responses = Map::new();
    let ok = match doc.response {
        Body::Json(f) => json!({
            "description": "OK",
            "content": {"application/json": {"schema": f(generator)}}
        }),
        Body::Empty => json!({"description": "Done"}),
        Body::Text => json!({
            "description": "Text",
            "content": {"text/plain": {"schema": {"type": "string"}}}
        }),
        Body::WebSocket => json!({"description": "Switching to the WebSocket protocol"}),
    };
    responses.insert(doc.status.to_string(), ok);
    responses.insert(
        "default".into(),
        json!({
            "description": "Error",
            "content": {"application/json": {"schema": error}}
        }),
    );
    let operation_id = format!(
        "{}{}",
        r.method.to_ascii_lowercase(),
        r.path
            .split(['/', '-'])
            .filter(|s| !s.is_empty())
            .map(|s| {
                let s = s.trim_start_matches('{').trim_end_matches('}');
                let mut c = s.chars();
                c.next()
                    .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<String>()
    );
    let mut op = json!({
        "summary": doc.summary,
        "operationId": operation_id,
        "parameters": params,
        "responses": responses,
        "x-access": match r.gate {
            Gate::Public => "public".to_string(),
            Gate::Key(a) => a.to_string(),
        },
    });
    op["security"] = match r.gate {
        Gate::Public => json!([]),
        Gate::Key(_) => json!([{"apiKey": []}]),
    };
    if let Some(f) = doc.request {
        op["requestBody"] = json!({
            "required": true,
            "content": {"application/json": {"schema": f(generator)}}
        });
    }
    op
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn generated() -> String {
        let doc = document(crate::http::v1_routes().table());
        let mut s = serde_json::to_string_pretty(&doc).unwrap();
        s.push('\n');
        s
    }

    /// The checked-in document is what the code generates. After changing the API, run
    /// `THECLOUD_UPDATE_OPENAPI=1 cargo test -p cloud-scheduler openapi` and commit the file.
    #[test]
    fn the_checked_in_openapi_document_matches_the_code() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../api/openapi.json");
        let now = generated();
        if std::env::var("THECLOUD_UPDATE_OPENAPI").as_deref() == Ok("1") {
            std::fs::write(&path, &now).unwrap();
        }
        let stored = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            stored == now,
            "api/openapi.json differs from the code: run THECLOUD_UPDATE_OPENAPI=1 cargo test -p cloud-scheduler openapi and commit it"
        );
    }

    #[test]
    fn every_route_is_an_operation_with_a_unique_id_and_resolvable_refs() {
        let routes = crate::http::v1_routes();
        let doc = document(routes.table());
        let mut ids = HashSet::new();
        for r in routes.table() {
            let op = &doc["paths"][format!("/v1{}", r.path)][r.method.to_ascii_lowercase()];
            assert!(op.is_object(), "{} {} missing", r.method, r.path);
            assert!(ids.insert(op["operationId"].as_str().unwrap().to_string()));
        }
        let text = serde_json::to_string(&doc).unwrap();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap();
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{name} is defined"
            );
        }
    }
}
