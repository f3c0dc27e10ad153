//! The networking part of the command tree: `cloud vpc`, `cloud subnet`, `cloud sg` and
//! `cloud instance sg`, plus the `--subnet` value parser of `cloud instance launch`.

use crate::rulespec::{RULE_SPEC_HELP, check_cidr, parse_rule};
use clap::{ArgGroup, Args, Subcommand};
use cloud_api::{SecurityGroupRule, SubnetId};
use std::net::Ipv4Addr;

#[derive(Debug, Subcommand)]
pub enum VpcCmd {
    /// Create a VPC: a private IPv4 network of its own (an overlay across the nodes).
    #[command(after_help = "Example:\n  cloud vpc create prod --cidr 10.10.0.0/16")]
    Create {
        /// VPC name (lowercase letters, digits and '-').
        name: String,
        /// IPv4 range of the VPC, prefix /8 to /28; subnets are carved out of it.
        #[arg(long, value_parser = parse_cidr)]
        cidr: String,
    },
    /// List the VPCs of your project.
    #[command(visible_alias = "ls", after_help = "Example:\n  cloud vpc list")]
    List,
    /// Show a VPC and its subnets.
    #[command(visible_alias = "get", after_help = "Example:\n  cloud vpc show prod")]
    Show(NetTarget),
    /// Delete a VPC and its subnets (refused while instances are in it).
    #[command(visible_alias = "delete", after_help = "Example:\n  cloud vpc rm prod")]
    Rm(NetTarget),
}

/// One VPC or security group, by name or id.
#[derive(Debug, Clone, Args)]
pub struct NetTarget {
    /// Name or id.
    #[arg(value_name = "NAME|ID")]
    pub name: String,
}

/// The VPC a subnet command works in.
#[derive(Debug, Clone, Args)]
pub struct VpcArg {
    /// The VPC (name or id).
    #[arg(long, value_name = "VPC")]
    pub vpc: String,
}

#[derive(Debug, Subcommand)]
pub enum SubnetCmd {
    /// Create a subnet in a VPC; its first address is the gateway.
    #[command(after_help = "Examples:\n  \
        cloud subnet create web --vpc prod --cidr 10.10.1.0/24\n  \
        cloud subnet create public --vpc prod --cidr 10.10.2.0/24 --nat-egress")]
    Create {
        /// Subnet name (lowercase letters, digits and '-').
        name: String,
        #[command(flatten)]
        vpc: VpcArg,
        /// IPv4 range inside the VPC's, overlapping no other subnet (prefix up to /29).
        #[arg(long, value_parser = parse_cidr)]
        cidr: String,
        /// Let instances reach the world outside the VPC (masqueraded by their node).
        #[arg(long)]
        nat_egress: bool,
    },
    /// List the subnets of a VPC.
    #[command(
        visible_alias = "ls",
        after_help = "Example:\n  cloud subnet list --vpc prod"
    )]
    List {
        #[command(flatten)]
        vpc: VpcArg,
    },
    /// Show one subnet of a VPC.
    #[command(
        visible_alias = "get",
        after_help = "Example:\n  cloud subnet show web --vpc prod"
    )]
    Show(SubnetTarget),
    /// Delete a subnet (refused while instances are in it).
    #[command(
        visible_alias = "delete",
        after_help = "Example:\n  cloud subnet rm web --vpc prod"
    )]
    Rm(SubnetTarget),
}

#[derive(Debug, Clone, Args)]
pub struct SubnetTarget {
    /// Subnet name or id.
    #[arg(value_name = "SUBNET")]
    pub subnet: String,
    #[command(flatten)]
    pub vpc: VpcArg,
}

const SG_CREATE_EXAMPLES: &str = "Examples:\n  \
    cloud sg create ssh --description 'SSH from anywhere' --rule ingress:tcp:22:0.0.0.0/0\n  \
    cloud sg create web --rule ingress:tcp:80:0.0.0.0/0 --rule ingress:tcp:443:0.0.0.0/0 \\\n      \
    --rule egress:all::0.0.0.0/0\n  \
    cloud sg create db --rule ingress:tcp:5432:sg=web";

#[derive(Debug, Subcommand)]
pub enum SgCmd {
    /// Create a security group: the firewall rules of the instances that use it.
    #[command(after_help = SG_CREATE_EXAMPLES)]
    Create {
        /// Group name (lowercase letters, digits and '-').
        name: String,
        /// What the group is for.
        #[arg(long, short)]
        description: Option<String>,
        #[command(flatten)]
        rules: RuleArgs,
    },
    /// List the security groups of your project.
    #[command(visible_alias = "ls", after_help = "Example:\n  cloud sg list")]
    List,
    /// Show a security group and its rules (as rule SPECs you can copy into --rule).
    #[command(visible_alias = "get", after_help = "Example:\n  cloud sg show web")]
    Show(NetTarget),
    /// Delete a security group (refused while instances or other groups' rules use it).
    #[command(visible_alias = "delete", after_help = "Example:\n  cloud sg rm web")]
    Rm(NetTarget),
    /// Change the rules of a security group: set (replace all), add or rm.
    #[command(
        subcommand,
        after_help = "Examples:\n  \
            cloud sg rules add web --rule ingress:tcp:443:0.0.0.0/0\n  \
            cloud sg rules rm web --rule ingress:tcp:22:0.0.0.0/0\n  \
            cloud sg rules set web --none"
    )]
    Rules(SgRulesCmd),
}

