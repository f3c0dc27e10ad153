//! The placement loop: requests in order, each decided by a bounded walk over the snapshot's
//! indexes, with earlier placements of the batch kept in a small overlay.
//!
//! The snapshot is never copied or mutated. The overlay ([`Batch`]) records what the batch
//! placed on each touched node; since a batch only ever adds load, a node's index bucket can
//! only overstate its free capacity, so pruning by bucket stays sound and every candidate is
//! re-checked against snapshot + overlay. When the walk finds nothing, [`explain`] counts
//! the rejection of every node for the reason.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::filters::{BatchView, Known, Rejection, check, unplaced_reason};
use crate::index::{Buckets, Key, Posting, Slot, key};
use crate::score::{score, start_key, tie};
use crate::snapshot::ClusterSnapshot;
use crate::types::{GroupPolicy, Options, Placement, Plan, Request, Resources, Strategy, Unplaced};

/// Places `requests` in order with [`Options::default`]. See [`place_with`].
pub fn place(snapshot: &ClusterSnapshot, requests: &[Request], seed: u64) -> Plan {
    place_with(snapshot, requests, seed, &Options::default())
}

/// Places `requests` in order on `snapshot`; each placement counts against its node for the
/// following requests. The same snapshot contents, requests, seed and options give the same
/// plan.
pub fn place_with(
    snapshot: &ClusterSnapshot,
    requests: &[Request],
    seed: u64,
    options: &Options,
) -> Plan {
    let want = options.candidates(snapshot.len());
    let mut batch = Batch::default();
    let mut plan = Plan::default();
    for (i, req) in requests.iter().enumerate() {
        let mut search = Search {
            snapshot,
            batch: &batch,
            req,
            seed,
            strategy: req.strategy.unwrap_or(options.default_strategy),
            group_started: group_started(snapshot, &batch, req),
            want,
            found: 0,
            best: None,
        };
        search.run();
        let outcome = match search.best {
            Some(best) => Ok(best),
            None => explain(&mut search),
        };
        match outcome {
            Ok(best) => {
                // The last placement needs no bookkeeping: nothing follows it.
                if i + 1 < requests.len() {
                    batch.commit(snapshot, best.slot, best.id, req);
                }
                plan.placements.push(Placement {
                    request: req.id,
                    node: best.id,
                });
            }
            Err(reason) => plan.unplaced.push(Unplaced {
                request: req.id,
                reason,
            }),
        }
    }
    plan
}

/// What earlier requests of the batch placed.
#[derive(Debug, Default)]
struct Batch {
    /// Extra allocation per storage slot: empty until the first placement, then one entry per
    /// slot so the hot path is an array lookup (only looked up, so slots never leak into
    /// decisions).
    extra: Vec<Resources>,
    /// Per group, the nodes that received a member in this batch.
    members: BTreeMap<String, Posting>,
}

impl Batch {
    fn view(&self, slot: Slot, id: Uuid, req: &Request) -> BatchView {
        BatchView {
            extra: self.extra.get(slot).copied().unwrap_or_default(),
            member: req.group.as_ref().is_some_and(|g| {
                self.members
                    .get(&g.name)
                    .is_some_and(|nodes| nodes.contains_key(&key(id)))
            }),
        }
    }

    fn commit(&mut self, snapshot: &ClusterSnapshot, slot: Slot, id: Uuid, req: &Request) {
        if self.extra.len() <= slot {
            self.extra
                .resize(snapshot.slot_count().max(slot + 1), Resources::default());
        }
        if let Some(extra) = self.extra.get_mut(slot) {
            *extra = extra.saturating_add(&req.demand);
        }
        if let Some(group) = &req.group {
            self.members
                .entry(group.name.clone())
                .or_default()
                .insert(key(id), slot);
        }
    }
}

/// Whether the request's group already has a member anywhere (snapshot or batch).
fn group_started(snapshot: &ClusterSnapshot, batch: &Batch, req: &Request) -> bool {
    req.group.as_ref().is_some_and(|g| {
        snapshot.index().groups.contains_key(&g.name) || batch.members.contains_key(&g.name)
    })
}

/// The best node found so far, compared by (score, tie-break, lower id).
#[derive(Debug, Clone, Copy)]
struct Best {
    score: u64,
    tie: u64,
    id: Uuid,
    slot: Slot,
}

