//! Committing plans: many placements in one transaction, each node guarded by the placement
//! generation the planner saw. Nodes whose guard fails are reported back and nothing is
//! written for them; everything else commits together (group commit).

use super::{NewInstance, Store, StoreResult, in_tx, to_i64};
use chrono::Utc;
use cloud_api::NodeId;
use sqlx::types::Json;
use std::collections::{HashMap, HashSet};

/// Rows per multi-row INSERT (17 parameters each; well under both databases' limits).
const INSERT_CHUNK: usize = 100;

/// The placement generation a plan relied on for one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeGuard {
    pub node: NodeId,
    pub placement_generation: i64,
}

/// Generations of a node after a commit touched it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeGenerations {
    pub generation: i64,
    pub placement_generation: i64,
}

#[derive(Debug, Default)]
pub struct CommitOutcome {
    /// Nodes whose guard held, with their new generations.
    pub committed: HashMap<NodeId, NodeGenerations>,
    /// Nodes that changed since the plan was made (or are no longer ready): re-plan their
    /// requests.
    pub conflicted: HashSet<NodeId>,
    /// Creates refused by their project's quota, with the reason (nothing was written).
    pub over_quota: HashMap<cloud_api::InstanceId, String>,
}

/// Nodes per guard statement (2 parameters each).
const GUARD_CHUNK: usize = 500;

/// `UPDATE nodes … FROM (VALUES ($1,$2),($3,$4)…)`: bumps both generations of every guarded
/// node whose placement generation is still the expected one and that is still ready, in one
/// statement per chunk, returning the nodes that passed.
fn guard_sql(n: usize, pg: bool) -> String {
    let values = super::batch::values(n, 2, pg);
    format!(
        "UPDATE nodes SET generation = generation + 1, placement_generation = placement_generation + 1 \
         FROM (VALUES {}) AS g WHERE nodes.id = g.column1 AND nodes.placement_generation = g.column2 \
         AND nodes.status = 'ready' RETURNING nodes.id, nodes.generation, nodes.placement_generation",
        values
    )
}

/// Applies `guards` inside the open transaction `$tx`; evaluates to a `CommitOutcome`.
macro_rules! guard_nodes {
    ($tx:ident, $guards:expr, $pg:expr) => {{
        let mut out = CommitOutcome::default();
        for chunk in $guards.chunks(GUARD_CHUNK) {
            // The SQL holds only placeholders; every value is bound.
            let mut q = sqlx::query_as::<_, (uuid::Uuid, i64, i64)>(sqlx::AssertSqlSafe(
                guard_sql(chunk.len(), $pg),
            ));
            for g in chunk {
                q = q.bind(g.node.0).bind(g.placement_generation);
            }
            for (id, generation, placement_generation) in q.fetch_all(&mut *$tx).await? {
                out.committed.insert(
                    NodeId(id),
                    NodeGenerations {
                        generation,
                        placement_generation,
                    },
                );
            }
            for g in chunk {
                if !out.committed.contains_key(&g.node) {
                    out.conflicted.insert(g.node);
                }
            }
        }
        out
    }};
}

macro_rules! insert_rows_sql {
    () => {
        "INSERT INTO instances (id, project_id, name, kind, image, command, env, cpu_millis, memory_mb, \
         restart_policy, node_id, change_generation, node_selector, placement_group, placement_policy, \
         placement_strategy, created_at, updated_at, subnet_id, private_ip, mac, vm_spec, desired_state, status) VALUES "
    };
}

fn insert_sql(rows: usize, pg: bool) -> String {
    // 22 values a row: 21 columns, updated_at (= created_at) bound twice, so every
    // placeholder is used once, in order (SQLite's anonymous `?` needs that).
    let mut sql = String::from(insert_rows_sql!());
    sql.push_str(&super::batch::values(rows, 22, pg).replace(')', ", 'running', 'scheduled')"));
    sql
}

/// One instance moving off a node that is down or draining.
#[derive(Debug, Clone)]
pub struct MoveRow {
    pub id: cloud_api::InstanceId,
    pub from: NodeId,
    pub to: NodeId,
    pub reason: String,
}

#[derive(Debug, Default)]
pub struct MoveOutcome {
    pub commit: CommitOutcome,
    /// Instances actually moved (one deleted meanwhile is not).
    pub moved: Vec<cloud_api::InstanceId>,
}

/// `$first, $first+1, …` for `n` values.
fn placeholders(first: usize, n: usize, pg: bool) -> String {
    (first..first + n)
        .map(|i| if pg { format!("${i}") } else { "?".to_string() })
        .collect::<Vec<_>>()
        .join(",")
}

/// Values per `IN (...)` list.
const IN_CHUNK: usize = 200;

