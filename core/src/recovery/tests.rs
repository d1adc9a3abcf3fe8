//! The recovery machine, stage by stage: each test feeds a story of polls and restore outcomes
//! and checks the outputs in order.

use std::time::{Duration, Instant};

use super::*;
use crate::types::TrainingRun;

const S: Duration = Duration::from_secs(1);

/// An arbitrary instant the stories start from (the machine never reads the clock itself).
fn origin() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

fn run(id: &str, corrupted: bool, checkpoint: Option<&str>) -> TrainingRun {
    let checkpoint = checkpoint.map(|p| {
        serde_json::json!({
            "checkpoint_id": "ckpt", "checkpoint_type": "training",
            "time": "2025-01-01T00:00:00Z", "tinker_path": p,
        })
    });
    serde_json::from_value(serde_json::json!({
        "training_run_id": id, "base_model": "m", "model_owner": "tml:org_user:u",
        "is_lora": true, "last_request_time": "2025-01-01T00:00:00Z",
        "corrupted": corrupted, "last_checkpoint": checkpoint,
    }))
    .unwrap()
}

fn policy() -> RecoveryPolicy {
    RecoveryPolicy::enabled()
        .with_poll_interval(10 * S)
        .with_backoff(5 * S, 60 * S)
}

/// Every output until the machine waits, and the wait.
fn drain(m: &mut RecoveryMachine, now: Instant) -> (Vec<RecoveryOutput>, Option<Instant>) {
    let mut outs = Vec::new();
    loop {
        match m.poll_output(now) {
            RecoveryOutput::Wait { until } => return (outs, until),
            o => outs.push(o),
        }
    }
}

