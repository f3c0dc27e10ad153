//! Timer phases. Every periodic timer of an agent (reconcile pass, heartbeat, telemetry,
//! observed-state resend, facts re-check) first fires at a random point of its period, so
//! thousands of agents started together (a simulator, or a fleet reconnecting after a
//! scheduler restart) do not tick in lockstep. The period itself is unchanged, so the longest
//! gap between two ticks never grows.

use rand::Rng;
use std::time::Duration;
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at};

/// A uniformly random offset in `[0, period)` (zero for a zero period).
pub fn phase(period: Duration) -> Duration {
    let nanos = u64::try_from(period.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    Duration::from_nanos(rand::rng().random_range(0..nanos))
}

/// A periodic timer whose first tick comes after `delay + phase(period)`, then every `period`.
/// Missed ticks are delayed, not bunched.
pub fn interval_after(delay: Duration, period: Duration) -> Interval {
    let period = period.max(Duration::from_millis(1));
    let mut i = interval_at(Instant::now() + delay + phase(period), period);
    i.set_missed_tick_behavior(MissedTickBehavior::Delay);
    i
}

/// A periodic timer that first fires within one period (at a random phase), then every
/// `period`: the first tick is never later than with a plain `interval`'s second tick.
pub fn interval(period: Duration) -> Interval {
    interval_after(Duration::ZERO, period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_is_within_the_period_and_spreads() {
        assert_eq!(phase(Duration::ZERO), Duration::ZERO);
        assert!(phase(Duration::from_nanos(1)) == Duration::ZERO);
        let period = Duration::from_secs(1);
        let samples: Vec<Duration> = (0..2000).map(|_| phase(period)).collect();
        assert!(samples.iter().all(|p| *p < period));
        // Ten buckets of 100 ms each get about 200 samples; none is empty or holds half.
        let mut buckets = [0usize; 10];
        for p in &samples {
            buckets[usize::try_from(p.as_millis() / 100).unwrap()] += 1;
        }
        assert!(
            buckets.iter().all(|b| (50..1000).contains(b)),
            "{buckets:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn first_tick_comes_within_one_period_then_every_period() {
        let period = Duration::from_secs(1);
        let start = Instant::now();
        let mut t = interval(period);
        let first = t.tick().await;
        assert!(
            first >= start && first < start + period,
            "{:?}",
            first - start
        );
        let second = t.tick().await;
        assert_eq!(second - first, period);

        let created = Instant::now();
        let mut t = interval_after(Duration::from_secs(30), period);
        let first = t.tick().await;
        let off = first - created;
        assert!(off >= Duration::from_secs(30) && off < Duration::from_secs(31));
    }

    #[tokio::test(start_paused = true)]
    async fn many_timers_do_not_fire_together() {
        let period = Duration::from_secs(1);
        let mut firsts = Vec::new();
        for _ in 0..200 {
            let created = Instant::now();
            let mut t = interval(period);
            firsts.push(t.tick().await - created);
        }
        firsts.sort();
        firsts.dedup();
        assert!(firsts.len() > 150, "only {} distinct phases", firsts.len());
    }
}
