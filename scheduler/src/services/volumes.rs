//! Volumes: validation, choosing a node whose pool holds the volume (pool capacity comes from
//! the nodes' telemetry), and the lifecycle driven by the node's observations.

use super::{Caller, validate};
use crate::app::App;
use crate::error::{Error, Result};
use crate::store::{StoreError, VolumeRecord};
use cloud_api::{CreateVolumeRequest, MAX_VOLUME_GB, NodeId, VolumeId};
use std::collections::BTreeMap;

const GIB: u64 = 1 << 30;

impl App {
    pub async fn volume_lookup(&self, caller: &Caller, id_or_name: &str) -> Result<VolumeRecord> {
        let found = match id_or_name.parse::<VolumeId>() {
            Ok(id) => self.store.volume_get(caller.project, id).await,
            Err(_) => {
                self.store
                    .volume_get_by_name(caller.project, id_or_name)
                    .await
            }
        };
        found.map_err(|e| match e {
            StoreError::NotFound => Error::NotFound(format!("volume {id_or_name:?} not found")),
            other => other.into(),
        })
    }

    pub async fn volume_list(
        &self,
        caller: &Caller,
        after: Option<VolumeId>,
        limit: u32,
    ) -> Result<Vec<VolumeRecord>> {
        Ok(self.store.volume_list(caller.project, after, limit).await?)
    }

