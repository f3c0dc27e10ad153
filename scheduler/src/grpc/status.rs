//! The one place service errors become gRPC statuses.

use crate::error::Error;
use tonic::Status;

pub fn to_status(e: Error) -> Status {
    match &e {
        Error::NotFound(m) => Status::not_found(m.clone()),
        Error::AlreadyExists(m) => Status::already_exists(m.clone()),
        Error::Malformed(m) | Error::Invalid(m) | Error::TooLarge(m) => {
            Status::invalid_argument(m.clone())
        }
        Error::Conflict(m) => Status::failed_precondition(m.clone()),
        Error::InsufficientCapacity(m) | Error::RateLimited(m, _) => {
            Status::resource_exhausted(m.clone())
        }
        Error::Unauthorized(m) => Status::unauthenticated(m.clone()),
        Error::Forbidden(m) => Status::permission_denied(m.clone()),
        Error::Unavailable(m) => Status::unavailable(m.clone()),
        Error::Internal(cause) => {
            tracing::error!(
                error = format!("{cause:#}"),
                "internal error in agent service"
            );
            Status::internal(e.public_message())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn maps_each_kind() {
        assert_eq!(
            to_status(Error::Unauthorized("x".into())).code(),
            Code::Unauthenticated
        );
        assert_eq!(
            to_status(Error::Forbidden("x".into())).code(),
            Code::PermissionDenied
        );
        assert_eq!(
            to_status(Error::AlreadyExists("x".into())).code(),
            Code::AlreadyExists
        );
        assert_eq!(
            to_status(Error::Invalid("x".into())).code(),
            Code::InvalidArgument
        );
        let internal = to_status(Error::internal(anyhow::anyhow!("secret detail")));
        assert_eq!(internal.code(), Code::Internal);
        assert!(!internal.message().contains("secret detail"));
    }
}
