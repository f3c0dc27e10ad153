//! The volume part of a node's desired state: the volumes and snapshots it must have or
//! delete, and the mounts of its instances. Two reads, and only for nodes that hold volumes.

use crate::store::{NodeSnapshotRow, NodeVolumeRow, Store, StoreResult};
use cloud_proto::v1 as pb;
use std::collections::HashMap;
use uuid::Uuid;

/// The volume part of one node's desired state.
#[derive(Debug, Default)]
pub struct NodeStorage {
    pub volumes: Vec<pb::VolumeSpec>,
    pub delete_volumes: Vec<String>,
    pub snapshots: Vec<pb::SnapshotSpec>,
    pub delete_snapshots: Vec<String>,
}

/// Fills in the mounts of `instances` and returns the node's volumes and snapshots.
pub async fn fill(
    store: &Store,
    node: Uuid,
    instances: &mut [pb::InstanceSpec],
) -> StoreResult<NodeStorage> {
    let rows = store.node_volumes(node).await?;
    let (volumes, delete_volumes) = assemble(rows, instances);
    let (snapshots, delete_snapshots) = snapshots(store.node_snapshots(node).await?);
    Ok(NodeStorage {
        volumes,
        delete_volumes,
        snapshots,
        delete_snapshots,
    })
}

/// (snapshots to have, snapshots to delete).
fn snapshots(rows: Vec<NodeSnapshotRow>) -> (Vec<pb::SnapshotSpec>, Vec<String>) {
    let mut keep = Vec::new();
    let mut delete = Vec::new();
    for (id, volume, status) in rows {
        if status == "deleting" {
            delete.push(id.to_string());
        } else {
            keep.push(pb::SnapshotSpec {
                snapshot_id: id.to_string(),
                volume_id: volume.to_string(),
                take: status == "creating",
            });
        }
    }
    (keep, delete)
}

fn assemble(
    rows: Vec<NodeVolumeRow>,
    instances: &mut [pb::InstanceSpec],
) -> (Vec<pb::VolumeSpec>, Vec<String>) {
    let mut keep = Vec::new();
    let mut delete = Vec::new();
    let mut mounts: HashMap<String, Vec<pb::VolumeMount>> = HashMap::new();
    for (id, size_gb, status, instance, path, source) in rows {
        if status == "deleting" {
            delete.push(id.to_string());
            continue;
        }
        keep.push(pb::VolumeSpec {
            volume_id: id.to_string(),
            size_bytes: crate::store::to_u64(size_gb).saturating_mul(1 << 30),
            // Always: a restored volume is never created empty (the agent restores only what
            // does not exist, so an existing volume is never restored over).
            from_snapshot_id: source.map(|s| s.to_string()).unwrap_or_default(),
        });
        if let (Some(instance), Some(path)) = (instance, path) {
            mounts
                .entry(instance.to_string())
                .or_default()
                .push(pb::VolumeMount {
                    volume_id: id.to_string(),
                    mount_path: path,
                });
        }
    }
    for spec in instances.iter_mut() {
        spec.mounts = mounts.remove(&spec.instance_id).unwrap_or_default();
        spec.mounts.sort_by(|a, b| a.mount_path.cmp(&b.mount_path));
    }
    (keep, delete)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_volumes_and_hands_out_mounts() {
        let (a, b, c, snap) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let inst = Uuid::now_v7();
        let rows = vec![
            (
                a,
                2,
                "in-use".to_string(),
                Some(inst),
                Some("/data".to_string()),
                None,
            ),
            (b, 1, "deleting".to_string(), None, None, None),
            (c, 3, "creating".to_string(), None, None, Some(snap)),
        ];
        let mut specs = vec![
            pb::InstanceSpec {
                instance_id: inst.to_string(),
                ..Default::default()
            },
            pb::InstanceSpec {
                instance_id: Uuid::now_v7().to_string(),
                ..Default::default()
            },
        ];
        let (keep, delete) = assemble(rows, &mut specs);
        assert_eq!(keep.len(), 2);
        assert_eq!(keep[0].size_bytes, 2 << 30);
        assert_eq!(keep[0].from_snapshot_id, "");
        assert_eq!(
            keep[1].from_snapshot_id,
            snap.to_string(),
            "restored from it"
        );
        assert_eq!(delete, vec![b.to_string()]);
        assert_eq!(specs[0].mounts.len(), 1);
        assert_eq!(specs[0].mounts[0].mount_path, "/data");
        assert!(specs[1].mounts.is_empty());
    }

    #[test]
    fn snapshots_being_deleted_are_listed_apart() {
        let (a, b, v) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let (keep, delete) = snapshots(vec![
            (a, v, "available".to_string()),
            (b, v, "deleting".to_string()),
        ]);
        assert_eq!(keep.len(), 1);
        assert_eq!(keep[0].snapshot_id, a.to_string());
        assert_eq!(keep[0].volume_id, v.to_string());
        assert!(!keep[0].take, "an available snapshot is never re-taken");
        assert_eq!(delete, vec![b.to_string()]);
    }
}
