//! Indexes kept inside [`crate::ClusterSnapshot`] so that a placement walk only visits nodes
//! that may fit.
//!
//! * `drivers`: for every driver, the **ready** nodes offering it, as [`Buckets`]: grouped by
//!   the capacity class of their free memory and free CPU (see [`class`]), each bucket a
//!   posting list. A request needing `m` MiB and `c` millicores only visits buckets with
//!   `mem_class >= class(m)` and `cpu_class >= class(c)`: any node outside them lacks memory
//!   or CPU, because [`class`] is monotone. Per driver, the same [`Buckets`] again for every
//!   label pair (`zone=a`), so a node selector walks the smaller set, still pruned by
//!   capacity, without re-checking status, driver or that pair.
//! * `groups`: `group -> nodes running at least one member` (any state), for pack groups.
//! * `states`: how many nodes are ready, draining and down, for reasons without a scan.
//!
//! Posting lists map a node's [`Key`] to its storage slot. Ordering depends on the node id
//! only, so the indexes (and every walk over them) depend on the snapshot's contents, never
//! on the order in which nodes were upserted or on which slot a node landed in. Hashing the
//! id first spreads nodes uniformly over the key space whatever the ids look like (v7 UUIDs
//! share their time prefix), so a walk starting at a random key starts at a random node.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::score::mix;
use crate::types::{NodeInfo, NodeState};

/// Where a node lives in the snapshot's storage. Never influences a decision.
pub(crate) type Slot = usize;

/// The order of nodes in posting lists: an unseeded hash of the id, then the id.
pub(crate) type Key = (u64, Uuid);

/// The posting-list key of a node.
pub(crate) fn key(id: Uuid) -> Key {
    (mix(0x004B_4559, id.as_u128(), 0), id)
}

/// Nodes ordered by [`Key`], each with its slot.
pub(crate) type Posting = BTreeMap<Key, Slot>;

/// A bucket key: (class of free memory, class of free CPU).
pub(crate) type BucketKey = (u8, u8);

/// Capacity class of an amount: monotone in `v`, four classes per power of two (values
/// below 8 are their own class), so a class spans at most 25 % of its lower bound.
pub(crate) fn class(v: u64) -> u8 {
    if v < 8 {
        return v as u8;
    }
    let bits = 63 - v.leading_zeros(); // >= 3
    let sub = ((v >> (bits - 2)) & 3) as u32;
    (bits * 4 + sub) as u8
}

/// The bucket a node belongs to, from its own (snapshot) allocation.
pub(crate) fn bucket_of(node: &NodeInfo) -> BucketKey {
    let free = node.free();
    (class(free.memory_mb), class(free.cpu_millis))
}

/// A set of ready nodes bucketed by free-capacity class.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Buckets {
    pub(crate) buckets: BTreeMap<BucketKey, Posting>,
    /// Number of nodes over all buckets.
    pub(crate) len: usize,
}

impl Buckets {
    fn insert(&mut self, bucket: BucketKey, node: Key, slot: Slot) {
        if self
            .buckets
            .entry(bucket)
            .or_default()
            .insert(node, slot)
            .is_none()
        {
            self.len += 1;
        }
    }

    /// Removes a node; true when the set became empty.
    fn remove(&mut self, bucket: BucketKey, node: &Key) -> bool {
        if let Some(posting) = self.buckets.get_mut(&bucket) {
            if posting.remove(node).is_some() {
                self.len -= 1;
            }
            if posting.is_empty() {
                self.buckets.remove(&bucket);
            }
        }
        self.len == 0
    }

    /// Posting lists that may hold a node with `memory_mb` and `cpu_millis` free, from the
    /// tightest to the emptiest.
    pub(crate) fn fitting(
        &self,
        memory_mb: u64,
        cpu_millis: u64,
    ) -> impl DoubleEndedIterator<Item = &Posting> {
        let (mem, cpu) = (class(memory_mb), class(cpu_millis));
        self.buckets
            .range((mem, 0)..)
            .filter(move |((_, c), _)| *c >= cpu)
            .map(|(_, posting)| posting)
    }
}

/// How many nodes are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct StateCounts {
    pub(crate) ready: usize,
    pub(crate) draining: usize,
    pub(crate) down: usize,
}