/// One decision: walks candidate sources until `want` feasible nodes were scored.
struct Search<'a> {
    snapshot: &'a ClusterSnapshot,
    batch: &'a Batch,
    req: &'a Request,
    seed: u64,
    strategy: Strategy,
    group_started: bool,
    want: usize,
    found: usize,
    best: Option<Best>,
}

impl Search<'_> {
    /// Walks the narrowest sound source of candidates, leaving the winner in `best`
    /// (`None`: no node in the snapshot can take the request).
    fn run(&mut self) {
        let index = self.snapshot.index();
        let start = start_key(self.seed, self.req.id);
        if let Some(id) = self.req.required_node {
            if let Some(slot) = self.snapshot.slot_of(id) {
                self.visit(slot, Known::default());
            }
            return;
        }
        if let Some(group) = &self.req.group
            && group.policy == GroupPolicy::Pack
            && self.group_started
        {
            let placed = index.groups.get(&group.name);
            match (placed, self.batch.members.get(&group.name)) {
                (Some(members), None) | (None, Some(members)) => {
                    self.walk(members, start, Known::default());
                }
                (Some(placed), Some(batch)) => {
                    let mut members = placed.clone();
                    members.extend(batch.iter().map(|(k, slot)| (*k, *slot)));
                    self.walk(&members, start, Known::default());
                }
                (None, None) => {}
            }
            return;
        }
        // Ready nodes with the driver, or with the driver and the rarest selector pair.
        let Some(driver) = index.drivers.get(&self.req.driver) else {
            return;
        };
        let mut set = &driver.all;
        let mut known = Known {
            ready: true,
            driver: true,
            pair: None,
        };
        for (i, (name, value)) in self.req.node_selector.iter().enumerate() {
            let Some(labelled) = driver.label(name, value) else {
                return;
            };
            if labelled.len < set.len {
                set = labelled;
                known.pair = Some(i);
            }
        }
        self.walk_buckets(set, start, known);
    }

    /// Visits the buckets of `set` that may fit the demand: tightest first for bin-packing
    /// (the fullest feasible nodes are the best targets), emptiest first for spreading.
    fn walk_buckets(&mut self, set: &Buckets, start: Key, known: Known) {
        let demand = self.req.demand;
        let buckets = set.fitting(demand.memory_mb, demand.cpu_millis);
        match self.strategy {
            Strategy::BinPack => {
                for posting in buckets {
                    if self.walk(posting, start, known) {
                        return;
                    }
                }
            }
            Strategy::Spread => {
                for posting in buckets.rev() {
                    if self.walk(posting, start, known) {
                        return;
                    }
                }
            }
        }
    }

    /// Visits a posting list from the seeded start key, wrapping around. True once enough
    /// candidates were found.
    fn walk(&mut self, posting: &Posting, start: Key, known: Known) -> bool {
        for (_, slot) in posting.range(start..).chain(posting.range(..start)) {
            if self.visit(*slot, known) {
                return true;
            }
        }
        false
    }

    /// Checks and scores one node. True once enough candidates were found.
    fn visit(&mut self, slot: Slot, known: Known) -> bool {
        self.consider(slot, known).is_ok() && self.found >= self.want
    }

    /// Checks one node and, if feasible, scores it against the best so far.
    fn consider(&mut self, slot: Slot, known: Known) -> Result<(), Rejection> {
        let Some(node) = self.snapshot.at(slot) else {
            return Err(Rejection::Down);
        };
        let view = self.batch.view(slot, node.id, self.req);
        check(node, &view, self.req, self.group_started, known)?;
        self.found += 1;
        let after = node
            .allocated
            .saturating_add(&view.extra)
            .saturating_add(&self.req.demand);
        let score = score(self.strategy, &node.capacity, &after);
        if let Some(best) = &self.best
            && score < best.score
        {
            return Ok(());
        }
        // Only nodes that reach the best score pay for the tie-break hash.
        let candidate = Best {
            score,
            tie: tie(self.seed, self.req.id, node.id),
            id: node.id,
            slot,
        };
        let rank = |b: &Best| (b.score, b.tie, std::cmp::Reverse(b.id));
        if self.best.is_none_or(|b| rank(&candidate) > rank(&b)) {
            self.best = Some(candidate);
        }
        Ok(())
    }
}

