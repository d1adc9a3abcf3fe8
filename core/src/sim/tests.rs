//! The simulator's own scenarios: thousands of calls under seeded faults and random
//! cancellation, every invariant checked on every run.

use super::{Sim, SimConfig};
use crate::sim::FaultConfig;

#[allow(clippy::disallowed_methods)]
fn start() -> std::time::Instant {
    std::time::Instant::now()
}

#[test]
fn thousands_of_calls_under_faults_keep_every_invariant() {
    let t0 = start();
    let (mut calls, mut failed, mut requests) = (0, 0, 0);
    for seed in 0..150 {
        let report = Sim::run(
            SimConfig {
                seed,
                ..SimConfig::default()
            },
            t0,
        );
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:#?}",
            report.violations
        );
        calls += report.succeeded + report.failed + report.cancelled;
        failed += report.failed;
        requests += report.trace.len();
    }
    assert!(calls >= 2_400, "{calls} calls");
    // The faults were real: some calls failed for good, and retries multiplied the traffic.
    assert!(failed > 0, "no call failed");

    assert!(
        requests > 3 * calls,
        "{requests} requests for {calls} calls"
    );
}

#[test]
fn random_cancellation_never_blocks_later_calls_nor_leaks_budgets() {
    let t0 = start();
    let (mut cancelled, mut detached) = (0, 0);
    for seed in 0..100 {
        let config = SimConfig {
            seed,
            cancel_probability: 0.05,
            ..SimConfig::default()
        };
        let report = Sim::run(config, t0);
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:#?}",
            report.violations
        );
        cancelled += report.cancelled;
        detached += report.detached;
    }
    assert!(cancelled > 100, "only {cancelled} cancellations");
    // Some were given up mid-turn: their chunks were sent by the background, and the seq-id
    // check (no hole on any run) held all the same.
    assert!(detached > 0, "no call was given up mid-turn");
}

#[test]
fn the_same_seed_gives_the_same_trace_and_another_seed_another() {
    let t0 = start();
    let config = SimConfig {
        seed: 9,
        cancel_probability: 0.01,
        ..SimConfig::default()
    };
    let a = Sim::run(config, t0);
    let b = Sim::run(config, t0);
    assert!(!a.trace.is_empty());
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.elapsed, b.elapsed);
    let c = Sim::run(SimConfig { seed: 10, ..config }, t0);
    assert_ne!(a.trace, c.trace);
}

#[test]
fn a_clean_server_completes_every_call() {
    let report = Sim::run(
        SimConfig {
            seed: 1,
            cancel_probability: 0.0,
            deadline_probability: 0.0,
            faults: FaultConfig::none(),
            ..SimConfig::default()
        },
        start(),
    );
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert_eq!(report.failed, 0);
    assert_eq!(report.succeeded, 2 * 6 + 4 + 2);
}

#[test]
fn samples_waiting_on_the_retrieve_futures_poller_keep_every_invariant() {
    let t0 = start();
    let (mut fetched, mut cancelled) = (0, 0);
    for seed in 0..80 {
        let report = Sim::run(
            SimConfig {
                seed,
                samples: 12,
                cancel_probability: 0.02,
                retrieve_futures: true,
                ..SimConfig::default()
            },
            t0,
        );
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:#?}",
            report.violations
        );
        // The samples were told of their completion by the session poller: none long-polled
        // its own future (a sample's `retrieve_future` only fetches a reported payload).
        let sample_lines = || report.trace.iter().filter(|r| r.starts_with("sample"));
        assert!(
            sample_lines().any(|r| r.contains("/retrieve_futures ")),
            "seed {seed}"
        );
        let fetches: Vec<&String> = sample_lines()
            .filter(|r| r.contains("/retrieve_future "))
            .collect();
        assert!(
            fetches
                .iter()
                .all(|r| r.contains(r#""allow_metadata_only":false"#)),
            "seed {seed}: a sample long-polled its own future: {fetches:#?}"
        );
        fetched += fetches.len();
        cancelled += report.cancelled;
    }
    assert!(fetched > 0, "no payload fetched");
    assert!(
        cancelled > 0,
        "no cancellation exercised the lease hand-over"
    );
}

#[test]
fn telemetry_reaches_the_server_or_is_counted_dropped_under_faults() {
    let t0 = start();
    let (mut accepted, mut failed) = (0, 0);
    for seed in 0..60 {
        let report = Sim::run(
            SimConfig {
                seed,
                ..SimConfig::default()
            },
            t0,
        );
        // The conservation check itself runs inside every simulation.
        assert!(
            report.violations.is_empty(),
            "seed {seed}: {:#?}",
            report.violations
        );
        let batches = report
            .trace
            .iter()
            .filter(|l| l.starts_with("telemetry batch"));
        for line in batches {
            if line.ends_with("accepted") {
                accepted += 1;
            } else {
                failed += 1;
            }
        }
    }
    // Both outcomes happened, so both sides of the accounting were exercised.
    assert!(
        accepted > 0 && failed > 0,
        "{accepted} accepted, {failed} failed"
    );
}

#[test]
fn on_a_clean_server_every_sample_completes_through_the_session_poller() {
    let report = Sim::run(
        SimConfig {
            seed: 4,
            samples: 30,
            cancel_probability: 0.0,
            deadline_probability: 0.0,
            faults: FaultConfig::none(),
            retrieve_futures: true,
            ..SimConfig::default()
        },
        start(),
    );
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
    assert_eq!(report.failed, 0);
    assert_eq!(report.succeeded, 2 * 6 + 30 + 2);
    let fetches = report
        .trace
        .iter()
        .filter(|r| r.starts_with("sample") && r.contains("/retrieve_future "))
        .count();
    let polls = report
        .trace
        .iter()
        .filter(|r| r.contains("/retrieve_futures "))
        .count();
    // One payload fetch per sample, and fewer session polls than samples: they were shared.
    assert_eq!(fetches, 30);
    assert!(polls < 30, "{polls} session polls for 30 samples");
}
