//! Instance lifecycle: create (validate, place, record), start, stop, delete, logs.

use super::{Caller, validate};
use crate::app::App;
use crate::error::{Error, Result};
use crate::sessions::SessionError;
use crate::store::{DeleteOutcome, InstanceRecord, NewInstance, StoreError};
use cloud_api::{CreateInstanceRequest, InstanceId, NodeId};
use std::time::Duration;

/// Logs larger than this are cut (the newest bytes are kept by asking for a tail instead).
const MAX_LOG_BYTES: usize = 16 * 1024 * 1024;
const LOG_TIMEOUT: Duration = Duration::from_secs(20);

impl App {
    /// Finds an instance of the caller's project by id or name; other projects' instances are
    /// not found.
    pub async fn instance_lookup(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<InstanceRecord> {
        let found = match id_or_name.parse::<InstanceId>() {
            Ok(id) => self.store.instance_get(caller.project, id).await,
            Err(_) => {
                self.store
                    .instance_get_by_name(caller.project, id_or_name)
                    .await
            }
        };
        found.map_err(|e| match e {
            StoreError::NotFound => Error::NotFound(format!("instance {id_or_name:?} not found")),
            other => other.into(),
        })
    }

    pub async fn instance_list(
        &self,
        caller: &Caller,
        after: Option<InstanceId>,
        limit: u32,
    ) -> Result<Vec<InstanceRecord>> {
        Ok(self
            .store
            .instance_list(caller.project, after, limit)
            .await?)
    }

    /// Validates, places and records a new instance; its node's agent is told at once.
    /// Placement happens in the planner, batched with concurrent requests.
    pub async fn instance_create(
        &self,
        caller: &Caller,
        req: CreateInstanceRequest,
    ) -> Result<InstanceRecord> {
        validate::create_instance(&req)?;
        let vm = self.vm_spec(caller, &req).await?;
        let port = self.port_request(caller, &req).await?;
        let (volumes, required_node) = self.volume_mounts(caller, &req.volumes).await?;
        let mut node_selector = req.node_selector;
        if port.subnet_id.is_some() {
            // Only nodes with VPC networking (an underlay address) can host a port.
            node_selector.insert(
                crate::grpc::convert::VPC_LABEL.to_string(),
                "true".to_string(),
            );
        }
        let id = InstanceId::new();
        let name = match req.name {
            Some(n) => n,
            None => generated_name(id),
        };
        let new = NewInstance {
            id,
            project_id: caller.project,
            name: name.clone(),
            kind: req.kind.as_str().to_string(),
            image: req.image.trim().to_string(),
            command: req.command,
            env: req.env,
            cpu_millis: req.cpu_millis,
            memory_mb: req.memory_mb,
            restart_policy: req.restart_policy.as_str().to_string(),
            node_selector,
            placement_group: req
                .placement_group
                .map(|g| (g.name, g.policy.as_str().to_string())),
            placement_strategy: req.placement_strategy.map(|s| s.as_str().to_string()),
            created_at: chrono::Utc::now(),
            subnet_id: port.subnet_id,
            private_ip: port.private_ip,
            mac: None,
            security_groups: port.security_groups,
            volumes,
            required_node,
            vm,
        };
        let placed = self.planner.create(new.clone()).await?;
        tracing::debug!(instance = %id, %name, node = %placed.node, "instance placed");
        let record = record_of(new, &placed);
        self.specs.insert(&record);
        Ok(record)
    }

    /// Asks the instance to stop. Idempotent.
    pub async fn instance_stop(&self, caller: &Caller, id_or_name: &str) -> Result<InstanceRecord> {
        self.set_run_state(caller, id_or_name, "stopped", "stopping")
            .await
    }

    /// Asks the instance to run (also retries a failed or exited one). Idempotent while it runs.
    pub async fn instance_start(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<InstanceRecord> {
        self.set_run_state(caller, id_or_name, "running", "starting")
            .await
    }

    async fn set_run_state(
        &self,
        caller: &Caller,
        id_or_name: &str,
        desired: &str,
        transitional: &str,
    ) -> Result<InstanceRecord> {
        let inst = self.instance_lookup(caller, id_or_name).await?;
        if let Some(refusal) = refuse_run_state_change(&inst) {
            return Err(refusal);
        }
        let settled = if desired == "running" {
            "running"
        } else {
            "stopped"
        };
        if inst.desired_state == desired && (inst.status == settled || inst.status == transitional)
        {
            return Ok(inst); // already there or on its way
        }
        let id = InstanceId(inst.id);
        match self
            .store
            .instance_set_desired(caller.project, id, desired, transitional)
            .await
        {
            Ok(()) => {}
            Err(StoreError::Conflict) => {
                // Raced with a delete or a node failure: explain from the current state.
                let now = self.instance_lookup(caller, id_or_name).await?;
                return Err(refuse_run_state_change(&now).unwrap_or_else(|| {
                    Error::Conflict(format!(
                        "instance {:?} changed concurrently; retry",
                        now.name
                    ))
                }));
            }
            Err(StoreError::NotFound) => {
                return Err(Error::NotFound(format!(
                    "instance {id_or_name:?} not found"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        if let Some(node) = inst.node_id {
            self.sessions.notify_desired(NodeId(node));
        }
        Ok(self.store.instance_get(caller.project, id).await?)
    }

    /// Deletes an instance: at once when it has no live node, otherwise once its agent has
    /// removed it. Idempotent while deleting.
    pub async fn instance_delete(
        &self,
        caller: &Caller,
        id_or_name: &str,
    ) -> Result<InstanceRecord> {
        let mut inst = self.instance_lookup(caller, id_or_name).await?;
        if inst.status == "deleting" {
            return Ok(inst);
        }
        let outcome = match self
            .store
            .instance_delete(caller.project, InstanceId(inst.id))
            .await
        {
            Ok(o) => o,
            Err(StoreError::NotFound) => DeleteOutcome::Deleted, // raced with another delete
            Err(e) => return Err(e.into()),
        };
        if let Some(node) = inst.node_id {
            self.sessions.notify_desired(NodeId(node));
            if outcome == DeleteOutcome::Deleted {
                self.specs.remove(&inst.id);
                self.planner
                    .notify(crate::planner::Event::NodeChanged(NodeId(node)));
            }
        }
        tracing::info!(instance = %inst.id, name = %inst.name, ?outcome, "instance delete requested");
        inst.status = "deleting".into();
        inst.status_reason = None;
        Ok(inst)
    }

    /// Opens a log stream of an instance on its node: the last `tail` lines (0 = all), then,
    /// with `follow`, new output as it comes (the caller relays and closes it).
    pub async fn instance_log_follow(
        &self,
        caller: &Caller,
        id_or_name: &str,
        tail: u32,
    ) -> Result<(u64, tokio::sync::mpsc::Receiver<cloud_proto::v1::LogChunk>)> {
        self.open_logs(caller, id_or_name, tail, true).await
    }

    async fn open_logs(
        &self,
        caller: &Caller,
        id_or_name: &str,
        tail: u32,
        follow: bool,
    ) -> Result<(u64, tokio::sync::mpsc::Receiver<cloud_proto::v1::LogChunk>)> {
        let inst = self.instance_lookup(caller, id_or_name).await?;
        let Some(node) = inst.node_id.map(NodeId) else {
            return Err(Error::Conflict(format!(
                "instance {:?} has not been placed on a node yet",
                inst.name
            )));
        };
        self.sessions
            .open_log_stream(node, InstanceId(inst.id), tail, follow)
            .map_err(|e| match e {
                SessionError::NotConnected(_) => Error::Unavailable(format!(
                    "the node of instance {:?} ({}) is not connected; logs are unavailable",
                    inst.name,
                    inst.node_name.as_deref().unwrap_or("?")
                )),
                SessionError::Busy(_) => Error::Unavailable(e.to_string()),
            })
    }

    /// The last `tail` lines (0 = all) of the instance's output, relayed from its node.
    pub async fn instance_logs(
        &self,
        caller: &Caller,
        id_or_name: &str,
        tail: u32,
    ) -> Result<Vec<u8>> {
        let (request_id, mut rx) = self.open_logs(caller, id_or_name, tail, false).await?;
        let _close = self.sessions.stream_guard(request_id);
        let mut out = Vec::new();
        let collected = tokio::time::timeout(LOG_TIMEOUT, async {
            while let Some(chunk) = rx.recv().await {
                if !chunk.error.is_empty() {
                    return Err(Error::Conflict(format!(
                        "cannot read logs: {}",
                        chunk.error
                    )));
                }
                let room = MAX_LOG_BYTES.saturating_sub(out.len());
                out.extend_from_slice(&chunk.data[..chunk.data.len().min(room)]);
                if chunk.eof || room == 0 {
                    return Ok(());
                }
            }
            Err(Error::Unavailable(
                "the node closed the log stream early".into(),
            ))
        })
        .await;
        match collected {
            Ok(Ok(())) => Ok(out),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::Unavailable(
                "timed out waiting for logs from the node".into(),
            )),
        }
    }
}

/// Why an instance cannot be started or stopped now, if it cannot.
fn refuse_run_state_change(inst: &InstanceRecord) -> Option<Error> {
    match inst.status.as_str() {
        "deleting" => Some(Error::Conflict(format!(
            "instance {:?} is being deleted",
            inst.name
        ))),
        "lost" => Some(Error::Conflict(format!(
            "instance {:?} is lost: its node {} is down",
            inst.name,
            inst.node_name.as_deref().unwrap_or("?")
        ))),
        _ => None,
    }
}

/// The record of a just-placed instance, as the store now holds it (built in memory: the
/// create path does not read it back).
fn record_of(new: NewInstance, placed: &crate::planner::Placed) -> InstanceRecord {
    let now = new.created_at;
    let (group, policy) = match new.placement_group {
        Some((g, p)) => (Some(g), Some(p)),
        None => (None, None),
    };
    InstanceRecord {
        id: new.id.0,
        project_id: new.project_id.0,
        name: new.name,
        kind: new.kind,
        image: new.image,
        command: sqlx::types::Json(new.command),
        env: sqlx::types::Json(new.env),
        cpu_millis: crate::store::to_i64(new.cpu_millis),
        memory_mb: crate::store::to_i64(new.memory_mb),
        restart_policy: new.restart_policy,
        desired_state: "running".into(),
        status: "scheduled".into(),
        status_reason: None,
        node_id: Some(placed.node.0),
        node_name: Some(placed.node_name.clone()),
        change_generation: placed.change_generation,
        runtime_id: None,
        started_at: None,
        exit_code: None,
        node_selector: sqlx::types::Json(new.node_selector),
        placement_group: group,
        placement_policy: policy,
        placement_strategy: new.placement_strategy,
        created_at: now,
        updated_at: now,
        subnet_id: new.subnet_id,
        private_ip: placed.private_ip.clone().or(new.private_ip),
        mac: placed.mac.clone().or(new.mac),
        vm_spec: new.vm.map(sqlx::types::Json),
    }
}

/// `inst-` and the last 8 hex digits of the (random part of the) id.
fn generated_name(id: InstanceId) -> String {
    let s = id.0.simple().to_string();
    format!("inst-{}", &s[s.len() - 8..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_names_are_valid() {
        for _ in 0..100 {
            let n = generated_name(InstanceId::new());
            validate::name("name", &n).unwrap();
        }
    }
}
