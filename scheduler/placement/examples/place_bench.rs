//! Timing of placement decisions on synthetic clusters.
//!
//! `cargo run --release -p cloud-placement --example place_bench -- [--nodes N]
//! [--requests R] [--batch B] [--live-per-node L] [--seed S] [--by-kind 1]`
//!
//! Builds a heterogeneous cluster (four node sizes, two drivers, zone/rack labels, a few
//! draining/down nodes, 0–60 % pre-allocated), then plays a planner: each decision places
//! `--batch` requests (mixed drivers, selectors, spread/pack groups, required nodes, both
//! strategies) and commits the placements with `allocate`; the oldest instances are released
//! once more than `--live-per-node` per node are live, keeping the cluster busy but not full.
//! Prints p50/p90/p99/max per decision and decisions per second (`--by-kind 1`: also per
//! kind of request), and the cost of an unplaceable request, whose reason counts every node.
//! Without `--nodes` it runs 1,000, 5,000 and 10,000 nodes.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use cloud_placement::{
    ClusterSnapshot, NodeInfo, NodeState, Options, PlacementGroup, Request, Resources, Strategy,
    place_with,
};
use uuid::Uuid;

/// xorshift64*: enough randomness for synthetic data, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn uuid(&mut self) -> Uuid {
        Uuid::from_u128((u128::from(self.next()) << 64) | u128::from(self.next()))
    }
}