impl Store {
    /// The names among `names` already used by instances of `project`.
    pub async fn instance_names_taken(
        &self,
        project: cloud_api::ProjectId,
        names: &[String],
    ) -> StoreResult<Vec<String>> {
        let pg = self.is_postgres();
        let mut out = Vec::new();
        for chunk in names.chunks(IN_CHUNK) {
            // The SQL holds only placeholders; every value is bound.
            let sql = format!(
                "SELECT name FROM instances WHERE project_id = {} AND name IN ({})",
                if pg { "$1" } else { "?" },
                placeholders(2, chunk.len(), pg)
            );
            let rows: Vec<(String,)> = super::on_pool!(self, p => {
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(project.0);
                for n in chunk {
                    q = q.bind(n.clone());
                }
                q.fetch_all(p).await?
            });
            out.extend(rows.into_iter().map(|r| r.0));
        }
        Ok(out)
    }

    /// The policy each of `groups` already has in `project` (groups with members only).
    pub async fn placement_group_policies(
        &self,
        project: cloud_api::ProjectId,
        groups: &[String],
    ) -> StoreResult<Vec<(String, String)>> {
        let pg = self.is_postgres();
        let mut out = Vec::new();
        for chunk in groups.chunks(IN_CHUNK) {
            let sql = format!(
                "SELECT DISTINCT placement_group, placement_policy FROM instances
                 WHERE project_id = {} AND placement_policy IS NOT NULL AND placement_group IN ({})",
                if pg { "$1" } else { "?" },
                placeholders(2, chunk.len(), pg)
            );
            let rows: Vec<(String, String)> = super::on_pool!(self, p => {
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(project.0);
                for g in chunk {
                    q = q.bind(g.clone());
                }
                q.fetch_all(p).await?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    /// Moves instances to new nodes in one transaction. Target nodes are guarded like new
    /// placements; each source node's generation is bumped so its desired state drops the
    /// instance (its agent stops it — or, when the node is down, stops it when it returns).
    pub async fn placements_move(
        &self,
        guards: &[NodeGuard],
        rows: &[MoveRow],
    ) -> StoreResult<MoveOutcome> {
        let now = Utc::now();
        let pg = self.is_postgres();
        let (out, woken) = in_tx!(self, tx => {
            let mut out = MoveOutcome::default();
            out.commit = guard_nodes!(tx, guards, pg);
            // Source nodes first (in id order), then instances: the same lock order as a
            // delete or a start/stop (node row, then instance row), so they cannot deadlock.
            let mut sources: Vec<NodeId> = rows
                .iter()
                .filter(|r| out.commit.committed.contains_key(&r.to))
                .map(|r| r.from)
                .collect();
            sources.sort();
            sources.dedup();
            for from in &sources {
                sqlx::query("UPDATE nodes SET generation = generation + 1 WHERE id = $1")
                    .bind(from.0)
                    .execute(&mut *tx)
                    .await?;
            }
            for r in rows {
                let Some(target) = out.commit.committed.get(&r.to).copied() else { continue };
                let done = sqlx::query(
                    "UPDATE instances SET node_id = $3, status = 'scheduled', status_reason = $4,
                        change_generation = $5, runtime_id = NULL, started_at = NULL, exit_code = NULL,
                        updated_at = $6
                     WHERE id = $1 AND node_id = $2 AND status <> 'deleting'",
                )
                .bind(r.id.0)
                .bind(r.from.0)
                .bind(r.to.0)
                .bind(&r.reason)
                .bind(target.generation)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if done > 0 {
                    out.moved.push(r.id);
                }
            }
            // A moved port changes its VXLAN endpoint: wake the other nodes of its VPC.
            let mut vpcs: Vec<uuid::Uuid> = Vec::new();
            for id in &out.moved {
                let vpc: Option<(uuid::Uuid,)> = sqlx::query_as(
                    "SELECT s.vpc_id FROM instances i JOIN subnets s ON s.id = i.subnet_id WHERE i.id = $1",
                )
                .bind(id.0)
                .fetch_optional(&mut *tx)
                .await?;
                vpcs.extend(vpc.map(|v| v.0));
            }
            vpcs.sort();
            vpcs.dedup();
            let woken = super::network::bump_network_dependents!(tx, pg, &vpcs, &[]);
            Ok((out, woken))
        })?;
        self.wake(&woken);
        Ok(out)
    }

    /// Commits `placed` (instance → node) in one transaction. Each node in `guards` is bumped
    /// only if its placement generation is still the one the plan saw and it is still ready;
    /// instances for nodes that fail their guard are not written.
    pub async fn placements_commit(
        &self,
        guards: &[NodeGuard],
        placed: &[(&NewInstance, NodeId)],
    ) -> StoreResult<CommitOutcome> {
        let pg = self.is_postgres();
        let (out, woken) = in_tx!(self, tx => {
            let mut out = guard_nodes!(tx, guards, pg);
            let mut rows: Vec<&(&NewInstance, NodeId)> =
                placed.iter().filter(|(_, n)| out.committed.contains_key(n)).collect();
            // Quotas: each project's row locked (in a stable order), its usage counted with
            // this batch's earlier rows; what does not fit is refused, the rest goes on.
            let mut projects: Vec<uuid::Uuid> = rows.iter().map(|(n, _)| n.project_id.0).collect();
            projects.sort();
            projects.dedup();
            for project in projects {
                let Some((quota, mut usage)) = super::quotas::quota_locked!(tx, project) else {
                    continue;
                };
                for (new, _) in rows.iter().filter(|(n, _)| n.project_id.0 == project) {
                    let (cpu, mem) = (to_i64(new.cpu_millis), to_i64(new.memory_mb));
                    match quota.instance_refusal(&usage, cpu, mem) {
                        Some(why) => {
                            out.over_quota.insert(new.id, why);
                        }
                        None => {
                            usage.instances += 1;
                            usage.cpu_millis += cpu;
                            usage.memory_mb += mem;
                        }
                    }
                }
            }
            rows.retain(|(n, _)| !out.over_quota.contains_key(&n.id));
            for chunk in rows.chunks(INSERT_CHUNK) {
                // The SQL holds only placeholders; every value is bound.
                let sql = insert_sql(chunk.len(), pg);
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (new, node) in chunk {
                    let generation = out.committed.get(node).map_or(0, |g| g.generation);
                    let (group, policy) = match &new.placement_group {
                        Some((g, p)) => (Some(g.clone()), Some(p.clone())),
                        None => (None, None),
                    };
                    q = q
                        .bind(new.id.0)
                        .bind(new.project_id.0)
                        .bind(new.name.clone())
                        .bind(new.kind.clone())
                        .bind(new.image.clone())
                        .bind(Json(new.command.clone()))
                        .bind(Json(new.env.clone()))
                        .bind(to_i64(new.cpu_millis))
                        .bind(to_i64(new.memory_mb))
                        .bind(new.restart_policy.clone())
                        .bind(node.0)
                        .bind(generation)
                        .bind(Json(new.node_selector.clone()))
                        .bind(group)
                        .bind(policy)
                        .bind(new.placement_strategy.clone())
                        .bind(new.created_at)
                        .bind(new.created_at)
                        .bind(new.subnet_id)
                        .bind(new.private_ip.clone())
                        .bind(new.mac.clone())
                        .bind(new.vm.clone().map(Json));
                }
                q.execute(&mut *tx).await?;
            }
            // Volumes: taken only if still free and on the chosen node; otherwise the whole
            // batch is re-planned (the service checked them just before, so this is a race).
            for (new, node) in &rows {
                for (volume, path) in &new.volumes {
                    let taken = sqlx::query(
                        "UPDATE volumes SET instance_id = $1, mount_path = $2, status = 'attaching'
                         WHERE id = $3 AND node_id = $4 AND instance_id IS NULL AND status = 'available'",
                    )
                    .bind(new.id.0)
                    .bind(path)
                    .bind(*volume)
                    .bind(node.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                    if taken == 0 {
                        return Err(super::StoreError::Conflict);
                    }
                }
            }
            // Ports: security groups, and the nodes whose VPC peers, endpoints or rules
            // change with these instances.
            let mut vpcs: Vec<uuid::Uuid> = Vec::new();
            let mut groups: Vec<uuid::Uuid> = Vec::new();
            for (new, _) in &rows {
                for g in &new.security_groups {
                    sqlx::query("INSERT INTO instance_security_groups (instance_id, group_id) VALUES ($1, $2)")
                        .bind(new.id.0)
                        .bind(*g)
                        .execute(&mut *tx)
                        .await?;
                    groups.push(*g);
                }
                if let Some(subnet) = new.subnet_id {
                    let vpc: Option<(uuid::Uuid,)> = sqlx::query_as("SELECT vpc_id FROM subnets WHERE id = $1")
                        .bind(subnet)
                        .fetch_optional(&mut *tx)
                        .await?;
                    vpcs.extend(vpc.map(|v| v.0));
                }
            }
            vpcs.sort();
            vpcs.dedup();
            groups.sort();
            groups.dedup();
            let woken = super::network::bump_network_dependents!(tx, pg, &vpcs, &groups);
            Ok((out, woken))
        })?;
        self.wake(&woken);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_sql_numbers_every_placeholder_once() {
        let sql = insert_sql(2, true);
        assert!(sql.contains("($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22, 'running', 'scheduled')"), "{sql}");
        assert!(sql.ends_with("$43,$44, 'running', 'scheduled')"), "{sql}");
        let lite = insert_sql(1, false);
        assert_eq!(lite.matches('?').count(), 22, "{lite}");
    }
}
