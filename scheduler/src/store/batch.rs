//! Multi-row writes for hot paths: one statement updates many rows (`UPDATE … FROM (VALUES
//! …)`), so a busy fleet costs a few statements per flush instead of one per row. Both SQLite
//! (≥ 3.33) and PostgreSQL accept this form; `VALUES` columns are `column1`, `column2`, ….

use super::{InstanceUpdate, Store, StoreResult, in_tx, to_i64};
use chrono::{DateTime, Utc};
use cloud_api::{InstanceId, NodeId};
use std::collections::{HashMap, HashSet};
use uuid::Uuid;

/// Rows per statement (at most 9 parameters each).
const CHUNK: usize = 200;

/// `(${1}, …, ${width}), (…)` for `rows` rows, or with SQLite's anonymous `?` (`pg` false):
/// SQLite looks named parameters up by a linear scan per bind, which makes big multi-row
/// statements quadratic; anonymous ones bind in order at no cost.
pub(crate) fn values(rows: usize, width: usize, pg: bool) -> String {
    let mut out = String::new();
    for r in 0..rows {
        if r > 0 {
            out.push(',');
        }
        out.push('(');
        for c in 0..width {
            if c > 0 {
                out.push(',');
            }
            if pg {
                out.push_str(&format!("${}", r * width + c + 1));
            } else {
                out.push('?');
            }
        }
        out.push(')');
    }
    out
}

/// One instance observation to write, guarded like a single one.
#[derive(Debug, Clone)]
pub struct ObservationWrite {
    pub node: NodeId,
    pub id: InstanceId,
    pub applied_generation: u64,
    pub update: InstanceUpdate,
}

/// (instance, node, subnet, project) of a deleted instance row.
type DeletedRow = (Uuid, Uuid, Option<Uuid>, Uuid);

/// An instance whose status (or reason) an observation changed.
#[derive(Debug, Clone)]
pub struct StatusChange {
    pub id: Uuid,
    pub project_id: Uuid,
    pub node: Uuid,
    pub from: String,
    pub to: String,
    pub reason: Option<String>,
}

/// A deletion the node's agent has carried out.
#[derive(Debug, Clone, Copy)]
pub struct DeletionConfirm {
    pub node: NodeId,
    pub id: InstanceId,
    pub applied_generation: u64,
}

