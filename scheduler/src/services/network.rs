//! VPCs, subnets and security groups: the business rules (validation, VXLAN ids, overlap
//! checks, source group resolution) and instance ports (which subnet, address, groups).

use super::{Caller, netcheck, validate};
use crate::app::App;
use crate::error::{Error, Result};
use crate::store::{NewRule, SecurityGroupRecord, StoreError, SubnetRecord, VpcRecord};
use cloud_api::{
    CreateInstanceRequest, CreateSecurityGroupRequest, CreateSubnetRequest, CreateVpcRequest,
    InstanceId, SecurityGroupId, SecurityGroupRule, SubnetId, VpcId,
};
use rand::Rng;
use uuid::Uuid;

/// VXLAN ids are 24 bits, but agents derive each VPC's transit /30 from the low 20 bits, so
/// ids are drawn from 20 bits: unique ids then never collide on a host. 0 is avoided.
const MAX_VNI: u32 = (1 << 20) - 1;
/// Attempts at drawing an unused VXLAN id before giving up.
const VNI_ATTEMPTS: usize = 16;

/// A new instance's port, resolved from its create request.
#[derive(Debug, Clone, Default)]
pub struct PortRequest {
    pub subnet_id: Option<Uuid>,
    pub private_ip: Option<String>,
    pub security_groups: Vec<Uuid>,
}

fn not_found(what: &str, id_or_name: &str) -> impl FnOnce(StoreError) -> Error {
    let msg = format!("{what} {id_or_name:?} not found");
    move |e| match e {
        StoreError::NotFound => Error::NotFound(msg),
        other => other.into(),
    }
}

impl App {
    /// API views of instances, with the security groups of those that have a port.
    pub async fn instance_views(
        &self,
        records: Vec<crate::store::InstanceRecord>,
    ) -> Result<Vec<cloud_api::Instance>> {
        let with_port: Vec<Uuid> = records
            .iter()
            .filter(|r| r.subnet_id.is_some())
            .map(|r| r.id)
            .collect();
        let mut groups: std::collections::HashMap<Uuid, Vec<Uuid>> = Default::default();
        for (inst, group) in self.store.groups_of_instances(&with_port).await? {
            groups.entry(inst).or_default().push(group);
        }
        let mut mounts: std::collections::HashMap<Uuid, Vec<cloud_api::VolumeMount>> =
            Default::default();
        let on_volume_nodes: Vec<Uuid> = records
            .iter()
            .filter(|r| r.node_id.is_some_and(|n| self.has_volumes(n)))
            .map(|r| r.id)
            .collect();
        for (inst, volume, path) in self.store.mounts_of_instances(&on_volume_nodes).await? {
            mounts
                .entry(inst)
                .or_default()
                .push(cloud_api::VolumeMount {
                    volume: volume.to_string(),
                    mount_path: path,
                });
        }
        records
            .into_iter()
            .map(|r| {
                let g = groups.remove(&r.id).unwrap_or_default();
                let m = mounts.remove(&r.id).unwrap_or_default();
                crate::views::instance(r, g, m, &self.sessions)
            })
            .collect()
    }

    pub async fn instance_view(
        &self,
        record: crate::store::InstanceRecord,
    ) -> Result<cloud_api::Instance> {
        let mut v = self.instance_views(vec![record]).await?;
        v.pop()
            .ok_or_else(|| Error::internal(anyhow::anyhow!("instance view vanished")))
    }

    // ------------------------------------------------------------------ VPCs

