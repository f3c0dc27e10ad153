//! The planner's view of the fleet: the placement snapshot plus, per node, the placement
//! generation the next commit will be guarded by. Loaded whole at start (and when a request
//! finds no room on a view that may be stale), then kept current incrementally.

use super::{Event, group_key};
use crate::store::{NodeWithAllocation, Store, StoreError, StoreResult, to_u64};
use cloud_api::{NodeId, NodeStatus};
use cloud_placement as placement;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// A view older than this is refreshed before a request is refused for lack of room.
pub const STALE_AFTER: Duration = Duration::from_secs(1);
/// Above this many changed nodes (or a tenth of the fleet) the view is reloaded whole.
const BULK_RELOAD: usize = 64;

pub struct State {
    pub snapshot: placement::ClusterSnapshot,
    pub placement_generation: HashMap<NodeId, i64>,
    pub names: HashMap<NodeId, String>,
    pub refreshed_at: Instant,
}

fn node_state(status: &str) -> placement::NodeState {
    match NodeStatus::parse(status) {
        Some(NodeStatus::Ready) => placement::NodeState::Ready,
        Some(NodeStatus::Draining) => placement::NodeState::Draining,
        _ => placement::NodeState::Down,
    }
}

fn node_info(r: &NodeWithAllocation, groups: BTreeMap<String, u32>) -> placement::NodeInfo {
    let n = &r.node;
    placement::NodeInfo {
        id: n.id,
        state: node_state(&n.status),
        capacity: placement::Resources {
            cpu_millis: to_u64(n.cpu_millis),
            memory_mb: to_u64(n.memory_mb),
            disk_gb: to_u64(n.disk_gb),
        },
        allocated: placement::Resources {
            cpu_millis: to_u64(r.alloc_cpu_millis.unwrap_or(0)),
            memory_mb: to_u64(r.alloc_memory_mb.unwrap_or(0)),
            disk_gb: 0,
        },
        drivers: n.drivers.0.clone(),
        labels: n.labels.0.clone(),
        groups,
    }
}

impl State {
    /// Loads the whole fleet from the store.
    pub async fn load(store: &Store) -> StoreResult<Self> {
        let nodes = store.node_snapshot().await?;
        let mut groups: HashMap<uuid::Uuid, BTreeMap<String, u32>> = HashMap::new();
        for (node, project, group, count) in store.node_group_counts(None).await? {
            groups.entry(node).or_default().insert(
                group_key(project, &group),
                u32::try_from(count).unwrap_or(u32::MAX),
            );
        }
        let mut placement_generation = HashMap::with_capacity(nodes.len());
        let mut names = HashMap::with_capacity(nodes.len());
        let infos = nodes
            .iter()
            .map(|r| {
                let id = NodeId(r.node.id);
                placement_generation.insert(id, r.node.placement_generation);
                names.insert(id, r.node.name.clone());
                node_info(r, groups.remove(&r.node.id).unwrap_or_default())
            })
            .collect();
        Ok(Self {
            snapshot: placement::ClusterSnapshot::new(infos),
            placement_generation,
            names,
            refreshed_at: Instant::now(),
        })
    }

    pub fn is_stale(&self) -> bool {
        self.refreshed_at.elapsed() > STALE_AFTER
    }

    /// Re-reads one node (after a failed guard or a change notice).
    pub async fn reload_node(&mut self, store: &Store, id: NodeId) -> StoreResult<()> {
        match store.node_get(id).await {
            Ok(r) => {
                let mut groups = BTreeMap::new();
                for (_, project, group, count) in store.node_group_counts(Some(id)).await? {
                    groups.insert(
                        group_key(project, &group),
                        u32::try_from(count).unwrap_or(u32::MAX),
                    );
                }
                self.placement_generation
                    .insert(id, r.node.placement_generation);
                self.names.insert(id, r.node.name.clone());
                self.snapshot.upsert_node(node_info(&r, groups));
                Ok(())
            }
            Err(StoreError::NotFound) => {
                self.placement_generation.remove(&id);
                self.names.remove(&id);
                self.snapshot.remove_node(id.0);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Folds queued change notices into the view.
    pub async fn apply_events(
        &mut self,
        store: &Store,
        events: &mut mpsc::UnboundedReceiver<Event>,
    ) -> StoreResult<()> {
        let mut changed = Vec::new();
        while let Ok(Event::NodeChanged(id)) = events.try_recv() {
            changed.push(id);
        }
        changed.sort();
        changed.dedup();
        // Many changes at once (a fleet joining, a restart): one full load beats a reload each.
        if changed.len() > BULK_RELOAD.max(self.snapshot.len() / 10) {
            *self = State::load(store).await?;
            return Ok(());
        }
        for id in changed {
            self.reload_node(store, id).await?;
        }
        Ok(())
    }
}
