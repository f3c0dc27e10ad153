//! Business rules, in one place: handlers (HTTP, gRPC) parse and call these; these call the
//! store and the session registry.

pub mod identity;
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

/// Who is calling the public API (from their API key): the key, its user, the project it acts
/// in, and what it may do there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: ApiKeyId,
    /// `None` only for keys made before users existed (they hold no permission).
    pub user: Option<uuid::Uuid>,
    pub project: ProjectId,
    pub permissions: std::sync::Arc<crate::authz::PermissionSet>,
}

impl Caller {
    pub fn can(&self, p: crate::authz::Permission) -> bool {
        self.permissions.allows(p)
    }

    /// Fleet operators manage nodes and images, and see fleet events and audit rows.
    pub fn is_operator(&self) -> bool {
        self.can(crate::authz::NODE_ADMIN)
    }
}
