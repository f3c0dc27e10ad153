//! Property tests: random clusters and request batches against a brute-force reference model.

mod common;

use std::collections::BTreeMap;

use cloud_placement::{
    ClusterSnapshot, GroupPolicy, NodeInfo, NodeState, Options, PlacementGroup, Plan, Request,
    Resources, Strategy as Scoring, place_with,
};
use proptest::prelude::*;
use proptest::sample::Index;
use uuid::Uuid;

/// Group names and the policy requests use with them.
const GROUPS: [(&str, GroupPolicy); 3] = [
    ("web", GroupPolicy::Spread),
    ("db", GroupPolicy::Pack),
    ("cache", GroupPolicy::Pack),
];

fn arb_node(id: u128) -> impl Strategy<Value = NodeInfo> {
    (
        prop_oneof![6 => Just(NodeState::Ready), 2 => Just(NodeState::Draining), 1 => Just(NodeState::Down)],
        (0..=8u64, 0..=8u64, 0..=4u64),
        (0..=10u64, 0..=10u64, 0..=5u64),
        1..4u8,
        (0..4usize, 0..3usize),
        (0..=2u32, prop_oneof![3 => Just(0u32), 1 => Just(1u32)], prop_oneof![3 => Just(0u32), 1 => Just(2u32)]),
    )
        .prop_map(move |(state, (c, m, d), (ac, am, ad), drivers, (zone, rack), (web, db, cache))| {
            let capacity = Resources::new(c * 500, m * 1024, d * 50);
            let mut node = NodeInfo::new(Uuid::from_u128(id), state, capacity, Vec::new());
            // Allocation may exceed capacity (over-committed snapshots exist).
            node.allocated = Resources::new(
                capacity.cpu_millis * ac / 8,
                capacity.memory_mb * am / 8,
                capacity.disk_gb * ad / 4,
            );
            if drivers & 1 != 0 {
                node.drivers.push("docker".into());
            }
            if drivers & 2 != 0 {
                node.drivers.push("libvirt".into());
            }
            if zone > 0 {
                node.labels.insert("zone".into(), ["a", "b", "c"][zone - 1].into());
            }
            if rack > 0 {
                node.labels.insert("rack".into(), ["r1", "r2"][rack - 1].into());
            }
            for (name, n) in [("web", web), ("db", db), ("cache", cache)] {
                if n > 0 {
                    node.groups.insert(name.into(), n);
                }
            }
            node
        })
}

fn arb_nodes(max: usize) -> impl Strategy<Value = Vec<NodeInfo>> {
    prop::collection::btree_set(any::<u128>(), 0..max)
        .prop_flat_map(|ids| ids.into_iter().map(arb_node).collect::<Vec<_>>())
}

/// A request; `required` picks a node of the cluster (or an unknown id) by index.
fn arb_request(n: u128) -> impl Strategy<Value = (Request, Option<Index>)> {
    (
        (0..=4u64, 0..=8u64, 0..=3u64),
        prop_oneof![4 => Just("docker"), 1 => Just("libvirt")],
        (0..6usize, 0..5usize),
        0..6usize,
        prop_oneof![6 => Just(None), 1 => any::<Index>().prop_map(Some)],
        prop_oneof![
            Just(None),
            Just(Some(Scoring::BinPack)),
            Just(Some(Scoring::Spread))
        ],
    )
        .prop_map(
            move |((c, m, d), driver, (zone, rack), group, required, strategy)| {
                let mut r = Request::new(
                    Uuid::from_u128(0xF000_0000 + n),
                    Resources::new(c * 250, m * 512, d * 20),
                    driver,
                );
                if zone < 3 {
                    r = r.with_label("zone", ["a", "b", "c"][zone]);
                }
                if rack < 2 {
                    r = r.with_label("rack", ["r1", "r2"][rack]);
                }
                if let Some((name, policy)) = GROUPS.get(group) {
                    r = r.in_group(PlacementGroup {
                        name: (*name).into(),
                        policy: *policy,
                    });
                }
                r.strategy = strategy;
                (r, required)
            },
        )
}

#[derive(Debug, Clone)]
struct Case {
    nodes: Vec<NodeInfo>,
    requests: Vec<Request>,
    seed: u64,
    options: Options,
}