struct Args {
    nodes: Vec<usize>,
    requests: usize,
    batch: usize,
    live_per_node: usize,
    seed: u64,
    by_kind: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nodes: vec![1_000, 5_000, 10_000],
        requests: 50_000,
        batch: 1,
        live_per_node: 5,
        seed: 1,
        by_kind: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let n: u64 = value.parse().map_err(|e| format!("{flag} {value}: {e}"))?;
        let n_usize = usize::try_from(n).map_err(|e| e.to_string())?;
        match flag.as_str() {
            "--nodes" => args.nodes = vec![n_usize],
            "--requests" => args.requests = n_usize,
            "--batch" => args.batch = n_usize.max(1),
            "--live-per-node" => args.live_per_node = n_usize,
            "--seed" => args.seed = n,
            "--by-kind" => args.by_kind = n != 0,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    Ok(args)
}

fn cluster(rng: &mut Rng, n: usize) -> Vec<NodeInfo> {
    const SIZES: [(u64, u64); 4] = [
        (4_000, 8_192),
        (8_000, 16_384),
        (16_000, 65_536),
        (32_000, 131_072),
    ];
    (0..n)
        .map(|_| {
            let (cpu, mem) = SIZES[rng.below(4) as usize];
            let state = match rng.below(100) {
                0..=1 => NodeState::Draining,
                2 => NodeState::Down,
                _ => NodeState::Ready,
            };
            let mut drivers = vec!["docker".to_string()];
            if rng.chance(50) {
                drivers.push("libvirt".into());
            }
            let mut node = NodeInfo::new(rng.uuid(), state, Resources::new(cpu, mem, 500), drivers);
            let used = rng.below(61);
            node.allocated = Resources::new(cpu * used / 100, mem * used / 100, 500 * used / 100);
            node.labels
                .insert("zone".into(), ["a", "b", "c"][rng.below(3) as usize].into());
            node.labels
                .insert("rack".into(), format!("r{}", rng.below(20)));
            node
        })
        .collect()
}

fn request(rng: &mut Rng, ids: &[Uuid]) -> Request {
    let demand = Resources::new(
        250 * (1 + rng.below(8)),
        256 * (1 + rng.below(16)),
        10 * rng.below(5),
    );
    let mut r = Request::new(rng.uuid(), demand, "docker");
    match rng.below(100) {
        0..=9 => r.driver = "libvirt".into(),
        10..=19 => r = r.with_label("zone", ["a", "b", "c"][rng.below(3) as usize]),
        20..=21 => r = r.with_label("rack", format!("r{}", rng.below(20))),
        22..=26 => r = r.in_group(PlacementGroup::spread(format!("web{}", rng.below(200)))),
        27..=29 => r = r.in_group(PlacementGroup::pack(format!("db{}", rng.below(500)))),
        30..=31 => r = r.on_node(ids[rng.below(ids.len() as u64) as usize]),
        _ => {}
    }
    if rng.chance(20) {
        r = r.with_strategy(Strategy::Spread);
    }
    r
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn micros(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

fn run(args: &Args, nodes: usize) {
    let mut rng = Rng(args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let infos = cluster(&mut rng, nodes);
    let ids: Vec<Uuid> = infos.iter().map(|n| n.id).collect();
    let t = Instant::now();
    let mut snap = ClusterSnapshot::new(infos);
    let build = t.elapsed();
    let options = Options::default();
    let mut live: VecDeque<(Uuid, Request)> = VecDeque::new();
    let mut decisions = Vec::with_capacity(args.requests / args.batch + 1);
    let mut updates = Duration::ZERO;
    let (mut placed, mut unplaced) = (0usize, 0usize);
    let mut done = 0;
    let mut round = 0u64;
    let mut kinds: std::collections::BTreeMap<(&str, bool), Vec<Duration>> = Default::default();
    while done < args.requests {
        let reqs: Vec<Request> = (0..args.batch.min(args.requests - done))
            .map(|_| request(&mut rng, &ids))
            .collect();
        done += reqs.len();
        round += 1;
        let t = Instant::now();
        let plan = place_with(&snap, &reqs, args.seed ^ round, &options);
        let took = t.elapsed();
        decisions.push(took);
        if args.by_kind && reqs.len() == 1 {
            let kind = kind_of(&reqs[0]);
            kinds
                .entry((kind, plan.unplaced.is_empty()))
                .or_default()
                .push(took);
        }
        placed += plan.placements.len();
        unplaced += plan.unplaced.len();
        let t = Instant::now();
        let by_id: std::collections::HashMap<Uuid, &Request> =
            reqs.iter().map(|r| (r.id, r)).collect();
        for p in &plan.placements {
            if let Some(r) = by_id.get(&p.request) {
                snap.allocate(p.node, r.demand, r.group.as_ref().map(|g| g.name.as_str()));
                live.push_back((p.node, (*r).clone()));
            }
        }
        while live.len() > nodes * args.live_per_node {
            if let Some((node, r)) = live.pop_front() {
                snap.release(node, r.demand, r.group.as_ref().map(|g| g.name.as_str()));
            }
        }
        updates += t.elapsed();
    }
    let total: Duration = decisions.iter().sum();
    decisions.sort_unstable();
    let per_request = total.as_secs_f64() / done as f64;
    println!(
        "{nodes:>6} nodes, {done} requests, {} per place() call: build {:.1} ms | per call p50 {} p90 {} p99 {} max {} | {:.0} decisions/s | placed {placed}, unplaced {unplaced} | snapshot updates {:.2} µs/request",
        args.batch,
        build.as_secs_f64() * 1e3,
        micros(percentile(&decisions, 0.50)),
        micros(percentile(&decisions, 0.90)),
        micros(percentile(&decisions, 0.99)),
        micros(percentile(&decisions, 1.0)),
        1.0 / per_request,
        updates.as_secs_f64() * 1e6 / done as f64,
    );
    // The rare worst case: nothing fits, so the reason counts every node.
    let mut scans: Vec<Duration> = (0..200)
        .map(|i| {
            let huge = Request::new(rng.uuid(), Resources::new(1_000_000, 64, 0), "docker");
            let t = Instant::now();
            let plan = place_with(&snap, &[huge], i, &options);
            let took = t.elapsed();
            assert_eq!(plan.unplaced.len(), 1);
            took
        })
        .collect();
    scans.sort_unstable();
    println!(
        "{:>6} unplaceable requests (reason counts every node): p50 {} p99 {}",
        scans.len(),
        micros(percentile(&scans, 0.50)),
        micros(percentile(&scans, 0.99)),
    );
    for ((kind, ok), mut ds) in kinds {
        ds.sort_unstable();
        println!(
            "    {kind:>10} {:>8}: n={:>6} p50 {} p99 {}",
            if ok { "placed" } else { "unplaced" },
            ds.len(),
            micros(percentile(&ds, 0.5)),
            micros(percentile(&ds, 0.99))
        );
    }
}

fn kind_of(r: &Request) -> &'static str {
    if r.required_node.is_some() {
        "required"
    } else if let Some(g) = &r.group {
        if g.name.starts_with("web") {
            "spread-grp"
        } else {
            "pack-grp"
        }
    } else if r.node_selector.contains_key("rack") {
        "rack"
    } else if !r.node_selector.is_empty() {
        "zone"
    } else if r.driver == "libvirt" {
        "libvirt"
    } else if r.strategy == Some(Strategy::Spread) {
        "spread"
    } else {
        "binpack"
    }
}

fn main() {
    match parse_args() {
        Ok(args) => {
            for &n in &args.nodes {
                run(&args, n);
            }
        }
        Err(e) => {
            eprintln!("place_bench: {e}");
            std::process::exit(2);
        }
    }
}
