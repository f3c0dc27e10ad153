//! Strategies, tie-breaking and bounded candidate sampling.

mod common;

use std::collections::BTreeSet;

use cloud_placement::{ClusterSnapshot, NodeInfo, Options, Strategy, place, place_with};
use common::*;
use uuid::Uuid;

fn idle_and_busy() -> ClusterSnapshot {
    ClusterSnapshot::new(vec![
        ready(1, 4000, 4096),
        with_allocated(ready(2, 4000, 4096), 2000, 2048),
        with_allocated(ready(3, 4000, 4096), 1000, 1024),
    ])
}

#[test]
fn bin_packs_onto_the_fuller_node_by_default() {
    let plan = place(&idle_and_busy(), &[req(1, 100, 64)], 1);
    assert_eq!(chosen(&plan), Some(id(2)));
}

#[test]
fn spread_strategy_picks_the_emptiest_node() {
    let r = req(1, 100, 64).with_strategy(Strategy::Spread);
    assert_eq!(chosen(&place(&idle_and_busy(), &[r], 1)), Some(id(1)));
    let options = Options {
        default_strategy: Strategy::Spread,
        ..Options::default()
    };
    let plan = place_with(&idle_and_busy(), &[req(2, 100, 64)], 1, &options);
    assert_eq!(chosen(&plan), Some(id(1)));
    // A per-request strategy overrides the default.
    let r = req(3, 100, 64).with_strategy(Strategy::BinPack);
    assert_eq!(
        chosen(&place_with(&idle_and_busy(), &[r], 1, &options)),
        Some(id(2))
    );
}

#[test]
fn score_averages_cpu_and_memory_fractions() {
    // Node 1 ends at (90 % CPU, 10 % mem) = 50 %, node 2 at (40 %, 40 %) = 40 %.
    let snap = ClusterSnapshot::new(vec![
        with_allocated(ready(1, 1000, 1000), 800, 0),
        with_allocated(ready(2, 1000, 1000), 300, 300),
    ]);
    assert_eq!(chosen(&place(&snap, &[req(1, 100, 100)], 0)), Some(id(1)));
    let r = req(2, 100, 100).with_strategy(Strategy::Spread);
    assert_eq!(chosen(&place(&snap, &[r], 0)), Some(id(2)));
}

#[test]
fn spread_batch_round_robins_over_identical_nodes() {
    let snap = ClusterSnapshot::new((1..=4).map(|n| ready(n, 4000, 4096)).collect());
    let reqs: Vec<_> = (0..8)
        .map(|n| req(n, 1000, 1024).with_strategy(Strategy::Spread))
        .collect();
    let plan = place(&snap, &reqs, 9);
    let mut per_node = std::collections::BTreeMap::<Uuid, usize>::new();
    for p in &plan.placements {
        *per_node.entry(p.node).or_default() += 1;
    }
    assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![2; 4]);
}

#[test]
fn same_input_and_seed_give_the_same_plan_and_ties_spread_by_seed() {
    let snap = ClusterSnapshot::new((1..=8).map(|i| ready(i, 4000, 4096)).collect());
    let reqs = [req(1, 100, 64)];
    assert_eq!(place(&snap, &reqs, 42), place(&snap, &reqs, 42));
    let by_seed: BTreeSet<Uuid> = (0..64)
        .filter_map(|seed| chosen(&place(&snap, &reqs, seed)))
        .collect();
    assert!(by_seed.len() > 4, "ties must not always pick the same node");
    // Different requests under one seed also spread over tied nodes.
    let by_request: BTreeSet<Uuid> = (0..64)
        .filter_map(|n| chosen(&place(&snap, &[req(n, 100, 64)], 42)))
        .collect();
    assert!(by_request.len() > 4, "{by_request:?}");
}

fn big_cluster(n: u128) -> Vec<NodeInfo> {
    (1..=n).map(|i| ready(i, 16_000, 65_536)).collect()
}

#[test]
fn sampling_still_finds_the_single_tight_fit() {
    // 2,000 idle nodes and one node with exactly room for the request: bin-packing must find
    // it although only a few candidates are scored.
    let mut nodes = big_cluster(2000);
    nodes.push(with_allocated(ready(5000, 16_000, 65_536), 15_000, 64_512));
    let snap = ClusterSnapshot::new(nodes);
    let options = Options {
        min_candidates: 3,
        candidate_percent: 0,
        ..Options::default()
    };
    for seed in 0..10 {
        let plan = place_with(&snap, &[req(1, 1000, 1024)], seed, &options);
        assert_eq!(chosen(&plan), Some(id(5000)));
    }
}

#[test]
fn sampling_never_reports_false_no_capacity() {
    // One feasible node among 3,000 that lack memory.
    let mut nodes: Vec<_> = (1..=3000)
        .map(|i| with_allocated(ready(i, 16_000, 65_536), 0, 65_000))
        .collect();
    nodes.push(ready(9999, 16_000, 65_536));
    let snap = ClusterSnapshot::new(nodes);
    let options = Options {
        min_candidates: 1,
        candidate_percent: 0,
        ..Options::default()
    };
    for seed in 0..10 {
        let plan = place_with(&snap, &[req(1, 100, 4096)], seed, &options);
        assert_eq!(chosen(&plan), Some(id(9999)));
    }
    let plan = place_with(
        &snap,
        &[req(1, 100, 4096), req(2, 100, 65_000)],
        0,
        &options,
    );
    assert_eq!(plan.placements.len(), 1);
    assert_eq!(
        reason(&plan),
        "no node can fit 100 millicores and 65000 MiB: 3001 nodes lack memory"
    );
}

#[test]
fn candidate_bound_follows_options() {
    let o = Options::default();
    assert_eq!(o.candidates(0), 100);
    assert_eq!(o.candidates(1000), 100);
    assert_eq!(o.candidates(10_000), 500);
    assert_eq!(o.candidates(10_001), 501);
    let none = Options {
        min_candidates: 0,
        candidate_percent: 0,
        ..o
    };
    assert_eq!(none.candidates(10_000), 1);
    let all = Options {
        candidate_percent: 250,
        ..o
    };
    assert_eq!(all.candidates(10_000), 10_000);
}

#[test]
fn parallel_single_request_decisions_do_not_pile_up() {
    // Planners placing one request at a time with different seeds on a fresh cluster.
    let snap = ClusterSnapshot::new(big_cluster(500));
    let nodes: BTreeSet<Uuid> = (0..50)
        .filter_map(|n| chosen(&place(&snap, &[req(n, 100, 64)], n as u64)))
        .collect();
    assert!(nodes.len() >= 45, "only {} distinct nodes", nodes.len());
}

#[test]
fn walk_start_is_uniform_even_when_ids_share_a_prefix() {
    // Time-ordered (v7-like) ids differ only in their low bits.
    let prefix: u128 = 0x0190_0000_0000_7000_8000_0000_0000_0000;
    let snap = ClusterSnapshot::new(
        (0..400)
            .map(|i| ready(prefix | i, 16_000, 65_536))
            .collect(),
    );
    let options = Options {
        min_candidates: 1,
        candidate_percent: 0,
        ..Options::default()
    };
    let nodes: BTreeSet<Uuid> = (0..60)
        .filter_map(|n| chosen(&place_with(&snap, &[req(n, 100, 64)], n as u64, &options)))
        .collect();
    assert!(nodes.len() >= 50, "only {} distinct nodes", nodes.len());
}
