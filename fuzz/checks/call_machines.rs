//! The core machines under random sequences of inputs: responses of every kind, HTTP errors,
//! transport failures and resets, delays, deadlines and cancellations.
//!
//! The first byte picks the mode:
//! * even: a whole seeded simulation (`tinker_core::sim::Sim`) whose fault probabilities, sizes,
//!   cancellation and deadline rates come from the input; every invariant the simulator checks
//!   (no request after done, retry counts, turn order, budgets back to capacity, no deadlock)
//!   must hold;
//! * odd: one operation (forward_backward, optim_step or sample, with a deadline) against a
//!   server whose every reply is read from the input; it must finish, by its deadline, without
//!   a panic.
use std::time::{Duration, Instant};

use bytes::Bytes;
use tinker_core::call::{CallOptions, DetachedSubmission};
use tinker_core::io::TransportErrorKind;
use tinker_core::ops::{self, ForwardBackwardArgs, ForwardBackwardOp, SampleOp};
use tinker_core::sim::{
    run_all, run_one, FaultConfig, Reply, Server, Sim, SimConfig, VirtualClock,
};
use tinker_core::types::{
    AdamParams, Datum, LossFn, ModelInput, SampleRequest, SamplingParams, StepParams, TensorData,
};

use super::Input;

const BODIES: [&str; 12] = [
    r#"{"request_id":"req-1"}"#,
    r#"{"request_id":"req-1","sample_sequence_ids":["a","b","c"]}"#,
    r#"{"type":"try_again","request_id":"req-1","queue_state":"active"}"#,
    r#"{"type":"try_again","request_id":"req-1","queue_state":"paused_capacity","queue_state_reason":"busy"}"#,
    r#"{"error":"boom","category":"user"}"#,
    r#"{"error":"boom","category":"server"}"#,
    r#"{"metrics":{"loss:sum":1.0}}"#,
    r#"{"loss_fn_output_type":"CrossEntropyLossReturn","loss_fn_outputs":[],"metrics":{}}"#,
    r#"{"status":"complete_metadata","response_size_bytes":100}"#,
    r#"{"detail":"injected"}"#,
    r#"{"sequences":[{"tokens":[1,2],"stop_reason":"length"}]}"#,
    "",
];
const STATUSES: [u16; 12] = [200, 200, 200, 400, 402, 404, 408, 410, 429, 500, 503, 504];

/// A server whose replies are read from the fuzz input; once it runs out, every request fails
/// to connect after a second.
struct FuzzServer<'a> {
    input: Input<'a>,
}

impl Server for FuzzServer<'_> {
    fn respond(&mut self, _request: &http::Request<Bytes>, _now: Instant) -> Reply {
        let Some(tag) = self.input.byte() else {
            return Reply::fail(TransportErrorKind::Connect).with_delay(Duration::from_secs(1));
        };
        let delay = Duration::from_millis(u64::from(self.input.b()) * 100);
        let status = STATUSES[usize::from(self.input.b()) % STATUSES.len()];
        let body = BODIES[usize::from(self.input.b()) % BODIES.len()];
        let reply = match tag % 8 {
            0 => Reply::fail(TransportErrorKind::Timeout),
            1 => Reply::ResetMidBody {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                partial: Bytes::copy_from_slice(&body.as_bytes()[..body.len() / 2]),
                delay,
            },
            2 => Reply::empty(status),
            3 => Reply::json(status, body).with_header("retry-after", "1"),
            4 => {
                let n = usize::from(self.input.b()).min(self.input.0.len());
                let raw = Bytes::copy_from_slice(&self.input.0[..n]);
                self.input.0 = &self.input.0[n..];
                Reply::protobuf(raw)
            }
            _ => Reply::json(status, body),
        };
        reply.with_delay(delay)
    }
}

