//! What a node's desired state needs about VPC networking: its instances' ports, the VPCs
//! they are in (subnets, other nodes' VXLAN endpoints and instances), and their security
//! group rules with source groups expanded to member addresses. Read only for nodes that
//! host at least one instance in a subnet. Instances being deleted are left out everywhere:
//! their node drops the port (and the VPC, if it was the last) as the container goes.

use super::{Store, StoreResult, on_pool};
use uuid::Uuid;

/// One of the node's instances with a port.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PortRow {
    pub instance_id: Uuid,
    pub subnet_id: Uuid,
    pub private_ip: String,
    pub mac: String,
    pub vpc_id: Uuid,
    pub cidr: String,
    pub gateway: String,
    pub vni: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubnetRow {
    pub id: Uuid,
    pub vpc_id: Uuid,
    pub cidr: String,
    pub gateway: String,
    pub nat_egress: bool,
}

/// An instance of one of the node's VPCs, on another node.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RemoteRow {
    pub vpc_id: Uuid,
    pub mac: String,
    pub private_ip: String,
    pub underlay_ip: String,
}

/// A rule that applies to one of the node's instances.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceRuleRow {
    pub instance_id: Uuid,
    pub direction: String,
    pub protocol: String,
    pub port_min: i32,
    pub port_max: i32,
    pub cidr: Option<String>,
    pub source_group_id: Option<Uuid>,
}

/// A member of a group some rule names as its source.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct MemberRow {
    pub group_id: Uuid,
    pub vpc_id: Uuid,
    pub private_ip: String,
}

#[derive(Debug, Clone, Default)]
pub struct NodeNetwork {
    pub ports: Vec<PortRow>,
    pub subnets: Vec<SubnetRow>,
    pub remotes: Vec<RemoteRow>,
    pub rules: Vec<InstanceRuleRow>,
    pub members: Vec<MemberRow>,
}

/// The node's VPCs, as a subquery on `$1` (the node id).
macro_rules! node_vpcs {
    () => {
        "SELECT s2.vpc_id FROM instances i2 JOIN subnets s2 ON s2.id = i2.subnet_id WHERE i2.node_id = $1 AND i2.status <> 'deleting'"
    };
}

impl Store {
    /// Everything about VPC networking the desired state of `node` needs.
    pub async fn node_network(&self, node: Uuid) -> StoreResult<NodeNetwork> {
        on_pool!(self, p => {
            let ports: Vec<PortRow> = sqlx::query_as(
                "SELECT i.id AS instance_id, i.subnet_id, i.private_ip, i.mac, s.vpc_id, s.cidr, s.gateway, v.vni
                 FROM instances i JOIN subnets s ON s.id = i.subnet_id JOIN vpcs v ON v.id = s.vpc_id
                 WHERE i.node_id = $1 AND i.private_ip IS NOT NULL AND i.mac IS NOT NULL AND i.status <> 'deleting'
                 ORDER BY i.id",
            )
            .bind(node)
            .fetch_all(p)
            .await?;
            if ports.is_empty() {
                return Ok(NodeNetwork::default());
            }
            let subnets: Vec<SubnetRow> = sqlx::query_as(concat!(
                "SELECT id, vpc_id, cidr, gateway, nat_egress FROM subnets WHERE vpc_id IN (",
                node_vpcs!(),
                ") ORDER BY id"
            ))
            .bind(node)
            .fetch_all(p)
            .await?;
            let remotes: Vec<RemoteRow> = sqlx::query_as(concat!(
                "SELECT s.vpc_id, i.mac, i.private_ip, n.underlay_ip
                 FROM instances i JOIN subnets s ON s.id = i.subnet_id JOIN nodes n ON n.id = i.node_id
                 WHERE i.node_id <> $1 AND n.underlay_ip IS NOT NULL AND i.private_ip IS NOT NULL AND i.status <> 'deleting'
                   AND i.mac IS NOT NULL AND s.vpc_id IN (",
                node_vpcs!(),
                ") ORDER BY i.id"
            ))
            .bind(node)
            .fetch_all(p)
            .await?;
            let rules: Vec<InstanceRuleRow> = sqlx::query_as(
                "SELECT isg.instance_id, r.direction, r.protocol, r.port_min, r.port_max, r.cidr, r.source_group_id
                 FROM instance_security_groups isg
                 JOIN security_group_rules r ON r.group_id = isg.group_id
                 JOIN instances i ON i.id = isg.instance_id
                 WHERE i.node_id = $1 ORDER BY isg.instance_id, r.id",
            )
            .bind(node)
            .fetch_all(p)
            .await?;
            let members: Vec<MemberRow> = if rules.iter().any(|r| r.source_group_id.is_some()) {
                sqlx::query_as(
                    "SELECT isg.group_id, s.vpc_id, i.private_ip
                     FROM instance_security_groups isg
                     JOIN instances i ON i.id = isg.instance_id
                     JOIN subnets s ON s.id = i.subnet_id
                     WHERE i.private_ip IS NOT NULL AND i.status <> 'deleting' AND isg.group_id IN (
                        SELECT r.source_group_id FROM security_group_rules r
                        JOIN instance_security_groups isg2 ON isg2.group_id = r.group_id
                        JOIN instances i3 ON i3.id = isg2.instance_id
                        WHERE i3.node_id = $1 AND r.source_group_id IS NOT NULL)
                     ORDER BY i.private_ip",
                )
                .bind(node)
                .fetch_all(p)
                .await?
            } else {
                Vec::new()
            };
            Ok(NodeNetwork { ports, subnets, remotes, rules, members })
        })
    }

    /// Security groups of each of `instances` (instance, group), for API views.
    pub async fn groups_of_instances(&self, instances: &[Uuid]) -> StoreResult<Vec<(Uuid, Uuid)>> {
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let pg = self.is_postgres();
        let list = super::batch::values(1, instances.len(), pg);
        // The SQL holds only placeholders; every value is bound.
        let sql = format!(
            "SELECT instance_id, group_id FROM instance_security_groups WHERE instance_id IN {list} ORDER BY instance_id, group_id"
        );
        on_pool!(self, p => {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for id in instances {
                q = q.bind(*id);
            }
            Ok(q.fetch_all(p).await?)
        })
    }
}