impl Store {
    /// Writes a batch of instance rows in one transaction: observations (each applied only if
    /// the agent has applied the instance's last change and it is not being deleted) and
    /// confirmed deletions. Rows are taken in id order. Returns the deleted (instance, node)
    /// pairs. Touches no node row, so it cannot deadlock with writers that lock a node and
    /// then its instances.
    pub async fn observations_write(
        &self,
        observations: &[ObservationWrite],
        deletions: &[DeletionConfirm],
    ) -> StoreResult<(Vec<(Uuid, Uuid, Uuid)>, Vec<StatusChange>)> {
        let mut observations = observations.to_vec();
        observations.sort_by_key(|o| o.id);
        let mut deletions = deletions.to_vec();
        deletions.sort_by_key(|d| d.id);
        let now: DateTime<Utc> = Utc::now();
        let pg = self.is_postgres();
        let (deleted, changes): (Vec<DeletedRow>, Vec<StatusChange>) = in_tx!(self, tx => {
            let mut changes = Vec::new();
            for chunk in observations.chunks(CHUNK) {
                // What the rows say now, to tell which observations change a status.
                let ids = (1..=chunk.len())
                    .map(|i| if pg { format!("${i}") } else { "?".to_owned() })
                    .collect::<Vec<_>>()
                    .join(",");
                let sql = format!(
                    "SELECT id, project_id, status, status_reason FROM instances WHERE id IN ({ids})"
                );
                let mut q = sqlx::query_as::<_, (Uuid, Uuid, String, Option<String>)>(sqlx::AssertSqlSafe(sql));
                for o in chunk {
                    q = q.bind(o.id.0);
                }
                let before: HashMap<Uuid, (Uuid, String, Option<String>)> = q
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .map(|(id, p, st, r)| (id, (p, st, r)))
                    .collect();
                // The SQL holds only placeholders; every value is bound.
                let sql = format!(
                    "UPDATE instances SET status = v.column4, status_reason = v.column5, runtime_id = v.column6, \
                     started_at = v.column7, exit_code = v.column8, updated_at = v.column9 \
                     FROM (VALUES {}) AS v \
                     WHERE instances.id = v.column1 AND instances.node_id = v.column2 \
                     AND instances.change_generation <= v.column3 AND instances.status <> 'deleting' \
                     RETURNING instances.id",
                    values(chunk.len(), 9, pg)
                );
                let mut q = sqlx::query_as::<_, (Uuid,)>(sqlx::AssertSqlSafe(sql));
                for o in chunk {
                    q = q
                        .bind(o.id.0)
                        .bind(o.node.0)
                        .bind(to_i64(o.applied_generation))
                        .bind(o.update.status.clone())
                        .bind(o.update.status_reason.clone())
                        .bind(o.update.runtime_id.clone())
                        .bind(o.update.started_at)
                        .bind(o.update.exit_code)
                        .bind(now);
                }
                let applied: HashSet<Uuid> =
                    q.fetch_all(&mut *tx).await?.into_iter().map(|r| r.0).collect();
                for o in chunk.iter().filter(|o| applied.contains(&o.id.0)) {
                    if let Some((project, from, reason)) = before.get(&o.id.0)
                        && (*from != o.update.status || *reason != o.update.status_reason)
                    {
                        changes.push(StatusChange {
                            id: o.id.0,
                            project_id: *project,
                            node: o.node.0,
                            from: from.clone(),
                            to: o.update.status.clone(),
                            reason: o.update.status_reason.clone(),
                        });
                    }
                }
            }
            let mut deleted = Vec::new();
            for chunk in deletions.chunks(CHUNK) {
                let sql = format!(
                    "DELETE FROM instances WHERE status = 'deleting' AND EXISTS (SELECT 1 FROM (VALUES {}) AS v \
                     WHERE v.column1 = instances.id AND v.column2 = instances.node_id \
                     AND instances.change_generation <= v.column3) RETURNING id, node_id, subnet_id, project_id",
                    values(chunk.len(), 3, pg)
                );
                let mut q = sqlx::query_as::<_, DeletedRow>(sqlx::AssertSqlSafe(sql));
                for d in chunk {
                    q = q.bind(d.id.0).bind(d.node.0).bind(to_i64(d.applied_generation));
                }
                deleted.extend(q.fetch_all(&mut *tx).await?);
            }
            Ok((deleted, changes))
        })?;
        // Deleted ports leave the other nodes' FDB and source-group expansions.
        let mut subnets: Vec<Uuid> = deleted.iter().filter_map(|d| d.2).collect();
        subnets.sort();
        subnets.dedup();
        for s in subnets {
            self.bump_subnet_dependents(s).await?;
        }
        Ok((
            deleted
                .into_iter()
                .map(|(id, node, _, project)| (id, node, project))
                .collect(),
            changes,
        ))
    }

    /// Records the generations agents report as applied (never backwards), in node order.
    pub async fn node_applied_write(&self, applied: &[(NodeId, u64)]) -> StoreResult<()> {
        if applied.is_empty() {
            return Ok(());
        }
        let mut applied = applied.to_vec();
        applied.sort();
        let pg = self.is_postgres();
        in_tx!(self, tx => {
            for chunk in applied.chunks(CHUNK) {
                // The SQL holds only placeholders; every value is bound.
                let sql = format!(
                    "INSERT INTO node_liveness (node_id, applied_generation) VALUES {} \
                     ON CONFLICT (node_id) DO UPDATE SET applied_generation = CASE \
                     WHEN excluded.applied_generation > node_liveness.applied_generation \
                     THEN excluded.applied_generation ELSE node_liveness.applied_generation END",
                    values(chunk.len(), 2, pg)
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (node, generation) in chunk {
                    q = q.bind(node.0).bind(to_i64(*generation));
                }
                q.execute(&mut *tx).await?;
            }
            Ok(())
        })
    }

    /// Persists heartbeat times collected in memory, many nodes per statement, in node order.
    pub async fn node_record_heartbeats(
        &self,
        beats: &[(NodeId, DateTime<Utc>)],
    ) -> StoreResult<()> {
        if beats.is_empty() {
            return Ok(());
        }
        let mut beats = beats.to_vec();
        beats.sort();
        let pg = self.is_postgres();
        in_tx!(self, tx => {
            for chunk in beats.chunks(CHUNK) {
                let sql = format!(
                    "INSERT INTO node_liveness (node_id, last_heartbeat_at) VALUES {} \
                     ON CONFLICT (node_id) DO UPDATE SET last_heartbeat_at = excluded.last_heartbeat_at",
                    values(chunk.len(), 2, pg)
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (node, at) in chunk {
                    q = q.bind(node.0).bind(*at);
                }
                q.execute(&mut *tx).await?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::values;

    #[test]
    fn values_numbers_placeholders_row_by_row() {
        assert_eq!(values(2, 3, true), "($1,$2,$3),($4,$5,$6)");
        assert_eq!(values(1, 1, true), "($1)");
        assert_eq!(values(2, 2, false), "(?,?),(?,?)");
    }
}