/// Runs one input; panics on a finding.
pub fn check(data: &[u8]) {
    let mut input = Input(data);
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    if input.b() % 2 == 0 {
        let config = SimConfig {
            seed: input.u64(),
            runs: 1 + usize::from(input.b() % 3),
            ops_per_run: usize::from(input.b() % 8),
            samples: usize::from(input.b() % 6),
            cancel_probability: input.probability(0.05),
            deadline_probability: input.probability(1.0),
            faults: FaultConfig {
                server_error_burst: input.probability(0.3),
                rate_limited: input.probability(0.3),
                empty_400: input.probability(0.3),
                transport: input.probability(0.3),
                reset_mid_body: input.probability(0.3),
                slow: input.probability(0.3),
                expired: input.probability(0.3),
                max_pending_polls: u32::from(input.b() % 8),
                metadata_threshold: usize::from(input.b()) * 8,
            },
            retrieve_futures: input.b() % 2 == 1,
        };
        let report = Sim::run(config, start);
        assert!(
            report.violations.is_empty(),
            "{config:?}: {:?}",
            report.violations
        );
        return;
    }

    let which = input.b() % 3;
    let deadline = start + Duration::from_secs(1 + u64::from(input.b()) * 4);
    let opts = CallOptions::default().with_deadline(Some(deadline));
    let clock = VirtualClock::new(start);
    let mut ledger = Sim::ledger(input.u64());
    let mut server = FuzzServer { input };
    let data: Vec<Datum> = (0..3)
        .map(|i| {
            Datum::new(ModelInput::from_tokens(vec![i + 1; 4]))
                .with_input("target_tokens", TensorData::from_i64(vec![2; 4]))
                .with_input("weights", TensorData::from_f32(vec![1.0; 4]))
        })
        .collect();
    let finished_ok = match which {
        0 => {
            let args = ForwardBackwardArgs {
                model_id: "fz:train:0".into(),
                data,
                loss_fn: LossFn::CrossEntropy,
                loss_fn_config: None,
                forward_only: false,
            };
            let op = ForwardBackwardOp::new(&mut ledger, args, opts).expect("a valid call");
            finished(run_one(op, &mut ledger, &mut server, &clock).0.map(|_| ()))
        }
        1 => {
            let params = StepParams::Adam(AdamParams::with_learning_rate(1e-4));
            let op =
                ops::optim_step(&mut ledger, "fz:train:0", params, opts).expect("a valid call");
            finished(run_one(op, &mut ledger, &mut server, &clock).0.map(|_| ()))
        }
        _ => {
            let sampler = ledger.register_sampler(0);
            let mut request = SampleRequest::new(
                "fz:sample:0",
                0,
                ModelInput::from_tokens(vec![1, 2, 3]),
                SamplingParams::default(),
            );
            request.num_samples = 3;
            let op =
                SampleOp::new(&mut ledger, sampler, request, true, opts).expect("a valid call");
            finished(run_one(op, &mut ledger, &mut server, &clock).0.map(|_| ()))
        }
    };
    assert!(finished_ok, "the machine blocked forever");
    assert!(
        clock.now() <= deadline,
        "finished {:?} past its deadline",
        clock.now() - deadline
    );
    // A call that gave up mid-turn handed its unsent chunks to the background (the housekeeper
    // of a client), so the run never sees a seq-id hole; drive them the same way before checking
    // that nothing leaked. Their POSTs may end after the user's deadline: nobody waits on them.
    while ledger.has_detached_calls() {
        let calls: Vec<DetachedSubmission> = ledger
            .take_detached_calls()
            .into_iter()
            .map(DetachedSubmission)
            .collect();
        let (results, _) = run_all(calls, &mut ledger, &mut server, &clock);
        assert!(
            results.into_iter().all(finished),
            "a detached submission blocked forever"
        );
    }
    assert!(ledger.is_quiescent(), "budgets or turns leaked");
}

/// Whether the operation ended with a result or an error of its own (not the simulator's
/// "blocked forever").
fn finished(result: tinker_core::Result<()>) -> bool {
    !matches!(&result, Err(tinker_core::Error::Closed(msg)) if msg.starts_with("run_one"))
}
