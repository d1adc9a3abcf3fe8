//! The aggregator: what a snapshot says after a known series of requests, and how close its
//! percentiles are to the exact ones.

use std::time::Duration;

use proptest::prelude::*;

use super::histogram::bucket_bounds;
use super::*;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[test]
fn a_training_step_is_counted_per_endpoint_with_its_outcome() {
    let m = Metrics::new();
    m.record(
        Some(EndpointId::ForwardBackward),
        RequestOutcome::Success,
        ms(40),
    );
    m.record(Some(EndpointId::OptimStep), RequestOutcome::Success, ms(5));
    // Two long polls that timed out (408) before the one that brought the result.
    for _ in 0..2 {
        m.record(
            Some(EndpointId::RetrieveFuture),
            RequestOutcome::Failure,
            ms(100),
        );
    }
    m.record(
        Some(EndpointId::RetrieveFuture),
        RequestOutcome::Success,
        ms(10),
    );

    let s = m.snapshot();
    assert_eq!(
        s.endpoints.keys().collect::<Vec<_>>(),
        ["forward_backward", "optim_step", "retrieve_future"]
    );
    let poll = &s.endpoints["retrieve_future"];
    assert_eq!((poll.total, poll.success, poll.failure), (3, 1, 2));
    assert_eq!(poll.latency.count, 3);
    assert_eq!(poll.latency.min_ms, Some(10.0));
    assert_eq!(poll.latency.max_ms, Some(100.0));
    assert_eq!(poll.latency.mean_ms, Some(70.0));
    assert_eq!((s.total.total, s.total.success, s.total.failure), (5, 3, 2));
    assert_eq!(s.total.latency.count, 5);
    assert_eq!(s.total.latency.min_ms, Some(5.0));
    assert_eq!(s.total.latency.max_ms, Some(100.0));
}

#[test]
fn requests_outside_the_table_and_templated_paths_have_stable_labels() {
    let m = Metrics::new();
    m.record(None, RequestOutcome::Success, ms(1));
    m.record(
        Some(EndpointId::GetTrainingRun),
        RequestOutcome::Success,
        ms(1),
    );
    let s = m.snapshot();
    assert!(s.endpoints.contains_key(OTHER_ENDPOINT));
    assert!(
        s.endpoints.contains_key("training_runs/{training_run_id}"),
        "{:?}",
        s.endpoints.keys()
    );
}

#[test]
fn reset_forgets_everything_and_recording_resumes() {
    let m = Metrics::new();
    m.record(Some(EndpointId::OptimStep), RequestOutcome::Failure, ms(9));
    m.reset();
    assert_eq!(m.snapshot(), MetricsSnapshot::default());
    m.record(Some(EndpointId::OptimStep), RequestOutcome::Success, ms(3));
    let s = m.snapshot();
    let opt = &s.endpoints["optim_step"];
    assert_eq!((opt.total, opt.success, opt.failure), (1, 1, 0));
    assert_eq!(opt.latency.min_ms, Some(3.0), "the old minimum is gone");
    assert_eq!(opt.latency.max_ms, Some(3.0), "the old maximum is gone");
}

#[test]
fn an_empty_histogram_reports_no_values() {
    let s = LatencyHistogram::new().summary();
    assert_eq!(s, LatencySummary::default());
    assert_eq!(s.p99_ms, None);
}

#[test]
fn the_snapshot_serialises_to_plain_json() {
    let m = Metrics::new();
    m.record(Some(EndpointId::OptimStep), RequestOutcome::Success, ms(2));
    let json = serde_json::to_value(m.snapshot()).unwrap();
    assert_eq!(json["endpoints"]["optim_step"]["total"], 1);
    assert_eq!(json["endpoints"]["optim_step"]["latency"]["max_ms"], 2.0);
    let back: MetricsSnapshot = serde_json::from_value(json).unwrap();
    assert_eq!(back, m.snapshot());
}

#[test]
fn buckets_tile_the_range_and_are_at_most_a_sixteenth_wide() {
    let mut next = 0;
    let mut v = 0u64;
    while v < 1 << 40 {
        let (low, width) = bucket_bounds(v);
        assert_eq!(low, next, "bucket of {v} starts where the previous ended");
        assert!(width == 1 || width * 16 <= low, "{v}: [{low}, +{width})");
        assert_eq!(bucket_bounds(low + width - 1), (low, width));
        next = low + width;
        v = next;
    }
}

/// The exact nearest-rank percentile of `samples` (µs).
fn exact(samples: &[u64], p: f64) -> u64 {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((sorted.len() as f64 * p / 100.0).ceil() as usize).max(1);
    sorted[rank - 1]
}

proptest! {
    #[test]
    fn percentiles_are_ordered_and_within_the_bucket_error(
        samples in proptest::collection::vec(0u64..5_000_000_000, 1..300)
    ) {
        let h = LatencyHistogram::new();
        for &s in &samples {
            h.record(Duration::from_micros(s));
        }
        let s = h.summary();
        prop_assert_eq!(s.count, samples.len() as u64);
        let (min, max) = (s.min_ms.unwrap(), s.max_ms.unwrap());
        let (p50, p95, p99) = (s.p50_ms.unwrap(), s.p95_ms.unwrap(), s.p99_ms.unwrap());
        prop_assert!(min <= p50 && p50 <= p95 && p95 <= p99 && p99 <= max, "{:?}", s);
        prop_assert_eq!(min, *samples.iter().min().unwrap() as f64 / 1000.0);
        prop_assert_eq!(max, *samples.iter().max().unwrap() as f64 / 1000.0);
        for (p, got) in [(50.0, p50), (95.0, p95), (99.0, p99)] {
            let want = exact(&samples, p) as f64 / 1000.0;
            // Half a bucket (1/32 of the value) plus the µs granularity of small buckets.
            prop_assert!((got - want).abs() <= want / 32.0 + 0.001, "p{}: {} vs {}", p, got, want);
        }
    }
}
