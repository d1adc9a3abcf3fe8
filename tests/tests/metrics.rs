//! Request metrics (Tinkex F110) seen from a user's SFT loop: after the loop, the service
//! client's metrics snapshot agrees, endpoint by endpoint, with what the local server recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit,
};

use tinker_core::client::ClientOptions;
use tinker_core::endpoints::ENDPOINTS;
use tinker_core::metrics::MetricsSnapshot;
use tinker_core::settings::Settings;
use tinker_core::types::{AdamParams, FinishReason, LoraConfig, LossFn};
use tinker_testkit::scenarios::{batch, BASE_MODEL};
use tinker_testkit::server::Exchange;
use tinker_testkit::{LocalServer, LocalServerConfig};

/// The endpoint template a recorded request was sent to (the metrics label): same method, same
/// number of segments, literal segments equal; the template with the most literal segments wins.
fn template_of(exchange: &Exchange) -> String {
    let segments: Vec<&str> = exchange.endpoint().split('/').collect();
    ENDPOINTS
        .iter()
        .filter(|spec| spec.method.as_str().eq_ignore_ascii_case(&exchange.method))
        .filter_map(|spec| {
            let label = spec.path.strip_prefix("/api/v1/")?;
            let parts: Vec<&str> = label.split('/').collect();
            if parts.len() != segments.len() {
                return None;
            }
            let mut literal = 0;
            for (p, s) in parts.iter().zip(&segments) {
                if p.starts_with('{') {
                    continue;
                }
                if p != s {
                    return None;
                }
                literal += 1;
            }
            Some((literal, label))
        })
        .max_by_key(|(literal, _)| *literal)
        .map_or_else(|| "other".to_owned(), |(_, label)| label.to_owned())
}

/// (total, success) per endpoint, as the server saw them.
fn server_counts(recording: &[Exchange]) -> BTreeMap<String, (u64, u64)> {
    let mut counts = BTreeMap::new();
    for e in recording {
        let c = counts.entry(template_of(e)).or_insert((0, 0));
        c.0 += 1;
        if (200..300).contains(&e.resp_status) {
            c.1 += 1;
        }
    }
    counts
}

fn client_counts(snapshot: &MetricsSnapshot) -> BTreeMap<String, (u64, u64)> {
    snapshot
        .endpoints
        .iter()
        .map(|(label, m)| (label.clone(), (m.total, m.success)))
        .collect()
}

/// A minimal `metrics` recorder: counter values and histogram sample counts by rendered key
/// (`name{label=value,...}`).
#[derive(Default)]
struct FacadeRecorder {
    values: Arc<Mutex<BTreeMap<String, u64>>>,
}

struct Cell {
    key: String,
    values: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        *self
            .values
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default() += value;
    }
    fn absolute(&self, value: u64) {
        self.values.lock().unwrap().insert(self.key.clone(), value);
    }
}

impl HistogramFn for Cell {
    fn record(&self, seconds: f64) {
        assert!(seconds >= 0.0);
        *self
            .values
            .lock()
            .unwrap()
            .entry(self.key.clone())
            .or_default() += 1;
    }
}

impl FacadeRecorder {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        Arc::new(Cell {
            key: format!("{}{{{}}}", key.name(), labels.join(",")),
            values: self.values.clone(),
        })
    }
}

impl metrics::Recorder for FacadeRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