fn arb_case(max_nodes: usize, max_requests: usize) -> impl Strategy<Value = Case> {
    (
        arb_nodes(max_nodes),
        (0..max_requests).prop_flat_map(|n| (0..n as u128).map(arb_request).collect::<Vec<_>>()),
        any::<u64>(),
        (
            0..6usize,
            0..30u32,
            prop_oneof![Just(Scoring::BinPack), Just(Scoring::Spread)],
        ),
    )
        .prop_map(
            |(nodes, reqs, seed, (min_candidates, candidate_percent, default_strategy))| {
                let requests = reqs
                    .into_iter()
                    .map(|(mut r, required)| {
                        r.required_node = required.map(|i| {
                            let k = i.index(nodes.len() + 1);
                            nodes.get(k).map_or(Uuid::from_u128(7), |n| n.id)
                        });
                        r
                    })
                    .collect();
                Case {
                    nodes,
                    requests,
                    seed,
                    options: Options {
                        default_strategy,
                        min_candidates,
                        candidate_percent,
                    },
                }
            },
        )
}

/// Brute-force feasibility of `node` for `r` in a model where earlier placements of the
/// batch are already applied.
fn feasible(node: &NodeInfo, r: &Request, model: &BTreeMap<Uuid, NodeInfo>) -> bool {
    let runs = |n: &NodeInfo, g: &str| n.groups.get(g).copied().unwrap_or(0) > 0;
    if r.required_node.is_some_and(|id| id != node.id)
        || node.state != NodeState::Ready
        || !node.drivers.contains(&r.driver)
        || !r
            .node_selector
            .iter()
            .all(|(k, v)| node.labels.get(k) == Some(v))
    {
        return false;
    }
    if let Some(g) = &r.group {
        let here = runs(node, &g.name);
        let anywhere = model.values().any(|n| runs(n, &g.name));
        let ok = match g.policy {
            GroupPolicy::Spread => !here,
            GroupPolicy::Pack => here || !anywhere,
        };
        if !ok {
            return false;
        }
    }
    r.demand
        .fits_in(&node.capacity.saturating_sub(&node.allocated))
}

fn apply(model: &mut BTreeMap<Uuid, NodeInfo>, node: Uuid, r: &Request) {
    if let Some(n) = model.get_mut(&node) {
        n.allocated = n.allocated.saturating_add(&r.demand);
        if let Some(g) = &r.group {
            *n.groups.entry(g.name.clone()).or_default() += 1;
        }
    }
}

fn reference_score(node: &NodeInfo, r: &Request, strategy: Scoring) -> u64 {
    let after = node.allocated.saturating_add(&r.demand);
    let ppm = |used: u64, cap: u64| {
        (used.min(cap) * 1_000_000)
            .checked_div(cap)
            .unwrap_or_default()
    };
    let full = (ppm(after.cpu_millis, node.capacity.cpu_millis)
        + ppm(after.memory_mb, node.capacity.memory_mb))
        / 2;
    match strategy {
        Scoring::BinPack => full,
        Scoring::Spread => 1_000_000 - full,
    }
}

/// Sum of the counts in a reason ("no node can fit ...: 3 nodes lack memory, 1 node is down").
fn counted_nodes(reason: &str) -> Option<usize> {
    let (_, parts) = reason.split_once(": ")?;
    parts
        .split(", ")
        .map(|p| p.split(' ').next().and_then(|n| n.parse::<usize>().ok()))
        .sum()
}

