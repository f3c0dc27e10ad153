//! Incremental snapshot maintenance: every mutator keeps the indexes equal to a fresh build,
//! and plans depend on contents only, not on the history that produced them.

mod common;

use cloud_placement::{
    ClusterSnapshot, NodeInfo, NodeState, PlacementGroup, Resources, Strategy, place,
};
use common::*;

fn fresh(snap: &ClusterSnapshot) -> ClusterSnapshot {
    ClusterSnapshot::new(snap.nodes().cloned().collect())
}

fn assert_consistent(snap: &ClusterSnapshot) {
    snap.verify().unwrap_or_else(|e| panic!("{e}"));
    let rebuilt = fresh(snap);
    assert_eq!(*snap, rebuilt);
    let reqs: Vec<_> = (0..20)
        .map(|n| {
            let r = req(n, 100 * (n as u64 % 7), 256 * (n as u64 % 5));
            if n % 3 == 0 {
                r.with_strategy(Strategy::Spread)
            } else {
                r
            }
        })
        .collect();
    for seed in 0..5 {
        assert_eq!(place(snap, &reqs, seed), place(&rebuilt, &reqs, seed));
    }
}

fn mixed_nodes() -> Vec<NodeInfo> {
    (1..=12)
        .map(|n| {
            let mut node = with_labels(
                ready(n, 4000, 8192),
                &[("zone", ["a", "b"][n as usize % 2])],
            );
            if n % 4 == 0 {
                node.drivers.push("libvirt".into());
            }
            if n % 5 == 0 {
                node.state = NodeState::Draining;
            }
            node.allocated = Resources::new(300 * (n as u64 % 4), 1000 * (n as u64 % 3), 0);
            node
        })
        .collect()
}

#[test]
fn nodes_are_listed_by_id_and_looked_up() {
    let snap = ClusterSnapshot::new(vec![ready(3, 1, 1), ready(1, 1, 1), ready(2, 1, 1)]);
    let ids: Vec<_> = snap.nodes().map(|n| n.id).collect();
    assert_eq!(ids, vec![id(1), id(2), id(3)]);
    assert_eq!(snap.len(), 3);
    assert!(!snap.is_empty());
    assert!(snap.get(id(2)).is_some());
    assert!(snap.get(id(9)).is_none());
    assert!(ClusterSnapshot::default().is_empty());
    // A later duplicate replaces the earlier one.
    let snap = ClusterSnapshot::new(vec![ready(1, 1, 1), ready(1, 5, 5)]);
    assert_eq!(snap.len(), 1);
    assert_eq!(snap.get(id(1)).map(|n| n.capacity.cpu_millis), Some(5));
}

#[test]
fn allocate_and_release_keep_indexes_correct() {
    let mut snap = ClusterSnapshot::new(mixed_nodes());
    assert_consistent(&snap);
    snap.allocate(id(1), Resources::new(1000, 4096, 1), Some("web"));
    snap.allocate(id(1), Resources::new(500, 1024, 0), Some("web"));
    snap.allocate(id(2), Resources::new(3000, 100, 0), None);
    assert_consistent(&snap);
    assert_eq!(snap.get(id(1)).map(|n| n.groups["web"]), Some(2));
    snap.release(id(1), Resources::new(1000, 4096, 1), Some("web"));
    assert_eq!(snap.get(id(1)).map(|n| n.groups["web"]), Some(1));
    snap.release(id(1), Resources::new(500, 1024, 0), Some("web"));
    assert!(snap.get(id(1)).is_some_and(|n| n.groups.is_empty()));
    assert_consistent(&snap);
    assert_eq!(
        snap,
        ClusterSnapshot::new(mixed_nodes()).tap_alloc(id(2), 3000, 100)
    );
    // Releasing more than allocated saturates.
    snap.release(
        id(2),
        Resources::new(u64::MAX, u64::MAX, u64::MAX),
        Some("nope"),
    );
    assert_eq!(
        snap.get(id(2)).map(|n| n.allocated),
        Some(Resources::default())
    );
    assert_consistent(&snap);
}

trait TapAlloc {
    fn tap_alloc(self, node: uuid::Uuid, cpu: u64, mem: u64) -> Self;
}

impl TapAlloc for ClusterSnapshot {
    fn tap_alloc(mut self, node: uuid::Uuid, cpu: u64, mem: u64) -> Self {
        self.allocate(node, Resources::new(cpu, mem, 0), None);
        self
    }
}

