//! Each filter, alone and together, with the reason text it produces.

mod common;

use cloud_placement::{ClusterSnapshot, NodeState, PlacementGroup, Resources, place};
use common::*;

#[test]
fn places_on_a_ready_node_with_room() {
    let snap = ClusterSnapshot::new(vec![
        node(1, NodeState::Down, 8000, 8192),
        node(2, NodeState::Draining, 8000, 8192),
        ready(3, 1000, 1024),
    ]);
    let plan = place(&snap, &[req(1, 500, 512)], 7);
    assert_eq!(chosen(&plan), Some(id(3)));
    assert!(plan.unplaced.is_empty());
}

#[test]
fn status_filter_counts_down_and_draining_nodes() {
    let snap = ClusterSnapshot::new(vec![
        node(1, NodeState::Down, 8000, 8192),
        node(2, NodeState::Draining, 8000, 8192),
        node(3, NodeState::Draining, 8000, 8192),
    ]);
    let plan = place(&snap, &[req(1, 1, 1)], 0);
    assert_eq!(
        reason(&plan),
        "no node can fit 1 millicores and 1 MiB: 1 node is down, 2 nodes are draining"
    );
}

#[test]
fn driver_filter_names_the_driver() {
    let mut vm = ready(1, 8000, 8192);
    vm.drivers = vec!["libvirt".into()];
    let snap = ClusterSnapshot::new(vec![vm, ready(2, 8000, 8192)]);
    let plan = place(&snap, &[req(1, 1, 1)], 0);
    assert_eq!(chosen(&plan), Some(id(2)));

    let mut vm_req = req(2, 1, 1);
    vm_req.driver = "libvirt".into();
    assert_eq!(chosen(&place(&snap, &[vm_req], 0)), Some(id(1)));

    let snap = ClusterSnapshot::new(vec![ready(1, 8000, 8192)]);
    let mut vm_req = req(3, 1, 1);
    vm_req.driver = "libvirt".into();
    assert!(reason(&place(&snap, &[vm_req], 0)).ends_with("1 node lacks the driver \"libvirt\""));
}

#[test]
fn capacity_filter_checks_cpu_memory_and_disk() {
    let mut small_disk = ready(3, 8000, 8192);
    small_disk.capacity.disk_gb = 5;
    let snap = ClusterSnapshot::new(vec![
        ready(1, 100, 8192),
        ready(2, 8000, 100),
        small_disk,
        with_allocated(ready(4, 8000, 8192), 0, 8000),
    ]);
    let mut r = req(1, 500, 512);
    r.demand.disk_gb = 10;
    let text = reason(&place(&snap, std::slice::from_ref(&r), 0));
    assert_eq!(
        text,
        "no node can fit 500 millicores and 512 MiB: 1 node lacks CPU, 2 nodes lack memory, \
         1 node lacks disk"
    );
    r.demand.disk_gb = 5;
    assert_eq!(chosen(&place(&snap, &[r], 0)), Some(id(3)));
}

#[test]
fn batch_accounts_for_its_own_placements() {
    let snap = ClusterSnapshot::new(vec![ready(1, 1000, 1024)]);
    let plan = place(&snap, &[req(1, 600, 100), req(2, 600, 100)], 3);
    assert_eq!(plan.placements.len(), 1);
    assert_eq!(plan.unplaced.len(), 1);
    assert!(reason(&plan).contains("1 node lacks CPU"), "{plan:?}");
    // The snapshot itself is untouched by planning.
    assert_eq!(
        snap.get(id(1)).map(|n| n.allocated),
        Some(Resources::default())
    );
}

#[test]
fn selector_requires_every_pair() {
    let snap = ClusterSnapshot::new(vec![
        with_labels(ready(1, 8000, 8192), &[("zone", "a"), ("rack", "r1")]),
        with_labels(ready(2, 8000, 8192), &[("zone", "a"), ("rack", "r2")]),
        with_labels(ready(3, 8000, 8192), &[("zone", "b"), ("rack", "r1")]),
        ready(4, 8000, 8192),
    ]);
    let r = req(1, 1, 1)
        .with_label("zone", "a")
        .with_label("rack", "r1");
    for seed in 0..20 {
        assert_eq!(
            chosen(&place(&snap, std::slice::from_ref(&r), seed)),
            Some(id(1))
        );
    }
    let r = req(2, 1, 1).with_label("zone", "a");
    for seed in 0..20 {
        let node = chosen(&place(&snap, std::slice::from_ref(&r), seed));
        assert!(node == Some(id(1)) || node == Some(id(2)), "{node:?}");
    }
    // Pairs are checked in key order: "rack" before "zone".
    let r = req(3, 1, 1)
        .with_label("zone", "b")
        .with_label("rack", "r2");
    assert_eq!(
        reason(&place(&snap, &[r], 0)),
        "no node can fit 1 millicores and 1 MiB: 3 nodes do not match rack=r2, \
         1 node does not match zone=b"
    );
    let r = req(4, 1, 1).with_label("gpu", "yes");
    assert!(reason(&place(&snap, &[r], 0)).ends_with("4 nodes do not match gpu=yes"));
}