/// Counts, for every node, the first filter it fails, and turns the counts into a reason.
/// Uses the indexes where they are exact (state counts, driver and first-pair label sets,
/// pack-group members) and checks the remaining nodes one by one. Should a node pass after
/// all (an index bug), the request is placed there rather than refused wrongly.
fn explain(search: &mut Search<'_>) -> Result<Best, String> {
    let snapshot = search.snapshot;
    let req = search.req;
    let index = snapshot.index();
    let mut rejections: BTreeMap<Rejection, usize> = BTreeMap::new();
    let mut count = |r: Rejection, n: usize| {
        if n > 0 {
            *rejections.entry(r).or_default() += n;
        }
    };
    search.want = usize::MAX;
    if let Some(id) = req.required_node {
        let slot = snapshot.slot_of(id);
        count(
            Rejection::NotRequired,
            snapshot.len().saturating_sub(usize::from(slot.is_some())),
        );
        if let Some(slot) = slot
            && let Err(r) = search.consider(slot, Known::default())
        {
            count(r, 1);
        }
    } else {
        let states = index.states;
        let driver = index.drivers.get(&req.driver);
        let with_driver = driver.map_or(0, |d| d.all.len);
        count(Rejection::Down, states.down);
        count(Rejection::Draining, states.draining);
        count(
            Rejection::NoDriver,
            states.ready.saturating_sub(with_driver),
        );
        // The ready nodes with the driver that pass the first selector pair.
        let mut known = Known {
            ready: true,
            driver: true,
            pair: None,
        };
        let mut set = driver.map(|d| &d.all);
        if let Some((name, value)) = req.node_selector.iter().next() {
            set = driver.and_then(|d| d.label(name, value));
            known.pair = Some(0);
        }
        let set_len = set.map_or(0, |s| s.len);
        count(Rejection::Selector(0), with_driver.saturating_sub(set_len));
        let pack_members = match &req.group {
            Some(g) if g.policy == GroupPolicy::Pack && search.group_started => Some(&g.name),
            _ => None,
        };
        match pack_members {
            // Only members can pass; everyone else in the set fails the group filter first
            // (no later selector pair could claim them).
            Some(group) if req.node_selector.len() <= 1 => {
                let mut members: BTreeMap<Key, Slot> =
                    index.groups.get(group).cloned().unwrap_or_default();
                if let Some(batch) = search.batch.members.get(group) {
                    members.extend(batch.iter().map(|(k, slot)| (*k, *slot)));
                }
                let mut in_set = 0;
                for slot in members.values() {
                    match search.consider(*slot, Known::default()) {
                        Err(
                            Rejection::Down
                            | Rejection::Draining
                            | Rejection::NoDriver
                            | Rejection::Selector(0),
                        ) => {}
                        Err(r) => {
                            in_set += 1;
                            count(r, 1);
                        }
                        Ok(()) => in_set += 1,
                    }
                }
                count(Rejection::GroupPack, set_len.saturating_sub(in_set));
            }
            _ => {
                for posting in set.iter().flat_map(|s| s.buckets.values()) {
                    for slot in posting.values() {
                        if let Err(r) = search.consider(*slot, known) {
                            count(r, 1);
                        }
                    }
                }
            }
        }
    }
    debug_assert_eq!(
        rejections,
        brute_force(search),
        "index-based counts drifted"
    );
    match search.best {
        Some(best) => {
            debug_assert!(false, "the indexed walk missed feasible node {}", best.id);
            Ok(best)
        }
        None => Err(unplaced_reason(snapshot.len(), &rejections, req)),
    }
}

/// The rejection counts by checking every node without any index (debug builds only).
fn brute_force(search: &Search<'_>) -> BTreeMap<Rejection, usize> {
    let mut rejections = BTreeMap::new();
    if !cfg!(debug_assertions) {
        return rejections;
    }
    for slot in search.snapshot.slots_by_id() {
        let Some(node) = search.snapshot.at(slot) else {
            continue;
        };
        let view = search.batch.view(slot, node.id, search.req);
        if let Err(r) = check(
            node,
            &view,
            search.req,
            search.group_started,
            Known::default(),
        ) {
            *rejections.entry(r).or_default() += 1;
        }
    }
    rejections
}
