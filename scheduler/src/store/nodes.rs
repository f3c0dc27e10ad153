//! Nodes: facts reported by agents, status, desired-state generation, allocation.

use super::{Store, StoreError, StoreResult, in_tx, on_pool};
use chrono::{DateTime, Utc};
use cloud_api::ids::NodeId;
use sqlx::types::Json;
use std::collections::BTreeMap;
use uuid::Uuid;

/// `SELECT` of nodes with their allocation (correlated, index-backed sums: cheap for one node
/// or a page of nodes). Expands to a string literal, so every query stays a static,
/// parameterised string.
macro_rules! select_nodes {
    ($tail:literal) => {
        concat!(
            "SELECT n.id, n.name, n.hostname, n.status, n.cpu_millis, n.memory_mb, n.disk_gb, ",
            "n.drivers, n.labels, n.agent_version, n.generation, ",
            "COALESCE((SELECT l.applied_generation FROM node_liveness l WHERE l.node_id = n.id), n.applied_generation) AS applied_generation, ",
            "n.cert_serial, ",
            "COALESCE((SELECT l.last_heartbeat_at FROM node_liveness l WHERE l.node_id = n.id), n.last_heartbeat_at) AS last_heartbeat_at, ",
            "n.created_at, n.placement_generation, n.status_changed_at, n.drain, ",
            "(SELECT CAST(SUM(i.cpu_millis) AS BIGINT) FROM instances i WHERE i.node_id = n.id) AS alloc_cpu_millis, ",
            "(SELECT CAST(SUM(i.memory_mb) AS BIGINT) FROM instances i WHERE i.node_id = n.id) AS alloc_memory_mb ",
            "FROM nodes n ",
            $tail
        )
    };
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NodeRecord {
    pub id: Uuid,
    pub name: String,
    pub hostname: String,
    pub status: String,
    pub cpu_millis: i64,
    pub memory_mb: i64,
    pub disk_gb: i64,
    pub drivers: Json<Vec<String>>,
    pub labels: Json<BTreeMap<String, String>>,
    pub agent_version: Option<String>,
    pub generation: i64,
    pub applied_generation: i64,
    pub cert_serial: String,
    pub last_heartbeat_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    /// Changes whenever the node's room for new work may have shrunk (placements, capacity
    /// reports); plans are committed only if it is unchanged.
    pub placement_generation: i64,
    pub status_changed_at: Option<DateTime<Utc>>,
    /// `evacuate` or `keep_instances` while drained (kept while the node is down, so a drain
    /// survives an agent restart), else None.
    pub drain: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NodeWithAllocation {
    #[sqlx(flatten)]
    pub node: NodeRecord,
    pub alloc_cpu_millis: Option<i64>,
    pub alloc_memory_mb: Option<i64>,
}

/// A row of [`Store::node_list_unavailable`]: id, name, status, since when.
pub type UnavailableNode = (Uuid, String, String, Option<DateTime<Utc>>);

/// Node labels, key → value.
pub type Labels = BTreeMap<String, String>;

/// What an agent says about its host in `Hello`.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub hostname: String,
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub disk_gb: u64,
    pub drivers: Vec<String>,
    pub labels: BTreeMap<String, String>,
    pub agent_version: String,
    /// VXLAN endpoint address of the node (None: no VPC networking there).
    pub underlay_ip: Option<String>,
    pub underlay_mtu: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StatusCount {
    pub status: String,
    pub count: i64,
}

impl Store {
    pub async fn node_get(&self, id: NodeId) -> StoreResult<NodeWithAllocation> {
        on_pool!(self, p => Ok(sqlx::query_as(select_nodes!("WHERE n.id = $1"))
            .bind(id.0)
            .fetch_one(p)
            .await?))
    }

    pub async fn node_get_by_name(&self, name: &str) -> StoreResult<NodeWithAllocation> {
        on_pool!(self, p => Ok(sqlx::query_as(select_nodes!("WHERE n.name = $1"))
            .bind(name)
            .fetch_one(p)
            .await?))
    }

    /// A page of nodes in id order, after `after`.
    pub async fn node_list(
        &self,
        after: Option<NodeId>,
        limit: u32,
    ) -> StoreResult<Vec<NodeWithAllocation>> {
        on_pool!(self, p => Ok(sqlx::query_as(select_nodes!(
            "WHERE ($1 IS NULL OR n.id > $1) ORDER BY n.id LIMIT $2"
        ))
            .bind(after.map(|a| a.0))
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?))
    }

    /// Every node with its allocation (one aggregate over all instances): the input of the
    /// planner's full refresh.
    pub async fn node_snapshot(&self) -> StoreResult<Vec<NodeWithAllocation>> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT n.id, n.name, n.hostname, n.status, n.cpu_millis, n.memory_mb, n.disk_gb,
                n.drivers, n.labels, n.agent_version, n.generation, n.applied_generation, n.cert_serial,
                n.last_heartbeat_at, n.created_at, n.placement_generation, n.status_changed_at,
                n.drain, a.alloc_cpu_millis, a.alloc_memory_mb
             FROM nodes n LEFT JOIN (SELECT node_id,
                CAST(SUM(cpu_millis) AS BIGINT) AS alloc_cpu_millis,
                CAST(SUM(memory_mb) AS BIGINT) AS alloc_memory_mb
                FROM instances WHERE node_id IS NOT NULL GROUP BY node_id) a ON a.node_id = n.id
             ORDER BY n.id",
        )
        .fetch_all(p)
        .await?))
    }

    /// Every node's id, status and labels (cheap: no allocation sums).
    pub async fn node_labels(&self) -> StoreResult<Vec<(Uuid, String, Labels)>> {
        let rows: Vec<(Uuid, String, Json<Labels>)> = on_pool!(self, p => sqlx::query_as(
            "SELECT id, status, labels FROM nodes ORDER BY id",
        )
        .fetch_all(p)
        .await?);
        Ok(rows.into_iter().map(|(id, s, l)| (id, s, l.0)).collect())
    }

    /// Members of placement groups per node: (node, project, group, count).
    pub async fn node_group_counts(
        &self,
        node: Option<NodeId>,
    ) -> StoreResult<Vec<(Uuid, Uuid, String, i64)>> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT node_id, project_id, placement_group, COUNT(*) FROM instances
             WHERE node_id IS NOT NULL AND placement_group IS NOT NULL AND ($1 IS NULL OR node_id = $1)
             GROUP BY node_id, project_id, placement_group",
        )
        .bind(node.map(|n| n.0))
        .fetch_all(p)
        .await?))
    }

    /// The node's desired-state generation alone (cheap; sessions poll it).
    pub async fn node_generation(&self, id: NodeId) -> StoreResult<i64> {
        on_pool!(self, p => {
            let row: (i64,) = sqlx::query_as("SELECT generation FROM nodes WHERE id = $1")
                .bind(id.0)
                .fetch_one(p)
                .await?;
            Ok(row.0)
        })
    }

    /// Records the facts of a `Hello` and marks the node `ready` (a drained node becomes
    /// `draining` again).
    pub async fn node_update_facts(&self, id: NodeId, f: &NodeFacts) -> StoreResult<()> {
        let now = Utc::now();
        let before: Option<(Option<String>,)> = on_pool!(self, p => sqlx::query_as(
            "SELECT underlay_ip FROM nodes WHERE id = $1",
        )
        .bind(id.0)
        .fetch_optional(p)
        .await?);
        let done = on_pool!(self, p => {
            sqlx::query(
                "UPDATE nodes SET hostname = $2, cpu_millis = $3, memory_mb = $4, disk_gb = $5,
                    drivers = $6, labels = $7, agent_version = $8, last_heartbeat_at = $9,
                    underlay_ip = $10, underlay_mtu = $11,
                    updated_at = $9, placement_generation = placement_generation + 1,
                    status_changed_at = CASE WHEN status = 'down' THEN $9 ELSE status_changed_at END,
                    status = CASE WHEN drain IS NOT NULL THEN 'draining' ELSE 'ready' END
                 WHERE id = $1",
            )
            .bind(id.0)
            .bind(&f.hostname)
            .bind(super::to_i64(f.cpu_millis))
            .bind(super::to_i64(f.memory_mb))
            .bind(super::to_i64(f.disk_gb))
            .bind(Json(&f.drivers))
            .bind(Json(&f.labels))
            .bind(&f.agent_version)
            .bind(now)
            .bind(&f.underlay_ip)
            .bind(i64::from(f.underlay_mtu))
            .execute(p)
            .await?
            .rows_affected()
        });
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        if before.is_some_and(|(old,)| old != f.underlay_ip) {
            // Its VXLAN endpoint moved: the other nodes of its VPCs must follow.
            self.bump_vpcs_of_node(id.0).await?;
        }
        Ok(())
    }

    /// Marks a node `down`: its instances become `lost`, and instances that were only
    /// waiting for the node to confirm their deletion are deleted (the agent removes them
    /// when it comes back, since they are no longer in its desired state). Returns false when
    /// the node was already down.
    pub async fn node_mark_down(&self, id: NodeId, reason: &str) -> StoreResult<bool> {
        let now = Utc::now();
        let pg = self.is_postgres();
        let (changed, woken) = in_tx!(self, tx => {
            let changed = sqlx::query(
                "UPDATE nodes SET status = 'down', updated_at = $2, status_changed_at = $2,
                    placement_generation = placement_generation + 1
                 WHERE id = $1 AND status <> 'down'",
            )
            .bind(id.0)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if changed == 0 {
                return Ok((false, Vec::new()));
            }
            let gone: Vec<(Option<uuid::Uuid>,)> = sqlx::query_as(
                "DELETE FROM instances WHERE node_id = $1 AND status = 'deleting' RETURNING subnet_id",
            )
            .bind(id.0)
            .fetch_all(&mut *tx)
            .await?;
            // Deleted ports leave the other nodes of their VPCs.
            let mut vpcs: Vec<uuid::Uuid> = Vec::new();
            for subnet in gone.into_iter().filter_map(|g| g.0) {
                let vpc: Option<(uuid::Uuid,)> = sqlx::query_as("SELECT vpc_id FROM subnets WHERE id = $1")
                    .bind(subnet)
                    .fetch_optional(&mut *tx)
                    .await?;
                vpcs.extend(vpc.map(|v| v.0));
            }
            vpcs.sort();
            vpcs.dedup();
            let woken = super::network::bump_network_dependents!(tx, pg, &vpcs, &[]);
            sqlx::query(
                "UPDATE instances SET status = 'lost', status_reason = $2, updated_at = $3
                 WHERE node_id = $1",
            )
            .bind(id.0)
            .bind(reason)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            Ok((true, woken))
        })?;
        self.wake(&woken);
        Ok(changed)
    }

    /// `down` → `ready` (or `draining` when drained); returns the new status if it changed.
    pub async fn node_set_ready_if_down(&self, id: NodeId) -> StoreResult<Option<String>> {
        let row: Option<(String,)> = on_pool!(self, p => sqlx::query_as(
            "UPDATE nodes SET status = CASE WHEN drain IS NOT NULL THEN 'draining' ELSE 'ready' END,
                updated_at = $2, status_changed_at = $2
             WHERE id = $1 AND status = 'down' RETURNING status",
        )
        .bind(id.0)
        .bind(Utc::now())
        .fetch_optional(p)
        .await?);
        Ok(row.map(|r| r.0))
    }

    /// When an agent has applied a generation the store has not reached (a restored
    /// database), moves the store's generation past it; returns whether it moved.
    pub async fn node_raise_generation(&self, id: NodeId, applied: u64) -> StoreResult<bool> {
        let done = on_pool!(self, p => sqlx::query(
            "UPDATE nodes SET generation = $2 + 1 WHERE id = $1 AND generation < $2",
        )
        .bind(id.0)
        .bind(super::to_i64(applied))
        .execute(p)
        .await?
        .rows_affected());
        Ok(done > 0)
    }

    /// Drains a node in `mode` (`evacuate` or `keep_instances`: status `draining`, except that
    /// a down node drained with `keep_instances` stays `down` so the usual rescheduling of a
    /// down node applies), or with None undrains it back to `undrained_status` (`ready` or
    /// `down`). A node that stays `down` keeps its `status_changed_at`, so its rescheduling
    /// grace is not restarted. Bumps the placement generation so plans made before are re-checked. Returns
    /// whether it changed.
    pub async fn node_set_drain(
        &self,
        id: NodeId,
        mode: Option<&str>,
        undrained_status: &str,
    ) -> StoreResult<bool> {
        let now = Utc::now();
        let done = if let Some(mode) = mode {
            on_pool!(self, p => sqlx::query(
                "UPDATE nodes SET drain = $3,
                    status = CASE WHEN $3 = 'keep_instances' AND status = 'down' THEN 'down' ELSE 'draining' END,
                    status_changed_at = CASE
                        WHEN status = 'draining' OR ($3 = 'keep_instances' AND status = 'down') THEN status_changed_at
                        ELSE $2 END,
                    updated_at = $2, placement_generation = placement_generation + 1
                 WHERE id = $1 AND (drain IS NULL OR drain <> $3)",
            )
            .bind(id.0)
            .bind(now)
            .bind(mode)
            .execute(p)
            .await?
            .rows_affected())
        } else {
            on_pool!(self, p => sqlx::query(
                "UPDATE nodes SET status = $3, drain = NULL,
                    status_changed_at = CASE WHEN status = $3 THEN status_changed_at ELSE $2 END,
                    updated_at = $2, placement_generation = placement_generation + 1
                 WHERE id = $1 AND drain IS NOT NULL",
            )
            .bind(id.0)
            .bind(now)
            .bind(undrained_status)
            .execute(p)
            .await?
            .rows_affected())
        };
        Ok(done > 0)
    }

    /// (nodes that have ever reported, of those the ones now down): the mass-failure guard's
    /// inputs. A node enrolled but never connected counts in neither.
    pub async fn node_count_live_and_down(&self) -> StoreResult<(i64, i64)> {
        on_pool!(self, p => {
            let row: (i64, Option<i64>) = sqlx::query_as(
                "SELECT COUNT(*), CAST(SUM(CASE WHEN status = 'down' THEN 1 ELSE 0 END) AS BIGINT)
                 FROM nodes WHERE last_heartbeat_at IS NOT NULL",
            )
            .fetch_one(p)
            .await?;
            Ok((row.0, row.1.unwrap_or(0)))
        })
    }

    /// Nodes whose instances may have to move: down nodes, and nodes drained to evacuate (a
    /// `keep_instances` drain keeps them): id, name, status, since when.
    pub async fn node_list_unavailable(&self) -> StoreResult<Vec<UnavailableNode>> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT id, name, status, status_changed_at FROM nodes
             WHERE status = 'down' OR (status = 'draining' AND drain = 'evacuate') ORDER BY id",
        )
        .fetch_all(p)
        .await?))
    }

    /// Records the generation the agent reports as applied (never moves backwards).
    pub async fn node_set_applied_generation(
        &self,
        id: NodeId,
        generation: u64,
    ) -> StoreResult<()> {
        on_pool!(self, p => {
            sqlx::query("UPDATE nodes SET applied_generation = $2 WHERE id = $1 AND applied_generation < $2")
                .bind(id.0)
                .bind(super::to_i64(generation))
                .execute(p)
                .await?;
        });
        Ok(())
    }

    pub async fn node_count_by_status(&self) -> StoreResult<Vec<StatusCount>> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT status, COUNT(*) AS count FROM nodes GROUP BY status",
        )
        .fetch_all(p)
        .await?))
    }
}
