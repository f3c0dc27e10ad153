//! The long-lived, incrementally updated view of the cluster that placement reads.
//!
//! Nodes live in slots of a slab (`slots`, with a free list) so that indexes can point at
//! them cheaply; `by_id` orders them by id. Public views ([`ClusterSnapshot::nodes`],
//! equality) go by id and placement walks by a hash of the id, never by slot, so two
//! snapshots with the same nodes behave the same whatever sequence of `new`/`upsert_node`/
//! `remove_node`/`allocate`/... built them.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::index::{Index, Slot};
use crate::types::{NodeInfo, NodeState, Resources};

/// An indexed view of the cluster. Build it once with [`ClusterSnapshot::new`] and keep it up
/// to date with the mutators; [`crate::place`] only reads it.
#[derive(Debug, Clone, Default)]
pub struct ClusterSnapshot {
    slots: Vec<Option<NodeInfo>>,
    vacant: Vec<Slot>,
    by_id: BTreeMap<Uuid, Slot>,
    index: Index,
}

/// Two snapshots are equal when they hold the same nodes (history and slots do not matter).
impl PartialEq for ClusterSnapshot {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.nodes().eq(other.nodes())
    }
}

impl Eq for ClusterSnapshot {}

impl FromIterator<NodeInfo> for ClusterSnapshot {
    fn from_iter<I: IntoIterator<Item = NodeInfo>>(iter: I) -> Self {
        let mut snapshot = Self::default();
        for node in iter {
            snapshot.upsert_node(node);
        }
        snapshot
    }
}

impl ClusterSnapshot {
    /// Builds a snapshot and its indexes. A later node with the same id replaces an earlier one.
    pub fn new(nodes: Vec<NodeInfo>) -> Self {
        nodes.into_iter().collect()
    }

    /// All nodes, ordered by id.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeInfo> {
        self.by_id.values().filter_map(|slot| self.at(*slot))
    }

    /// Number of nodes (any state).
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the snapshot has no node.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// The node with this id.
    pub fn get(&self, id: Uuid) -> Option<&NodeInfo> {
        self.slot_of(id).and_then(|slot| self.at(slot))
    }

    /// Adds a node or replaces everything known about it (facts, state, capacity, allocation,
    /// group members). Group entries with a zero count are dropped.
    pub fn upsert_node(&mut self, mut node: NodeInfo) {
        node.groups.retain(|_, n| *n > 0);
        let slot = match self.by_id.get(&node.id) {
            Some(&slot) => slot,
            None => {
                let slot = self.vacant.pop().unwrap_or(self.slots.len());
                if slot == self.slots.len() {
                    self.slots.push(None);
                }
                self.by_id.insert(node.id, slot);
                slot
            }
        };
        let Some(cell) = self.slots.get_mut(slot) else {
            return;
        };
        if let Some(old) = cell.take() {
            self.index.remove(&old);
        }
        self.index.insert(slot, &node);
        *cell = Some(node);
    }

    /// Forgets a node. Unknown ids are ignored.
    pub fn remove_node(&mut self, id: Uuid) {
        let Some(slot) = self.by_id.remove(&id) else {
            return;
        };
        if let Some(old) = self.slots.get_mut(slot).and_then(Option::take) {
            self.index.remove(&old);
        }
        self.vacant.push(slot);
    }

    /// Changes a node's state. Unknown ids are ignored.
    pub fn set_state(&mut self, id: Uuid, state: NodeState) {
        self.update(id, |node, _| node.state = state);
    }

    /// Records a committed placement of `demand` (a member of `group`, if any) on `node`.
    /// Unknown ids are ignored; amounts saturate.
    pub fn allocate(&mut self, node: Uuid, demand: Resources, group: Option<&str>) {
        self.update(node, |info, joined| {
            info.allocated = info.allocated.saturating_add(&demand);
            if let Some(group) = group {
                let members = info.groups.entry(group.to_string()).or_insert(0);
                *members = members.saturating_add(1);
                if *members == 1 {
                    joined.push(group.to_string());
                }
            }
        });
    }

    /// Records that an instance using `demand` (a member of `group`, if any) left `node`.
    /// Unknown ids are ignored; amounts and member counts stop at zero.
    pub fn release(&mut self, node: Uuid, demand: Resources, group: Option<&str>) {
        self.update(node, |info, _| {
            info.allocated = info.allocated.saturating_sub(&demand);
            if let Some(group) = group
                && let Some(members) = info.groups.get_mut(group)
            {
                *members = members.saturating_sub(1);
                if *members == 0 {
                    info.groups.remove(group);
                }
            }
        });
    }

    /// Applies `change` to a node and re-indexes what can change: state count, driver and
    /// label buckets (state, allocation) and group membership. `change` lists groups that gained their first member.
    fn update(&mut self, id: Uuid, change: impl FnOnce(&mut NodeInfo, &mut Vec<String>)) {
        let Some(&slot) = self.by_id.get(&id) else {
            return;
        };
        let Some(node) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        self.index.remove_live(node);
        let before: Vec<String> = node.groups.keys().cloned().collect();
        let mut joined = Vec::new();
        change(node, &mut joined);
        for group in &before {
            if !node.groups.contains_key(group) {
                self.index.remove_group(group, id);
            }
        }
        for group in &joined {
            self.index.insert_group(group, id, slot);
        }
        self.index.insert_live(slot, node);
    }

    /// The storage slot of a node.
    pub(crate) fn slot_of(&self, id: Uuid) -> Option<Slot> {
        self.by_id.get(&id).copied()
    }

    /// Number of storage slots (occupied or vacant); every slot is below it.
    pub(crate) fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// The node stored at `slot`.
    pub(crate) fn at(&self, slot: Slot) -> Option<&NodeInfo> {
        self.slots.get(slot).and_then(Option::as_ref)
    }

    /// Slots of all nodes, ordered by node id.
    pub(crate) fn slots_by_id(&self) -> impl Iterator<Item = Slot> + '_ {
        self.by_id.values().copied()
    }

    pub(crate) fn index(&self) -> &Index {
        &self.index
    }

    /// Checks the internal invariants: ids and slots agree, vacant slots are empty, and the
    /// incrementally maintained indexes equal indexes rebuilt from scratch. For tests.
    #[doc(hidden)]
    pub fn verify(&self) -> Result<(), String> {
        let mut rebuilt = Index::default();
        for (id, &slot) in &self.by_id {
            let node = self
                .at(slot)
                .ok_or_else(|| format!("node {id} points at empty slot {slot}"))?;
            if node.id != *id {
                return Err(format!("slot {slot} holds {} not {id}", node.id));
            }
            if node.groups.values().any(|n| *n == 0) {
                return Err(format!("node {id} keeps a zero group count"));
            }
            rebuilt.insert(slot, node);
        }
        for &slot in &self.vacant {
            if self.at(slot).is_some() {
                return Err(format!("vacant slot {slot} is occupied"));
            }
        }
        let occupied = self.slots.iter().filter(|s| s.is_some()).count();
        if occupied != self.by_id.len() || occupied + self.vacant.len() != self.slots.len() {
            return Err("slot accounting is off".into());
        }
        if rebuilt != self.index {
            return Err(format!(
                "indexes drifted:\n incremental {:?}\n rebuilt {:?}",
                self.index, rebuilt
            ));
        }
        Ok(())
    }
}
