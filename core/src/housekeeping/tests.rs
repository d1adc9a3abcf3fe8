//! Scenarios for the housekeeper, on a virtual clock.

use std::time::{Duration, Instant, SystemTime};

use super::*;
use crate::rng::Rng;
use crate::telemetry::{TelemetryConfig, TelemetryIdentity, TelemetryQueue};
use crate::types::{Severity, TelemetryEventKind};

fn clock() -> (Instant, impl Fn(u64) -> Instant) {
    #[allow(clippy::disallowed_methods)]
    let t0 = Instant::now();
    (t0, move |s| t0 + Duration::from_secs(s))
}

fn heartbeats_only() -> HousekeeperConfig {
    HousekeeperConfig {
        config_refresh: false,
        ..Default::default()
    }
}

fn queue(t0: Instant) -> TelemetryQueue {
    let identity = TelemetryIdentity {
        platform: "Linux".into(),
        sdk_version: "0.1.0".into(),
        session_id: "sess-1".into(),
        process_uuid: "p".into(),
    };
    TelemetryQueue::new(TelemetryConfig::default(), identity, t0)
}

#[test]
fn heartbeats_sleep_first_then_follow_each_result_by_ten_seconds() {
    let (t0, at) = clock();
    let mut hk = Housekeeper::new(heartbeats_only(), None, t0);
    assert_eq!(hk.poll(at(0)), HousekeeperAction::WaitUntil(at(10)));
    assert_eq!(hk.poll(at(10)), HousekeeperAction::SendHeartbeat);
    // While it is in flight no second heartbeat is sent; the next timed duty is the overdue check.
    assert_eq!(
        hk.poll(at(15)),
        HousekeeperAction::WaitUntil(at(120) + Duration::from_nanos(1))
    );
    hk.on_heartbeat_result(HeartbeatOutcome::Ok, at(12));
    assert_eq!(hk.poll(at(12)), HousekeeperAction::WaitUntil(at(22)));
}

#[test]
fn after_120_s_without_success_it_warns_once_until_a_success() {
    let (t0, at) = clock();
    let mut hk = Housekeeper::new(heartbeats_only(), None, t0);
    // The server is down for five minutes: every heartbeat fails at once.
    let warnings = run_failing(&mut hk, at(0), at(300));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let (when, HousekeeperWarning::HeartbeatOverdue { since_success }) = warnings[0];
    assert!(when > at(120) && when <= at(121), "{:?}", when - t0);
    assert!(since_success > Duration::from_secs(120));
    // A success re-arms the warning: the next outage warns again, once.
    hk.on_heartbeat_result(HeartbeatOutcome::Ok, at(300));
    let warnings = run_failing(&mut hk, at(300), at(700));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].0 > at(420) && warnings[0].0 <= at(421));
}

/// Drives the housekeeper from `from` to `until` with every heartbeat failing; returns the
/// warnings and when they came.
fn run_failing(
    hk: &mut Housekeeper,
    from: Instant,
    until: Instant,
) -> Vec<(Instant, HousekeeperWarning)> {
    let mut warnings = vec![];
    let mut now = from;
    while now < until {
        match hk.poll(now) {
            HousekeeperAction::SendHeartbeat => {
                hk.on_heartbeat_result(HeartbeatOutcome::Failed, now)
            }
            HousekeeperAction::LogWarning(w) => warnings.push((now, w)),
            HousekeeperAction::WaitUntil(t) => now = t,
            other => panic!("{other:?}"),
        }
    }
    warnings
}

#[test]
fn a_410_stops_heartbeats_and_with_nothing_else_to_do_the_housekeeper_stops() {
    let (t0, at) = clock();
    let mut hk = Housekeeper::new(heartbeats_only(), None, t0);
    assert_eq!(hk.poll(at(10)), HousekeeperAction::SendHeartbeat);
    hk.on_heartbeat_result(HeartbeatOutcome::SessionGone, at(10));
    assert!(!hk.heartbeat_active());
    assert_eq!(hk.poll(at(500)), HousekeeperAction::Stopped);
}

