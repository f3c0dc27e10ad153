//! The data the engine speaks: resources, nodes, requests, options and plans.
//!
//! Plain values with public fields plus a few convenience constructors. Nothing here holds an
//! index; see [`crate::ClusterSnapshot`] for the long-lived, indexed view of the cluster.

use std::collections::BTreeMap;
use uuid::Uuid;

/// An amount of schedulable resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_mb: u64,
    pub disk_gb: u64,
}

impl Resources {
    /// `cpu_millis` millicores, `memory_mb` MiB and `disk_gb` GB.
    pub const fn new(cpu_millis: u64, memory_mb: u64, disk_gb: u64) -> Self {
        Self {
            cpu_millis,
            memory_mb,
            disk_gb,
        }
    }

    /// Whether `self` fits in `free` on every dimension.
    pub fn fits_in(&self, free: &Resources) -> bool {
        self.cpu_millis <= free.cpu_millis
            && self.memory_mb <= free.memory_mb
            && self.disk_gb <= free.disk_gb
    }

    /// Per-dimension subtraction that stops at zero.
    pub fn saturating_sub(&self, o: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis),
            memory_mb: self.memory_mb.saturating_sub(o.memory_mb),
            disk_gb: self.disk_gb.saturating_sub(o.disk_gb),
        }
    }

    /// Per-dimension addition that stops at `u64::MAX`.
    pub fn saturating_add(&self, o: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_mb: self.memory_mb.saturating_add(o.memory_mb),
            disk_gb: self.disk_gb.saturating_add(o.disk_gb),
        }
    }
}

/// Whether a node takes new work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Ready,
    Draining,
    Down,
}

/// One node as the scheduler's planner last saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub id: Uuid,
    pub state: NodeState,
    pub capacity: Resources,
    pub allocated: Resources,
    /// Drivers the node offers (`docker`, `libvirt`).
    pub drivers: Vec<String>,
    /// Labels matched by [`Request::node_selector`] (`zone=a`).
    pub labels: BTreeMap<String, String>,
    /// Members of each placement group running on this node. The snapshot drops zero counts.
    pub groups: BTreeMap<String, u32>,
}

impl NodeInfo {
    /// A node with nothing allocated, no labels and no group members.
    pub fn new(id: Uuid, state: NodeState, capacity: Resources, drivers: Vec<String>) -> Self {
        Self {
            id,
            state,
            capacity,
            allocated: Resources::default(),
            drivers,
            labels: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }

    /// Capacity minus allocation, saturating at zero.
    pub fn free(&self) -> Resources {
        self.capacity.saturating_sub(&self.allocated)
    }
}

/// How members of a placement group relate to each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupPolicy {
    /// Hard anti-affinity: at most one member per node.
    Spread,
    /// Hard affinity: once the group has a member anywhere, new members go only to nodes that
    /// already run one. The first member may go anywhere.
    Pack,
}

/// A named set of instances placed relative to each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementGroup {
    pub name: String,
    pub policy: GroupPolicy,
}

impl PlacementGroup {
    /// A hard anti-affinity group.
    pub fn spread(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            policy: GroupPolicy::Spread,
        }
    }

    /// A hard affinity group.
    pub fn pack(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            policy: GroupPolicy::Pack,
        }
    }
}

/// How feasible nodes are ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// The node left fullest wins (averaged over CPU and memory).
    #[default]
    BinPack,
    /// The node left emptiest wins.
    Spread,
}

/// Something to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub id: Uuid,
    pub demand: Resources,
    /// Driver the node must offer (`docker`, `libvirt`).
    pub driver: String,
    /// Every pair must be among the node's labels.
    pub node_selector: BTreeMap<String, String>,
    pub group: Option<PlacementGroup>,
    /// Volume locality: only this node is eligible.
    pub required_node: Option<Uuid>,
    /// `None` uses [`Options::default_strategy`].
    pub strategy: Option<Strategy>,
}

impl Request {
    /// A request with no selector, no group, no required node and the default strategy.
    pub fn new(id: Uuid, demand: Resources, driver: impl Into<String>) -> Self {
        Self {
            id,
            demand,
            driver: driver.into(),
            node_selector: BTreeMap::new(),
            group: None,
            required_node: None,
            strategy: None,
        }
    }

    /// Adds `key=value` to the node selector.
    pub fn with_label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.node_selector.insert(key.into(), value.into());
        self
    }

    /// Makes the request a member of `group`.
    pub fn in_group(mut self, group: PlacementGroup) -> Self {
        self.group = Some(group);
        self
    }

    /// Restricts the request to `node` (volume locality).
    pub fn on_node(mut self, node: Uuid) -> Self {
        self.required_node = Some(node);
        self
    }

    /// Overrides the default strategy.
    pub fn with_strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = Some(strategy);
        self
    }
}

/// Tuning knobs of [`crate::place_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Strategy of requests whose `strategy` is `None`.
    pub default_strategy: Strategy,
    /// Stop looking after at least this many feasible nodes were found…
    pub min_candidates: usize,
    /// …or this percentage of all nodes, whichever is larger.
    pub candidate_percent: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            default_strategy: Strategy::BinPack,
            min_candidates: 100,
            candidate_percent: 5,
        }
    }
}

impl Options {
    /// How many feasible nodes a decision scores on a cluster of `nodes` nodes (at least 1).
    pub fn candidates(&self, nodes: usize) -> usize {
        let percent = usize::try_from(self.candidate_percent.min(100)).unwrap_or(100);
        let share = nodes.saturating_mul(percent).div_ceil(100);
        self.min_candidates.max(share).max(1)
    }
}

/// A request assigned to a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub request: Uuid,
    pub node: Uuid,
}

/// A request that no node can take, with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    pub request: Uuid,
    /// e.g. "no node can fit 500 millicores and 512 MiB: 3 nodes lack memory, 2 are draining".
    pub reason: String,
}

/// The outcome of one [`crate::place`] call, in request order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub placements: Vec<Placement>,
    pub unplaced: Vec<Unplaced>,
}
