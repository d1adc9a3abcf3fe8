//! Scenarios for the telemetry queue.

use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use super::*;
use crate::rng::Rng;
use crate::types::{Severity, TelemetryEventKind};

struct Fixture {
    t0: Instant,
    rng: Rng,
    q: TelemetryQueue,
}

impl Fixture {
    fn new(config: TelemetryConfig) -> Fixture {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let identity = TelemetryIdentity {
            platform: "Linux".into(),
            sdk_version: "0.1.0".into(),
            session_id: "sess-1".into(),
            process_uuid: "00000000-0000-4000-8000-000000000000".into(),
        };
        Fixture {
            t0,
            rng: Rng::from_seed(11),
            q: TelemetryQueue::new(config, identity, t0),
        }
    }
    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }
    fn info(&mut self, name: &str) -> bool {
        let kind = TelemetryEventKind::GenericEvent {
            event_name: name.into(),
            event_data: Default::default(),
        };
        self.q
            .record(kind, Severity::Info, SystemTime::UNIX_EPOCH, &mut self.rng)
    }
}

#[test]
fn a_periodic_flush_drains_the_queue_in_batches_of_100() {
    let mut f = Fixture::new(TelemetryConfig::default());
    for i in 0..250 {
        assert!(f.info(&format!("e{i}")));
    }
    assert_eq!(f.q.poll_flush(f.at(9)), None);
    assert_eq!(f.q.next_wake(f.at(9)), Some(f.at(10)));
    let mut sizes = vec![];
    while let Some(batch) = f.q.poll_flush(f.at(10)) {
        sizes.push(batch.body.events.len());
        assert_eq!(
            f.q.poll_flush(f.at(10)),
            None,
            "one batch in flight at a time"
        );
        f.q.on_batch_result(batch.id, true, f.at(10));
    }
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(f.q.stats().sent, 250);
    // Events are numbered in order and carry distinct ids.
    assert_eq!(f.q.stats().accepted, 250);
}

#[test]
fn an_error_event_flushes_at_once() {
    let mut f = Fixture::new(TelemetryConfig::default());
    f.info("quiet");
    let kind = TelemetryEventKind::UnhandledException {
        error_type: "Decode".into(),
        error_message: "bad reply".into(),
        traceback: None,
    };
    f.q.record(kind, Severity::Error, SystemTime::UNIX_EPOCH, &mut f.rng);
    assert_eq!(f.q.next_wake(f.at(1)), Some(f.at(1)));
    let batch = f.q.poll_flush(f.at(1)).expect("urgent flush");
    assert_eq!(batch.body.events.len(), 2);
    assert_eq!(batch.body.events[1].event_session_index, 1);
}

#[test]
fn the_queue_is_bounded_and_drops_are_counted() {
    let mut f = Fixture::new(TelemetryConfig {
        max_queued: 3,
        ..Default::default()
    });
    let accepted: Vec<bool> = (0..5).map(|i| f.info(&format!("e{i}"))).collect();
    assert_eq!(accepted, [true, true, true, false, false]);
    assert_eq!(f.q.stats().dropped_queue_full, 2);
    assert_eq!(f.q.queued(), 3);
}

#[test]
fn a_failed_batch_is_resent_a_bounded_number_of_times_then_dropped() {
    let mut f = Fixture::new(TelemetryConfig {
        max_batch_retries: 2,
        ..Default::default()
    });
    f.info("a");
    let first = f.q.poll_flush(f.at(10)).unwrap();
    f.q.on_batch_result(first.id, false, f.at(10));
    assert_eq!(f.q.poll_flush(f.at(10)), None, "waits the retry delay");
    assert_eq!(f.q.next_wake(f.at(10)), Some(f.at(11)));
    let again = f.q.poll_flush(f.at(11)).unwrap();
    assert_eq!(again, first, "the same events, same batch");
    f.q.on_batch_result(again.id, false, f.at(11));
    let third = f.q.poll_flush(f.at(12)).unwrap();
    f.q.on_batch_result(third.id, false, f.at(12));
    assert_eq!(f.q.stats().dropped_failed, 1);
    assert!(f.q.is_idle());
    // Default (SDK 0.38): no extra tries.
    let mut g = Fixture::new(TelemetryConfig::default());
    g.info("b");
    let b = g.q.poll_flush(g.at(10)).unwrap();
    g.q.on_batch_result(b.id, false, g.at(10));
    assert_eq!(g.q.stats().dropped_failed, 1);
}

#[test]
fn shutdown_sends_everything_fast_and_counts_what_missed_the_deadline() {
    let mut f = Fixture::new(TelemetryConfig::default());
    for i in 0..150 {
        f.info(&format!("e{i}"));
    }
    let deadline = f.at(3);
    f.q.begin_shutdown(deadline);
    let first =
        f.q.poll_flush(f.at(1))
            .expect("no waiting for the interval");
    f.q.on_batch_result(first.id, true, f.at(2));
    let _second = f.q.poll_flush(f.at(2)).expect("next batch at once");
    assert_eq!(f.q.next_wake(f.at(2)), Some(deadline));
    // The second POST hangs past the deadline: it counts as dropped.
    assert_eq!(f.q.poll_flush(deadline), None);
    assert_eq!(f.q.stats().sent, 100);
    assert_eq!(f.q.stats().dropped_at_shutdown, 50);
    assert!(f.q.is_finished());
    assert!(!f.info("too late"));
    assert_eq!(f.q.stats().dropped_at_shutdown, 51);
}

#[test]
fn credentials_never_reach_an_event() {
    let mut f = Fixture::new(TelemetryConfig::default());
    let data = json!({"request_headers": {"X-API-Key": "tml-abc", "accept": "json"}, "Authorization": "Bearer x"});
    let kind = TelemetryEventKind::GenericEvent {
        event_name: "APIFuture.result_async.api_status_error".into(),
        event_data: data.as_object().unwrap().clone(),
    };
    f.q.record(kind, Severity::Warning, SystemTime::UNIX_EPOCH, &mut f.rng);
    let kind = TelemetryEventKind::UnhandledException {
        error_type: "Status".into(),
        error_message: "key tml-abc rejected".into(),
        traceback: Some("at tml-abc".into()),
    };
    f.q.record(kind, Severity::Error, SystemTime::UNIX_EPOCH, &mut f.rng);
    let batch = f.q.poll_flush(f.at(0)).unwrap();
    let text = serde_json::to_string(&batch.body).unwrap();
    assert!(
        !text.contains("tml-abc") && !text.contains("Bearer x"),
        "{text}"
    );
    assert!(text.contains("\"accept\":\"json\""), "{text}");
}

#[test]
fn the_same_seed_gives_the_same_batches() {
    let run = || {
        let mut f = Fixture::new(TelemetryConfig::default());
        f.info("a");
        f.info("b");
        f.q.poll_flush(f.at(10)).unwrap()
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b);
    assert_ne!(a.body.events[0].event_id, a.body.events[1].event_id);
}
