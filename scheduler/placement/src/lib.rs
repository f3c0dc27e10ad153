//! The pure placement engine: `place(&ClusterSnapshot, &[Request], seed) -> Plan`.
//!
//! No I/O, no clock, no global randomness: the same snapshot contents, requests, seed and
//! [`Options`] give the same plan, however the snapshot was built (every walk and every
//! comparison depends on node ids, never on insertion order or storage slots). Requests are placed in order and each placement counts
//! against its node for the following requests. Requests no node can take come back as
//! [`Unplaced`] with a reason counting the nodes rejected by each filter.
//!
//! # Filters
//! Required node (volume locality), status (ready only), driver, node selector (every pair
//! must be among the node's labels), placement group (spread = at most one member per node;
//! pack = once the group has a member anywhere, only nodes running members), then free CPU,
//! memory and disk (snapshot allocation plus earlier placements of the batch).
//!
//! # Scoring
//! [`Strategy::BinPack`] (default) prefers the node left fullest, [`Strategy::Spread`] the
//! emptiest, both averaged over CPU and memory. Ties go to the highest seeded hash of (seed,
//! request id, node id).
//!
//! # Indexes and sampling
//! [`ClusterSnapshot`] is long-lived and updated incrementally (`upsert_node`, `set_state`,
//! `allocate`, `release`, `remove_node`), each update touching only the changed node's index
//! entries (O((drivers × labels) · log n)). It keeps, per driver, its **ready** nodes in
//! buckets keyed by (class of free memory, class of free CPU) — four classes per power of
//! two — and the same buckets per (driver, label pair); posting lists of the nodes running
//! members of each placement group; and node counts per state. Each bucket is ordered by a
//! fixed hash of the node id, so positions are uniform whatever the ids look like.
//!
//! A decision does not score every node. Like kube-scheduler's `percentageOfNodesToScore`
//! it stops after finding `K = max(min_candidates, candidate_percent % of nodes)` feasible
//! nodes (100 and 5 % by default) and scores only those. It walks the narrowest sound
//! source of candidates:
//! 1. the required node, if any;
//! 2. the nodes running members of a started pack group (snapshot and batch);
//! 3. otherwise the (driver) or (driver, rarest selector pair) bucket set, visiting only
//!    buckets whose memory and CPU classes can hold the demand — tightest first for
//!    bin-packing, emptiest first for spreading — so nodes that cannot fit are skipped
//!    wholesale and status, driver and that pair need no re-check.
//!
//! Within each posting list the walk starts at a key derived from (seed, request id) and
//! wraps, so concurrent planners with different seeds look at different nodes first. Earlier
//! placements of the batch live in an overlay; they only reduce free capacity, so bucket
//! pruning stays sound and each candidate is re-checked against snapshot + overlay.
//!
//! If the walk finds no feasible node, the reason counts every node's first failing filter:
//! state and driver counts come from the indexes, the rest from checking the ready nodes
//! with the driver (and first selector pair) one by one — or only the members, for a
//! started pack group. Sampling therefore never reports a false "no capacity"; debug builds
//! cross-check the counts against a brute-force scan.

mod filters;
mod index;
mod place;
mod score;
mod snapshot;
mod types;

pub use place::{place, place_with};
pub use snapshot::ClusterSnapshot;
pub use types::{
    GroupPolicy, NodeInfo, NodeState, Options, Placement, PlacementGroup, Plan, Request, Resources,
    Strategy, Unplaced,
};
