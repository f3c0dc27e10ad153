//! VPC networking resources: VPCs, subnets and security groups.

use crate::ids::{SecurityGroupId, SubnetId, VpcId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// `POST /v1/vpcs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVpcRequest {
    pub name: String,
    /// IPv4 range of the VPC, e.g. `10.10.0.0/16` (prefix /8 to /28).
    pub cidr: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Vpc {
    pub id: VpcId,
    pub name: String,
    pub cidr: String,
    /// The VXLAN network identifier of the VPC's overlay (24 bits, unique).
    pub vni: u32,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/vpcs/{vpc}/subnets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSubnetRequest {
    pub name: String,
    /// Inside the VPC's range and overlapping no other subnet of it, e.g. `10.10.1.0/24`
    /// (prefix up to /29).
    pub cidr: String,
    /// Masquerade traffic from this subnet to the world outside the VPC.
    #[serde(default)]
    pub nat_egress: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Subnet {
    pub id: SubnetId,
    pub vpc_id: VpcId,
    pub name: String,
    pub cidr: String,
    /// The first address of the subnet; it lives on each node's VPC bridge.
    pub gateway: String,
    pub nat_egress: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Ingress,
    Egress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    All,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ingress" => Some(Direction::Ingress),
            "egress" => Some(Direction::Egress),
            _ => None,
        }
    }
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
            Protocol::All => "all",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            "icmp" => Some(Protocol::Icmp),
            "all" => Some(Protocol::All),
            _ => None,
        }
    }

    /// Whether port ranges apply.
    pub fn has_ports(self) -> bool {
        matches!(self, Protocol::Tcp | Protocol::Udp)
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One rule of a security group. Exactly one of `cidr` and `source_group` says who it
/// matches (the remote side: sources for ingress, destinations for egress).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupRule {
    pub direction: Direction,
    pub protocol: Protocol,
    /// Inclusive port range for tcp/udp; omit both for every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_min: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_max: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// Another security group (id or name): matches the addresses of its members.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_group: Option<String>,
}

/// `POST /v1/security-groups`; also the body of `PUT /v1/security-groups/{id}/rules`
/// (rules only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecurityGroupRequest {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub rules: Vec<SecurityGroupRule>,
}

/// `PUT /v1/security-groups/{id}/rules`: replaces every rule of the group at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplaceRulesRequest {
    pub rules: Vec<SecurityGroupRule>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct SecurityGroup {
    pub id: SecurityGroupId,
    pub name: String,
    pub description: String,
    /// Rules as stored; `source_group` holds the referenced group's id.
    pub rules: Vec<SecurityGroupRule>,
    pub created_at: DateTime<Utc>,
}

/// `POST /v1/instances/{id}/security-groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachSecurityGroupRequest {
    /// Id or name.
    pub security_group: String,
}
