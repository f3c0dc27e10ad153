//! Instances: what users asked for, where it was placed, and what the node observed.
//!
//! Every change to what a node must run bumps that node's generation in the same transaction
//! and stamps the instance with it (`change_generation`); observations from an agent that has
//! not applied that generation yet are ignored, so stale reports never undo a newer request.

use super::{Store, StoreError, StoreResult, in_tx, on_pool, to_i64};
use chrono::{DateTime, Utc};
use cloud_api::ids::{InstanceId, NodeId, ProjectId};
use sqlx::types::Json;
use std::collections::BTreeMap;
use uuid::Uuid;

/// Bumps the generation of the node an instance is placed on, inside the open transaction
/// `$tx`, and evaluates to `Option<(generation, node status)>` (`None` when the instance has no
/// node or does not exist). Taking the node row first serialises this transaction with a
/// concurrent mark-down of the same node (which also starts with the node row).
macro_rules! bump_node_of_instance {
    ($tx:ident, $project:expr, $id:expr) => {{
        let row: Option<(i64, String)> = sqlx::query_as(
            "UPDATE nodes SET generation = generation + 1
             WHERE id = (SELECT node_id FROM instances WHERE project_id = $1 AND id = $2)
             RETURNING generation, status",
        )
        .bind($project.0)
        .bind($id.0)
        .fetch_optional(&mut *$tx)
        .await?;
        row
    }};
}

/// `SELECT` of instances (with their node's name); `$extra` adds columns.
macro_rules! select_instances {
    ($tail:literal) => {
        select_instances!("", $tail)
    };
    ($extra:literal, $tail:literal) => {
        concat!(
            "SELECT i.id, i.project_id, i.name, i.kind, i.image, i.command, i.env, i.cpu_millis, ",
            "i.memory_mb, i.restart_policy, i.desired_state, i.status, i.status_reason, i.node_id, ",
            "n.name AS node_name, i.change_generation, i.runtime_id, i.started_at, i.exit_code, ",
            "i.node_selector, i.placement_group, i.placement_policy, i.placement_strategy, ",
            "i.created_at, i.updated_at, i.subnet_id, i.private_ip, i.mac, i.vm_spec ",
            $extra,
            " FROM instances i LEFT JOIN nodes n ON n.id = i.node_id ",
            $tail
        )
    };
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceRecord {
    pub id: Uuid,
    pub project_id: Uuid,
    pub name: String,
    pub kind: String,
    pub image: String,
    pub command: Json<Vec<String>>,
    pub env: Json<BTreeMap<String, String>>,
    pub cpu_millis: i64,
    pub memory_mb: i64,
    pub restart_policy: String,
    pub desired_state: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub node_id: Option<Uuid>,
    pub node_name: Option<String>,
    pub change_generation: i64,
    pub runtime_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub node_selector: Json<BTreeMap<String, String>>,
    pub placement_group: Option<String>,
    pub placement_policy: Option<String>,
    pub placement_strategy: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The instance's port in a VPC, if it has one.
    pub subnet_id: Option<Uuid>,
    pub private_ip: Option<String>,
    pub mac: Option<String>,
    /// kind "vm": image, root disk and cloud-init data.
    pub vm_spec: Option<Json<super::VmSpecRecord>>,
}

#[derive(Debug, Clone)]
pub struct NewInstance {
    pub id: InstanceId,
    pub project_id: ProjectId,
    pub name: String,
    pub kind: String,
    pub image: String,
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub restart_policy: String,
    pub node_selector: BTreeMap<String, String>,
    /// (group name, "spread" | "pack")
    pub placement_group: Option<(String, String)>,
    pub placement_strategy: Option<String>,
    pub created_at: DateTime<Utc>,
    /// The port: subnet, address and MAC (the planner's IPAM fills in the address and MAC).
    pub subnet_id: Option<Uuid>,
    pub private_ip: Option<String>,
    pub mac: Option<String>,
    pub security_groups: Vec<Uuid>,
    /// Volumes to mount (volume, path); they pin the instance to their node.
    pub volumes: Vec<(Uuid, String)>,
    pub required_node: Option<NodeId>,
    /// kind "vm": image, root disk and cloud-init data.
    pub vm: Option<super::VmSpecRecord>,
}

/// The changing part of an instance: what sessions need to diff observations and build
/// desired states (no JSON columns to decode).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceState {
    pub id: Uuid,
    pub name: String,
    pub desired_state: String,
    pub status: String,
    pub status_reason: Option<String>,
    pub runtime_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
    pub change_generation: i64,
}