/// Replays a plan against the brute-force model and checks every invariant.
fn check_plan(case: &Case, plan: &Plan, exhaustive: bool) -> Result<(), TestCaseError> {
    let placed: BTreeMap<Uuid, Uuid> = plan
        .placements
        .iter()
        .map(|p| (p.request, p.node))
        .collect();
    let unplaced: BTreeMap<Uuid, &str> = plan
        .unplaced
        .iter()
        .map(|u| (u.request, u.reason.as_str()))
        .collect();
    prop_assert_eq!(placed.len() + unplaced.len(), case.requests.len());
    prop_assert_eq!(
        plan.placements.len() + plan.unplaced.len(),
        case.requests.len()
    );
    let mut model: BTreeMap<Uuid, NodeInfo> =
        case.nodes.iter().map(|n| (n.id, n.clone())).collect();
    let mut order = (
        plan.placements.iter().map(|p| p.request),
        plan.unplaced.iter().map(|u| u.request),
    );
    let (mut next_placed, mut next_unplaced) = (order.0.next(), order.1.next());
    for r in &case.requests {
        let feasible_now: Vec<&NodeInfo> =
            model.values().filter(|n| feasible(n, r, &model)).collect();
        if let Some(node) = placed.get(&r.id) {
            prop_assert_eq!(next_placed, Some(r.id), "placements keep request order");
            next_placed = order.0.next();
            let chosen = model.get(node);
            prop_assert!(
                chosen.is_some_and(|n| feasible(n, r, &model)),
                "{:?} infeasible on {}",
                r,
                node
            );
            if exhaustive {
                let strategy = r.strategy.unwrap_or(case.options.default_strategy);
                let best = feasible_now
                    .iter()
                    .map(|n| reference_score(n, r, strategy))
                    .max();
                let got = chosen.map(|n| reference_score(n, r, strategy));
                prop_assert_eq!(got, best, "not the best-scoring node");
            }
            let node = *node;
            apply(&mut model, node, r);
        } else {
            prop_assert_eq!(next_unplaced, Some(r.id), "unplaced keep request order");
            next_unplaced = order.1.next();
            let reason = unplaced.get(&r.id).copied().unwrap_or_default();
            prop_assert!(
                feasible_now.is_empty(),
                "false no-capacity for {:?}: {} fits; {}",
                r,
                feasible_now[0].id,
                reason
            );
            prop_assert!(!reason.is_empty());
            if case.nodes.is_empty() {
                prop_assert_eq!(reason, "no nodes are registered");
            } else {
                prop_assert_eq!(counted_nodes(reason), Some(case.nodes.len()), "{}", reason);
            }
        }
    }
    // Never over-commits: what the plan added fits in what each node had free.
    for original in &case.nodes {
        let now = &model[&original.id];
        let added = now.allocated.saturating_sub(&original.allocated);
        prop_assert!(
            added.fits_in(&original.free()),
            "{} over-committed",
            original.id
        );
    }
    Ok(())
}

/// The same nodes, upserted in reverse order through junk states and undone allocations.
fn rebuilt_differently(nodes: &[NodeInfo]) -> ClusterSnapshot {
    let mut snap = ClusterSnapshot::default();
    snap.upsert_node(NodeInfo::new(
        Uuid::from_u128(3),
        NodeState::Ready,
        Resources::new(1, 1, 1),
        vec!["docker".into()],
    ));
    for n in nodes.iter().rev() {
        let mut older = n.clone();
        older.state = NodeState::Ready;
        older.allocated = Resources::default();
        older.groups.clear();
        snap.upsert_node(older);
        snap.allocate(n.id, Resources::new(100, 100, 1), Some("web"));
    }
    snap.remove_node(Uuid::from_u128(3));
    for n in nodes {
        snap.release(n.id, Resources::new(100, 100, 1), Some("web"));
        snap.upsert_node(n.clone());
    }
    snap
}