#[test]
fn allocations_change_what_fits() {
    let mut snap = ClusterSnapshot::new(vec![ready(1, 1000, 1024)]);
    snap.allocate(id(1), Resources::new(1000, 0, 0), None);
    assert!(reason(&place(&snap, &[req(1, 1, 1)], 0)).ends_with("1 node lacks CPU"));
    snap.release(id(1), Resources::new(500, 0, 0), None);
    assert_eq!(chosen(&place(&snap, &[req(1, 500, 1)], 0)), Some(id(1)));
    // Committed group members count for groups.
    snap.allocate(id(1), Resources::default(), Some("web"));
    let r = req(2, 1, 1).in_group(PlacementGroup::spread("web"));
    assert!(reason(&place(&snap, &[r], 0)).contains("already runs a member of group"));
}

#[test]
fn upsert_set_state_and_remove_keep_indexes_correct() {
    let mut snap = ClusterSnapshot::new(mixed_nodes());
    snap.set_state(id(1), NodeState::Down);
    snap.set_state(id(5), NodeState::Ready);
    snap.set_state(id(5), NodeState::Ready);
    assert_consistent(&snap);
    let mut changed = ready(2, 64_000, 256_000);
    changed.drivers = vec!["libvirt".into()];
    changed.groups.insert("db".into(), 3);
    changed.groups.insert("zero".into(), 0);
    snap.upsert_node(changed);
    assert_eq!(snap.get(id(2)).map(|n| n.groups.len()), Some(1));
    snap.remove_node(id(3));
    snap.remove_node(id(3));
    snap.upsert_node(ready(100, 8000, 8192)); // reuses node 3's slot
    snap.remove_node(id(4));
    assert_consistent(&snap);
    assert_eq!(snap.len(), 11);
    assert!(snap.get(id(3)).is_none());
    // Unknown ids are ignored.
    snap.set_state(id(77), NodeState::Down);
    snap.allocate(id(77), Resources::new(1, 1, 1), Some("web"));
    snap.release(id(77), Resources::new(1, 1, 1), Some("web"));
    assert_consistent(&snap);
}

#[test]
fn state_changes_take_effect() {
    let mut snap = ClusterSnapshot::new(vec![ready(1, 1000, 1024)]);
    snap.set_state(id(1), NodeState::Draining);
    assert!(reason(&place(&snap, &[req(1, 1, 1)], 0)).ends_with("1 node is draining"));
    snap.set_state(id(1), NodeState::Ready);
    assert_eq!(chosen(&place(&snap, &[req(1, 1, 1)], 0)), Some(id(1)));
    snap.remove_node(id(1));
    assert_eq!(
        reason(&place(&snap, &[req(1, 1, 1)], 0)),
        "no nodes are registered"
    );
}

#[test]
fn plans_do_not_depend_on_upsert_history() {
    let nodes = mixed_nodes();
    let a = ClusterSnapshot::new(nodes.clone());
    let mut b = ClusterSnapshot::default();
    // Different insertion order, junk nodes added and removed, states flipped and restored,
    // allocations made and undone, and a node replaced by an older version first.
    b.upsert_node(ready(500, 1, 1));
    for node in nodes.iter().rev() {
        let mut older = node.clone();
        older.state = NodeState::Down;
        older.allocated = Resources::new(1, 2, 3);
        b.upsert_node(older);
    }
    b.upsert_node(ready(501, 1, 1));
    b.remove_node(id(500));
    for node in nodes.iter().step_by(2) {
        b.upsert_node(node.clone());
    }
    for node in nodes.iter().skip(1).step_by(2) {
        b.upsert_node(node.clone());
    }
    b.allocate(id(6), Resources::new(100, 100, 0), Some("web"));
    b.set_state(id(7), NodeState::Down);
    b.release(id(6), Resources::new(100, 100, 0), Some("web"));
    b.set_state(id(7), NodeState::Ready);
    b.remove_node(id(501));
    assert_eq!(a, b);
    b.verify().unwrap_or_else(|e| panic!("{e}"));
    let reqs: Vec<_> = (0..30)
        .map(|n| {
            let r = req(n, 150, 300);
            match n % 4 {
                0 => r.with_strategy(Strategy::Spread),
                1 => r.in_group(PlacementGroup::spread("web")),
                2 => r.with_label("zone", "a"),
                _ => r,
            }
        })
        .collect();
    for seed in 0..20 {
        assert_eq!(place(&a, &reqs, seed), place(&b, &reqs, seed));
    }
}
