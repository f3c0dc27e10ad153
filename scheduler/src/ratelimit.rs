//! Token buckets: per API key for the whole API, and per account and per source address for
//! logins. A client over its rate is refused (429 with `Retry-After`) without touching the
//! store. In memory, per scheduler process; the map is bounded (idle buckets are full again,
//! so forgetting them loses nothing).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// `rate` tokens per second, at most `burst` saved up.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// `per_second <= 0` disables the limiter.
    pub fn new(per_second: f64, burst: u32) -> Self {
        Self {
            rate: per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    pub fn enabled(&self) -> bool {
        self.rate > 0.0
    }

    /// Takes one token for `key`; `Err(wait)` when there is none (how long until one is).
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        if !self.enabled() {
            return Ok(());
        }
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_BUCKETS && !map.contains_key(key) {
            let full_after = Duration::from_secs_f64(self.burst / self.rate);
            map.retain(|_, b| now.saturating_duration_since(b.at) < full_after);
            if map.len() >= MAX_BUCKETS {
                map.clear();
            }
        }
        let b = map.entry(key.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        b.tokens = (b.tokens + elapsed * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - b.tokens) / self.rate))
        }
    }
}

/// Whole seconds for a `Retry-After` header (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_the_rate() {
        let l = RateLimiter::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at("k", t0).is_ok());
        }
        let wait = l.check_at("k", t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 0.01, "{wait:?}");
        assert!(l.check_at("other", t0).is_ok(), "buckets are per key");
        assert!(l.check_at("k", t0 + Duration::from_millis(500)).is_ok());
        assert!(l.check_at("k", t0 + Duration::from_millis(500)).is_err());
        // Idle time refills up to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(l.check_at("k", later).is_ok());
        }
        assert!(l.check_at("k", later).is_err());
        assert_eq!(retry_after_secs(Duration::from_millis(10)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(2100)), 3);
    }

    #[test]
    fn disabled_allows_everything() {
        let l = RateLimiter::new(0.0, 1);
        for _ in 0..1000 {
            assert!(l.check("k").is_ok());
        }
    }
}
