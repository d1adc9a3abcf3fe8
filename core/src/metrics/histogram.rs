//! A lock-free log-linear latency histogram: fixed buckets, atomics only, no allocation per
//! sample.
//!
//! Values are microseconds. Below 32 µs every value has its own bucket; above, each power of two
//! is split into 16 equal buckets, so a bucket is at most 1/16 of its lower bound wide and a
//! percentile read from it is within ~3% of the true sample (the estimate is the bucket's
//! midpoint, clamped to the exact minimum and maximum). Values from 2^40 µs (about 12.7 days) on
//! share the last bucket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two, as a bit count (16 sub-buckets).
const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;
/// Values at or above `2^MAX_BITS` µs land in the last bucket.
const MAX_BITS: u32 = 40;
/// Number of buckets: the exact ones below `2 * SUB`, then `SUB` per remaining power of two.
pub(crate) const BUCKETS: usize = ((MAX_BITS - SUB_BITS) as usize + 1) * SUB as usize;

/// The bucket a value (µs) falls in.
fn bucket_of(micros: u64) -> usize {
    let v = micros.min((1 << MAX_BITS) - 1);
    if v < 2 * SUB {
        return v as usize;
    }
    let exp = 63 - v.leading_zeros();
    let sub = (v >> (exp - SUB_BITS)) & (SUB - 1);
    ((exp - SUB_BITS + 1) as usize) * SUB as usize + sub as usize
}

/// The lowest value (µs) of bucket `index` and its width.
fn bucket_range(index: usize) -> (u64, u64) {
    let i = index as u64;
    if i < 2 * SUB {
        return (i, 1);
    }
    let exp = (i / SUB) as u32 + SUB_BITS - 1;
    let shift = exp - SUB_BITS;
    ((SUB + i % SUB) << shift, 1 << shift)
}

/// Durations of one endpoint's requests, recorded concurrently without locks.
///
/// ```
/// use std::time::Duration;
/// use tinker_core::metrics::LatencyHistogram;
///
/// let h = LatencyHistogram::new();
/// for ms in [3, 5, 8, 120] {
///     h.record(Duration::from_millis(ms));
/// }
/// let s = h.summary();
/// assert_eq!(s.count, 4);
/// assert_eq!(s.min_ms, Some(3.0));
/// assert_eq!(s.max_ms, Some(120.0));
/// assert!(s.p50_ms.unwrap() >= 4.5 && s.p50_ms.unwrap() <= 5.5);
/// ```
#[derive(Debug)]
pub struct LatencyHistogram {
    buckets: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
    min_micros: AtomicU64,
    max_micros: AtomicU64,
}

impl Default for LatencyHistogram {
    fn default() -> LatencyHistogram {
        LatencyHistogram::new()
    }
}

impl LatencyHistogram {
    /// An empty histogram (its buckets are allocated once, here).
    pub fn new() -> LatencyHistogram {
        LatencyHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            min_micros: AtomicU64::new(u64::MAX),
            max_micros: AtomicU64::new(0),
        }
    }

    /// Adds one sample.
    pub fn record(&self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.min_micros.fetch_min(micros, Ordering::Relaxed);
        self.max_micros.fetch_max(micros, Ordering::Relaxed);
    }

    /// Forgets every sample. A sample recorded while the reset runs may be half counted.
    pub fn reset(&self) {
        for b in self.buckets.iter() {
            b.store(0, Ordering::Relaxed);
        }
        self.sum_micros.store(0, Ordering::Relaxed);
        self.min_micros.store(u64::MAX, Ordering::Relaxed);
        self.max_micros.store(0, Ordering::Relaxed);
    }

    /// The samples so far, as a [`HistogramCounts`] that can be merged with others.
    pub(crate) fn counts(&self) -> HistogramCounts {
        HistogramCounts {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
            min_micros: self.min_micros.load(Ordering::Relaxed),
            max_micros: self.max_micros.load(Ordering::Relaxed),
        }
    }

    /// Count, mean, extremes and percentiles of the samples so far.
    pub fn summary(&self) -> LatencySummary {
        self.counts().summary()
    }
}

/// A copy of a histogram's state, taken for a snapshot (several can be merged into a total).
#[derive(Debug, Clone)]
pub(crate) struct HistogramCounts {
    buckets: Vec<u64>,
    sum_micros: u64,
    min_micros: u64,
    max_micros: u64,
}

impl HistogramCounts {
    /// An empty copy.
    pub(crate) fn empty() -> HistogramCounts {
        HistogramCounts {
            buckets: vec![0; BUCKETS],
            sum_micros: 0,
            min_micros: u64::MAX,
            max_micros: 0,
        }
    }

    /// Adds `other`'s samples.
    pub(crate) fn merge(&mut self, other: &HistogramCounts) {
        for (a, b) in self.buckets.iter_mut().zip(&other.buckets) {
            *a += b;
        }
        self.sum_micros = self.sum_micros.saturating_add(other.sum_micros);
        self.min_micros = self.min_micros.min(other.min_micros);
        self.max_micros = self.max_micros.max(other.max_micros);
    }

    /// The nearest-rank `p`-th percentile (µs): the midpoint of the bucket holding the sample
    /// of rank `ceil(n·p/100)`, clamped to the exact extremes so min ≤ p50 ≤ p95 ≤ p99 ≤ max.
    fn percentile(&self, count: u64, p: f64, (min, max): (u64, u64)) -> u64 {
        let rank = ((count as f64 * p / 100.0).ceil() as u64).clamp(1, count);
        let mut seen = 0;
        for (index, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, width) = bucket_range(index);
                return (low + width / 2).max(min).min(max);
            }
        }
        max
    }

    pub(crate) fn summary(&self) -> LatencySummary {
        // The bucket total, not a separate counter: a snapshot racing a sample stays consistent.
        let count: u64 = self.buckets.iter().sum();
        if count == 0 {
            return LatencySummary::default();
        }
        // A sample racing the copy may have moved one extreme but not yet its bucket.
        let min = self.min_micros.min(self.max_micros);
        let max = self.max_micros.max(min);
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count,
            mean_ms: Some(self.sum_micros as f64 / count as f64 / 1000.0),
            min_ms: Some(ms(min)),
            max_ms: Some(ms(max)),
            p50_ms: Some(ms(self.percentile(count, 50.0, (min, max)))),
            p95_ms: Some(ms(self.percentile(count, 95.0, (min, max)))),
            p99_ms: Some(ms(self.percentile(count, 99.0, (min, max)))),
        }
    }
}

/// What a latency histogram says, in milliseconds (microsecond precision). Empty → count 0 and
/// no values.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Mean duration.
    pub mean_ms: Option<f64>,
    /// Shortest duration (exact).
    pub min_ms: Option<f64>,
    /// Longest duration (exact).
    pub max_ms: Option<f64>,
    /// Median (bucket estimate).
    pub p50_ms: Option<f64>,
    /// 95th percentile (bucket estimate).
    pub p95_ms: Option<f64>,
    /// 99th percentile (bucket estimate).
    pub p99_ms: Option<f64>,
}

#[cfg(test)]
pub(crate) fn bucket_bounds(micros: u64) -> (u64, u64) {
    bucket_range(bucket_of(micros))
}