fn stages(outs: &[RecoveryOutput]) -> Vec<String> {
    outs.iter()
        .map(|o| match o {
            RecoveryOutput::Event(e) => e.stage().to_owned(),
            RecoveryOutput::FetchRun { run_id } => format!("fetch {run_id}"),
            RecoveryOutput::Restore {
                run_id, checkpoint, ..
            } => format!("restore {run_id} from {checkpoint}"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn the_policy_is_off_by_default_with_tinkex_defaults() {
    let p = RecoveryPolicy::default();
    assert!(!p.enabled);
    assert_eq!(p.max_attempts, 3);
    assert_eq!(p.poll_interval, 30 * S);
    assert!(p.restore_optimizer);
    assert_eq!(p.max_concurrent, 1);
    let waits: Vec<_> = (1..=6).map(|a| p.backoff_after(a).as_secs()).collect();
    assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
}

#[test]
fn a_disabled_policy_refuses_to_watch() {
    let mut m = RecoveryMachine::new(RecoveryPolicy::default()).unwrap();
    let err = m.watch("r", origin()).unwrap_err();
    assert!(err.to_string().contains("policy.enabled"), "{err}");
    assert!(m.recover("r", None).is_err());
}

#[test]
fn unusable_policies_are_rejected_naming_the_field() {
    for (policy, field) in [
        (policy().with_max_attempts(0), "policy.max_attempts"),
        (policy().with_max_concurrent(0), "policy.max_concurrent"),
        (
            policy().with_poll_interval(Duration::ZERO),
            "policy.poll_interval",
        ),
        (policy().with_backoff(10 * S, S), "policy.max_backoff"),
        (
            policy().with_checkpoint(CheckpointStrategy::Path("/tmp/x".into())),
            "policy.checkpoint",
        ),
    ] {
        let err = RecoveryMachine::new(policy).unwrap_err();
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
}

#[test]
fn a_healthy_run_is_polled_every_interval_and_nothing_else_happens() {
    let t0 = origin();
    let mut m = RecoveryMachine::new(policy()).unwrap();
    m.watch("r1", t0).unwrap();
    assert_eq!(drain(&mut m, t0), (vec![], Some(t0 + 10 * S)));
    let (outs, until) = drain(&mut m, t0 + 10 * S);
    assert_eq!(stages(&outs), ["fetch r1"]);
    assert_eq!(until, Some(t0 + 20 * S));
    // No second fetch while the first is out, even when the next poll is due.
    assert_eq!(drain(&mut m, t0 + 20 * S).0, vec![]);
    m.on_run("r1", Ok(&run("r1", false, None)), t0 + 21 * S);
    assert_eq!(drain(&mut m, t0 + 21 * S).0, vec![]);
    assert_eq!(stages(&drain(&mut m, t0 + 30 * S).0), ["fetch r1"]);
}

#[test]
fn a_failed_poll_is_reported_and_the_run_stays_watched() {
    let t0 = origin();
    let mut m = RecoveryMachine::new(policy()).unwrap();
    m.watch("r1", t0).unwrap();
    let _ = drain(&mut m, t0 + 10 * S);
    m.on_run("r1", Err("503".into()), t0 + 10 * S);
    let (outs, until) = drain(&mut m, t0 + 10 * S);
    assert_eq!(stages(&outs), ["poll_failed"]);
    assert_eq!(until, Some(t0 + 20 * S));
    assert_eq!(stages(&drain(&mut m, t0 + 20 * S).0), ["fetch r1"]);
}

#[test]
fn a_corrupted_run_is_restored_from_its_latest_checkpoint_with_optimizer() {
    let t0 = origin();
    let mut m = RecoveryMachine::new(policy()).unwrap();
    m.watch("r1", t0).unwrap();
    let _ = drain(&mut m, t0 + 10 * S);
    m.on_run(
        "r1",
        Ok(&run("r1", true, Some("tinker://r1/weights/s10"))),
        t0 + 11 * S,
    );
    let (outs, until) = drain(&mut m, t0 + 11 * S);
    assert_eq!(
        stages(&outs),
        [
            "detected",
            "started",
            "checkpoint_selected",
            "restore r1 from tinker://r1/weights/s10"
        ]
    );
    assert!(matches!(
        &outs[3],
        RecoveryOutput::Restore {
            attempt: 1,
            with_optimizer: true,
            ..
        }
    ));
    assert_eq!(until, None, "nothing is watched while r1 recovers");
    m.on_restored("r1", 1, Ok("r2".into()), t0 + 12 * S);
    let (outs, until) = drain(&mut m, t0 + 12 * S);
    assert_eq!(stages(&outs), ["client_created", "completed"]);
    assert_eq!(
        outs[1],
        RecoveryOutput::Event(RecoveryEvent::Completed {
            run_id: "r1".into(),
            attempt: 1,
            new_run_id: "r2".into(),
            checkpoint: "tinker://r1/weights/s10".into(),
        })
    );
    assert_eq!(until, None);
    assert_eq!(m.runs().count(), 0, "a recovered run is no longer watched");
}

#[test]
fn failures_back_off_doubling_then_exhaust_after_max_attempts() {
    let t0 = origin();
    let mut m = RecoveryMachine::new(policy().with_restore_optimizer(false)).unwrap();
    m.recover("r1", Some("tinker://r1/weights/s10".into()))
        .unwrap();
    let (outs, _) = drain(&mut m, t0);
    assert!(matches!(
        outs.last(),
        Some(RecoveryOutput::Restore {
            attempt: 1,
            with_optimizer: false,
            ..
        })
    ));
    assert!(m.recover("r1", None).is_err(), "already pending");

    m.on_restored("r1", 1, Err("checkpoint unreadable".into()), t0);
    let (outs, until) = drain(&mut m, t0);
    assert_eq!(
        outs,
        [RecoveryOutput::Event(RecoveryEvent::Failed {
            run_id: "r1".into(),
            attempt: 1,
            error: "checkpoint unreadable".into(),
            retry_in: Some(5 * S),
        })]
    );
    assert_eq!(until, Some(t0 + 5 * S));
    assert_eq!(drain(&mut m, t0 + 4 * S).0, vec![], "still backing off");

    let t1 = t0 + 5 * S;
    let (outs, _) = drain(&mut m, t1);
    assert_eq!(
        stages(&outs),
        [
            "started",
            "checkpoint_selected",
            "restore r1 from tinker://r1/weights/s10"
        ]
    );
    m.on_restored("r1", 2, Err("checkpoint unreadable".into()), t1);
    let (_, until) = drain(&mut m, t1);
    assert_eq!(
        until,
        Some(t1 + 10 * S),
        "the second wait is twice the first"
    );

    let t2 = t1 + 10 * S;
    let _ = drain(&mut m, t2);
    m.on_restored("r1", 3, Err("checkpoint unreadable".into()), t2);
    let (outs, until) = drain(&mut m, t2);
    assert_eq!(
        outs,
        [
            RecoveryOutput::Event(RecoveryEvent::Failed {
                run_id: "r1".into(),
                attempt: 3,
                error: "checkpoint unreadable".into(),
                retry_in: None,
            }),
            RecoveryOutput::Event(RecoveryEvent::Exhausted {
                run_id: "r1".into(),
                attempts: 3,
                error: "checkpoint unreadable".into(),
            }),
        ]
    );
    assert_eq!(until, None);
    assert_eq!(m.runs().count(), 0);
}

#[test]
fn a_run_without_a_known_checkpoint_is_fetched_and_fails_if_it_has_none() {
    let t0 = origin();
    let mut m = RecoveryMachine::new(policy().with_max_attempts(1)).unwrap();
    m.recover("r1", None).unwrap();
    assert_eq!(stages(&drain(&mut m, t0).0), ["started", "fetch r1"]);
    m.on_run("r1", Ok(&run("r1", true, None)), t0);
    let (outs, _) = drain(&mut m, t0);
    assert_eq!(stages(&outs), ["failed", "exhausted"]);
    let RecoveryOutput::Event(RecoveryEvent::Exhausted { error, .. }) = &outs[1] else {
        unreachable!()
    };
    assert!(error.contains("no checkpoint"), "{error}");
}

#[test]
fn a_fetched_latest_checkpoint_is_selected() {
    let t0 = origin();
    let mut m = RecoveryMachine::new(policy()).unwrap();
    m.recover("r1", None).unwrap();
    let _ = drain(&mut m, t0);
    m.on_run(
        "r1",
        Ok(&run("r1", true, Some("tinker://r1/weights/s4"))),
        t0,
    );
    assert_eq!(
        stages(&drain(&mut m, t0).0),
        [
            "checkpoint_selected",
            "restore r1 from tinker://r1/weights/s4"
        ]
    );
}

#[test]
fn a_specific_checkpoint_wins_over_the_latest() {
    let t0 = origin();
    let pinned = CheckpointStrategy::Path("tinker://r1/weights/golden".into());
    let mut m = RecoveryMachine::new(policy().with_checkpoint(pinned)).unwrap();
    m.watch("r1", t0).unwrap();
    let _ = drain(&mut m, t0 + 10 * S);
    m.on_run(
        "r1",
        Ok(&run("r1", true, Some("tinker://r1/weights/s10"))),
        t0 + 10 * S,
    );
    let (outs, _) = drain(&mut m, t0 + 10 * S);
    assert_eq!(
        stages(&outs).last().unwrap(),
        "restore r1 from tinker://r1/weights/golden"
    );
}

#[test]
fn concurrency_is_bounded_and_the_queue_is_first_come_first_served() {
    let t0 = origin();
    let mut m = RecoveryMachine::new(policy()).unwrap();
    for r in ["a", "b", "c"] {
        m.recover(r, Some(format!("tinker://{r}/weights/1")))
            .unwrap();
    }
    let (outs, _) = drain(&mut m, t0);
    assert_eq!(
        stages(&outs),
        [
            "started",
            "checkpoint_selected",
            "restore a from tinker://a/weights/1"
        ]
    );
    m.on_restored("a", 1, Ok("a2".into()), t0);
    let (outs, _) = drain(&mut m, t0);
    assert_eq!(
        stages(&outs),
        [
            "client_created",
            "completed",
            "started",
            "checkpoint_selected",
            "restore b from tinker://b/weights/1"
        ]
    );

    let mut two = RecoveryMachine::new(policy().with_max_concurrent(2)).unwrap();
    for r in ["a", "b", "c"] {
        two.recover(r, Some(format!("tinker://{r}/weights/1")))
            .unwrap();
    }
    let restores = drain(&mut two, t0)
        .0
        .into_iter()
        .filter(|o| matches!(o, RecoveryOutput::Restore { .. }))
        .count();
    assert_eq!(restores, 2);
}

#[test]
fn unwatching_abandons_a_pending_recovery_and_late_answers_are_ignored() {
    let t0 = origin();
    let mut m = RecoveryMachine::new(policy()).unwrap();
    m.recover("a", Some("tinker://a/weights/1".into())).unwrap();
    m.recover("b", Some("tinker://b/weights/1".into())).unwrap();
    let _ = drain(&mut m, t0);
    m.unwatch("a");
    // The slot a held is free again: b starts.
    assert_eq!(stages(&drain(&mut m, t0).0)[0], "started");
    m.on_restored("a", 1, Ok("a2".into()), t0);
    assert_eq!(
        drain(&mut m, t0).0,
        vec![],
        "a late answer for a changes nothing"
    );
    m.on_restored("b", 7, Ok("b2".into()), t0);
    assert_eq!(
        drain(&mut m, t0).0,
        vec![],
        "an answer for another attempt is ignored"
    );
}

#[test]
fn stop_ends_the_machine() {
    let mut m = RecoveryMachine::new(policy()).unwrap();
    m.watch("r1", origin()).unwrap();
    m.stop();
    assert_eq!(m.poll_output(origin()), RecoveryOutput::Stopped);
    assert!(m.watch("r2", origin()).is_err());
}