#[derive(sqlx::FromRow)]
struct DesiredLightRow {
    #[sqlx(flatten)]
    state: InstanceState,
    node_generation: i64,
}

#[derive(sqlx::FromRow)]
struct DesiredRow {
    #[sqlx(flatten)]
    record: InstanceRecord,
    node_generation: i64,
}

/// What an agent observed about one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceUpdate {
    pub status: String,
    pub status_reason: Option<String>,
    pub runtime_id: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub exit_code: Option<i32>,
}

/// Outcome of a delete request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteOutcome {
    /// Gone from the store (it had no node, or its node was down).
    Deleted,
    /// Waiting for the node's agent to remove it.
    Deleting,
}

impl Store {
    /// Inserts one instance placed on `node`, guarded by the placement generation the plan
    /// saw: when the node changed since (or is no longer ready) nothing is written and
    /// `Conflict` says to re-plan. `Duplicate` when the name is taken in the project.
    pub async fn instance_insert_placed(
        &self,
        new: &NewInstance,
        node: NodeId,
        seen_placement_generation: i64,
    ) -> StoreResult<()> {
        let guard = super::NodeGuard {
            node,
            placement_generation: seen_placement_generation,
        };
        let out = self.placements_commit(&[guard], &[(new, node)]).await?;
        if out.conflicted.contains(&node) {
            return Err(StoreError::Conflict);
        }
        Ok(())
    }

    pub async fn instance_get(
        &self,
        project: ProjectId,
        id: InstanceId,
    ) -> StoreResult<InstanceRecord> {
        on_pool!(self, p => Ok(sqlx::query_as(select_instances!("WHERE i.project_id = $1 AND i.id = $2"))
            .bind(project.0)
            .bind(id.0)
            .fetch_one(p)
            .await?))
    }

    pub async fn instance_get_by_name(
        &self,
        project: ProjectId,
        name: &str,
    ) -> StoreResult<InstanceRecord> {
        on_pool!(self, p => Ok(sqlx::query_as(select_instances!("WHERE i.project_id = $1 AND i.name = $2"))
            .bind(project.0)
            .bind(name)
            .fetch_one(p)
            .await?))
    }

    /// A page of the project's instances in id (= creation) order, after `after`.
    pub async fn instance_list(
        &self,
        project: ProjectId,
        after: Option<InstanceId>,
        limit: u32,
    ) -> StoreResult<Vec<InstanceRecord>> {
        on_pool!(self, p => Ok(sqlx::query_as(select_instances!(
            "WHERE i.project_id = $1 AND ($2 IS NULL OR i.id > $2) ORDER BY i.id LIMIT $3"
        ))
        .bind(project.0)
        .bind(after.map(|a| a.0))
        .bind(i64::from(limit))
        .fetch_all(p)
        .await?))
    }

    /// A node's desired state in one statement (one consistent snapshot): its generation and
    /// the instances it must run (not those being deleted).
    pub async fn node_desired_state(
        &self,
        node: NodeId,
    ) -> StoreResult<(i64, Vec<InstanceRecord>)> {
        let rows: Vec<DesiredRow> = on_pool!(self, p => sqlx::query_as(select_instances!(
            ", n.generation AS node_generation",
            "WHERE i.node_id = $1 AND i.status <> 'deleting' ORDER BY i.id"
        ))
        .bind(node.0)
        .fetch_all(p)
        .await?);
        if let Some(first) = rows.first() {
            let generation = first.node_generation;
            return Ok((generation, rows.into_iter().map(|r| r.record).collect()));
        }
        // No instances: the generation alone.
        Ok((self.node_generation(node).await?, Vec::new()))
    }

