//! The in-process metrics aggregator (Tinkex F110): request counters and latency histograms per
//! endpoint, fed by every HTTP attempt a client makes.
//!
//! [`Metrics`] is cheap enough to stay on: one fixed slot per endpoint of the protocol table
//! (plus one for anything else), each made of atomics, so recording a request takes no lock and
//! allocates nothing. The clients feed it from the one place every attempt completes (the HTTP
//! stack wrapper of [`crate::client`]); the time comes in as a measured [`Duration`], the core
//! reads no clock.
//!
//! What counts as one request: one HTTP attempt, from handing the request to the HTTP stack
//! until its body has been read whole. It succeeded when the status was 2xx and the body
//! arrived; a non-2xx status, a transport error or an abandoned body is a failure. Retries and
//! long polls (`retrieve_future` answering 408) are therefore counted one by one, exactly as the
//! server sees them.
//!
//! [`Metrics::snapshot`] copies everything into a serde-serialisable [`MetricsSnapshot`];
//! [`Metrics::reset`] starts over. With the `metrics` cargo feature, every request is also
//! reported through the [`metrics`](https://docs.rs/metrics) facade as the counter
//! `tinker_requests_total{endpoint, outcome}` and the histogram
//! `tinker_request_duration_seconds{endpoint}`.

mod histogram;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

pub use histogram::{LatencyHistogram, LatencySummary};

use crate::endpoints::{EndpointId, ENDPOINTS};
use histogram::HistogramCounts;

/// The label of requests that are not in the endpoint table (downloads from signed URLs).
pub const OTHER_ENDPOINT: &str = "other";

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// 2xx status and the whole body.
    Success,
    /// Non-2xx status, transport error, or a body abandoned before its end.
    Failure,
}

/// One endpoint's counters and histogram.
#[derive(Debug, Default)]
struct EndpointStats {
    success: AtomicU64,
    failure: AtomicU64,
    latency: LatencyHistogram,
}

/// Request counters and latency histograms per endpoint, shared by every client of a
/// [`crate::client::ServiceClient`] (reach it with `service.metrics()`).
///
/// ```
/// use std::time::Duration;
/// use tinker_core::endpoints::EndpointId;
/// use tinker_core::metrics::{Metrics, RequestOutcome};
///
/// let metrics = Metrics::new();
/// metrics.record(Some(EndpointId::ForwardBackward), RequestOutcome::Success, Duration::from_millis(12));
/// metrics.record(Some(EndpointId::ForwardBackward), RequestOutcome::Failure, Duration::from_millis(30));
/// let snapshot = metrics.snapshot();
/// let fb = &snapshot.endpoints["forward_backward"];
/// assert_eq!((fb.total, fb.success, fb.failure), (2, 1, 1));
/// assert_eq!(fb.latency.max_ms, Some(30.0));
/// metrics.reset();
/// assert!(metrics.snapshot().endpoints.is_empty());
/// ```
#[derive(Debug)]
pub struct Metrics {
    /// Indexed by [`EndpointId`]; the last slot is [`OTHER_ENDPOINT`]. A slot is filled on its
    /// first request, so idle endpoints cost one pointer.
    slots: Box<[OnceLock<EndpointStats>]>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    /// An empty aggregator.
    pub fn new() -> Metrics {
        Metrics {
            slots: (0..=ENDPOINTS.len()).map(|_| OnceLock::new()).collect(),
        }
    }

    /// Records one request to `endpoint` (`None`: not a table endpoint) that took `elapsed`.
    pub fn record(&self, endpoint: Option<EndpointId>, outcome: RequestOutcome, elapsed: Duration) {
        let index = endpoint.map_or(ENDPOINTS.len(), |id| id as usize);
        let stats = self.slots[index].get_or_init(EndpointStats::default);
        match outcome {
            RequestOutcome::Success => stats.success.fetch_add(1, Ordering::Relaxed),
            RequestOutcome::Failure => stats.failure.fetch_add(1, Ordering::Relaxed),
        };
        stats.latency.record(elapsed);
        #[cfg(feature = "metrics")]
        facade::record(label(index), outcome, elapsed);
    }

    /// Everything recorded since creation or the last [`Metrics::reset`]. Endpoints without a
    /// request are left out.
    pub fn snapshot(&self) -> MetricsSnapshot {
        let mut endpoints = BTreeMap::new();
        let mut all = HistogramCounts::empty();
        let (mut success, mut failure) = (0, 0);
        for (index, slot) in self.slots.iter().enumerate() {
            let Some(stats) = slot.get() else { continue };
            let counts = stats.latency.counts();
            let s = stats.success.load(Ordering::Relaxed);
            let f = stats.failure.load(Ordering::Relaxed);
            if s + f == 0 {
                continue;
            }
            all.merge(&counts);
            success += s;
            failure += f;
            endpoints.insert(
                label(index).to_owned(),
                EndpointMetrics {
                    total: s + f,
                    success: s,
                    failure: f,
                    latency: counts.summary(),
                },
            );
        }
        MetricsSnapshot {
            total: EndpointMetrics {
                total: success + failure,
                success,
                failure,
                latency: all.summary(),
            },
            endpoints,
        }
    }

    /// Forgets everything recorded. A request completing while the reset runs may be half
    /// counted (its counter but not its latency, or the reverse).
    pub fn reset(&self) {
        for stats in self.slots.iter().filter_map(OnceLock::get) {
            stats.success.store(0, Ordering::Relaxed);
            stats.failure.store(0, Ordering::Relaxed);
            stats.latency.reset();
        }
    }
}

/// The label of slot `index`: the endpoint's path after `/api/v1/`, with its `{placeholders}`
/// (`forward_backward`, `training_runs/{training_run_id}`), or [`OTHER_ENDPOINT`].
fn label(index: usize) -> &'static str {
    ENDPOINTS.get(index).map_or(OTHER_ENDPOINT, |spec| {
        spec.path.strip_prefix("/api/v1/").unwrap_or(spec.path)
    })
}

/// One endpoint's requests (or all of them, in [`MetricsSnapshot::total`]).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EndpointMetrics {
    /// Requests completed (`success + failure`).
    pub total: u64,
    /// Requests answered 2xx with their whole body.
    pub success: u64,
    /// Requests that failed (non-2xx, transport error, abandoned body).
    pub failure: u64,
    /// Their durations, from handing the request over to the end of the body.
    pub latency: LatencySummary,
}

/// A copy of a [`Metrics`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MetricsSnapshot {
    /// Every request together.
    pub total: EndpointMetrics,
    /// Per endpoint label (the path after `/api/v1/`, e.g. `forward_backward`,
    /// `training_runs/{training_run_id}`, or `other`).
    pub endpoints: BTreeMap<String, EndpointMetrics>,
}

#[cfg(feature = "metrics")]
mod facade {
    use std::time::Duration;

    use super::RequestOutcome;

    pub(super) fn record(endpoint: &'static str, outcome: RequestOutcome, elapsed: Duration) {
        let outcome = match outcome {
            RequestOutcome::Success => "success",
            RequestOutcome::Failure => "failure",
        };
        ::metrics::counter!("tinker_requests_total", "endpoint" => endpoint, "outcome" => outcome)
            .increment(1);
        ::metrics::histogram!("tinker_request_duration_seconds", "endpoint" => endpoint)
            .record(elapsed.as_secs_f64());
    }
}
