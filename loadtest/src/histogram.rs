//! A lock-free latency histogram: microseconds in log-linear buckets (16 per power of two),
//! good to about 6% at every scale from 1 µs to over an hour.

use std::sync::atomic::{AtomicU64, Ordering};

const SUB: u32 = 16;
const BUCKETS: usize = 64 * SUB as usize;

pub struct Histogram {
    counts: Vec<AtomicU64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros(); // ≥ 4
    let shift = exp - SUB.trailing_zeros();
    let mantissa = (us >> shift) as u32 - SUB; // 0..16
    ((exp - SUB.trailing_zeros() + 1) * SUB + mantissa) as usize
}

/// The smallest value that falls in bucket `i`.
fn lower_bound(i: usize) -> u64 {
    let i = i as u32;
    if i < SUB {
        return i as u64;
    }
    let shift = i / SUB - 1;
    ((SUB + i % SUB) as u64) << shift
}

impl Histogram {
    pub fn record(&self, us: u64) {
        let b = bucket(us).min(BUCKETS - 1);
        self.counts[b].fetch_add(1, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The value below which a fraction `q` of the samples lie (bucket lower bound), in µs.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Ordering::Relaxed);
            if seen >= rank {
                return Some(lower_bound(i));
            }
        }
        None
    }

    /// Non-empty buckets as (lower bound µs, count).
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.counts
            .iter()
            .enumerate()
            .map(|(i, c)| (lower_bound(i), c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            15,
            16,
            17,
            31,
            32,
            100,
            1_000,
            65_535,
            1_000_000,
            3_600_000_000,
        ] {
            let b = bucket(us);
            assert!(b >= last, "{us}");
            last = b;
            let lo = lower_bound(b);
            assert!(
                lo <= us && us - lo <= us / 16 + 1,
                "{us} in bucket from {lo}"
            );
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::default();
        for us in 1..=1000 {
            h.record(us);
        }
        let p50 = h.quantile(0.5).unwrap();
        assert!((470..=500).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((930..=990).contains(&p99), "{p99}");
        assert_eq!(h.count(), 1000);
        assert_eq!(Histogram::default().quantile(0.5), None);
    }
}
