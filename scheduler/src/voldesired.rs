//! The volume part of a node's desired state: the volumes it must have or delete, and the
//! mounts of its instances. One read, and only for nodes that hold volumes.

use crate::store::{NodeVolumeRow, Store, StoreResult};
use cloud_proto::v1 as pb;
use std::collections::HashMap;
use uuid::Uuid;

/// Fills in the mounts of `instances` and returns (volumes to have, volumes to delete).
pub async fn fill(
    store: &Store,
    node: Uuid,
    instances: &mut [pb::InstanceSpec],
) -> StoreResult<(Vec<pb::VolumeSpec>, Vec<String>)> {
    let rows = store.node_volumes(node).await?;
    Ok(assemble(rows, instances))
}

fn assemble(
    rows: Vec<NodeVolumeRow>,
    instances: &mut [pb::InstanceSpec],
) -> (Vec<pb::VolumeSpec>, Vec<String>) {
    let mut keep = Vec::new();
    let mut delete = Vec::new();
    let mut mounts: HashMap<String, Vec<pb::VolumeMount>> = HashMap::new();
    for (id, size_gb, status, instance, path) in rows {
        if status == "deleting" {
            delete.push(id.to_string());
            continue;
        }
        keep.push(pb::VolumeSpec {
            volume_id: id.to_string(),
            size_bytes: crate::store::to_u64(size_gb).saturating_mul(1 << 30),
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
        let (a, b, c) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let inst = Uuid::now_v7();
        let rows = vec![
            (
                a,
                2,
                "in-use".to_string(),
                Some(inst),
                Some("/data".to_string()),
            ),
            (b, 1, "deleting".to_string(), None, None),
            (c, 3, "available".to_string(), None, None),
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
        assert_eq!(delete, vec![b.to_string()]);
        assert_eq!(specs[0].mounts.len(), 1);
        assert_eq!(specs[0].mounts[0].mount_path, "/data");
        assert!(specs[1].mounts.is_empty());
    }
}
