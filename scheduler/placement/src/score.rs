//! Scoring of feasible nodes and the seeded hashes used for tie-breaking and walk offsets.
//!
//! Scores are integers in parts per million so that ranking is exact and portable. Ties are
//! broken by a SplitMix64-based hash of (seed, request id, node id), so requests with the same seed but
//! different ids (or the same request under different seeds) land on different equally good
//! nodes; a final comparison on node id makes the order total.

use uuid::Uuid;

use crate::types::{Resources, Strategy};

/// Fraction of the node used after placing, averaged over CPU and memory, in parts per
/// million (higher = fuller).
pub(crate) fn fullness(capacity: &Resources, allocated_after: &Resources) -> u64 {
    fn frac(used: u64, cap: u64) -> u64 {
        if cap == 0 {
            return 0;
        }
        let used = used.min(cap);
        match used.checked_mul(1_000_000) {
            Some(scaled) => scaled / cap,
            None => {
                let ppm = (u128::from(used) * 1_000_000) / u128::from(cap);
                u64::try_from(ppm).unwrap_or(1_000_000)
            }
        }
    }
    (frac(allocated_after.cpu_millis, capacity.cpu_millis)
        + frac(allocated_after.memory_mb, capacity.memory_mb))
        / 2
}

/// Score under `strategy` (higher wins): fullness for bin-packing, emptiness for spreading.
pub(crate) fn score(strategy: Strategy, capacity: &Resources, allocated_after: &Resources) -> u64 {
    let full = fullness(capacity, allocated_after);
    match strategy {
        Strategy::BinPack => full,
        Strategy::Spread => 1_000_000u64.saturating_sub(full),
    }
}

/// The SplitMix64 finalizer: a bijective, well-avalanching 64-bit mix.
fn finalize(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seeded hash of two 128-bit values: each 64-bit word is folded in and re-mixed, so every
/// input bit affects every output bit (a plain xor of the inputs would let node ids that
/// differ only in a few bits rank the same way under every seed).
pub(crate) fn mix(seed: u64, a: u128, b: u128) -> u64 {
    [a as u64, (a >> 64) as u64, b as u64, (b >> 64) as u64]
        .into_iter()
        .fold(finalize(seed), |h, word| finalize(h ^ word))
}

/// Tie-break rank of `node` for `request` (higher wins).
pub(crate) fn tie(seed: u64, request: Uuid, node: Uuid) -> u64 {
    mix(seed, request.as_u128(), node.as_u128())
}

/// The seeded position where a request starts walking each posting list (ordered by a hash
/// of the node id, see `index::Key`).
pub(crate) fn start_key(seed: u64, request: Uuid) -> (u64, Uuid) {
    (mix(seed, request.as_u128(), 0x0053_5441_5254), Uuid::nil()) // "START"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fullness_averages_cpu_and_memory() {
        let cap = Resources::new(1000, 2000, 0);
        assert_eq!(fullness(&cap, &Resources::new(500, 2000, 0)), 750_000);
        assert_eq!(fullness(&Resources::default(), &Resources::default()), 0);
        assert_eq!(
            score(Strategy::Spread, &cap, &Resources::new(500, 2000, 0)),
            250_000
        );
    }

    #[test]
    fn ties_depend_on_seed_request_and_node() {
        let (r, n) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(tie(7, r, n), tie(7, r, n));
        assert_ne!(tie(7, r, n), tie(8, r, n));
        assert_ne!(tie(7, r, n), tie(7, n, r));
        assert_ne!(start_key(7, r), start_key(8, r));
    }
}
