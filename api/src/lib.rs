//! The public REST contract of The Cloud (v1): request/response types, the error envelope,
//! typed ids, and a typed HTTP client used by the CLI and the tests.
//!
//! No server dependencies live here: this crate is what a user program links against.

pub mod client;
mod client_console;
mod client_identity;
mod client_image;
mod client_network;
mod client_snapshot;
mod client_volume;
pub mod error;
pub mod event;
pub mod identity;
pub mod ids;
pub mod image;
pub mod instance;
pub mod network;
pub mod node;
pub mod quantity;
pub mod snapshot;
pub mod volume;

pub use reqwest::Method;

pub use client::{Client, ClientError};
pub use client_console::ConsoleStream;
pub use error::{ErrorBody, ErrorCode, ErrorEnvelope};
pub use event::Event;
pub use identity::{
    ApiKey, AuditEntry, CreateApiKeyRequest, CreateBindingRequest, CreateProjectRequest,
    CreateRoleRequest, CreateUserRequest, CreatedApiKey, LoginRequest, Project, Quota, QuotaStatus,
    QuotaUsage as ProjectUsage, RegisterRequest, Role, RoleBinding, RotateApiKeyRequest, User,
};
pub use ids::{
    ImageId, InstanceId, NodeId, ProjectId, SecurityGroupId, SnapshotId, SubnetId, VolumeId, VpcId,
};
pub use image::{CreateImageRequest, Image, ImageFormat};
pub use instance::{
    CreateInstanceRequest, GroupPolicy, Instance, InstanceKind, InstanceStatus, InstanceUsage,
    InstanceVm, MAX_USER_DATA_BYTES, PlacementGroup, PlacementStrategy, RestartPolicy, RunState,
};
pub use network::{
    AttachSecurityGroupRequest, CreateSecurityGroupRequest, CreateSubnetRequest, CreateVpcRequest,
    Direction, Protocol, ReplaceRulesRequest, SecurityGroup, SecurityGroupRule, Subnet, Vpc,
};
pub use node::{CreateJoinTokenRequest, DrainMode, DrainQuery, JoinToken};
pub use node::{HostUsage, Node, NodeStatus, Resources, VolumePool};
pub use snapshot::{CreateSnapshotRequest, RestoreSnapshotRequest, Snapshot, SnapshotStatus};
pub use volume::{
    AttachVolumeRequest, CreateVolumeRequest, MAX_VOLUME_GB, ResizeVolumeRequest, Volume,
    VolumeMount, VolumeStatus,
};

use serde::{Deserialize, Serialize};

/// Header carrying the API key (`Authorization: Bearer <key>` is accepted too).
pub const API_KEY_HEADER: &str = "x-api-key";
/// Header carrying the request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// Default page size of list endpoints.
pub const DEFAULT_PAGE_LIMIT: u32 = 100;
/// Largest page size a list endpoint returns.
pub const MAX_PAGE_LIMIT: u32 = 1000;

/// A page of a list endpoint: `{"items": [...], "next_cursor": "..." | null}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// `?limit=N&cursor=C` of list endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}