#[test]
fn config_refresh_follows_the_servers_interval_with_a_ten_second_floor() {
    let (t0, at) = clock();
    let config = HousekeeperConfig {
        heartbeat: false,
        ..Default::default()
    };
    let mut hk = Housekeeper::new(config, None, t0);
    assert_eq!(hk.poll(at(0)), HousekeeperAction::WaitUntil(at(300)));
    assert_eq!(hk.poll(at(300)), HousekeeperAction::RefreshConfig);
    hk.on_config_result(Ok(Some(Duration::from_secs(2))), at(301));
    assert_eq!(hk.config_refresh_interval(), Duration::from_secs(10));
    assert_eq!(hk.poll(at(301)), HousekeeperAction::WaitUntil(at(311)));
    assert_eq!(hk.poll(at(311)), HousekeeperAction::RefreshConfig);
    hk.on_config_result(Err(()), at(312));
    assert_eq!(
        hk.config_refresh_interval(),
        Duration::from_secs(10),
        "failure keeps the last good"
    );
    assert_eq!(hk.poll(at(312)), HousekeeperAction::WaitUntil(at(322)));
}

#[test]
fn telemetry_is_flushed_on_schedule_and_shutdown_drains_it_then_stops() {
    let (t0, at) = clock();
    let mut hk = Housekeeper::new(HousekeeperConfig::default(), Some(queue(t0)), t0);
    let mut rng = Rng::from_seed(5);
    let tq = hk.telemetry_mut().unwrap();
    tq.record(
        TelemetryEventKind::SessionStart,
        Severity::Info,
        SystemTime::UNIX_EPOCH,
        &mut rng,
    );
    // At 10 s both the heartbeat and the telemetry flush are due.
    assert_eq!(hk.poll(at(10)), HousekeeperAction::SendHeartbeat);
    let HousekeeperAction::FlushTelemetry(batch) = hk.poll(at(10)) else {
        panic!()
    };
    hk.on_telemetry_result(batch.id, true, at(10));
    hk.on_heartbeat_result(HeartbeatOutcome::Ok, at(10));
    assert_eq!(hk.poll(at(10)), HousekeeperAction::WaitUntil(at(20)));

    hk.telemetry_mut().unwrap().record(
        TelemetryEventKind::SessionEnd {
            duration: Some("0:00:11".into()),
        },
        Severity::Info,
        SystemTime::UNIX_EPOCH,
        &mut rng,
    );
    hk.shutdown(at(14));
    let HousekeeperAction::FlushTelemetry(last) = hk.poll(at(11)) else {
        panic!()
    };
    assert_eq!(
        hk.poll(at(11)),
        HousekeeperAction::WaitUntil(at(14)),
        "no heartbeats during shutdown"
    );
    hk.on_telemetry_result(last.id, true, at(12));
    assert_eq!(hk.poll(at(12)), HousekeeperAction::Stopped);
    assert_eq!(hk.telemetry().unwrap().stats().sent, 2);
}

#[test]
fn the_same_inputs_give_the_same_trace() {
    let run = || {
        let (t0, _) = clock();
        let mut hk = Housekeeper::new(HousekeeperConfig::default(), Some(queue(t0)), t0);
        let mut rng = Rng::from_seed(9);
        let mut trace = vec![];
        let mut now = t0;
        for step in 0..60 {
            if step % 7 == 0 {
                hk.telemetry_mut().unwrap().record(
                    TelemetryEventKind::SessionStart,
                    Severity::Info,
                    SystemTime::UNIX_EPOCH,
                    &mut rng,
                );
            }
            let action = hk.poll(now);
            match &action {
                HousekeeperAction::SendHeartbeat => hk.on_heartbeat_result(
                    if step % 3 == 0 {
                        HeartbeatOutcome::Failed
                    } else {
                        HeartbeatOutcome::Ok
                    },
                    now,
                ),
                HousekeeperAction::RefreshConfig => hk.on_config_result(Ok(None), now),
                HousekeeperAction::FlushTelemetry(b) => hk.on_telemetry_result(b.id, true, now),
                HousekeeperAction::WaitUntil(t) => now = *t,
                _ => {}
            }
            trace.push(format!(
                "{:?} {:?}",
                now - t0,
                std::mem::discriminant(&action)
            ));
            if let HousekeeperAction::FlushTelemetry(b) = action {
                trace.push(serde_json::to_string(&b.body).unwrap());
            }
        }
        trace
    };
    assert_eq!(run(), run());
}
