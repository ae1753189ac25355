//! floe-histogram: fixed-bucket histograms of durations, lock-free, rendered in the Prometheus
//! text exposition format (`NAME_bucket{le="..."}`, `NAME_sum`, `NAME_count`).
//!
//! A [`Histogram`] is a `static`: its bucket bounds are fixed at compile time and
//! [`Histogram::observe`] is a short linear scan and two relaxed atomic additions, with no lock
//! and no allocation, so it can sit on a hot path. The metrics recorder the binary installs
//! (`metrics-exporter-prometheus`) keeps every sample of its own histograms until a scrape
//! drains them; these keep counts only, so memory does not grow when nobody scrapes.
//!
//! No clock is read here: the caller measures and passes a [`Duration`].
//!
//! ```
//! use floe_histogram::Histogram;
//! static HANDLING: Histogram<3> = Histogram::new("demo_seconds", "Demo.", [0.001, 0.01, 0.1]);
//! HANDLING.observe(std::time::Duration::from_millis(5));
//! let mut text = String::new();
//! HANDLING.render(&mut text);
//! assert!(text.contains("demo_seconds_bucket{le=\"0.01\"} 1"));
//! assert!(text.contains("demo_seconds_count 1"));
//! ```

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets for request handling times: 100 µs to 5 s.
pub const HANDLING_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Buckets for session lifetimes: 1 second to 1 day.
pub const LIFETIME_BUCKETS: [f64; 12] = [
    1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0,
];

/// A histogram of durations with `N` fixed upper bounds (seconds, ascending) and an implicit
/// `+Inf` bucket.
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    name: &'static str,
    help: &'static str,
    bounds: [f64; N],
    /// `buckets[i]` counts observations in `(bounds[i-1], bounds[i]]`; `buckets[N]` those
    /// above the last bound (not cumulative: rendering sums them).
    buckets: [AtomicU64; N],
    over: AtomicU64,
    /// The sum of every observation, in microseconds (u64 holds 584 000 years of them).
    sum_micros: AtomicU64,
}

impl<const N: usize> Histogram<N> {
    /// A histogram named `name` (a Prometheus metric name, `_seconds` by convention) with the
    /// upper bounds `bounds` in seconds, which must be ascending.
    pub const fn new(name: &'static str, help: &'static str, bounds: [f64; N]) -> Self {
        Histogram {
            name,
            help,
            bounds,
            buckets: [const { AtomicU64::new(0) }; N],
            over: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// The metric name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Counts one observation of `d`.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let slot = self.bounds.iter().position(|&b| secs <= b);
        match slot {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.over.fetch_add(1, Ordering::Relaxed),
        };
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// A consistent-enough copy: cumulative counts per bound (the last is `+Inf`, which is
    /// also the count) and the sum in seconds. Observations racing with the copy may be in
    /// the sum and not yet in the counts, or the reverse.
    pub fn snapshot(&self) -> Snapshot {
        let mut cumulative = Vec::with_capacity(N + 1);
        let mut total = 0u64;
        for b in &self.buckets {
            total = total.saturating_add(b.load(Ordering::Relaxed));
            cumulative.push(total);
        }
        total = total.saturating_add(self.over.load(Ordering::Relaxed));
        cumulative.push(total);
        Snapshot {
            bounds: self.bounds.to_vec(),
            cumulative,
            sum_secs: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// Appends the histogram in the Prometheus text format to `out`.
    pub fn render(&self, out: &mut String) {
        let s = self.snapshot();
        let name = self.name;
        // Writing to a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {}", self.help);
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, n) in s.bounds.iter().zip(&s.cumulative) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", s.count());
        let _ = writeln!(out, "{name}_sum {}", s.sum_secs);
        let _ = writeln!(out, "{name}_count {}", s.count());
    }
}

/// A copy of a [`Histogram`]'s counts.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The upper bounds, seconds.
    pub bounds: Vec<f64>,
    /// Cumulative counts: `cumulative[i]` observations were at most `bounds[i]`; the last
    /// entry (one more than `bounds`) is every observation.
    pub cumulative: Vec<u64>,
    /// The sum of the observations, seconds.
    pub sum_secs: f64,
}

impl Snapshot {
    /// How many observations.
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let h = Histogram::new("t_seconds", "Test.", [0.1, 1.0, 10.0]);
        h.observe(Duration::from_millis(100)); // on the bound: le="0.1"
        h.observe(Duration::from_millis(101));
        h.observe(Duration::from_secs(10));
        h.observe(Duration::from_secs(11)); // +Inf only
        h.observe(Duration::ZERO);
        let s = h.snapshot();
        assert_eq!(s.cumulative, vec![2, 3, 4, 5]);
        assert_eq!(s.count(), 5);
        assert!((s.sum_secs - 21.201).abs() < 1e-9, "{}", s.sum_secs);
    }

    #[test]
    fn renders_the_prometheus_text_format() {
        let h = Histogram::new("floe_test_seconds", "A test histogram.", [0.5, 2.0]);
        h.observe(Duration::from_secs(1));
        h.observe(Duration::from_secs(3));
        let mut out = String::new();
        h.render(&mut out);
        assert_eq!(
            out,
            "# HELP floe_test_seconds A test histogram.\n\
             # TYPE floe_test_seconds histogram\n\
             floe_test_seconds_bucket{le=\"0.5\"} 0\n\
             floe_test_seconds_bucket{le=\"2\"} 1\n\
             floe_test_seconds_bucket{le=\"+Inf\"} 2\n\
             floe_test_seconds_sum 4\n\
             floe_test_seconds_count 2\n"
        );
    }

    #[test]
    fn is_shared_between_threads_without_a_lock() {
        static H: Histogram<2> = Histogram::new("t_seconds", "Test.", [0.001, 1.0]);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1000 {
                        H.observe(Duration::from_micros(500));
                    }
                });
            }
        });
        let snap = H.snapshot();
        assert_eq!(snap.cumulative, vec![4000, 4000, 4000]);
        assert!((snap.sum_secs - 2.0).abs() < 1e-9);
    }

    #[test]
    fn the_shipped_bounds_ascend() {
        for bounds in [&HANDLING_BUCKETS[..], &LIFETIME_BUCKETS[..]] {
            assert!(bounds.windows(2).all(|w| w[0] < w[1]));
        }
    }

    proptest! {
        #[test]
        fn counts_are_cumulative_and_total(micros in prop::collection::vec(0u64..20_000_000, 0..64)) {
            let h = Histogram::new("t_seconds", "Test.", HANDLING_BUCKETS);
            for &m in &micros {
                h.observe(Duration::from_micros(m));
            }
            let s = h.snapshot();
            prop_assert_eq!(s.count(), micros.len() as u64);
            prop_assert!(s.cumulative.windows(2).all(|w| w[0] <= w[1]));
            for (i, &bound) in HANDLING_BUCKETS.iter().enumerate() {
                let expect = micros.iter().filter(|&&m| Duration::from_micros(m).as_secs_f64() <= bound).count() as u64;
                prop_assert_eq!(s.cumulative[i], expect);
            }
            let sum: u64 = micros.iter().sum();
            prop_assert!((s.sum_secs - sum as f64 / 1e6).abs() < 1e-6);
        }
    }
}
