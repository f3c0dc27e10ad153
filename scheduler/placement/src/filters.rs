//! The filters a node must pass to take a request, and the reason text for requests that no
//! node passes.
//!
//! Filters run in a fixed order and a node is counted under the first one it fails: required
//! node, status (down, draining), driver, node selector (first unmatched pair), placement
//! group, then CPU, memory and disk. The same [`check`] serves the indexed walk and the full
//! scan, so both always agree on feasibility.

use std::collections::BTreeMap;

use crate::types::{GroupPolicy, NodeInfo, NodeState, Request, Resources};

/// Why a node was filtered out, in the order filters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Rejection {
    NotRequired,
    Down,
    Draining,
    NoDriver,
    /// The n-th pair of the node selector (in key order) did not match.
    Selector(usize),
    /// Already runs a member of a spread group.
    GroupSpread,
    /// Runs no member of a pack group that has members elsewhere.
    GroupPack,
    Cpu,
    Memory,
    Disk,
}

/// What the batch placed so far changes about one node.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct BatchView {
    /// Resources placed on the node earlier in the batch.
    pub(crate) extra: Resources,
    /// Whether a member of the request's group was placed on the node earlier in the batch.
    pub(crate) member: bool,
}

/// What the source of a candidate already guarantees, so [`check`] can skip those filters
/// (and the memory they would touch). Only sources that are exact for a filter set it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Known {
    /// The node is ready (it came from a driver or label bucket).
    pub(crate) ready: bool,
    /// The node offers the request's driver (it came from that driver's buckets).
    pub(crate) driver: bool,
    /// The node matches this pair of the selector (it came from that label's buckets).
    pub(crate) pair: Option<usize>,
}

/// Whether `node` can take `req`, given earlier placements of the batch. `group_started` says
/// whether the request's group has a member anywhere (snapshot or batch).
pub(crate) fn check(
    node: &NodeInfo,
    batch: &BatchView,
    req: &Request,
    group_started: bool,
    known: Known,
) -> Result<(), Rejection> {
    if req.required_node.is_some_and(|id| id != node.id) {
        return Err(Rejection::NotRequired);
    }
    if !known.ready {
        match node.state {
            NodeState::Down => return Err(Rejection::Down),
            NodeState::Draining => return Err(Rejection::Draining),
            NodeState::Ready => {}
        }
    }
    debug_assert_eq!(node.state, NodeState::Ready);
    if !known.driver && !node.drivers.contains(&req.driver) {
        return Err(Rejection::NoDriver);
    }
    debug_assert!(node.drivers.contains(&req.driver));
    for (i, (key, value)) in req.node_selector.iter().enumerate() {
        if known.pair != Some(i) && node.labels.get(key) != Some(value) {
            return Err(Rejection::Selector(i));
        }
    }
    if let Some(group) = &req.group {
        let member = batch.member || node.groups.get(&group.name).is_some_and(|n| *n > 0);
        match group.policy {
            GroupPolicy::Spread if member => return Err(Rejection::GroupSpread),
            GroupPolicy::Pack if group_started && !member => return Err(Rejection::GroupPack),
            _ => {}
        }
    }
    let free = node
        .capacity
        .saturating_sub(&node.allocated.saturating_add(&batch.extra));
    if req.demand.cpu_millis > free.cpu_millis {
        return Err(Rejection::Cpu);
    }
    if req.demand.memory_mb > free.memory_mb {
        return Err(Rejection::Memory);
    }
    if req.demand.disk_gb > free.disk_gb {
        return Err(Rejection::Disk);
    }
    Ok(())
}

impl Rejection {
    /// "3 nodes lack memory", "1 node does not match zone=a", ...
    fn describe(self, n: usize, req: &Request) -> String {
        let noun = if n == 1 { "node" } else { "nodes" };
        let pick = |one: &str, many: &str| if n == 1 { one } else { many }.to_string();
        let group = req.group.as_ref().map_or("", |g| g.name.as_str());
        let what = match self {
            Rejection::NotRequired => {
                let id = req.required_node.unwrap_or_default();
                format!("{} the required node {id}", pick("is not", "are not"))
            }
            Rejection::Down => pick("is down", "are down"),
            Rejection::Draining => pick("is draining", "are draining"),
            Rejection::NoDriver => {
                format!(
                    "{} {:?}",
                    pick("lacks the driver", "lack the driver"),
                    req.driver
                )
            }
            Rejection::Selector(i) => {
                let (key, value) = req.node_selector.iter().nth(i).unzip();
                format!(
                    "{} {}={}",
                    pick("does not match", "do not match"),
                    key.map_or("", String::as_str),
                    value.map_or("", String::as_str)
                )
            }
            Rejection::GroupSpread => format!(
                "{} a member of group {group:?}",
                pick("already runs", "already run")
            ),
            Rejection::GroupPack => format!(
                "{} members of group {group:?}",
                pick("does not run", "do not run")
            ),
            Rejection::Cpu => pick("lacks CPU", "lack CPU"),
            Rejection::Memory => pick("lacks memory", "lack memory"),
            Rejection::Disk => pick("lacks disk", "lack disk"),
        };
        format!("{n} {noun} {what}")
    }
}

/// The reason a request could not be placed on a snapshot of `nodes` nodes, from the count of
/// nodes rejected by each filter.
pub(crate) fn unplaced_reason(
    nodes: usize,
    rejections: &BTreeMap<Rejection, usize>,
    req: &Request,
) -> String {
    if nodes == 0 {
        return "no nodes are registered".to_string();
    }
    let parts: Vec<String> = rejections
        .iter()
        .map(|(r, n)| r.describe(*n, req))
        .collect();
    format!(
        "no node can fit {} millicores and {} MiB: {}",
        req.demand.cpu_millis,
        req.demand.memory_mb,
        parts.join(", ")
    )
}