    /// Validates, picks a node and records the volume (`creating`); the node's agent creates
    /// it and the volume becomes `available` (or `failed` with the cause).
    pub async fn volume_create(
        &self,
        caller: &Caller,
        req: CreateVolumeRequest,
    ) -> Result<VolumeRecord> {
        validate::name("name", &req.name)?;
        if !(1..=MAX_VOLUME_GB).contains(&req.size_gb) {
            return Err(Error::Invalid(format!(
                "size_gb: {} is out of range: must be between 1 and {MAX_VOLUME_GB}",
                req.size_gb
            )));
        }
        if self
            .store
            .volume_get_by_name(caller.project, &req.name)
            .await
            .is_ok()
        {
            return Err(Error::AlreadyExists(format!(
                "a volume named {:?} already exists in this project",
                req.name
            )));
        }
        let pinned = match &req.node {
            None => None,
            Some(n) => Some(self.node_lookup(n).await.map_err(|e| match e {
                Error::NotFound(_) => Error::Invalid(format!("node: node {n:?} not found")),
                other => other,
            })?),
        };
        // Candidates: ready nodes matching the request whose pool reports room; most free first.
        // (Only status and labels are needed: no allocation sums over every instance.)
        let nodes = match pinned {
            Some(n) => vec![(n.node.id, n.node.status, n.node.labels.0)],
            None => self.store.node_labels().await?,
        };
        let mut no_pool = 0usize;
        let mut not_ready = 0usize;
        let mut no_match = 0usize;
        let mut too_small = Vec::new();
        let mut candidates = Vec::new();
        for (id, status, labels) in nodes {
            if status != "ready" {
                not_ready += 1;
                continue;
            }
            if !selector_matches(&req.node_selector, &labels) {
                no_match += 1;
                continue;
            }
            let Some(pool) = self.sessions.usage(id.into()).and_then(|u| u.volume_pool) else {
                no_pool += 1;
                continue;
            };
            if pool.free_bytes < req.size_gb.saturating_mul(GIB) {
                too_small.push(pool.free_bytes / GIB);
                continue;
            }
            candidates.push((pool.free_bytes, NodeId(id), pool.total_bytes / GIB));
        }
        candidates.sort_by_key(|c| std::cmp::Reverse(c.0));
        let rec = VolumeRecord {
            id: VolumeId::new().0,
            project_id: caller.project.0,
            name: req.name.clone(),
            size_gb: i64::try_from(req.size_gb).unwrap_or(i64::MAX),
            node_id: None,
            node_name: None,
            status: "creating".into(),
            status_reason: None,
            instance_id: None,
            mount_path: None,
            source_snapshot_id: None,
            change_generation: 0,
            created_at: chrono::Utc::now(),
            updated_at: chrono::Utc::now(),
        };
        let mut promised = 0usize;
        for (_, node, pool_gb) in candidates {
            match self
                .store
                .volume_insert(&rec, node, i64::try_from(pool_gb).unwrap_or(i64::MAX))
                .await
            {
                Ok(()) => {
                    self.volume_nodes_add(node.0);
                    return self
                        .store
                        .volume_get(caller.project, VolumeId(rec.id))
                        .await
                        .map_err(Into::into);
                }
                Err(StoreError::Rejected(_)) => promised += 1,
                Err(StoreError::Duplicate) => {
                    return Err(Error::AlreadyExists(format!(
                        "a volume named {:?} already exists in this project",
                        req.name
                    )));
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut why = Vec::new();
        if no_pool > 0 {
            why.push(format!("{no_pool} without a volume backend"));
        }
        if !too_small.is_empty() {
            let best = too_small.iter().max().copied().unwrap_or(0);
            why.push(format!(
                "{} with less free (at most {best} GB)",
                too_small.len()
            ));
        }
        if promised > 0 {
            why.push(format!(
                "{promised} whose pool is already promised to other volumes"
            ));
        }
        if not_ready > 0 {
            why.push(format!("{not_ready} not ready"));
        }
        if no_match > 0 {
            why.push(format!("{no_match} not matching node_selector"));
        }
        Err(Error::InsufficientCapacity(format!(
            "no node can hold {} GB: {}",
            req.size_gb,
            if why.is_empty() {
                "no nodes".to_string()
            } else {
                why.join(", ")
            }
        )))
    }

    /// Grows a volume; its node grows the disk (and the filesystem when formatted).
    pub async fn volume_resize(
        &self,
        caller: &Caller,
        id_or_name: &str,
        size_gb: u64,
    ) -> Result<VolumeRecord> {
        let v = self.volume_lookup(caller, id_or_name).await?;
        if !(1..=MAX_VOLUME_GB).contains(&size_gb) {
            return Err(Error::Invalid(format!(
                "size_gb: {size_gb} is out of range: must be between 1 and {MAX_VOLUME_GB}"
            )));
        }
        let Some(node) = v.node_id else {
            return Err(Error::Conflict(format!("volume {:?} has no node", v.name)));
        };
        let pool_gb = self
            .sessions
            .usage(node.into())
            .and_then(|u| u.volume_pool)
            .map(|p| p.total_bytes / GIB)
            .ok_or_else(|| {
                Error::Unavailable(format!(
                    "volume {:?}: its node has not reported its volume pool; retry shortly",
                    v.name
                ))
            })?;
        self.store
            .volume_grow(
                caller.project,
                VolumeId(v.id),
                i64::try_from(size_gb).unwrap_or(i64::MAX),
                i64::try_from(pool_gb).unwrap_or(i64::MAX),
            )
            .await?;
        self.volume_lookup(caller, &VolumeId(v.id).to_string())
            .await
    }

    /// Resolves the volumes of a new instance: each of the caller's project, available and not
    /// mounted elsewhere, all on one node (which the instance is then pinned to), at distinct
    /// absolute paths.
    pub async fn volume_mounts(
        &self,
        caller: &Caller,
        mounts: &[cloud_api::VolumeMount],
    ) -> Result<(Vec<(uuid::Uuid, String)>, Option<NodeId>)> {
        if mounts.len() > 16 {
            return Err(Error::Invalid("volumes: at most 16 per instance".into()));
        }
        let mut out: Vec<(uuid::Uuid, String)> = Vec::new();
        let mut node: Option<uuid::Uuid> = None;
        for (i, m) in mounts.iter().enumerate() {
            let field = format!("volumes[{i}]");
            mount_path(&format!("{field}.mount_path"), &m.mount_path)?;
            if out.iter().any(|(_, p)| *p == m.mount_path) {
                return Err(Error::Invalid(format!(
                    "{field}.mount_path: {:?} is used twice",
                    m.mount_path
                )));
            }
            let v = self
                .volume_lookup(caller, &m.volume)
                .await
                .map_err(|e| match e {
                    Error::NotFound(msg) => Error::Invalid(format!("{field}.volume: {msg}")),
                    other => other,
                })?;
            if out.iter().any(|(id, _)| *id == v.id) {
                return Err(Error::Invalid(format!(
                    "{field}.volume: {:?} is listed twice",
                    v.name
                )));
            }
            if let Some(other) = v.instance_id {
                return Err(Error::Conflict(format!(
                    "{field}.volume: {:?} is already mounted in instance {other}",
                    v.name
                )));
            }
            if v.status != "available" {
                return Err(Error::Conflict(format!(
                    "{field}.volume: {:?} is {}, not available",
                    v.name, v.status
                )));
            }
            match (node, v.node_id) {
                (_, None) => {
                    return Err(Error::Conflict(format!(
                        "{field}.volume: {:?} has no node",
                        v.name
                    )));
                }
                (Some(n), Some(vn)) if n != vn => {
                    return Err(Error::Invalid(format!(
                        "{field}.volume: {:?} is on another node than the instance's other volumes (volumes are node-local)",
                        v.name
                    )));
                }
                (_, Some(vn)) => node = Some(vn),
            }
            out.push((v.id, m.mount_path.clone()));
        }
        Ok((out, node.map(NodeId)))
    }

    /// Mounts a volume in an instance (its container is recreated with the same instance id:
    /// `stopping` → `starting`), or unmounts it (`to: None`).
    pub async fn volume_attach(
        &self,
        caller: &Caller,
        id_or_name: &str,
        to: Option<(&str, &str)>,
    ) -> Result<VolumeRecord> {
        let v = self.volume_lookup(caller, id_or_name).await?;
        let target = match to {
            None => None,
            Some((instance, path)) => {
                mount_path("mount_path", path)?;
                let inst = self
                    .instance_lookup(caller, instance)
                    .await
                    .map_err(|e| match e {
                        Error::NotFound(m) => Error::Invalid(format!("instance_id: {m}")),
                        other => other,
                    })?;
                if inst.kind == "vm" {
                    vm_device("mount_path", path)?;
                }
                Some((inst.id, path.to_owned()))
            }
        };
        self.store
            .volume_set_mount(caller.project, VolumeId(v.id), target)
            .await?;
        self.volume_lookup(caller, &VolumeId(v.id).to_string())
            .await
    }

    /// Starts deleting a volume. Idempotent while it is being deleted.
    pub async fn volume_delete(&self, caller: &Caller, id_or_name: &str) -> Result<VolumeRecord> {
        let v = self.volume_lookup(caller, id_or_name).await?;
        if let Some(inst) = v.instance_id {
            return Err(Error::Conflict(format!(
                "volume {:?} is mounted in instance {inst}; delete that instance first",
                v.name
            )));
        }
        if v.status == "in-use" || v.status == "attaching" {
            return Err(Error::Conflict(format!(
                "volume {:?} is attached; detach it first",
                v.name
            )));
        }
        // Snapshots of a `file` pool are independent copies; elsewhere (lvm, or a node that
        // has not said) they depend on their volume, which must then outlive them.
        let snapshots_depend = v
            .node_id
            .and_then(|n| self.sessions.usage(n.into()))
            .and_then(|u| u.volume_pool)
            .is_none_or(|p| p.kind != "file");
        self.store
            .volume_delete(caller.project, VolumeId(v.id), snapshots_depend)
            .await
            .map_err(|e| match e {
                StoreError::NotFound => Error::NotFound(format!("volume {id_or_name:?} not found")),
                StoreError::InUse(m) => Error::Conflict(format!("volume {:?}: {m}", v.name)),
                other => other.into(),
            })?;
        self.volume_lookup(caller, &VolumeId(v.id).to_string())
            .await
            .or(Ok(VolumeRecord {
                status: "deleting".into(),
                ..v
            }))
    }
}

fn selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// A VM's volume device: `/dev/vdb` … `/dev/vdz` (`vda` is the root disk).
pub fn vm_device(field: &str, p: &str) -> Result<()> {
    let ok = p
        .strip_prefix("/dev/vd")
        .is_some_and(|l| l.len() == 1 && l.as_bytes()[0].is_ascii_lowercase() && l != "a");
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{field}: {p:?}: a VM's volume is a virtio disk: give its device, /dev/vdb to /dev/vdz"
        )))
    }
}