#[test]
fn explains_every_filter_at_once() {
    let mut nodes = Vec::new();
    let zone_a = |n| with_labels(ready(n, 8000, 8192), &[("zone", "a")]);
    for n in 1..=3 {
        nodes.push(with_allocated(zone_a(n), 0, 8000));
    }
    for n in 4..=5 {
        let mut d = zone_a(n);
        d.state = NodeState::Draining;
        nodes.push(d);
    }
    let mut down = zone_a(6);
    down.state = NodeState::Down;
    nodes.push(down);
    for n in 7..=10 {
        let mut vm = zone_a(n);
        vm.drivers = vec!["libvirt".into()];
        nodes.push(vm);
    }
    nodes.push(with_labels(ready(11, 8000, 8192), &[("zone", "b")]));
    nodes.push(ready(12, 8000, 8192));
    let mut busy = zone_a(13);
    busy.groups.insert("web".into(), 1);
    nodes.push(busy);
    let snap = ClusterSnapshot::new(nodes);
    let r = req(1, 500, 512)
        .with_label("zone", "a")
        .in_group(PlacementGroup::spread("web"));
    let mut r_vm = r.clone();
    r_vm.driver = "libvirt".into();
    let text = reason(&place(&snap, &[r], 0));
    assert_eq!(
        text,
        "no node can fit 500 millicores and 512 MiB: 1 node is down, 2 nodes are draining, \
         4 nodes lack the driver \"docker\", 2 nodes do not match zone=a, \
         1 node already runs a member of group \"web\", 3 nodes lack memory"
    );
    // The four libvirt nodes fit a libvirt request.
    assert!(place(&snap, &[r_vm], 0).unplaced.is_empty());
}

#[test]
fn empty_cluster_says_no_nodes_are_registered() {
    let plan = place(&ClusterSnapshot::default(), &[req(1, 1, 1)], 0);
    assert_eq!(reason(&plan), "no nodes are registered");
}

#[test]
fn zero_capacity_dimension_admits_zero_demand_only() {
    let snap = ClusterSnapshot::new(vec![ready(1, 0, 1024)]);
    assert_eq!(chosen(&place(&snap, &[req(1, 0, 512)], 0)), Some(id(1)));
    assert!(reason(&place(&snap, &[req(2, 1, 512)], 0)).ends_with("1 node lacks CPU"));
}

#[test]
fn rarest_selector_pair_narrows_the_walk_but_all_pairs_and_the_driver_still_apply() {
    let mut nodes = Vec::new();
    for n in 1..=50 {
        nodes.push(with_labels(
            ready(n, 8000, 8192),
            &[("zone", "a"), ("rack", "r1")],
        ));
    }
    // Rare label, but wrong driver / wrong zone / right everything.
    let mut vm = with_labels(ready(60, 8000, 8192), &[("zone", "a"), ("gpu", "yes")]);
    vm.drivers = vec!["libvirt".into()];
    nodes.push(vm);
    nodes.push(with_labels(
        ready(61, 8000, 8192),
        &[("zone", "b"), ("gpu", "yes")],
    ));
    nodes.push(with_labels(
        ready(62, 8000, 8192),
        &[("zone", "a"), ("gpu", "yes")],
    ));
    let snap = ClusterSnapshot::new(nodes);
    let r = req(1, 1, 1)
        .with_label("zone", "a")
        .with_label("gpu", "yes");
    for seed in 0..20 {
        assert_eq!(
            chosen(&place(&snap, std::slice::from_ref(&r), seed)),
            Some(id(62))
        );
    }
    let r = req(2, 1, 1)
        .with_label("zone", "c")
        .with_label("gpu", "yes");
    assert_eq!(
        reason(&place(&snap, &[r], 0)),
        "no node can fit 1 millicores and 1 MiB: 1 node lacks the driver \"docker\", \
         50 nodes do not match gpu=yes, 2 nodes do not match zone=c"
    );
}