/// Repeatable `--rule SPEC`.
#[derive(Debug, Clone, Args)]
pub struct RuleArgs {
    /// A rule DIRECTION:PROTOCOL:PORTS:REMOTE, e.g. ingress:tcp:22:0.0.0.0/0 (repeatable;
    /// --help for the syntax).
    #[arg(long = "rule", value_name = "SPEC", value_parser = parse_rule, long_help = RULE_SPEC_HELP)]
    pub rules: Vec<SecurityGroupRule>,
}

#[derive(Debug, Subcommand)]
pub enum SgRulesCmd {
    /// Replace every rule of a group (`--none` removes them all).
    #[command(
        after_help = "Examples:\n  \
            cloud sg rules set web --rule ingress:tcp:80:0.0.0.0/0 --rule egress:all::0.0.0.0/0\n  \
            cloud sg rules set web --none",
        group(ArgGroup::new("what").required(true).args(["rules", "none"]))
    )]
    Set {
        /// Group name or id.
        #[arg(value_name = "SG")]
        group: String,
        #[command(flatten)]
        rules: RuleArgs,
        /// Remove every rule.
        #[arg(long)]
        none: bool,
    },
    /// Add rules to a group (rules it already has are left alone).
    ///
    /// Reads the group's rules and writes them back with the new ones; a concurrent change
    /// of the same group between the two may be lost.
    #[command(after_help = "Example:\n  cloud sg rules add web --rule ingress:tcp:8000-8080:sg=lb")]
    Add(RuleChange),
    /// Remove rules from a group; fails, changing nothing, when a rule is not in it.
    ///
    /// Reads the group's rules and writes back the others; a concurrent change of the same
    /// group between the two may be lost. Copy the SPEC from `cloud sg show`.
    #[command(after_help = "Example:\n  cloud sg rules rm web --rule ingress:tcp:22:0.0.0.0/0")]
    Rm(RuleChange),
}

#[derive(Debug, Clone, Args)]
pub struct RuleChange {
    /// Group name or id.
    #[arg(value_name = "SG")]
    pub group: String,
    /// A rule DIRECTION:PROTOCOL:PORTS:REMOTE, e.g. ingress:tcp:22:0.0.0.0/0 (repeatable;
    /// --help for the syntax).
    #[arg(long = "rule", value_name = "SPEC", value_parser = parse_rule, required = true,
          long_help = RULE_SPEC_HELP)]
    pub rules: Vec<SecurityGroupRule>,
}

#[derive(Debug, Subcommand)]
pub enum InstanceSgCmd {
    /// Add a security group to an instance (its rules apply at once; idempotent).
    #[command(after_help = "Example:\n  cloud instance sg add web ssh")]
    Add(InstanceSgArgs),
    /// Remove a security group from an instance (idempotent).
    #[command(
        visible_alias = "delete",
        after_help = "Example:\n  cloud instance sg rm web ssh"
    )]
    Rm(InstanceSgArgs),
}

#[derive(Debug, Clone, Args)]
pub struct InstanceSgArgs {
    /// Instance name or id.
    #[arg(value_name = "INSTANCE")]
    pub instance: String,
    /// Security group name or id.
    #[arg(value_name = "SG")]
    pub group: String,
}

/// `--subnet` of `cloud instance launch`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubnetRef {
    Id(SubnetId),
    /// `VPC/SUBNET`, names (or ids) resolved with the API.
    Path {
        vpc: String,
        subnet: String,
    },
}

impl SubnetRef {
    pub fn id(&self) -> Option<SubnetId> {
        match self {
            SubnetRef::Id(id) => Some(*id),
            SubnetRef::Path { .. } => None,
        }
    }
}

pub fn parse_subnet_ref(s: &str) -> Result<SubnetRef, String> {
    if let Ok(id) = s.parse::<SubnetId>() {
        return Ok(SubnetRef::Id(id));
    }
    match s.split_once('/') {
        Some((vpc, subnet)) if !vpc.is_empty() && !subnet.is_empty() && !subnet.contains('/') => {
            Ok(SubnetRef::Path {
                vpc: vpc.to_string(),
                subnet: subnet.to_string(),
            })
        }
        _ => Err(format!(
            "expected a subnet id or VPC/SUBNET (e.g. prod/web), got {s:?}"
        )),
    }
}

pub fn parse_cidr(s: &str) -> Result<String, String> {
    check_cidr(s)?;
    Ok(s.to_string())
}

/// An IPv4 address, kept as the string the API takes.
pub fn parse_ipv4(s: &str) -> Result<String, String> {
    s.parse::<Ipv4Addr>()
        .map(|ip| ip.to_string())
        .map_err(|_| format!("expected an IPv4 address like 10.10.1.5, got {s:?}"))
}

#[cfg(test)]
mod tests;
