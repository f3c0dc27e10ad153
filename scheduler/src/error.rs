//! The scheduler's service error: one variant per public taxonomy code. HTTP and gRPC map it
//! to their status codes in exactly one place each (`http::error`, `grpc::status`).

use crate::store::StoreError;
use cloud_api::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// Input that could not be parsed at all (HTTP 400).
    #[error("{0}")]
    Malformed(String),
    /// Well-formed input with invalid values (HTTP 422). The message names the field.
    #[error("{0}")]
    Invalid(String),
    /// A request body over the size limit (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InsufficientCapacity(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    /// Over a rate limit; retry after this many seconds (HTTP 429 with `Retry-After`).
    #[error("{0}")]
    RateLimited(String, u64),
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an infrastructure failure. The message shown to users is generic; the cause is
    /// logged with the request id.
    #[error("internal error: {0}")]
    Internal(#[source] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NotFound(_) => ErrorCode::NotFound,
            Error::AlreadyExists(_) => ErrorCode::AlreadyExists,
            Error::Malformed(_) | Error::Invalid(_) | Error::TooLarge(_) => {
                ErrorCode::InvalidRequest
            }
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::InsufficientCapacity(_) => ErrorCode::InsufficientCapacity,
            Error::Unauthorized(_) => ErrorCode::Unauthorized,
            Error::Forbidden(_) => ErrorCode::Forbidden,
            Error::RateLimited(..) => ErrorCode::RateLimited,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        Error::Internal(e.into())
    }

    /// The message safe to show a client.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error; the scheduler log has the details".into(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Error::NotFound("not found".into()),
            StoreError::Duplicate => Error::AlreadyExists("already exists".into()),
            StoreError::Conflict => Error::Conflict("concurrent update; retry".into()),
            StoreError::InUse(m) => Error::Conflict(m),
            StoreError::Rejected(m) => Error::Invalid(m),
            StoreError::QuotaExceeded(m) => Error::Forbidden(m),
            other => Error::Internal(other.into()),
        }
    }
}