    /// The states of every instance on a node (deleting ones too).
    pub async fn instance_states_by_node(&self, node: NodeId) -> StoreResult<Vec<InstanceState>> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT id, name, desired_state, status, status_reason, runtime_id, started_at, exit_code,
                change_generation FROM instances WHERE node_id = $1 ORDER BY id",
        )
        .bind(node.0)
        .fetch_all(p)
        .await?))
    }

    /// A node's desired state, light: its generation and the states of the instances it must
    /// run, in one statement (one snapshot). Specs come from the caller's cache.
    pub async fn node_desired_light(&self, node: NodeId) -> StoreResult<(i64, Vec<InstanceState>)> {
        let rows: Vec<DesiredLightRow> = on_pool!(self, p => sqlx::query_as(
            "SELECT i.id, i.name, i.desired_state, i.status, i.status_reason, i.runtime_id, i.started_at,
                i.exit_code, i.change_generation, n.generation AS node_generation
             FROM instances i JOIN nodes n ON n.id = i.node_id
             WHERE i.node_id = $1 AND i.status <> 'deleting' ORDER BY i.id",
        )
        .bind(node.0)
        .fetch_all(p)
        .await?);
        if let Some(first) = rows.first() {
            let generation = first.node_generation;
            return Ok((generation, rows.into_iter().map(|r| r.state).collect()));
        }
        Ok((self.node_generation(node).await?, Vec::new()))
    }

    /// Full records of the given instances (any project; for the scheduler's own use).
    pub async fn instances_get_many(&self, ids: &[Uuid]) -> StoreResult<Vec<InstanceRecord>> {
        let pg = self.is_postgres();
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(200) {
            let list = super::batch::values(chunk.len(), 1, pg).replace("),(", ",");
            // The SQL holds only placeholders; every value is bound.
            let sql = format!("{} WHERE i.id IN {list}", select_instances!(""));
            let rows: Vec<InstanceRecord> = on_pool!(self, p => {
                let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
                for id in chunk {
                    q = q.bind(*id);
                }
                q.fetch_all(p).await?
            });
            out.extend(rows);
        }
        Ok(out)
    }

    /// Every instance placed on a node (all projects): the node's desired state.
    pub async fn instance_list_by_node(&self, node: NodeId) -> StoreResult<Vec<InstanceRecord>> {
        on_pool!(self, p => Ok(sqlx::query_as(select_instances!("WHERE i.node_id = $1 ORDER BY i.id"))
            .bind(node.0)
            .fetch_all(p)
            .await?))
    }

    /// Records a user's start/stop: sets the desired run state and the transitional status,
    /// bumping the node's generation. `Conflict` when the instance is being deleted or its node
    /// is down; `NotFound` when it does not exist.
    pub async fn instance_set_desired(
        &self,
        project: ProjectId,
        id: InstanceId,
        desired: &str,
        status: &str,
    ) -> StoreResult<()> {
        let now = Utc::now();
        in_tx!(self, tx => {
            let node = bump_node_of_instance!(tx, project, id);
            if node.as_ref().is_some_and(|(_, status)| status == "down") {
                return Err(StoreError::Conflict);
            }
            let done = sqlx::query(
                "UPDATE instances SET desired_state = $3, status = $4, status_reason = NULL,
                    exit_code = NULL, change_generation = COALESCE($5, change_generation), updated_at = $6
                 WHERE project_id = $1 AND id = $2 AND status <> 'deleting'",
            )
            .bind(project.0)
            .bind(id.0)
            .bind(desired)
            .bind(status)
            .bind(node.map(|(generation, _)| generation))
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if done == 0 {
                let exists: Option<(Uuid,)> = sqlx::query_as("SELECT id FROM instances WHERE project_id = $1 AND id = $2")
                    .bind(project.0)
                    .bind(id.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                return Err(if exists.is_some() { StoreError::Conflict } else { StoreError::NotFound });
            }
            Ok(())
        })
    }

    /// Starts deleting an instance. An instance with no node, or on a node that is down, is
    /// deleted at once (a down node's agent removes it when it returns, since it is no longer
    /// desired); otherwise it becomes `deleting` until the agent confirms.
    pub async fn instance_delete(
        &self,
        project: ProjectId,
        id: InstanceId,
    ) -> StoreResult<DeleteOutcome> {
        let now = Utc::now();
        let (outcome, freed_subnet) = in_tx!(self, tx => {
            match bump_node_of_instance!(tx, project, id) {
                Some((generation, node_status)) if node_status != "down" => {
                    sqlx::query(
                        "UPDATE instances SET status = 'deleting', status_reason = NULL,
                            change_generation = $3, updated_at = $4
                         WHERE project_id = $1 AND id = $2",
                    )
                    .bind(project.0)
                    .bind(id.0)
                    .bind(generation)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    Ok((DeleteOutcome::Deleting, None))
                }
                _ => {
                    let gone: Option<(Option<Uuid>,)> = sqlx::query_as(
                        "DELETE FROM instances WHERE project_id = $1 AND id = $2 RETURNING subnet_id",
                    )
                    .bind(project.0)
                    .bind(id.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match gone {
                        None => Err(StoreError::NotFound),
                        Some((subnet,)) => Ok((DeleteOutcome::Deleted, subnet)),
                    }
                }
            }
        })?;
        if let Some(subnet) = freed_subnet {
            // Its address leaves the other nodes' FDB and source-group expansions.
            self.bump_subnet_dependents(subnet).await?;
        }
        Ok(outcome)
    }

    /// Applies an agent's observation of one of its instances, unless the agent has not yet
    /// applied the generation of the instance's last change. Returns whether a row changed.
    pub async fn instance_apply_observation(
        &self,
        node: NodeId,
        id: InstanceId,
        applied_generation: u64,
        u: &InstanceUpdate,
    ) -> StoreResult<bool> {
        let now = Utc::now();
        let done = on_pool!(self, p => sqlx::query(
            "UPDATE instances SET status = $4, status_reason = $5, runtime_id = $6, started_at = $7,
                exit_code = $8, updated_at = $9
             WHERE id = $1 AND node_id = $2 AND change_generation <= $3 AND status <> 'deleting'",
        )
        .bind(id.0)
        .bind(node.0)
        .bind(to_i64(applied_generation))
        .bind(&u.status)
        .bind(&u.status_reason)
        .bind(&u.runtime_id)
        .bind(u.started_at)
        .bind(u.exit_code)
        .bind(now)
        .execute(p)
        .await?
        .rows_affected());
        Ok(done > 0)
    }

    /// Deletes an instance the node's agent no longer has, once the agent has applied the
    /// generation that removed it. Returns whether it was deleted.
    pub async fn instance_confirm_deleted(
        &self,
        node: NodeId,
        id: InstanceId,
        applied_generation: u64,
    ) -> StoreResult<bool> {
        let deleted: Option<(Option<Uuid>,)> = on_pool!(self, p => sqlx::query_as(
            "DELETE FROM instances WHERE id = $1 AND node_id = $2 AND status = 'deleting'
             AND change_generation <= $3 RETURNING subnet_id",
        )
        .bind(id.0)
        .bind(node.0)
        .bind(to_i64(applied_generation))
        .fetch_optional(p)
        .await?);
        if let Some((Some(subnet),)) = deleted {
            // Its address leaves the other nodes' FDB and source-group expansions.
            self.bump_subnet_dependents(subnet).await?;
        }
        Ok(deleted.is_some())
    }

    pub async fn instance_count_by_status(&self) -> StoreResult<Vec<super::StatusCount>> {
        on_pool!(self, p => Ok(sqlx::query_as(
            "SELECT status, COUNT(*) AS count FROM instances GROUP BY status",
        )
        .fetch_all(p)
        .await?))
    }
}