/// The facade's values, once the recorder is installed for this test binary.
fn facade() -> &'static Arc<Mutex<BTreeMap<String, u64>>> {
    static VALUES: OnceLock<Arc<Mutex<BTreeMap<String, u64>>>> = OnceLock::new();
    VALUES.get_or_init(|| {
        let recorder = FacadeRecorder::default();
        let values = recorder.values.clone();
        metrics::set_global_recorder(recorder).expect("the only recorder of this binary");
        values
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sft_loop_is_counted_per_endpoint_exactly_as_the_server_recorded_it() {
    let facade = facade();
    let server = LocalServer::start(LocalServerConfig {
        // Short long polls: some `retrieve_future` polls answer 408 and count as failures.
        long_poll_hold_ms: 20,
        ..LocalServerConfig::default()
    })
    .await
    .unwrap();
    let settings = Settings::default()
        .with_base_url(server.url())
        .with_api_key(server.api_key())
        .unwrap();
    let service =
        tinker_tokio::connect_with(settings, ClientOptions::default().with_seed(7)).unwrap();

    let training = service
        .create_lora_training_client(BASE_MODEL, LoraConfig::new(8))
        .await
        .unwrap();
    let steps = 6;
    for step in 0..steps {
        let fb = training
            .forward_backward(batch(step, 8), LossFn::CrossEntropy)
            .await
            .unwrap();
        let opt = training
            .optim_step(AdamParams::with_learning_rate(0.05))
            .await
            .unwrap();
        fb.result().await.unwrap();
        opt.result().await.unwrap();
    }
    // Closing waits for the housekeeper, so every request the client made has completed.
    service.close(FinishReason::Success).await.unwrap();

    let snapshot = service.metrics().snapshot();
    let recorded = server.recording();
    assert_eq!(client_counts(&snapshot), server_counts(&recorded));
    assert_eq!(snapshot.total.total, recorded.len() as u64);

    let fb = &snapshot.endpoints["forward_backward"];
    assert_eq!(
        (fb.total, fb.success, fb.failure),
        (steps as u64, steps as u64, 0)
    );
    assert_eq!(snapshot.endpoints["optim_step"].success, steps as u64);
    let every = snapshot.endpoints.iter().map(|(l, m)| (l.as_str(), m));
    for (label, m) in every.chain(std::iter::once(("(all)", &snapshot.total))) {
        let l = &m.latency;
        assert_eq!(l.count, m.total, "{label}: one latency sample per request");
        let (min, p50, p95, p99, max) = (
            l.min_ms.unwrap(),
            l.p50_ms.unwrap(),
            l.p95_ms.unwrap(),
            l.p99_ms.unwrap(),
            l.max_ms.unwrap(),
        );
        assert!(
            0.0 < min && min <= p50 && p50 <= p95 && p95 <= p99 && p99 <= max,
            "{label}: {l:?}"
        );
        let mean = l.mean_ms.unwrap();
        assert!(min <= mean && mean <= max, "{label}: {l:?}");
    }

    // The same numbers went out through the `metrics` facade (feature `metrics`).
    let reported = facade.lock().unwrap().clone();
    for (label, m) in &snapshot.endpoints {
        let count = |outcome: &str| {
            let key = format!("tinker_requests_total{{endpoint={label},outcome={outcome}}}");
            reported.get(&key).copied().unwrap_or(0)
        };
        assert_eq!(
            (count("success"), count("failure")),
            (m.success, m.failure),
            "{label}"
        );
        let samples = format!("tinker_request_duration_seconds{{endpoint={label}}}");
        assert_eq!(reported.get(&samples).copied(), Some(m.total), "{label}");
    }

    service.metrics().reset();
    assert_eq!(service.metrics().snapshot(), MetricsSnapshot::default());
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_switched_off() {
    let server = LocalServer::start(LocalServerConfig::default())
        .await
        .unwrap();
    let settings = Settings::default()
        .with_base_url(server.url())
        .with_api_key(server.api_key())
        .unwrap();
    let options = ClientOptions::default().with_seed(7).with_metrics(false);
    let service = tinker_tokio::connect_with(settings, options).unwrap();
    service.get_server_capabilities().await.unwrap();
    assert!(!server.recording().is_empty());
    assert_eq!(service.metrics().snapshot(), MetricsSnapshot::default());
    service.close(FinishReason::Success).await.unwrap();
    server.shutdown().await;
}