    pub async fn vpc_create(&self, caller: &Caller, req: CreateVpcRequest) -> Result<VpcRecord> {
        validate::name("name", &req.name)?;
        let cidr = netcheck::vpc_cidr(&req.cidr)?;
        if self.store.vpc_name_taken(caller.project, &req.name).await? {
            return Err(Error::AlreadyExists(format!(
                "a VPC named {:?} already exists in this project",
                req.name
            )));
        }
        for _ in 0..VNI_ATTEMPTS {
            let rec = VpcRecord {
                id: VpcId::new().0,
                project_id: caller.project.0,
                name: req.name.clone(),
                cidr: cidr.to_string(),
                vni: i64::from(rand::rng().random_range(1..=MAX_VNI)),
                created_at: chrono::Utc::now(),
            };
            match self.store.vpc_insert(&rec).await {
                Ok(()) => return Ok(rec),
                // Either the name was taken concurrently or the VXLAN id is in use: tell
                // them apart and draw again for the latter.
                Err(StoreError::Duplicate) => {
                    if self.store.vpc_name_taken(caller.project, &req.name).await? {
                        return Err(Error::AlreadyExists(format!(
                            "a VPC named {:?} already exists in this project",
                            req.name
                        )));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unavailable(
            "could not find a free VXLAN id; retry".into(),
        ))
    }

    pub async fn vpc_lookup(&self, caller: &Caller, id_or_name: &str) -> Result<VpcRecord> {
        let found = match id_or_name.parse::<VpcId>() {
            Ok(id) => self.store.vpc_get(caller.project, id).await,
            Err(_) => self.store.vpc_get_by_name(caller.project, id_or_name).await,
        };
        found.map_err(not_found("VPC", id_or_name))
    }

    pub async fn vpc_list(
        &self,
        caller: &Caller,
        after: Option<VpcId>,
        limit: u32,
    ) -> Result<Vec<VpcRecord>> {
        Ok(self.store.vpc_list(caller.project, after, limit).await?)
    }

    /// Deletes a VPC and its subnets; 409 while instances are in it.
    pub async fn vpc_delete(&self, caller: &Caller, id_or_name: &str) -> Result<()> {
        let vpc = self.vpc_lookup(caller, id_or_name).await?;
        self.store
            .vpc_delete(caller.project, VpcId(vpc.id))
            .await
            .map_err(not_found("VPC", id_or_name))
    }

    // ------------------------------------------------------------------ subnets

    pub async fn subnet_create(
        &self,
        caller: &Caller,
        vpc: &str,
        req: CreateSubnetRequest,
    ) -> Result<SubnetRecord> {
        let vpc = self.vpc_lookup(caller, vpc).await?;
        validate::name("name", &req.name)?;
        let vpc_net = netcheck::cidr("cidr", &vpc.cidr)
            .map_err(|_| Error::internal(anyhow::anyhow!("stored VPC cidr {:?}", vpc.cidr)))?;
        // Shape and containment first (clear errors without a transaction) …
        let net = netcheck::subnet_cidr(&req.cidr, vpc_net, &[])?;
        let rec = SubnetRecord {
            id: SubnetId::new().0,
            project_id: caller.project.0,
            vpc_id: vpc.id,
            name: req.name.clone(),
            cidr: net.to_string(),
            gateway: netcheck::gateway(net).to_string(),
            nat_egress: req.nat_egress,
            created_at: chrono::Utc::now(),
        };
        // … then overlaps and the name, under the VPC's lock.
        let name = req.name.clone();
        let raw = req.cidr.clone();
        let check = move |others: &[(String, String)]| -> std::result::Result<(), String> {
            if others.iter().any(|(n, _)| *n == name) {
                return Err(format!(
                    "name: a subnet named {name:?} already exists in this VPC"
                ));
            }
            let parsed: Vec<(String, ipnet::Ipv4Net)> = others
                .iter()
                .filter_map(|(n, c)| Some((n.clone(), c.parse().ok()?)))
                .collect();
            netcheck::subnet_cidr(&raw, vpc_net, &parsed)
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        match self.store.subnet_insert(&rec, check).await {
            Ok(()) => Ok(rec),
            Err(StoreError::Rejected(m)) if m.starts_with("name:") => Err(Error::AlreadyExists(m)),
            Err(StoreError::Duplicate) => Err(Error::AlreadyExists(format!(
                "name: a subnet named {:?} already exists in this VPC",
                req.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn subnet_list(&self, caller: &Caller, vpc: &str) -> Result<Vec<SubnetRecord>> {
        let vpc = self.vpc_lookup(caller, vpc).await?;
        Ok(self
            .store
            .subnet_list(caller.project, VpcId(vpc.id))
            .await?)
    }

    pub async fn subnet_lookup(
        &self,
        caller: &Caller,
        vpc: &str,
        id_or_name: &str,
    ) -> Result<SubnetRecord> {
        let vpc = self.vpc_lookup(caller, vpc).await?;
        let found = match id_or_name.parse::<SubnetId>() {
            Ok(id) => self
                .store
                .subnet_get(caller.project, id)
                .await
                .and_then(|s| {
                    if s.vpc_id == vpc.id {
                        Ok(s)
                    } else {
                        Err(StoreError::NotFound)
                    }
                }),
            Err(_) => {
                self.store
                    .subnet_get_by_name(caller.project, VpcId(vpc.id), id_or_name)
                    .await
            }
        };
        found.map_err(not_found("subnet", id_or_name))
    }

    pub async fn subnet_delete(&self, caller: &Caller, vpc: &str, id_or_name: &str) -> Result<()> {
        let s = self.subnet_lookup(caller, vpc, id_or_name).await?;
        self.store
            .subnet_delete(caller.project, SubnetId(s.id))
            .await
            .map_err(not_found("subnet", id_or_name))
    }

    // ------------------------------------------------------------------ security groups

    pub async fn sg_lookup(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<SecurityGroupRecord> {
        let found = match id_or_name.parse::<SecurityGroupId>() {
            Ok(id) => self.store.sg_get(caller.project, id).await,
            Err(_) => self.store.sg_get_by_name(caller.project, id_or_name).await,
        };
        found.map_err(not_found("security group", id_or_name))
    }

    /// API views of security groups with their rules (one rules query for all).
    pub async fn sg_views(
        &self,
        groups: Vec<SecurityGroupRecord>,
    ) -> Result<Vec<cloud_api::SecurityGroup>> {
        let ids: Vec<Uuid> = groups.iter().map(|g| g.id).collect();
        let mut by_group: std::collections::HashMap<Uuid, Vec<crate::store::RuleRecord>> =
            Default::default();
        for r in self.store.sg_rules(&ids).await? {
            by_group.entry(r.group_id).or_default().push(r);
        }
        groups
            .into_iter()
            .map(|g| {
                let rules = by_group.remove(&g.id).unwrap_or_default();
                crate::views::security_group(g, rules)
            })
            .collect()
    }

    pub async fn sg_list(
        &self,
        caller: &Caller,
        after: Option<SecurityGroupId>,
        limit: u32,
    ) -> Result<Vec<cloud_api::SecurityGroup>> {
        let groups = self.store.sg_list(caller.project, after, limit).await?;
        self.sg_views(groups).await
    }

    /// Validates rules and resolves their source groups (`own` = the group being written, by
    /// name and id, so a group may name itself).
    async fn sg_rules(
        &self,
        caller: &Caller,
        rules: &[SecurityGroupRule],
        own: (&str, Uuid),
    ) -> Result<Vec<NewRule>> {
        if rules.len() > netcheck::MAX_RULES {
            return Err(Error::Invalid(format!(
                "rules: at most {} rules per group, got {}",
                netcheck::MAX_RULES,
                rules.len()
            )));
        }
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let (port_min, port_max) = netcheck::rule(i, r)?;
            let source_group_id = match &r.source_group {
                None => None,
                Some(g) if g == own.0 || *g == own.1.to_string() => Some(own.1),
                Some(g) => Some(
                    self.sg_lookup(caller, g)
                        .await
                        .map_err(|e| match e {
                            Error::NotFound(_) => Error::Invalid(format!(
                                "rules[{i}].source_group: security group {g:?} not found"
                            )),
                            other => other,
                        })?
                        .id,
                ),
            };
            out.push(NewRule {
                direction: r.direction.as_str().to_string(),
                protocol: r.protocol.as_str().to_string(),
                port_min,
                port_max,
                cidr: r.cidr.as_ref().map(|c| c.trim().to_string()),
                source_group_id,
            });
        }
        Ok(out)
    }

    pub async fn sg_create(
        &self,
        caller: &Caller,
        req: CreateSecurityGroupRequest,
    ) -> Result<SecurityGroupRecord> {
        validate::name("name", &req.name)?;
        if req.description.len() > 1024 {
            return Err(Error::Invalid("description: at most 1024 bytes".into()));
        }
        let id = SecurityGroupId::new().0;
        let rules = self.sg_rules(caller, &req.rules, (&req.name, id)).await?;
        let rec = SecurityGroupRecord {
            id,
            project_id: caller.project.0,
            name: req.name.clone(),
            description: req.description,
            created_at: chrono::Utc::now(),
        };
        match self.store.sg_insert(&rec, &rules).await {
            Ok(()) => Ok(rec),
            Err(StoreError::Duplicate) => Err(Error::AlreadyExists(format!(
                "a security group named {:?} already exists in this project",
                req.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Replaces every rule at once; the nodes enforcing the group get the new set atomically.
    pub async fn sg_replace_rules(
        &self,
        caller: &Caller,
        id_or_name: &str,
        rules: &[SecurityGroupRule],
    ) -> Result<SecurityGroupRecord> {
        let g = self.sg_lookup(caller, id_or_name).await?;
        let rules = self.sg_rules(caller, rules, (&g.name, g.id)).await?;
        self.store
            .sg_replace_rules(SecurityGroupId(g.id), &rules)
            .await?;
        Ok(g)
    }

    pub async fn sg_delete(&self, caller: &Caller, id_or_name: &str) -> Result<()> {
        let g = self.sg_lookup(caller, id_or_name).await?;
        self.store
            .sg_delete(caller.project, SecurityGroupId(g.id))
            .await
            .map_err(not_found("security group", id_or_name))
    }

    /// Adds or removes a group on an instance's port. Idempotent.
    pub async fn instance_set_group(
        &self,
        caller: &Caller,
        instance: &str,
        group: &str,
        attached: bool,
    ) -> Result<crate::store::InstanceRecord> {
        let inst = self.instance_lookup(caller, instance).await?;
        if inst.subnet_id.is_none() {
            return Err(Error::Conflict(format!(
                "instance {:?} is not in a subnet; security groups apply to VPC ports",
                inst.name
            )));
        }
        let g = self.sg_lookup(caller, group).await?;
        self.store
            .instance_set_group(inst.id, SecurityGroupId(g.id), attached)
            .await?;
        self.instance_lookup(caller, &InstanceId(inst.id).to_string())
            .await
    }

    /// Resolves the port of a new instance: its subnet (of the caller's project), a requested
    /// address (checked against the subnet) and its security groups.
    pub async fn port_request(
        &self,
        caller: &Caller,
        req: &CreateInstanceRequest,
    ) -> Result<PortRequest> {
        let Some(subnet_id) = req.subnet_id else {
            if req.private_ip.is_some() {
                return Err(Error::Invalid("private_ip: needs subnet_id".into()));
            }
            if !req.security_groups.is_empty() {
                return Err(Error::Invalid(
                    "security_groups: apply to VPC ports; give subnet_id too".into(),
                ));
            }
            return Ok(PortRequest::default());
        };
        let subnet = self
            .store
            .subnet_get(caller.project, subnet_id)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    Error::Invalid(format!("subnet_id: subnet {subnet_id} not found"))
                }
                other => other.into(),
            })?;
        let private_ip = match &req.private_ip {
            None => None,
            Some(ip) => {
                let net = netcheck::cidr("cidr", &subnet.cidr).map_err(|_| {
                    Error::internal(anyhow::anyhow!("stored subnet cidr {:?}", subnet.cidr))
                })?;
                Some(netcheck::private_ip(ip, net)?.to_string())
            }
        };
        let mut security_groups = Vec::with_capacity(req.security_groups.len());
        for (i, g) in req.security_groups.iter().enumerate() {
            let rec = self.sg_lookup(caller, g).await.map_err(|e| match e {
                Error::NotFound(_) => Error::Invalid(format!(
                    "security_groups[{i}]: security group {g:?} not found"
                )),
                other => other,
            })?;
            if !security_groups.contains(&rec.id) {
                security_groups.push(rec.id);
            }
        }
        Ok(PortRequest {
            subnet_id: Some(subnet.id),
            private_ip,
            security_groups,
        })
    }
}
