//! VPCs, subnets, security groups and instance ports.

use super::{Store, StoreError, StoreResult, in_tx, on_pool};
use chrono::{DateTime, Utc};
use cloud_api::{ProjectId, SecurityGroupId, SubnetId, VpcId};
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VpcRecord {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub cidr: String,
    pub vni: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SubnetRecord {
    pub id: Uuid,
    pub project_id: Uuid,
    pub vpc_id: Uuid,
    pub name: String,
    pub cidr: String,
    pub gateway: String,
    pub nat_egress: bool,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SecurityGroupRecord {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub description: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RuleRecord {
    pub group_id: Uuid,
    pub direction: String,
    pub protocol: String,
    pub port_min: i32,
    pub port_max: i32,
    pub cidr: Option<String>,
    pub source_group_id: Option<Uuid>,
}

/// A rule to store (validated by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRule {
    pub direction: String,
    pub protocol: String,
    pub port_min: i32,
    pub port_max: i32,
    pub cidr: Option<String>,
    pub source_group_id: Option<Uuid>,
}

/// Nodes whose desired state depends on these VPCs (they host them) or on the membership of
/// these security groups (their instances' rules name them as a source, or are in them).
/// Bumping their generation makes their sessions push a new document once the caller wakes
/// them (`Store::wake`, after commit): evaluates to the bumped nodes.
macro_rules! bump_network_dependents {
    ($tx:ident, $pg:expr, $vpcs:expr, $groups:expr) => {{
        let vpcs: &[::uuid::Uuid] = $vpcs;
        let groups: &[::uuid::Uuid] = $groups;
        let mut bumped: Vec<::uuid::Uuid> = Vec::new();
        if !vpcs.is_empty() || !groups.is_empty() {
            let ph = |first: usize, n: usize| -> String {
                (first..first + n)
                    .map(|i| {
                        if $pg {
                            format!("${i}")
                        } else {
                            "?".to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            };
            // Empty lists become a never-matching NULL.
            let v = if vpcs.is_empty() {
                "NULL".to_string()
            } else {
                ph(1, vpcs.len())
            };
            let g1 = if groups.is_empty() {
                "NULL".to_string()
            } else {
                ph(1 + vpcs.len(), groups.len())
            };
            let g2 = if groups.is_empty() {
                "NULL".to_string()
            } else {
                ph(1 + vpcs.len() + groups.len(), groups.len())
            };
            // The SQL holds only placeholders; every value is bound.
            let sql = format!(
                "UPDATE nodes SET generation = generation + 1 WHERE id IN (
                    SELECT i.node_id FROM instances i JOIN subnets s ON s.id = i.subnet_id
                     WHERE i.node_id IS NOT NULL AND s.vpc_id IN ({v})
                    UNION SELECT i.node_id FROM instances i
                     JOIN instance_security_groups isg ON isg.instance_id = i.id
                     JOIN security_group_rules r ON r.group_id = isg.group_id
                     WHERE i.node_id IS NOT NULL AND r.source_group_id IN ({g1})
                    UNION SELECT i.node_id FROM instances i
                     JOIN instance_security_groups isg ON isg.instance_id = i.id
                     WHERE i.node_id IS NOT NULL AND isg.group_id IN ({g2})) RETURNING id"
            );
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for id in vpcs.iter().chain(groups.iter()).chain(groups.iter()) {
                q = q.bind(*id);
            }
            let rows: Vec<(::uuid::Uuid,)> = q.fetch_all(&mut *$tx).await?;
            bumped = rows.into_iter().map(|r| r.0).collect();
        }
        bumped
    }};
}
pub(crate) use bump_network_dependents;

impl Store {
    /// Wakes the nodes of the VPC a subnet is in (after an instance left it).
    pub async fn bump_subnet_dependents(&self, subnet: Uuid) -> StoreResult<()> {
        let pg = self.is_postgres();
        let woken = in_tx!(self, tx => {
            let vpc: Option<(Uuid,)> = sqlx::query_as("SELECT vpc_id FROM subnets WHERE id = $1")
                .bind(subnet)
                .fetch_optional(&mut *tx)
                .await?;
            let vpcs: Vec<Uuid> = vpc.into_iter().map(|v| v.0).collect();
            Ok(bump_network_dependents!(tx, pg, &vpcs, &[]))
        })?;
        self.wake(&woken);
        Ok(())
    }

    /// Wakes the other nodes of every VPC `node` hosts (its underlay address changed).
    pub async fn bump_vpcs_of_node(&self, node: Uuid) -> StoreResult<()> {
        let pg = self.is_postgres();
        let woken = in_tx!(self, tx => {
            let rows: Vec<(Uuid,)> = sqlx::query_as(
                "SELECT DISTINCT s.vpc_id FROM instances i JOIN subnets s ON s.id = i.subnet_id WHERE i.node_id = $1",
            )
            .bind(node)
            .fetch_all(&mut *tx)
            .await?;
            let vpcs: Vec<Uuid> = rows.into_iter().map(|r| r.0).collect();
            Ok(bump_network_dependents!(tx, pg, &vpcs, &[]))
        })?;
        self.wake(&woken);
        Ok(())
    }

    /// Subnet by id, in any project (for the planner's IPAM).
    pub async fn subnet_by_id(&self, id: Uuid) -> StoreResult<SubnetRecord> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT id, project_id, vpc_id, name, cidr, gateway, nat_egress, created_at FROM subnets WHERE id = $1",
        )
        .bind(id)
        .fetch_one(p)
        .await?))
    }

    // ------------------------------------------------------------------ VPCs

    pub async fn vpc_insert(&self, v: &VpcRecord) -> StoreResult<()> {
        on_pool!(self, p => {
            sqlx::query(
                "INSERT INTO vpcs (id, project_id, name, cidr, vni, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(v.id)
            .bind(v.project_id)
            .bind(&v.name)
            .bind(&v.cidr)
            .bind(v.vni)
            .bind(v.created_at)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    pub async fn vpc_name_taken(&self, project: ProjectId, name: &str) -> StoreResult<bool> {
        on_pool!(self, p => {
            let row: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM vpcs WHERE project_id = $1 AND name = $2")
                .bind(project.0)
                .bind(name)
                .fetch_optional(p)
                .await?;
            Ok(row.is_some())
        })
    }

    pub async fn vpc_get(&self, project: ProjectId, id: VpcId) -> StoreResult<VpcRecord> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT id, project_id, name, cidr, vni, created_at FROM vpcs WHERE project_id = $1 AND id = $2",
        )
        .bind(project.0)
        .bind(id.0)
        .fetch_one(p)
        .await?))
    }

    pub async fn vpc_get_by_name(&self, project: ProjectId, name: &str) -> StoreResult<VpcRecord> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT id, project_id, name, cidr, vni, created_at FROM vpcs WHERE project_id = $1 AND name = $2",
        )
        .bind(project.0)
        .bind(name)
        .fetch_one(p)
        .await?))
    }

    pub async fn vpc_list(
        &self,
        project: ProjectId,
        after: Option<VpcId>,
        limit: u32,
    ) -> StoreResult<Vec<VpcRecord>> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT id, project_id, name, cidr, vni, created_at FROM vpcs
             WHERE project_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(project.0)
        .bind(after.map(|a| a.0))
        .bind(i64::from(limit))
        .fetch_all(p)
        .await?))
    }

    /// Deletes a VPC and its subnets; `Conflict` while any instance is in it.
    pub async fn vpc_delete(&self, project: ProjectId, id: VpcId) -> StoreResult<()> {
        in_tx!(self, tx => {
            let busy: Option<(String,)> = sqlx::query_as(
                "SELECT i.name FROM instances i JOIN subnets s ON s.id = i.subnet_id WHERE s.vpc_id = $1 LIMIT 1",
            )
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((name,)) = busy {
                return Err(StoreError::InUse(format!(
                    "the VPC still has instances (e.g. {name:?}); delete them first"
                )));
            }
            sqlx::query("DELETE FROM subnets WHERE vpc_id = $1 AND project_id = $2")
                .bind(id.0)
                .bind(project.0)
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query("DELETE FROM vpcs WHERE id = $1 AND project_id = $2")
                .bind(id.0)
                .bind(project.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
    }

    // ------------------------------------------------------------------ subnets

    /// Inserts a subnet after `check` accepted it against the VPC's other subnets
    /// (name, cidr), with the VPC row locked so concurrent creates cannot overlap.
    pub async fn subnet_insert(
        &self,
        s: &SubnetRecord,
        check: impl Fn(&[(String, String)]) -> Result<(), String> + Send + Sync,
    ) -> StoreResult<()> {
        in_tx!(self, tx => {
            let locked = sqlx::query("UPDATE vpcs SET name = name WHERE id = $1")
                .bind(s.vpc_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if locked == 0 {
                return Err(StoreError::NotFound);
            }
            let others: Vec<(String, String)> = sqlx::query_as("SELECT name, cidr FROM subnets WHERE vpc_id = $1")
                .bind(s.vpc_id)
                .fetch_all(&mut *tx)
                .await?;
            check(&others).map_err(StoreError::Rejected)?;
            sqlx::query(
                "INSERT INTO subnets (id, project_id, vpc_id, name, cidr, gateway, nat_egress, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(s.id)
            .bind(s.project_id)
            .bind(s.vpc_id)
            .bind(&s.name)
            .bind(&s.cidr)
            .bind(&s.gateway)
            .bind(s.nat_egress)
            .bind(s.created_at)
            .execute(&mut *tx)
            .await?;
            Ok(())
        })
    }

    pub async fn subnet_list(
        &self,
        project: ProjectId,
        vpc: VpcId,
    ) -> StoreResult<Vec<SubnetRecord>> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT id, project_id, vpc_id, name, cidr, gateway, nat_egress, created_at FROM subnets
             WHERE project_id = $1 AND vpc_id = $2 ORDER BY id",
        )
        .bind(project.0)
        .bind(vpc.0)
        .fetch_all(p)
        .await?))
    }

    pub async fn subnet_get(&self, project: ProjectId, id: SubnetId) -> StoreResult<SubnetRecord> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT id, project_id, vpc_id, name, cidr, gateway, nat_egress, created_at FROM subnets
             WHERE project_id = $1 AND id = $2",
        )
        .bind(project.0)
        .bind(id.0)
        .fetch_one(p)
        .await?))
    }

    pub async fn subnet_get_by_name(
        &self,
        project: ProjectId,
        vpc: VpcId,
        name: &str,
    ) -> StoreResult<SubnetRecord> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT id, project_id, vpc_id, name, cidr, gateway, nat_egress, created_at FROM subnets
             WHERE project_id = $1 AND vpc_id = $2 AND name = $3",
        )
        .bind(project.0)
        .bind(vpc.0)
        .bind(name)
        .fetch_one(p)
        .await?))
    }

    /// Deletes a subnet; `InUse` while any instance is in it. The VPC's nodes drop its
    /// gateway.
    pub async fn subnet_delete(&self, project: ProjectId, id: SubnetId) -> StoreResult<()> {
        let pg = self.is_postgres();
        let woken = in_tx!(self, tx => {
            let busy: Option<(String,)> = sqlx::query_as("SELECT name FROM instances WHERE subnet_id = $1 LIMIT 1")
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((name,)) = busy {
                return Err(StoreError::InUse(format!(
                    "the subnet still has instances (e.g. {name:?}); delete them first"
                )));
            }
            let vpc: Vec<Uuid> = sqlx::query_as::<_, (Uuid,)>("SELECT vpc_id FROM subnets WHERE id = $1 AND project_id = $2")
                .bind(id.0)
                .bind(project.0)
                .fetch_optional(&mut *tx)
                .await?
                .into_iter()
                .map(|v| v.0)
                .collect();
            let done = sqlx::query("DELETE FROM subnets WHERE id = $1 AND project_id = $2")
                .bind(id.0)
                .bind(project.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(bump_network_dependents!(tx, pg, &vpc, &[]))
        })?;
        self.wake(&woken);
        Ok(())
    }

    /// Addresses in use in a subnet.
    pub async fn subnet_used_ips(&self, subnet: Uuid) -> StoreResult<Vec<String>> {
        on_pool!(self, p => {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT private_ip FROM instances WHERE subnet_id = $1 AND private_ip IS NOT NULL",
            )
            .bind(subnet)
            .fetch_all(p)
            .await?;
            Ok(rows.into_iter().map(|r| r.0).collect())
        })
    }

    // ------------------------------------------------------------------ security groups

    pub async fn sg_insert(&self, g: &SecurityGroupRecord, rules: &[NewRule]) -> StoreResult<()> {
        in_tx!(self, tx => {
            sqlx::query(
                "INSERT INTO security_groups (id, project_id, name, description, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(g.id)
            .bind(g.project_id)
            .bind(&g.name)
            .bind(&g.description)
            .bind(g.created_at)
            .execute(&mut *tx)
            .await?;
            for r in rules {
                sqlx::query(
                    "INSERT INTO security_group_rules (id, group_id, direction, protocol, port_min, port_max, cidr, source_group_id, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(Uuid::now_v7())
                .bind(g.id)
                .bind(&r.direction)
                .bind(&r.protocol)
                .bind(r.port_min)
                .bind(r.port_max)
                .bind(&r.cidr)
                .bind(r.source_group_id)
                .bind(g.created_at)
                .execute(&mut *tx)
                .await?;
            }
            Ok(())
        })
    }

    /// Replaces every rule of a group in one transaction, and wakes the nodes that enforce
    /// or reference it.
    pub async fn sg_replace_rules(
        &self,
        group: SecurityGroupId,
        rules: &[NewRule],
    ) -> StoreResult<()> {
        let now = Utc::now();
        let pg = self.is_postgres();
        let woken = in_tx!(self, tx => {
            sqlx::query("DELETE FROM security_group_rules WHERE group_id = $1")
                .bind(group.0)
                .execute(&mut *tx)
                .await?;
            for r in rules {
                sqlx::query(
                    "INSERT INTO security_group_rules (id, group_id, direction, protocol, port_min, port_max, cidr, source_group_id, created_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(Uuid::now_v7())
                .bind(group.0)
                .bind(&r.direction)
                .bind(&r.protocol)
                .bind(r.port_min)
                .bind(r.port_max)
                .bind(&r.cidr)
                .bind(r.source_group_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            Ok(bump_network_dependents!(tx, pg, &[], &[group.0]))
        })?;
        self.wake(&woken);
        Ok(())
    }

    pub async fn sg_get(
        &self,
        project: ProjectId,
        id: SecurityGroupId,
    ) -> StoreResult<SecurityGroupRecord> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT id, project_id, name, description, created_at FROM security_groups WHERE project_id = $1 AND id = $2",
        )
        .bind(project.0)
        .bind(id.0)
        .fetch_one(p)
        .await?))
    }

    pub async fn sg_get_by_name(
        &self,
        project: ProjectId,
        name: &str,
    ) -> StoreResult<SecurityGroupRecord> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT id, project_id, name, description, created_at FROM security_groups WHERE project_id = $1 AND name = $2",
        )
        .bind(project.0)
        .bind(name)
        .fetch_one(p)
        .await?))
    }

    pub async fn sg_list(
        &self,
        project: ProjectId,
        after: Option<SecurityGroupId>,
        limit: u32,
    ) -> StoreResult<Vec<SecurityGroupRecord>> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT id, project_id, name, description, created_at FROM security_groups
             WHERE project_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3",
        )
        .bind(project.0)
        .bind(after.map(|a| a.0))
        .bind(i64::from(limit))
        .fetch_all(p)
        .await?))
    }

    /// The rules of `groups`, in one query (in creation order per group).
    pub async fn sg_rules(&self, groups: &[Uuid]) -> StoreResult<Vec<RuleRecord>> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let list = super::batch::values(1, groups.len(), self.is_postgres());
        // The SQL holds only placeholders; every value is bound.
        let sql = format!(
            "SELECT group_id, direction, protocol, port_min, port_max, cidr, source_group_id
             FROM security_group_rules WHERE group_id IN {list} ORDER BY group_id, id"
        );
        on_pool!(self, p => {
            let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
            for g in groups {
                q = q.bind(*g);
            }
            Ok(q.fetch_all(p).await?)
        })
    }

    /// Deletes a group; `Conflict` while instances use it or other groups' rules name it.
    pub async fn sg_delete(&self, project: ProjectId, id: SecurityGroupId) -> StoreResult<()> {
        in_tx!(self, tx => {
            let used: Option<(String,)> = sqlx::query_as(
                "SELECT i.name FROM instance_security_groups isg JOIN instances i ON i.id = isg.instance_id
                 WHERE isg.group_id = $1 LIMIT 1",
            )
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((name,)) = used {
                return Err(StoreError::InUse(format!(
                    "instances still use this security group (e.g. {name:?}); remove it from them first"
                )));
            }
            let referenced: Option<(String,)> = sqlx::query_as(
                "SELECT g.name FROM security_group_rules r JOIN security_groups g ON g.id = r.group_id
                 WHERE r.source_group_id = $1 AND r.group_id <> $1 LIMIT 1",
            )
            .bind(id.0)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((name,)) = referenced {
                return Err(StoreError::InUse(format!(
                    "security group {name:?} has rules naming this group as a source; change them first"
                )));
            }
            sqlx::query("DELETE FROM security_group_rules WHERE group_id = $1")
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query("DELETE FROM security_groups WHERE id = $1 AND project_id = $2")
                .bind(id.0)
                .bind(project.0)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done == 0 {
                return Err(StoreError::NotFound);
            }
            Ok(())
        })
    }

    /// Adds or removes a group on an instance's port, waking every node that depends on it.
    pub async fn instance_set_group(
        &self,
        instance: Uuid,
        group: SecurityGroupId,
        attached: bool,
    ) -> StoreResult<bool> {
        let pg = self.is_postgres();
        let (changed, woken) = in_tx!(self, tx => {
            // The instance's own node first (lock order: node, then instance rows).
            sqlx::query(
                "UPDATE nodes SET generation = generation + 1
                 WHERE id = (SELECT node_id FROM instances WHERE id = $1)",
            )
            .bind(instance)
            .execute(&mut *tx)
            .await?;
            let changed = if attached {
                let exists: Option<(Uuid,)> = sqlx::query_as(
                    "SELECT group_id FROM instance_security_groups WHERE instance_id = $1 AND group_id = $2",
                )
                .bind(instance)
                .bind(group.0)
                .fetch_optional(&mut *tx)
                .await?;
                if exists.is_none() {
                    sqlx::query("INSERT INTO instance_security_groups (instance_id, group_id) VALUES ($1, $2)")
                        .bind(instance)
                        .bind(group.0)
                        .execute(&mut *tx)
                        .await?;
                }
                exists.is_none()
            } else {
                sqlx::query("DELETE FROM instance_security_groups WHERE instance_id = $1 AND group_id = $2")
                    .bind(instance)
                    .bind(group.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    > 0
            };
            let mut woken = bump_network_dependents!(tx, pg, &[], &[group.0]);
            let own: Option<(Uuid,)> = sqlx::query_as("SELECT node_id FROM instances WHERE id = $1 AND node_id IS NOT NULL")
                .bind(instance)
                .fetch_optional(&mut *tx)
                .await?;
            woken.extend(own.map(|o| o.0));
            Ok((changed, woken))
        })?;
        self.wake(&woken);
        Ok(changed)
    }
}