/// A mount path inside a container: absolute, normalised, not `/`, and free of the characters
/// the bind and label syntaxes use (`:`, `,`, `=`).
fn mount_path(field: &str, p: &str) -> Result<()> {
    let ok = p.starts_with('/')
        && p.len() > 1
        && p.len() <= 1024
        && !p.ends_with('/')
        && !p.split('/').any(|c| c == ".." || c == ".")
        && !p.contains("//")
        && !p
            .chars()
            .any(|c| c.is_control() || c == ':' || c == ',' || c == '=');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{field}: {p:?} is not a usable path: give an absolute path such as /data (no '..', ':', ',' or '=')"
        )))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn vm_devices_are_virtio_disks_after_the_root_disk() {
        for ok in ["/dev/vdb", "/dev/vdz"] {
            assert!(super::vm_device("p", ok).is_ok(), "{ok}");
        }
        for bad in [
            "/dev/vda",
            "/dev/vd",
            "/dev/vdbb",
            "/dev/sdb",
            "/data",
            "/dev/vdB",
        ] {
            assert!(super::vm_device("p", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mount_paths_are_absolute_and_plain() {
        for ok in ["/data", "/var/lib/db", "/a-b_c.d"] {
            assert!(super::mount_path("p", ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "/", "data", "/a/../b", "/a/./b", "/a/", "/a:b", "/a,b", "/a=b", "//a",
        ] {
            assert!(super::mount_path("p", bad).is_err(), "{bad}");
        }
    }
}
