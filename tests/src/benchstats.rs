//! Summaries of benchmark samples: median, p90, min, max.

use std::time::Duration;

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median (upper median for an even count). `v` must not be empty.
pub fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

/// `median … p90 … min … max … (n=…)`; sorts `v`, which must not be empty.
pub fn summary(v: &mut [Duration]) -> String {
    v.sort();
    let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:.1} ms  p90 {:.1} ms  min {:.1} ms  max {:.1} ms  (n={})",
        ms(median(v)),
        ms(p(0.9)),
        ms(v[0]),
        ms(v[v.len() - 1]),
        v.len()
    )
}
