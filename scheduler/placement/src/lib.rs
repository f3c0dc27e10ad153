//! The pure placement engine: `place(&ClusterSnapshot, &[Request], seed) -> Plan`.
//!
//! No I/O, no clock, no global randomness: the same snapshot, requests and seed give the same
//! plan. Requests that cannot be placed come back as data with a reason per filter.
//!
//! v0 filters on node status, driver and free CPU/memory/disk, and scores by bin-packing
//! (the node left fullest wins), breaking ties with a seeded choice.

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
    fn fits_in(&self, free: &Resources) -> bool {
        self.cpu_millis <= free.cpu_millis
            && self.memory_mb <= free.memory_mb
            && self.disk_gb <= free.disk_gb
    }

    fn saturating_sub(&self, o: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis),
            memory_mb: self.memory_mb.saturating_sub(o.memory_mb),
            disk_gb: self.disk_gb.saturating_sub(o.disk_gb),
        }
    }

    fn saturating_add(&self, o: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            memory_mb: self.memory_mb.saturating_add(o.memory_mb),
            disk_gb: self.disk_gb.saturating_add(o.disk_gb),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    Ready,
    Draining,
    Down,
}

/// One node as the scheduler saw it when it took the snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeInfo {
    pub id: Uuid,
    pub state: NodeState,
    pub capacity: Resources,
    pub allocated: Resources,
    pub drivers: Vec<String>,
}

/// An immutable view of the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClusterSnapshot {
    pub nodes: Vec<NodeInfo>,
}

/// Something to place.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Uuid,
    pub demand: Resources,
    /// Driver the node must offer (`docker`, `libvirt`).
    pub driver: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub request: Uuid,
    pub node: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    pub request: Uuid,
    /// e.g. "no node can run it: 3 nodes lack memory, 2 are draining".
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub placements: Vec<Placement>,
    pub unplaced: Vec<Unplaced>,
}

/// Why a node was filtered out, in the order filters run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rejection {
    Down,
    Draining,
    NoDriver,
    Cpu,
    Memory,
    Disk,
}

impl Rejection {
    fn describe(self, n: usize) -> String {
        let (one, many) = match self {
            Rejection::Down => ("is down", "are down"),
            Rejection::Draining => ("is draining", "are draining"),
            Rejection::NoDriver => ("lacks the driver", "lack the driver"),
            Rejection::Cpu => ("lacks CPU", "lack CPU"),
            Rejection::Memory => ("lacks memory", "lack memory"),
            Rejection::Disk => ("lacks disk", "lack disk"),
        };
        let noun = if n == 1 { "node" } else { "nodes" };
        format!("{n} {noun} {}", if n == 1 { one } else { many })
    }
}

fn check(node: &NodeInfo, allocated: &Resources, req: &Request) -> Result<(), Rejection> {
    match node.state {
        NodeState::Down => return Err(Rejection::Down),
        NodeState::Draining => return Err(Rejection::Draining),
        NodeState::Ready => {}
    }
    if !node.drivers.iter().any(|d| d == &req.driver) {
        return Err(Rejection::NoDriver);
    }
    let free = node.capacity.saturating_sub(allocated);
    if req.demand.cpu_millis > free.cpu_millis {
        return Err(Rejection::Cpu);
    }
    if req.demand.memory_mb > free.memory_mb {
        return Err(Rejection::Memory);
    }
    if req.demand.disk_gb > free.disk_gb {
        return Err(Rejection::Disk);
    }
    debug_assert!(req.demand.fits_in(&free));
    Ok(())
}

/// Bin-packing score: the fraction of the node used after placing, averaged over CPU and
/// memory, in parts per million (higher = fuller = better).
fn pack_score(node: &NodeInfo, allocated_after: &Resources) -> u64 {
    fn frac(used: u64, cap: u64) -> u64 {
        if cap == 0 {
            return 0;
        }
        ((used as u128 * 1_000_000) / cap as u128) as u64
    }
    (frac(allocated_after.cpu_millis, node.capacity.cpu_millis)
        + frac(allocated_after.memory_mb, node.capacity.memory_mb))
        / 2
}