fn exhaustive(options: &Options) -> Options {
    Options {
        min_candidates: usize::MAX,
        ..*options
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn plans_are_valid_and_never_falsely_refuse(case in arb_case(40, 30)) {
        let snap = ClusterSnapshot::new(case.nodes.clone());
        let plan = place_with(&snap, &case.requests, case.seed, &case.options);
        check_plan(&case, &plan, false)?;
    }

    #[test]
    fn plans_are_deterministic_whatever_the_snapshot_history(case in arb_case(40, 30)) {
        let snap = ClusterSnapshot::new(case.nodes.clone());
        let plan = place_with(&snap, &case.requests, case.seed, &case.options);
        prop_assert_eq!(&plan, &place_with(&snap, &case.requests, case.seed, &case.options));
        let other = rebuilt_differently(&case.nodes);
        prop_assert!(other.verify().is_ok(), "{:?}", other.verify());
        prop_assert_eq!(&other, &snap);
        prop_assert_eq!(&plan, &place_with(&other, &case.requests, case.seed, &case.options));
    }

    #[test]
    fn exhaustive_search_picks_the_best_score(case in arb_case(40, 30)) {
        let snap = ClusterSnapshot::new(case.nodes.clone());
        let plan = place_with(&snap, &case.requests, case.seed, &exhaustive(&case.options));
        check_plan(&case, &plan, true)?;
    }

    #[test]
    fn committing_one_at_a_time_equals_the_batch(case in arb_case(40, 20)) {
        // With every feasible node scored the choice is the global best, so a batch (overlay)
        // and committed allocations (index updates) must agree exactly.
        let options = exhaustive(&case.options);
        let mut snap = ClusterSnapshot::new(case.nodes.clone());
        let batch = place_with(&snap, &case.requests, case.seed, &options);
        let mut one_by_one = Plan::default();
        for r in &case.requests {
            let plan = place_with(&snap, std::slice::from_ref(r), case.seed, &options);
            for p in &plan.placements {
                snap.allocate(p.node, r.demand, r.group.as_ref().map(|g| g.name.as_str()));
            }
            one_by_one.placements.extend(plan.placements);
            one_by_one.unplaced.extend(plan.unplaced);
        }
        prop_assert!(snap.verify().is_ok(), "{:?}", snap.verify());
        prop_assert_eq!(batch, one_by_one);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn large_clusters_with_tiny_samples_stay_correct(case in arb_case(400, 40)) {
        let snap = ClusterSnapshot::new(case.nodes.clone());
        let plan = place_with(&snap, &case.requests, case.seed, &case.options);
        check_plan(&case, &plan, false)?;
    }
}

/// One random mutation of a snapshot.
#[derive(Debug, Clone)]
enum Op {
    Upsert(NodeInfo),
    Remove(Index),
    SetState(Index, NodeState),
    Allocate(Index, Resources, Option<usize>),
    Release(Index, Resources, Option<usize>),
}

fn arb_op() -> impl Strategy<Value = Op> {
    let res = (0..2000u64, 0..4096u64, 0..50u64).prop_map(|(c, m, d)| Resources::new(c, m, d));
    let state = prop_oneof![
        Just(NodeState::Ready),
        Just(NodeState::Draining),
        Just(NodeState::Down)
    ];
    let group = prop::option::of(0..3usize);
    prop_oneof![
        (0..48u128).prop_flat_map(arb_node).prop_map(Op::Upsert),
        any::<Index>().prop_map(Op::Remove),
        (any::<Index>(), state).prop_map(|(i, s)| Op::SetState(i, s)),
        (any::<Index>(), res.clone(), group.clone()).prop_map(|(i, r, g)| Op::Allocate(i, r, g)),
        (any::<Index>(), res, group).prop_map(|(i, r, g)| Op::Release(i, r, g)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn incremental_updates_match_a_fresh_build(
        nodes in arb_nodes(30),
        ops in prop::collection::vec(arb_op(), 0..60),
        requests in (0..12u128).prop_flat_map(|n| (0..n).map(arb_request).collect::<Vec<_>>()),
        seed in any::<u64>(),
    ) {
        let mut snap = ClusterSnapshot::new(nodes);
        let pick = |snap: &ClusterSnapshot, i: &Index| -> Uuid {
            let ids: Vec<Uuid> = snap.nodes().map(|n| n.id).collect();
            // Sometimes an unknown id, which must be ignored.
            ids.get(i.index(ids.len() + 1)).copied().unwrap_or(Uuid::from_u128(u128::MAX))
        };
        for op in ops {
            match op {
                Op::Upsert(n) => snap.upsert_node(n),
                Op::Remove(i) => snap.remove_node(pick(&snap, &i)),
                Op::SetState(i, s) => snap.set_state(pick(&snap, &i), s),
                Op::Allocate(i, r, g) => snap.allocate(pick(&snap, &i), r, g.map(|g| GROUPS[g].0)),
                Op::Release(i, r, g) => snap.release(pick(&snap, &i), r, g.map(|g| GROUPS[g].0)),
            }
            prop_assert!(snap.verify().is_ok(), "{:?}", snap.verify());
        }
        let fresh = ClusterSnapshot::new(snap.nodes().cloned().collect());
        prop_assert_eq!(&fresh, &snap);
        let requests: Vec<Request> = requests.into_iter().map(|(r, _)| r).collect();
        for options in [Options::default(), Options { min_candidates: 1, candidate_percent: 0, ..Options::default() }] {
            prop_assert_eq!(
                place_with(&snap, &requests, seed, &options),
                place_with(&fresh, &requests, seed, &options)
            );
        }
    }
}
