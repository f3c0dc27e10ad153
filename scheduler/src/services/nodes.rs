//! Node lifecycle: enrollment, hello, observed state, telemetry, down detection.

use super::validate;
use crate::app::App;
use crate::error::{Error, Result};
use crate::files::write_private;
use crate::secrets;
use crate::store::{
    DeletionConfirm, InstanceUpdate, NewJoinToken, NodeFacts, NodeWithAllocation, ObservationWrite,
    StoreError,
};
use chrono::{DateTime, TimeZone, Utc};
use cloud_api::{HostUsage, InstanceId, InstanceUsage, NodeId};
use cloud_proto::v1 as pb;
use std::collections::HashMap;

/// File in the data dir holding a join token for the next agent.
pub const JOIN_TOKEN_FILE: &str = "join.token";

/// What enrollment gives the agent.
#[derive(Debug, Clone)]
pub struct Enrolled {
    pub node_id: NodeId,
    pub node_name: String,
    pub certificate_pem: String,
}

/// A node name derived from a host name: lowercase, other characters become `-`.
pub fn node_name_from_hostname(host: &str) -> String {
    let s: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches('-');
    let mut s = if s.as_bytes().first().is_some_and(u8::is_ascii_lowercase) {
        s.to_string()
    } else {
        format!("node-{s}")
    };
    s.truncate(validate::MAX_NAME_LEN);
    s.trim_end_matches('-').to_string()
}

fn state_to_status(s: i32) -> Option<&'static str> {
    match pb::InstanceState::try_from(s).ok()? {
        pb::InstanceState::Starting => Some("starting"),
        pb::InstanceState::Running => Some("running"),
        pb::InstanceState::Stopping => Some("stopping"),
        pb::InstanceState::Stopped => Some("stopped"),
        pb::InstanceState::Failed => Some("failed"),
        pb::InstanceState::Unspecified => None,
    }
}

fn ms_to_time(ms: i64) -> Option<DateTime<Utc>> {
    if ms <= 0 {
        return None;
    }
    Utc.timestamp_millis_opt(ms).single()
}

impl App {
    /// Writes a fresh bootstrap join token to `DATA_DIR/join.token` unless the one there is
    /// still usable.
    pub async fn ensure_bootstrap_join_token(&self) -> Result<()> {
        let path = self.config.data_dir.join(JOIN_TOKEN_FILE);
        if let Ok(existing) = std::fs::read_to_string(&path)
            && self
                .store
                .join_token_is_usable(&secrets::sha256(existing.trim()))
                .await?
        {
            return Ok(());
        }
        self.mint_bootstrap_join_token().await
    }

    async fn mint_bootstrap_join_token(&self) -> Result<()> {
        let token = secrets::new_join_token();
        self.store
            .join_token_insert(&NewJoinToken {
                token_hash: secrets::sha256(&token),
                is_bootstrap: true,
                expires_at: None,
                max_uses: 1,
            })
            .await?;
        let path = self.config.data_dir.join(JOIN_TOKEN_FILE);
        write_private(&path, format!("{token}\n").as_bytes()).map_err(Error::internal)?;
        tracing::info!(path = %path.display(), "wrote a new one-time join token");
        Ok(())
    }