/// SplitMix64: a tiny deterministic generator for tie-breaking.
fn mix(seed: u64, a: u128, b: u128) -> u64 {
    let mut z = seed
        ^ (a as u64)
        ^ ((a >> 64) as u64).rotate_left(17)
        ^ (b as u64).rotate_left(31)
        ^ ((b >> 64) as u64).rotate_left(47);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Places `requests` in order on `snapshot`, accounting for earlier placements of the batch.
pub fn place(snapshot: &ClusterSnapshot, requests: &[Request], seed: u64) -> Plan {
    let mut allocated: Vec<Resources> = snapshot.nodes.iter().map(|n| n.allocated).collect();
    let mut plan = Plan::default();
    for req in requests {
        let mut best: Option<(u64, u64, usize)> = None;
        let mut rejections: BTreeMap<Rejection, usize> = BTreeMap::new();
        for (i, node) in snapshot.nodes.iter().enumerate() {
            match check(node, &allocated[i], req) {
                Err(r) => *rejections.entry(r).or_default() += 1,
                Ok(()) => {
                    let after = allocated[i].saturating_add(&req.demand);
                    let score = pack_score(node, &after);
                    let tie = mix(seed, req.id.as_u128(), node.id.as_u128());
                    if best.is_none_or(|(s, t, _)| (score, tie) > (s, t)) {
                        best = Some((score, tie, i));
                    }
                }
            }
        }
        match best {
            Some((_, _, i)) => {
                allocated[i] = allocated[i].saturating_add(&req.demand);
                plan.placements.push(Placement {
                    request: req.id,
                    node: snapshot.nodes[i].id,
                });
            }
            None => plan.unplaced.push(Unplaced {
                request: req.id,
                reason: unplaced_reason(snapshot.nodes.len(), &rejections, req),
            }),
        }
    }
    plan
}

fn unplaced_reason(nodes: usize, rejections: &BTreeMap<Rejection, usize>, req: &Request) -> String {
    if nodes == 0 {
        return "no nodes are registered".to_string();
    }
    let parts: Vec<String> = rejections
        .iter()
        .map(|(r, n)| {
            let s = r.describe(*n);
            if *r == Rejection::NoDriver {
                format!("{s} {:?}", req.driver)
            } else {
                s
            }
        })
        .collect();
    format!(
        "no node can fit {} millicores and {} MiB: {}",
        req.demand.cpu_millis,
        req.demand.memory_mb,
        parts.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u128, state: NodeState, cpu: u64, mem: u64) -> NodeInfo {
        NodeInfo {
            id: Uuid::from_u128(n),
            state,
            capacity: Resources {
                cpu_millis: cpu,
                memory_mb: mem,
                disk_gb: 100,
            },
            allocated: Resources::default(),
            drivers: vec!["docker".into()],
        }
    }

    fn req(n: u128, cpu: u64, mem: u64) -> Request {
        Request {
            id: Uuid::from_u128(1000 + n),
            demand: Resources {
                cpu_millis: cpu,
                memory_mb: mem,
                disk_gb: 0,
            },
            driver: "docker".into(),
        }
    }

    #[test]
    fn places_on_a_ready_node_with_room() {
        let snap = ClusterSnapshot {
            nodes: vec![
                node(1, NodeState::Down, 8000, 8192),
                node(2, NodeState::Ready, 1000, 1024),
            ],
        };
        let plan = place(&snap, &[req(1, 500, 512)], 7);
        assert_eq!(plan.placements.len(), 1);
        assert_eq!(plan.placements[0].node, Uuid::from_u128(2));
        assert!(plan.unplaced.is_empty());
    }

    #[test]
    fn bin_packs_onto_the_fuller_node() {
        let mut busy = node(1, NodeState::Ready, 4000, 4096);
        busy.allocated = Resources {
            cpu_millis: 2000,
            memory_mb: 2048,
            disk_gb: 0,
        };
        let idle = node(2, NodeState::Ready, 4000, 4096);
        let plan = place(
            &ClusterSnapshot {
                nodes: vec![idle, busy],
            },
            &[req(1, 100, 64)],
            1,
        );
        assert_eq!(plan.placements[0].node, Uuid::from_u128(1));
    }

    #[test]
    fn batch_accounts_for_its_own_placements() {
        let snap = ClusterSnapshot {
            nodes: vec![node(1, NodeState::Ready, 1000, 1024)],
        };
        let plan = place(&snap, &[req(1, 600, 100), req(2, 600, 100)], 3);
        assert_eq!(plan.placements.len(), 1);
        assert_eq!(plan.unplaced.len(), 1);
        assert!(
            plan.unplaced[0].reason.contains("1 node lacks CPU"),
            "{:?}",
            plan.unplaced
        );
    }

    #[test]
    fn explains_why_nothing_fits() {
        let mut nodes = vec![
            node(1, NodeState::Ready, 8000, 100),
            node(2, NodeState::Ready, 8000, 100),
            node(3, NodeState::Draining, 8000, 8000),
            node(4, NodeState::Down, 8000, 8000),
        ];
        nodes.push(NodeInfo {
            drivers: vec!["libvirt".into()],
            ..node(5, NodeState::Ready, 8000, 8000)
        });
        let plan = place(&ClusterSnapshot { nodes }, &[req(1, 100, 512)], 0);
        let reason = &plan.unplaced[0].reason;
        assert!(reason.contains("2 nodes lack memory"), "{reason}");
        assert!(reason.contains("1 node is draining"), "{reason}");
        assert!(reason.contains("1 node is down"), "{reason}");
        assert!(reason.contains("lacks the driver \"docker\""), "{reason}");
        let empty = place(&ClusterSnapshot::default(), &[req(1, 1, 1)], 0);
        assert_eq!(empty.unplaced[0].reason, "no nodes are registered");
    }

    #[test]
    fn same_input_and_seed_give_the_same_plan_and_ties_spread_by_seed() {
        let nodes: Vec<NodeInfo> = (1..=8)
            .map(|i| node(i, NodeState::Ready, 4000, 4096))
            .collect();
        let snap = ClusterSnapshot { nodes };
        let reqs = [req(1, 100, 64)];
        assert_eq!(place(&snap, &reqs, 42), place(&snap, &reqs, 42));
        let chosen: std::collections::BTreeSet<Uuid> = (0..64)
            .map(|seed| place(&snap, &reqs, seed).placements[0].node)
            .collect();
        assert!(chosen.len() > 1, "ties must not always pick the same node");
    }
}
