//! Extractors whose rejections use the error envelope: JSON bodies (unknown fields rejected)
//! and query strings.

use super::error::ApiError;
use crate::error::Error;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use serde::de::DeserializeOwned;

/// A JSON body. Unparseable JSON is 400; well-formed JSON with missing, unknown or mistyped
/// fields is 422 with serde's message, which names the field.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("application/json") || ct.contains("+json"));
        if !is_json {
            return Err(ApiError(Error::Malformed(
                "expected a JSON body with Content-Type: application/json".into(),
            )));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError(Error::TooLarge(format!(
                    "the request body is larger than {} bytes",
                    super::MAX_BODY_BYTES
                )))
            } else {
                ApiError(Error::Malformed(format!(
                    "cannot read the request body: {e}"
                )))
            }
        })?;
        parse_json(&bytes).map(ApiJson).map_err(ApiError)
    }
}

pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data if path == "." || path.is_empty() => {
                Error::Invalid(format!("invalid request body: {inner}"))
            }
            serde_json::error::Category::Data => Error::Invalid(format!("{path}: {inner}")),
            _ => Error::Malformed(format!("malformed JSON: {inner}")),
        }
    })?;
    de.end()
        .map_err(|e| Error::Malformed(format!("malformed JSON: {e}")))?;
    Ok(value)
}

/// The `{id}` path segment (an id or a name); undecodable segments get the envelope too.
pub struct ApiPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|e| ApiError(Error::Malformed(format!("invalid path: {}", e.body_text()))))
    }
}

/// Two path parameters (`/vpcs/{vpc}/subnets/{subnet}`), with the error envelope.
pub struct ApiPath2(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for ApiPath2 {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath2(p.0.0, p.0.1))
            .map_err(|e| ApiError(Error::Malformed(format!("invalid path: {}", e.body_text()))))
    }
}

/// A query string; unknown or malformed parameters are 400 with a message naming them.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|e| {
                ApiError(Error::Malformed(format!(
                    "invalid query string: {}",
                    e.body_text()
                )))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloud_api::CreateInstanceRequest;

    #[test]
    fn syntax_errors_are_malformed_and_field_errors_invalid() {
        let e = parse_json::<CreateInstanceRequest>(b"{not json").unwrap_err();
        assert!(matches!(e, Error::Malformed(_)), "{e:?}");
        let e =
            parse_json::<CreateInstanceRequest>(br#"{"image":"x","cpu_millis":1}"#).unwrap_err();
        assert!(
            matches!(e, Error::Invalid(ref m) if m.contains("memory_mb")),
            "{e:?}"
        );
        let e =
            parse_json::<CreateInstanceRequest>(br#"{"image":"x","cpu_millis":-5,"memory_mb":6}"#)
                .unwrap_err();
        assert!(
            matches!(e, Error::Invalid(ref m) if m.starts_with("cpu_millis:")),
            "{e:?}"
        );
        let e = parse_json::<CreateInstanceRequest>(
            br#"{"image":"x","cpu_millis":1,"memory_mb":6,"gpu":1}"#,
        )
        .unwrap_err();
        assert!(
            matches!(e, Error::Invalid(ref m) if m.contains("gpu")),
            "{e:?}"
        );
        let e = parse_json::<CreateInstanceRequest>(
            br#"{"image":"x","cpu_millis":1,"memory_mb":6} trailing"#,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Malformed(_)), "{e:?}");
    }
}
