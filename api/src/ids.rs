//! Typed ids: an `InstanceId` can never be passed where a `NodeId` is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! typed_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new, time-ordered (UUIDv7) id: sorting by id sorts by creation time.
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }
    };
}

typed_id!(
    /// Identifies an instance (container or VM).
    InstanceId
);
typed_id!(
    /// Identifies a compute node; it is also the subject of the node's client certificate.
    NodeId
);
typed_id!(
    /// Identifies a project (tenant).
    ProjectId
);
typed_id!(
    /// Identifies an API key.
    ApiKeyId
);
typed_id!(
    /// Identifies a VPC.
    VpcId
);
typed_id!(
    /// Identifies a subnet of a VPC.
    SubnetId
);
typed_id!(
    /// Identifies a security group.
    SecurityGroupId
);
typed_id!(
    /// Identifies a volume.
    VolumeId
);
typed_id!(
    /// Identifies a snapshot of a volume.
    SnapshotId
);
typed_id!(
    /// Identifies a VM image.
    ImageId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_through_strings_and_json() {
        let id = InstanceId::new();
        let parsed: InstanceId = id.to_string().parse().unwrap();
        assert_eq!(id, parsed);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert!("not-a-uuid".parse::<NodeId>().is_err());
    }

    #[test]
    fn new_ids_sort_by_creation() {
        let a = InstanceId::new();
        let b = InstanceId::new();
        assert!(a < b);
    }
}
