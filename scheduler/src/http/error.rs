//! The one place service errors become HTTP responses: status code + the error envelope
//! `{"error": {"code", "message"}, "request_id"}`.

use crate::error::Error;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cloud_api::{ErrorBody, ErrorEnvelope};

tokio::task_local! {
    /// The id of the request being served (set by the request-context middleware).
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> String {
    REQUEST_ID.try_with(Clone::clone).unwrap_or_default()
}

/// An error answered to an HTTP client.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ApiError(e.into())
    }
}

pub fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::Malformed(_) => StatusCode::BAD_REQUEST,
        Error::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        other => StatusCode::from_u16(other.code().http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = current_request_id();
        let status = status_of(&self.0);
        if let Error::Internal(cause) = &self.0 {
            tracing::error!(request_id = %request_id, error = format!("{cause:#}"), "internal error");
        }
        let body = ErrorEnvelope {
            error: ErrorBody {
                code: self.0.code(),
                message: self.0.public_message(),
            },
            request_id,
        };
        let mut resp = (status, Json(body)).into_response();
        if let Error::RateLimited(_, secs) = &self.0 {
            resp.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, (*secs).into());
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_taxonomy() {
        let cases = [
            (Error::NotFound(String::new()), 404),
            (Error::AlreadyExists(String::new()), 409),
            (Error::Malformed(String::new()), 400),
            (Error::Invalid(String::new()), 422),
            (Error::TooLarge(String::new()), 413),
            (Error::Conflict(String::new()), 409),
            (Error::InsufficientCapacity(String::new()), 409),
            (Error::Unauthorized(String::new()), 401),
            (Error::Forbidden(String::new()), 403),
            (Error::Unavailable(String::new()), 503),
            (Error::internal(anyhow::anyhow!("x")), 500),
        ];
        for (e, code) in cases {
            assert_eq!(status_of(&e).as_u16(), code, "{e:?}");
        }
    }
}
