//! Placement groups (spread and pack, across the snapshot and within a batch) and volume
//! locality (`required_node`).

mod common;

use std::collections::BTreeSet;

use cloud_placement::{ClusterSnapshot, NodeState, PlacementGroup, Strategy, place};
use common::*;
use uuid::Uuid;

fn three_nodes() -> ClusterSnapshot {
    ClusterSnapshot::new((1..=3).map(|n| ready(n, 8000, 8192)).collect())
}

#[test]
fn spread_group_avoids_nodes_with_members() {
    let mut nodes: Vec<_> = (1..=3).map(|n| ready(n, 8000, 8192)).collect();
    nodes[0].groups.insert("web".into(), 2);
    nodes[1].groups.insert("web".into(), 1);
    // Node 3 is the emptiest, node 1 and 2 are fuller; spread must still pick node 3.
    nodes[0].allocated.cpu_millis = 4000;
    let snap = ClusterSnapshot::new(nodes);
    let r = req(1, 100, 100).in_group(PlacementGroup::spread("web"));
    for seed in 0..10 {
        assert_eq!(
            chosen(&place(&snap, std::slice::from_ref(&r), seed)),
            Some(id(3))
        );
    }
    // Other groups do not matter.
    let other = req(2, 100, 100).in_group(PlacementGroup::spread("db"));
    assert_eq!(chosen(&place(&snap, &[other], 0)), Some(id(1)));
}

#[test]
fn spread_group_within_one_batch() {
    let reqs: Vec<_> = (0..4)
        .map(|n| req(n, 100, 100).in_group(PlacementGroup::spread("web")))
        .collect();
    let plan = place(&three_nodes(), &reqs, 5);
    let used: BTreeSet<Uuid> = plan.placements.iter().map(|p| p.node).collect();
    assert_eq!(used.len(), 3);
    assert_eq!(plan.unplaced.len(), 1);
    assert_eq!(plan.unplaced[0].request, id(1003));
    assert_eq!(
        plan.unplaced[0].reason,
        "no node can fit 100 millicores and 100 MiB: 3 nodes already run a member of group \"web\""
    );
}

#[test]
fn pack_group_follows_existing_members() {
    let mut nodes: Vec<_> = (1..=3).map(|n| ready(n, 8000, 8192)).collect();
    nodes[1].groups.insert("db".into(), 1);
    nodes[0].allocated.cpu_millis = 6000; // bin-packing alone would pick node 1
    let snap = ClusterSnapshot::new(nodes);
    let r = req(1, 100, 100).in_group(PlacementGroup::pack("db"));
    for seed in 0..10 {
        assert_eq!(
            chosen(&place(&snap, std::slice::from_ref(&r), seed)),
            Some(id(2))
        );
    }
}

#[test]
fn pack_group_first_member_goes_anywhere_then_the_rest_follow_in_the_batch() {
    let reqs: Vec<_> = (0..5)
        .map(|n| {
            req(n, 1000, 1000)
                .in_group(PlacementGroup::pack("db"))
                .with_strategy(Strategy::Spread)
        })
        .collect();
    for seed in 0..10 {
        let plan = place(&three_nodes(), &reqs, seed);
        let used: BTreeSet<Uuid> = plan.placements.iter().map(|p| p.node).collect();
        assert_eq!(used.len(), 1, "seed {seed}: {plan:?}");
        assert_eq!(plan.placements.len(), 5);
    }
}

#[test]
fn pack_group_is_unplaceable_when_member_nodes_are_full_or_gone() {
    let mut nodes: Vec<_> = (1..=3).map(|n| ready(n, 8000, 8192)).collect();
    nodes[0].groups.insert("db".into(), 1);
    nodes[0].allocated.memory_mb = 8000;
    let snap = ClusterSnapshot::new(nodes.clone());
    let r = req(1, 100, 512).in_group(PlacementGroup::pack("db"));
    assert_eq!(
        reason(&place(&snap, std::slice::from_ref(&r), 0)),
        "no node can fit 100 millicores and 512 MiB: 2 nodes do not run members of group \"db\", \
         1 node lacks memory"
    );
    nodes[0].allocated.memory_mb = 0;
    nodes[0].state = NodeState::Down;
    let snap = ClusterSnapshot::new(nodes);
    assert_eq!(
        reason(&place(&snap, &[r], 0)),
        "no node can fit 100 millicores and 512 MiB: 1 node is down, \
         2 nodes do not run members of group \"db\""
    );
}

#[test]
fn pack_group_members_from_snapshot_and_batch_combine() {
    let mut nodes: Vec<_> = (1..=4).map(|n| ready(n, 2000, 8192)).collect();
    nodes[3].groups.insert("db".into(), 1);
    nodes[3].allocated.cpu_millis = 1000;
    let snap = ClusterSnapshot::new(nodes);
    let reqs: Vec<_> = (0..3)
        .map(|n| req(n, 1000, 100).in_group(PlacementGroup::pack("db")))
        .collect();
    let plan = place(&snap, &reqs, 0);
    assert_eq!(plan.placements.len(), 1);
    assert_eq!(plan.placements[0].node, id(4));
    assert_eq!(plan.unplaced.len(), 2);
    assert!(plan.unplaced[0].reason.contains("1 node lacks CPU"));
}

#[test]
fn required_node_is_the_only_candidate() {
    let snap = ClusterSnapshot::new(vec![
        with_allocated(ready(1, 8000, 8192), 7000, 0),
        ready(2, 8000, 8192),
        ready(3, 8000, 8192),
    ]);
    let r = req(1, 100, 100).on_node(id(3));
    for seed in 0..10 {
        assert_eq!(
            chosen(&place(&snap, std::slice::from_ref(&r), seed)),
            Some(id(3))
        );
    }
    let too_big = req(2, 100, 9000).on_node(id(3));
    assert_eq!(
        reason(&place(&snap, &[too_big], 0)),
        format!(
            "no node can fit 100 millicores and 9000 MiB: 2 nodes are not the required node {}, \
             1 node lacks memory",
            id(3)
        )
    );
    let unknown = req(3, 1, 1).on_node(id(77));
    assert!(reason(&place(&snap, &[unknown], 0)).contains("3 nodes are not the required node"));
}

#[test]
fn required_node_must_still_pass_the_other_filters() {
    let mut down = ready(2, 8000, 8192);
    down.state = NodeState::Down;
    let snap = ClusterSnapshot::new(vec![ready(1, 8000, 8192), down]);
    let r = req(1, 1, 1).on_node(id(2));
    assert!(reason(&place(&snap, &[r], 0)).ends_with("1 node is down"));
    let wrong_label = req(2, 1, 1).on_node(id(1)).with_label("zone", "a");
    assert!(reason(&place(&snap, &[wrong_label], 0)).contains("1 node does not match zone=a"));
}