    /// Enrollment: consumes a one-time join token and signs the agent's CSR. The node id is
    /// chosen here and becomes the subject of its certificate.
    pub async fn node_enroll(
        &self,
        join_token: &str,
        csr_pem: &str,
        hostname: &str,
        name: &str,
    ) -> Result<Enrolled> {
        let join_token = join_token.trim();
        if join_token.is_empty() {
            return Err(Error::Unauthorized("join_token: required".into()));
        }
        let hostname = hostname.trim();
        if hostname.is_empty() || hostname.len() > 253 {
            return Err(Error::Invalid(
                "hostname: required, at most 253 characters".into(),
            ));
        }
        let node_name = if name.trim().is_empty() {
            node_name_from_hostname(hostname)
        } else {
            name.trim().to_string()
        };
        validate::name("name", &node_name)?;
        let node_id = NodeId::new();
        let (certificate_pem, serial) = self
            .pki
            .sign_node_csr(csr_pem, node_id)
            .map_err(|e| Error::Invalid(format!("csr_pem: {e}")))?;
        let token_hash = secrets::sha256(join_token);
        let was_bootstrap = match self
            .store
            .join_token_consume_and_insert_node(&token_hash, node_id, &node_name, hostname, &serial)
            .await
        {
            Ok(b) => b,
            Err(StoreError::NotFound) => {
                self.metrics.enroll_refused.inc();
                return Err(Error::Unauthorized(
                    "join token is unknown, already used or expired".into(),
                ));
            }
            Err(StoreError::Duplicate) => {
                return Err(Error::AlreadyExists(format!(
                    "a node named {node_name:?} is already enrolled; give this agent another --name, or remove the old node"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        if was_bootstrap {
            // The node is enrolled whatever happens here: a failure to write the next token
            // must not turn this success into an error (the agent could not retry with the
            // used token). The next start writes a fresh one.
            if let Err(e) = self.mint_bootstrap_join_token().await {
                tracing::error!(error = %e, "cannot write the next join token; it is written at the next start");
            }
        }
        tracing::info!(node = %node_id, name = %node_name, hostname, "node enrolled");
        Ok(Enrolled {
            node_id,
            node_name,
            certificate_pem,
        })
    }

    /// A node's agent opened a session and introduced itself.
    /// `applied_generation` is the last desired-state generation the agent applied; if the
    /// store's generation is not above it (e.g. a database restored from a backup), the store
    /// jumps past it so the agent accepts the next document.
    pub async fn node_hello(
        &self,
        node: NodeId,
        facts: &NodeFacts,
        applied_generation: u64,
    ) -> Result<NodeWithAllocation> {
        self.store
            .node_update_facts(node, facts)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => {
                    Error::Forbidden(format!("node {node} is not enrolled (was it removed?)"))
                }
                other => other.into(),
            })?;
        self.sessions.touch(node);
        self.sessions.set_marked_down(node, false);
        self.planner
            .notify(crate::planner::Event::NodeChanged(node));
        if self
            .store
            .node_raise_generation(node, applied_generation)
            .await?
        {
            tracing::warn!(%node, applied_generation, "the agent had applied a newer generation than the store knows (restored database?); moved past it");
        }
        let rec = self.store.node_get(node).await?;
        // A drained node is back as `draining`: the event says so in its status.
        tracing::info!(%node, hostname = %facts.hostname, version = %facts.agent_version, status = %rec.node.status, "node connected");
        self.events.emit(
            None,
            "node.ready",
            "node",
            node,
            serde_json::json!({
                "hostname": facts.hostname,
                "version": facts.agent_version,
                "status": rec.node.status,
            }),
        );
        Ok(rec)
    }

    /// Applies an agent's observed state: instance statuses, and deletions the agent has
    /// carried out. Observations older than an instance's last change are ignored.
    pub async fn node_observed(&self, node: NodeId, observed: &pb::ObservedState) -> Result<()> {
        use crate::statuswriter::Write;
        let applied = observed.applied_generation;
        self.status_writer.send(Write::Applied(node, applied)).await;
        if self.has_volumes(node.0) {
            let seen = observed
                .volumes
                .iter()
                .filter_map(|v| {
                    let id = v.volume_id.parse::<uuid::Uuid>().ok()?;
                    let s = match pb::VolumeState::try_from(v.state) {
                        Ok(pb::VolumeState::VolumeAvailable) => {
                            crate::store::VolumeSeen::Available(
                                v.instance_id.parse::<uuid::Uuid>().ok(),
                            )
                        }
                        Ok(pb::VolumeState::VolumeFailed) => {
                            crate::store::VolumeSeen::Failed(v.reason.chars().take(500).collect())
                        }
                        // Orphans are kept by the agent and not the scheduler's: just note them.
                        Ok(pb::VolumeState::VolumeOrphan) => {
                            tracing::debug!(%node, volume = %v.volume_id, "orphan volume on node");
                            return None;
                        }
                        _ => return None,
                    };
                    Some((id, s))
                })
                .collect();
            let changes = self
                .store
                .volumes_observe(node, crate::store::to_i64(applied), &seen)
                .await?;
            for c in changes {
                self.events.emit(
                    Some(c.project_id),
                    "volume.status",
                    "volume",
                    c.id,
                    serde_json::json!({ "from": c.from, "to": c.to, "reason": c.reason }),
                );
            }
            let seen = observed
                .snapshots
                .iter()
                .filter_map(|s| {
                    let id = s.snapshot_id.parse::<uuid::Uuid>().ok()?;
                    let seen = match pb::VolumeState::try_from(s.state) {
                        Ok(pb::VolumeState::VolumeAvailable) => {
                            crate::store::SnapshotSeen::Available
                        }
                        Ok(pb::VolumeState::VolumeFailed) => {
                            crate::store::SnapshotSeen::Failed(s.reason.chars().take(500).collect())
                        }
                        // Orphans are the agent's to keep: not the scheduler's business.
                        _ => return None,
                    };
                    Some((id, seen))
                })
                .collect();
            self.store
                .snapshots_observe(node, crate::store::to_i64(applied), &seen)
                .await?;
        }
        let seen: HashMap<&str, &pb::InstanceObservation> = observed
            .instances
            .iter()
            .map(|o| (o.instance_id.as_str(), o))
            .collect();
        // One read to diff against; the writes go to the batching status writer.
        for inst in self.store.instance_states_by_node(node).await? {
            let id = InstanceId(inst.id);
            let key = id.to_string();
            let obs = seen.get(key.as_str());
            if inst.status == "deleting" {
                if obs.is_none() {
                    let confirm = DeletionConfirm {
                        node,
                        id,
                        applied_generation: applied,
                    };
                    self.status_writer.send(Write::Deleted(confirm)).await;
                }
                continue;
            }
            let Some(obs) = obs else { continue };
            let Some(status) = state_to_status(obs.state) else {
                continue;
            };
            let update = InstanceUpdate {
                status: status.to_string(),
                status_reason: (!obs.reason.is_empty()).then(|| obs.reason.clone()),
                runtime_id: (!obs.runtime_id.is_empty()).then(|| obs.runtime_id.clone()),
                started_at: ms_to_time(obs.started_at_unix_ms),
                exit_code: obs.exit_code,
            };
            let current = InstanceUpdate {
                status: inst.status.clone(),
                status_reason: inst.status_reason.clone(),
                runtime_id: inst.runtime_id.clone(),
                started_at: inst.started_at,
                exit_code: inst.exit_code,
            };
            if !same_observation(&update, &current)
                && inst.change_generation <= crate::store::to_i64(applied)
            {
                tracing::debug!(instance = %id, name = %inst.name, status, reason = ?update.status_reason, "instance status");
                let write = ObservationWrite {
                    node,
                    id,
                    applied_generation: applied,
                    update,
                };
                self.status_writer.send(Write::Observation(write)).await;
            }
        }
        Ok(())
    }

    pub fn node_telemetry(&self, node: NodeId, t: &pb::Telemetry) {
        let sampled_at = ms_to_time(t.sampled_at_unix_ms).unwrap_or_else(Utc::now);
        let per_instance = t
            .instances
            .iter()
            .filter_map(|u| {
                let id = u.instance_id.parse::<InstanceId>().ok()?;
                Some((
                    id,
                    InstanceUsage {
                        cpu_percent: u.cpu_percent,
                        memory_used_bytes: u.memory_used_bytes,
                        memory_limit_bytes: u.memory_limit_bytes,
                        disk_read_bytes: u.disk_read_bytes,
                        disk_write_bytes: u.disk_write_bytes,
                        net_rx_bytes: u.net_rx_bytes,
                        net_tx_bytes: u.net_tx_bytes,
                        sampled_at,
                    },
                ))
            })
            .collect();
        self.sessions.set_instance_usage(node, per_instance);
        if let Some(h) = &t.host {
            self.sessions.set_usage(
                node,
                HostUsage {
                    cpu_percent: h.cpu_percent,
                    memory_used_mb: h.memory_used_mb,
                    memory_total_mb: h.memory_total_mb,
                    disk_used_gb: h.disk_used_gb,
                    disk_total_gb: h.disk_total_gb,
                    load1: h.load1,
                    load5: h.load5,
                    load15: h.load15,
                    sampled_at,
                    volume_pool: t.pool.as_ref().map(|p| cloud_api::VolumePool {
                        kind: p.kind.chars().take(16).collect(),
                        total_bytes: p.total_bytes,
                        free_bytes: p.free_bytes,
                    }),
                },
            );
        }
    }

    /// A node declared down is heard from again on its open session.
    pub async fn node_revive(&self, node: NodeId) -> Result<()> {
        if let Some(status) = self.store.node_set_ready_if_down(node).await? {
            tracing::info!(%node, %status, "node is back");
            self.events.emit(
                None,
                "node.ready",
                "node",
                node,
                serde_json::json!({ "status": status }),
            );
            self.sessions.notify_desired(node);
            self.planner
                .notify(crate::planner::Event::NodeChanged(node));
        }
        self.sessions.set_marked_down(node, false);
        Ok(())
    }

    /// Declares a silent node down; its instances become `lost`.
    pub async fn node_mark_down(&self, node: NodeId) -> Result<bool> {
        let reason = format!(
            "node stopped sending heartbeats (none for {:?})",
            self.config.node_down_after
        );
        let changed = self.store.node_mark_down(node, &reason).await?;
        // Flag it even when it was already down: any message from the node now revives it.
        self.sessions.set_marked_down(node, true);
        if changed {
            self.planner
                .notify(crate::planner::Event::NodeChanged(node));
            tracing::warn!(%node, "node is down; its instances are lost");
            self.events.emit(
                None,
                "node.down",
                "node",
                node,
                serde_json::json!({ "reason": reason }),
            );
        }
        Ok(changed)
    }

    /// Stops placing on a node and, with `Evacuate`, moves its workloads away (the evictor
    /// does the moving); `KeepInstances` leaves them running. Idempotent; draining again in
    /// the other mode switches the mode.
    pub async fn node_drain(
        &self,
        id_or_name: &str,
        mode: cloud_api::DrainMode,
    ) -> Result<NodeWithAllocation> {
        let node = self.node_lookup(id_or_name).await?;
        let id = NodeId(node.node.id);
        if self
            .store
            .node_set_drain(id, Some(mode.as_str()), "ready")
            .await?
        {
            tracing::info!(node = %id, name = %node.node.name, mode = mode.as_str(), "node draining");
            self.events.emit(
                None,
                "node.draining",
                "node",
                id,
                serde_json::json!({ "mode": mode.as_str() }),
            );
            self.planner.notify(crate::planner::Event::NodeChanged(id));
        }
        Ok(self.store.node_get(id).await?)
    }

    /// Lets a drained node take work again. A node whose agent is not connected goes back to
    /// `down` (and becomes `ready` when its agent returns). Idempotent.
    pub async fn node_undrain(&self, id_or_name: &str) -> Result<NodeWithAllocation> {
        let node = self.node_lookup(id_or_name).await?;
        let id = NodeId(node.node.id);
        let connected = self.sessions.is_connected(id);
        let status = if connected { "ready" } else { "down" };
        if self.store.node_set_drain(id, None, status).await? {
            tracing::info!(node = %id, name = %node.node.name, status, "node undrained");
            self.events.emit(
                None,
                "node.undrained",
                "node",
                id,
                serde_json::json!({ "status": status }),
            );
            if !connected {
                self.sessions.set_marked_down(id, true);
            }
            self.planner.notify(crate::planner::Event::NodeChanged(id));
        }
        Ok(self.store.node_get(id).await?)
    }

    /// A join token for new agents, usable `uses` times within `ttl`.
    pub async fn join_token_create(
        &self,
        uses: u32,
        ttl: std::time::Duration,
    ) -> Result<(String, DateTime<Utc>)> {
        if uses == 0 || uses > 100_000 {
            return Err(Error::Invalid("uses: must be between 1 and 100000".into()));
        }
        if ttl.is_zero() || ttl > std::time::Duration::from_secs(30 * 24 * 3600) {
            return Err(Error::Invalid(
                "ttl_seconds: must be between 1 and 2592000 (30 days)".into(),
            ));
        }
        let token = secrets::new_join_token();
        let expires_at = Utc::now() + chrono::Duration::from_std(ttl).map_err(Error::internal)?;
        self.store
            .join_token_insert(&NewJoinToken {
                token_hash: secrets::sha256(&token),
                is_bootstrap: false,
                expires_at: Some(expires_at),
                max_uses: uses,
            })
            .await?;
        tracing::info!(uses, expires_at = %expires_at, "join token created");
        Ok((token, expires_at))
    }

    pub async fn node_lookup(&self, id_or_name: &str) -> Result<NodeWithAllocation> {
        let found = match id_or_name.parse::<NodeId>() {
            Ok(id) => self.store.node_get(id).await,
            Err(_) => self.store.node_get_by_name(id_or_name).await,
        };
        found.map_err(|e| match e {
            StoreError::NotFound => Error::NotFound(format!("node {id_or_name:?} not found")),
            other => other.into(),
        })
    }
}

/// Timestamps from the agent are compared at millisecond precision (what the wire carries).
fn same_observation(a: &InstanceUpdate, b: &InstanceUpdate) -> bool {
    a.status == b.status
        && a.status_reason == b.status_reason
        && a.runtime_id == b.runtime_id
        && a.exit_code == b.exit_code
        && a.started_at.map(|t| t.timestamp_millis()) == b.started_at.map(|t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_from_hostnames() {
        assert_eq!(
            node_name_from_hostname("Web-01.example.com"),
            "web-01-example-com"
        );
        assert_eq!(node_name_from_hostname("42host"), "node-42host");
        assert_eq!(node_name_from_hostname("---"), "node");
        let long = "a".repeat(100);
        assert_eq!(node_name_from_hostname(&long).len(), 63);
        let long_digits = format!("4{long}");
        for h in [
            "Web-01.example.com",
            "42host",
            "---",
            "x_y",
            &long,
            &long_digits,
        ] {
            validate::name("name", &node_name_from_hostname(h)).unwrap();
        }
    }

    #[test]
    fn agent_states_map_to_statuses() {
        assert_eq!(
            state_to_status(pb::InstanceState::Running as i32),
            Some("running")
        );
        assert_eq!(
            state_to_status(pb::InstanceState::Failed as i32),
            Some("failed")
        );
        assert_eq!(state_to_status(0), None);
        assert_eq!(state_to_status(99), None);
    }
}