impl StateCounts {
    fn slot(&mut self, state: NodeState) -> &mut usize {
        match state {
            NodeState::Ready => &mut self.ready,
            NodeState::Draining => &mut self.draining,
            NodeState::Down => &mut self.down,
        }
    }
}

/// Ready nodes offering one driver, all of them and per label pair.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct DriverIndex {
    pub(crate) all: Buckets,
    pub(crate) labels: BTreeMap<String, BTreeMap<String, Buckets>>,
}

impl DriverIndex {
    /// The ready nodes with this driver labelled `name=value`, if any.
    pub(crate) fn label(&self, name: &str, value: &str) -> Option<&Buckets> {
        self.labels.get(name).and_then(|values| values.get(value))
    }
}

/// All indexes of a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Index {
    pub(crate) drivers: BTreeMap<String, DriverIndex>,
    pub(crate) groups: BTreeMap<String, Posting>,
    pub(crate) states: StateCounts,
}

impl Index {
    /// Indexes a node stored at `slot`.
    pub(crate) fn insert(&mut self, slot: Slot, node: &NodeInfo) {
        self.insert_live(slot, node);
        for (g, n) in &node.groups {
            if *n > 0 {
                self.insert_group(g, node.id, slot);
            }
        }
    }

    /// Forgets a node, given exactly as it was indexed.
    pub(crate) fn remove(&mut self, node: &NodeInfo) {
        self.remove_live(node);
        for g in node.groups.keys() {
            self.remove_group(g, node.id);
        }
    }

    /// Indexes what changes with state and allocation: the state count and, for a ready
    /// node, its driver and label buckets.
    pub(crate) fn insert_live(&mut self, slot: Slot, node: &NodeInfo) {
        *self.states.slot(node.state) += 1;
        if node.state != NodeState::Ready {
            return;
        }
        let (bucket, k) = (bucket_of(node), key(node.id));
        for driver in &node.drivers {
            let index = self.drivers.entry(driver.clone()).or_default();
            index.all.insert(bucket, k, slot);
            for (name, value) in &node.labels {
                let values = index.labels.entry(name.clone()).or_default();
                values
                    .entry(value.clone())
                    .or_default()
                    .insert(bucket, k, slot);
            }
        }
    }

    /// Undoes [`Index::insert_live`] for a node as it was indexed.
    pub(crate) fn remove_live(&mut self, node: &NodeInfo) {
        let count = self.states.slot(node.state);
        *count = count.saturating_sub(1);
        if node.state != NodeState::Ready {
            return;
        }
        let (bucket, k) = (bucket_of(node), key(node.id));
        for driver in &node.drivers {
            let Some(index) = self.drivers.get_mut(driver) else {
                continue;
            };
            for (name, value) in &node.labels {
                let Some(values) = index.labels.get_mut(name) else {
                    continue;
                };
                if let Some(set) = values.get_mut(value)
                    && set.remove(bucket, &k)
                {
                    values.remove(value);
                }
                if values.is_empty() {
                    index.labels.remove(name);
                }
            }
            if index.all.remove(bucket, &k) {
                self.drivers.remove(driver);
            }
        }
    }

    /// Records that `node` runs at least one member of `group`.
    pub(crate) fn insert_group(&mut self, group: &str, node: Uuid, slot: Slot) {
        self.groups
            .entry(group.to_string())
            .or_default()
            .insert(key(node), slot);
    }

    /// Records that `node` runs no member of `group`.
    pub(crate) fn remove_group(&mut self, group: &str, node: Uuid) {
        if let Some(posting) = self.groups.get_mut(group) {
            posting.remove(&key(node));
            if posting.is_empty() {
                self.groups.remove(group);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_is_monotone_and_tight() {
        let mut prev = 0;
        for v in (0..5000u64).chain([u64::MAX / 2, u64::MAX - 1, u64::MAX]) {
            let c = class(v);
            assert!(c >= prev, "class({v}) = {c} < {prev}");
            prev = c;
        }
        assert_eq!(class(0), 0);
        assert_eq!(class(7), 7);
        assert_eq!(class(8), 12);
        assert_eq!(class(u64::MAX), 255);
        // Values in one class are within 25 % of each other.
        assert_eq!(class(1024), class(1279));
        assert_ne!(class(1024), class(1280));
    }
}
