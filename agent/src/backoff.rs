//! Exponential backoff with jitter for reconnects: 250 ms doubling up to a 10 s cap, each delay
//! drawn uniformly from [d/2, d] so thousands of agents do not reconnect in lockstep.

use rand::Rng;
use std::time::Duration;

/// Reconnect delay generator.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(Duration::from_millis(250), Duration::from_secs(10))
    }
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            attempt: 0,
        }
    }

    /// The un-jittered delay of the next attempt.
    pub fn ceiling(&self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(30)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay before the next attempt (jittered), advancing the sequence.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let spread = u64::try_from((ceiling - half).as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::rng().random_range(0..=spread))
    }

    /// Back to the base delay (after a session that lasted long enough).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::default();
        let expected_ceilings = [250u64, 500, 1000, 2000, 4000, 8000, 10_000, 10_000];
        for ceiling in expected_ceilings {
            let c = Duration::from_millis(ceiling);
            assert_eq!(b.ceiling(), c);
            let d = b.next_delay();
            assert!(
                d >= c / 2 && d <= c,
                "{d:?} not within [{:?}, {c:?}]",
                c / 2
            );
        }
        for _ in 0..100 {
            assert!(b.next_delay() <= Duration::from_secs(10));
        }
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_millis(250));
    }
}
