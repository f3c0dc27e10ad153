//! Business rules, in one place: handlers (HTTP, gRPC) parse and call these; these call the
//! store and the session registry.

pub mod images;
pub mod instances;
pub mod netcheck;
pub mod network;
pub mod nodes;
pub mod snapshots;
pub mod validate;
pub mod volumes;

use cloud_api::ProjectId;
use cloud_api::ids::ApiKeyId;

/// Who is calling the public API (from their API key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub key_id: ApiKeyId,
    pub project: ProjectId,
    pub is_admin: bool,
}
