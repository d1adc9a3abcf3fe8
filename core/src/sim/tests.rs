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
    let mut cancelled = 0;
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
    }
    assert!(cancelled > 100, "only {cancelled} cancellations");
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
