//! Many machines, one thread, virtual time: the simulation harness.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::http::describe;
use super::telemetry::SimTelemetry;
use super::{FaultConfig, FaultyServer, Reply, Server, VirtualClock};
use crate::call::{AttemptId, CallOptions, DetachedSubmission, Machine, Output, Wait};
use crate::endpoints::RequestContext;
use crate::error::Result;
use crate::io::{TransportError, TransportErrorKind};
use crate::ledger::{Ledger, SamplerHandle};
use crate::ops::{self, ForwardBackwardArgs, ForwardBackwardOp, SampleOp};
use crate::retry::holder_layer::MAX_ELAPSED;
use crate::rng::Rng;
use crate::settings::ApiKey;
use crate::types::{
    AdamParams, Datum, LossFn, ModelInput, SampleRequest, SamplingParams, StepParams, TensorData,
};

/// What to simulate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    /// Seeds the ledger, the server, the latencies, the workload and the cancellations.
    pub seed: u64,
    /// Training runs, each with its own turn table.
    pub runs: usize,
    /// Operations per run (forward_backward and optim_step alternately), all issued at once.
    pub ops_per_run: usize,
    /// Samples issued at once on one sampling client.
    pub samples: usize,
    /// Chance, per machine and step, that its caller gives up (cancels it).
    pub cancel_probability: f64,
    /// Chance that an operation gets a deadline (1-60 s of virtual time).
    pub deadline_probability: f64,
    /// The server's faults.
    pub faults: FaultConfig,
    /// Samples learn of their completion from the `retrieve_futures` session poller (client
    /// config `sample_use_retrieve_futures`, protocol.md 7.7) instead of long-polling each future.
    pub retrieve_futures: bool,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            seed: 0,
            runs: 2,
            ops_per_run: 6,
            samples: 4,
            cancel_probability: 0.002,
            deadline_probability: 0.1,
            faults: FaultConfig::rough(),
            retrieve_futures: false,
        }
    }
}

/// What a simulation did, and every invariant it found broken.
#[derive(Debug, Clone, Default)]
pub struct SimReport {
    /// Every request, in order, tagged with the machine that sent it.
    pub trace: Vec<String>,
    /// Machines that finished with a result.
    pub succeeded: usize,
    /// Machines that finished with an error.
    pub failed: usize,
    /// Machines cancelled by their caller.
    pub cancelled: usize,
    /// Virtual time the whole simulation took.
    pub elapsed: Duration,
    /// Broken invariants; empty on a good run.
    pub violations: Vec<String>,
    /// Training runs with a request that failed for good (not a timeout): the server may never
    /// have seen its seq id.
    pub failed_runs: std::collections::BTreeSet<String>,
    /// Calls handed to the background after their caller gave up mid-turn.
    pub detached: usize,
}

/// A machine with its result erased, so different operations share one list.
pub(crate) struct Unit<M>(pub(crate) M);

impl<M: Machine> Machine for Unit<M> {
    type Output = ();
    fn poll_output(&mut self, ledger: &mut Ledger, now: Instant) -> Output<()> {
        match self.0.poll_output(ledger, now) {
            Output::Transmit(t) => Output::Transmit(t),
            Output::Wait(w) => Output::Wait(w),
            Output::Event(e) => Output::Event(e),
            Output::Done(r) => Output::Done(r.map(|_| ())),
        }
    }
    fn handle_response(&mut self, a: AttemptId, h: http::response::Parts, b: Bytes, now: Instant) {
        self.0.handle_response(a, h, b, now);
    }
    fn handle_transport_error(&mut self, a: AttemptId, e: TransportError, now: Instant) {
        self.0.handle_transport_error(a, e, now);
    }
    fn cancel(&mut self, ledger: &mut Ledger, now: Instant) {
        self.0.cancel(ledger, now);
    }
}

struct Slot {
    label: String,
    machine: Box<dyn Machine<Output = ()>>,
    in_flight: Vec<(Instant, AttemptId, Reply)>,
    wait: Option<Wait>,
    done: bool,
    /// Submit attempts: (time, idempotency key, retry count).
    submits: Vec<(Instant, String, u32)>,
    bounded: bool,
}

/// The label prefix of slots that drive detached calls (never cancelled by the simulation).
const BACKGROUND: &str = "bg";

/// The training run a slot's label (`fb<run>.<k>`, `step<run>.<k>`, `bg<n>:<model>`) belongs to.
fn run_of(label: &str) -> Option<String> {
    if let Some(rest) = label.strip_prefix(BACKGROUND) {
        return rest.split_once(':').map(|(_, model)| model.to_owned());
    }
    let rest = label
        .strip_prefix("fb")
        .or_else(|| label.strip_prefix("step"))
        .or_else(|| label.strip_prefix("final"))?;
    let run = rest.split('.').next()?;
    Some(format!("sim:train:{run}"))
}

/// The public method a slot's label stands for (telemetry names it).
fn method_of(label: &str) -> &'static str {
    if label.starts_with("sample") {
        "SamplingClient.sample"
    } else if label.starts_with("step") {
        "TrainingClient.optim_step"
    } else {
        "TrainingClient.forward_backward"
    }
}

/// The simulation harness. See [`Sim::run`].
#[derive(Debug)]
pub struct Sim;

fn header(req: &http::Request<Bytes>, name: &str) -> String {
    req.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn datums(rng: &mut Rng) -> Vec<Datum> {
    let n = 1 + (rng.next_u64() % 5) as usize;
    (0..n)
        .map(|i| {
            let len = 2 + (rng.next_u64() % 30) as usize;
            Datum::new(ModelInput::from_tokens(vec![i as i32 + 1; len]))
                .with_input("target_tokens", TensorData::from_i64(vec![3; len]))
                .with_input("weights", TensorData::from_f32(vec![1.0; len]))
        })
        .collect()
}

impl Sim {
    /// A ledger configured the way the simulation stresses it: two datums per chunk and small
    /// byte budgets, so calls block on each other.
    pub fn ledger(seed: u64) -> Ledger {
        let ctx = RequestContext::new(
            "http://sim.local",
            ApiKey::new("tml-sim-key-0001").unwrap_or_else(|_| unreachable!("a valid key")),
        )
        .unwrap_or_else(|_| unreachable!("a valid URL"));
        let mut ledger = Ledger::new(ctx, seed);
        ledger.keep_turn_history();
        let mut config = ledger.client_config().clone();
        config.fwdbwd_max_chunk_len = 2;
        config.fwdbwd_dispatch_bytes_semaphore_size = 600;
        config.inflight_response_bytes_semaphore_size = 200;
        config.sample_dispatch_bytes_semaphore_size = 300;
        ledger.set_client_config(config);
        ledger
    }

    /// Runs one seeded simulation: every operation issued at t = 0, run to completion (or
    /// cancellation) against a [`FaultyServer`], then one clean forward_backward per training
    /// run, which must succeed whatever was cancelled before it. Checks on every run:
    ///
    /// * no machine sends a request after it is done (stale responses are fed to it too);
    /// * layer H: retry counts of one idempotency key go 0, 1, 2 … ≤ 10;
    /// * the submissions of a training call (not layer-R samples) span at most 300 s of layer X
    ///   plus one 30 s back-off plus eleven 60 s layer-H waits;
    /// * the server received each training run's submissions in turn order;
    /// * every budget is back to capacity and no turn is left open;
    /// * nothing deadlocks (every wait has a timer, a response or a ledger change ahead);
    /// * every telemetry event (retries, failures, session start and end) is sent or counted as
    ///   dropped once the queue's final flush is over.
    pub fn run(config: SimConfig, start: Instant) -> SimReport {
        let mut report = SimReport::default();
        let clock = VirtualClock::new(start);
        let mut ledger = Sim::ledger(config.seed);
        if config.retrieve_futures {
            let mut client = ledger.client_config().clone();
            client.sample_use_retrieve_futures = true;
            ledger.set_client_config(client);
        }
        let mut server = FaultyServer::new(config.seed ^ 0x5EED, config.faults);
        let mut rng = Rng::from_seed(config.seed.wrapping_mul(31).wrapping_add(7));
        let mut slots: Vec<Slot> = Vec::new();

        let deadline = |rng: &mut Rng| {
            (rng.next_f64() < config.deadline_probability)
                .then(|| start + Duration::from_secs(1 + rng.next_u64() % 60))
        };
        for run in 0..config.runs {
            let model_id = format!("sim:train:{run}");
            for k in 0..config.ops_per_run {
                let opts = CallOptions::default().with_deadline(deadline(&mut rng));
                let (label, machine): (String, Box<dyn Machine<Output = ()>>) = if k % 2 == 0 {
                    let args = ForwardBackwardArgs {
                        model_id: model_id.clone(),
                        data: datums(&mut rng),
                        loss_fn: LossFn::CrossEntropy,
                        loss_fn_config: None,
                        forward_only: false,
                    };
                    match ForwardBackwardOp::new(&mut ledger, args, opts) {
                        Ok(op) => (format!("fb{run}.{k}"), Box::new(Unit(op))),
                        Err(e) => {
                            report.violations.push(format!("fb{run}.{k}: {e}"));
                            continue;
                        }
                    }
                } else {
                    let params = StepParams::Adam(AdamParams::with_learning_rate(1e-4));
                    match ops::optim_step(&mut ledger, &model_id, params, opts) {
                        Ok(op) => (format!("step{run}.{k}"), Box::new(Unit(op))),
                        Err(e) => {
                            report.violations.push(format!("step{run}.{k}: {e}"));
                            continue;
                        }
                    }
                };
                slots.push(Slot {
                    label,
                    machine,
                    in_flight: Vec::new(),
                    wait: None,
                    done: false,
                    submits: Vec::new(),
                    bounded: true,
                });
            }
        }
        let sampler: SamplerHandle = ledger.register_sampler(0);
        for s in 0..config.samples {
            let prompt = ModelInput::from_tokens(vec![5; 1 + (rng.next_u64() % 40) as usize]);
            let mut request =
                SampleRequest::new("sim:sample:0", 0, prompt, SamplingParams::default());
            request.num_samples = 1 + (rng.next_u64() % 3) as u32;
            let opts = CallOptions::default().with_deadline(deadline(&mut rng));
            match SampleOp::new(&mut ledger, sampler, request, true, opts) {
                Ok(op) => slots.push(Slot {
                    label: format!("sample{s}"),
                    machine: Box::new(Unit(op)),
                    in_flight: Vec::new(),
                    wait: None,
                    done: false,
                    submits: Vec::new(),
                    bounded: false,
                }),
                Err(e) => report.violations.push(format!("sample{s}: {e}")),
            }
        }

        let mut telemetry = SimTelemetry::new(config.seed, start);
        Sim::drive(
            &mut slots,
            &mut ledger,
            &mut server,
            &clock,
            &mut rng,
            config.cancel_probability,
            &mut report,
            &mut telemetry,
        );
        Sim::check_slots(&slots, &mut report);

        // Turn order as the server saw it: seq id -> turn, per run, from the turns that started.
        let mut turns: BTreeMap<String, BTreeMap<u64, u64>> = BTreeMap::new();
        for started in ledger.turns().history() {
            for i in 0..started.count as u64 {
                turns
                    .entry(started.model_id.clone())
                    .or_default()
                    .insert(started.first_seq_id + i, started.turn);
            }
        }
        let mut last_turn: BTreeMap<&str, u64> = BTreeMap::new();
        for (model, seq) in server.accepted() {
            let Some(turn) = turns.get(model).and_then(|t| t.get(seq)) else {
                continue;
            };
            let last = last_turn.entry(model.as_str()).or_insert(0);
            if *turn < *last {
                report.violations.push(format!(
                    "{model}: seq {seq} (turn {turn}) submitted after turn {last}"
                ));
            }
            *last = (*last).max(*turn);
        }
        // No hole: every seq id a turn took reached the server, so it never waits out a gap
        // (unless a submission of that run failed for good, which the server may never see).
        for (model, ids) in &turns {
            if report.failed_runs.contains(model) {
                continue;
            }
            let reached: std::collections::BTreeSet<u64> = server
                .accepted()
                .iter()
                .filter(|(m, _)| m == model)
                .map(|(_, s)| *s)
                .collect();
            let expected: Vec<u64> = (1..=ids.len() as u64).collect();
            let taken: Vec<u64> = ids.keys().copied().collect();
            if taken != expected {
                report
                    .violations
                    .push(format!("{model}: turns took seq ids {taken:?}, not 1..=n"));
            }
            let missing: Vec<u64> = taken
                .iter()
                .filter(|s| !reached.contains(s))
                .copied()
                .collect();
            if !missing.is_empty() {
                report.violations.push(format!(
                    "{model}: seq ids {missing:?} never reached the server (a gap)"
                ));
            }
        }
        if !ledger.is_quiescent() {
            report
                .violations
                .push(format!("budgets or turns leaked: {:?}", ledger.turns()));
        }

        // Whatever was cancelled, a later forward_backward on every run still completes.
        server.set_faults(FaultConfig::none());
        let mut finals = Vec::new();
        for run in 0..config.runs {
            let args = ForwardBackwardArgs {
                model_id: format!("sim:train:{run}"),
                data: datums(&mut rng),
                loss_fn: LossFn::CrossEntropy,
                loss_fn_config: None,
                forward_only: false,
            };
            if let Ok(op) = ForwardBackwardOp::new(&mut ledger, args, CallOptions::default()) {
                finals.push(Slot {
                    label: format!("final{run}"),
                    machine: Box::new(Unit(op)),
                    in_flight: Vec::new(),
                    wait: None,
                    done: false,
                    submits: Vec::new(),
                    bounded: true,
                });
            }
        }
        let before = (report.succeeded, report.failed);
        Sim::drive(
            &mut finals,
            &mut ledger,
            &mut server,
            &clock,
            &mut rng,
            0.0,
            &mut report,
            &mut telemetry,
        );
        if report.succeeded - before.0 != config.runs || report.failed != before.1 {
            report
                .violations
                .push("a forward_backward after the storm did not complete".into());
        }
        if !ledger.is_quiescent() {
            report
                .violations
                .push("budgets or turns leaked after the final calls".into());
        }
        // Every telemetry event is sent or counted as dropped.
        if let Some(broken) = telemetry.finish(&mut server, &clock, &mut report.trace) {
            report.violations.push(broken);
        }
        report.elapsed = clock.elapsed();
        report
    }

    #[allow(clippy::too_many_arguments)]
    fn drive(
        slots: &mut Vec<Slot>,
        ledger: &mut Ledger,
        server: &mut FaultyServer,
        clock: &VirtualClock,
        rng: &mut Rng,
        cancel_probability: f64,
        report: &mut SimReport,
        telemetry: &mut SimTelemetry,
    ) {
        let start = clock.start();
        for _step in 0..1_000_000 {
            let now = clock.now();
            let generation = ledger.generation();
            for (i, slot) in slots.iter_mut().enumerate() {
                if slot.done {
                    continue;
                }
                let background = slot.label.starts_with(BACKGROUND);
                if !background && cancel_probability > 0.0 && rng.next_f64() < cancel_probability {
                    slot.machine.cancel(ledger, now);
                    slot.done = true;
                    report.cancelled += 1;
                    continue;
                }
                loop {
                    match slot.machine.poll_output(ledger, now) {
                        Output::Transmit(t) => {
                            let path = t.request.uri().path().to_owned();
                            if !path.ends_with("/retrieve_future")
                                && !path.ends_with("/retrieve_futures")
                            {
                                let retry = header(&t.request, "x-stainless-retry-count")
                                    .parse()
                                    .unwrap_or(0);
                                slot.submits.push((
                                    now,
                                    header(&t.request, "x-idempotency-key"),
                                    retry,
                                ));
                            }
                            report.trace.push(format!(
                                "{} {}",
                                slot.label,
                                describe(start, now, &t.request)
                            ));
                            let reply = server.respond(&t.request, now);
                            let latency = Duration::from_millis(1 + rng.next_u64() % 50);
                            slot.in_flight
                                .push((now + reply.delay() + latency, t.attempt, reply));
                        }
                        Output::Event(e) => telemetry.on_event(method_of(&slot.label), &e),
                        Output::Wait(w) => {
                            slot.wait = Some(w);
                            break;
                        }
                        Output::Done(r) => {
                            slot.done = true;
                            match r {
                                Ok(()) => report.succeeded += 1,
                                Err(e) => {
                                    telemetry.on_error(method_of(&slot.label), &e);
                                    report.failed += 1;
                                    if e.kind() != crate::ErrorKind::Timeout {
                                        if let Some(run) = run_of(&slot.label) {
                                            report.failed_runs.insert(run);
                                        }
                                    }
                                }
                            }
                            if let Output::Transmit(_) = slot.machine.poll_output(ledger, now) {
                                report.violations.push(format!(
                                    "{} (#{i}) sent a request after done",
                                    slot.label
                                ));
                            }
                            break;
                        }
                    }
                }
            }
            // Calls given up mid-turn are sent by the background, as the housekeeper does.
            for call in ledger.take_detached_calls() {
                report.detached += 1;
                let model = call.turn_model_id().unwrap_or_default().to_owned();
                slots.push(Slot {
                    label: format!("{BACKGROUND}{}:{model}", report.detached),
                    machine: Box::new(DetachedSubmission(call)),
                    in_flight: Vec::new(),
                    wait: None,
                    done: false,
                    submits: Vec::new(),
                    bounded: false,
                });
            }
            if slots.iter().any(|s| !s.done && s.wait.is_none()) {
                // A new background slot has not been polled yet.
                continue;
            }
            // The next thing that happens: a response, or a timer.
            let mut next: Option<Instant> = None;
            for slot in slots.iter() {
                for (due, _, _) in &slot.in_flight {
                    next = Some(next.map_or(*due, |n| n.min(*due)));
                }
                if !slot.done {
                    if let Some(until) = slot.wait.and_then(|w| w.until) {
                        next = Some(next.map_or(until, |n| n.min(until)));
                    }
                }
            }
            // The housekeeper flushes telemetry meanwhile; its timers never keep a finished
            // simulation alive, nor hide a deadlock.
            let flush = telemetry.pump(server, now, &mut report.trace);
            let next = match (next, flush) {
                (Some(n), Some(f)) => Some(n.min(f)),
                (n, _) => n,
            };
            let Some(next) = next else {
                if ledger.generation() != generation {
                    // A machine polled early in this round may have been unblocked by one
                    // polled after it: poll them all again before calling it a deadlock.
                    continue;
                }
                if slots.iter().any(|s| !s.done) {
                    report
                        .violations
                        .push("deadlock: every live machine is blocked".into());
                }
                return;
            };
            clock.advance_to(next);
            let now = clock.now();
            for slot in slots.iter_mut() {
                let (due, pending): (Vec<_>, Vec<_>) =
                    slot.in_flight.drain(..).partition(|(d, _, _)| *d <= now);
                slot.in_flight = pending;
                for (_, attempt, reply) in due {
                    deliver(slot.machine.as_mut(), attempt, reply, now);
                    if slot.done {
                        if let Output::Transmit(_) = slot.machine.poll_output(ledger, now) {
                            report
                                .violations
                                .push(format!("{} sent a request after done", slot.label));
                        }
                    }
                }
            }
        }
        report
            .violations
            .push("the simulation did not finish in 1,000,000 steps".into());
    }

    fn check_slots(slots: &[Slot], report: &mut SimReport) {
        let bound = MAX_ELAPSED + Duration::from_secs(30 + 11 * 60);
        for slot in slots {
            let mut chains: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
            for (_, key, retry) in &slot.submits {
                chains.entry(key.as_str()).or_default().push(*retry);
            }
            for (key, counts) in chains {
                // A background slot continues the chain its caller started.
                let first = if slot.label.starts_with(BACKGROUND) {
                    counts.first().copied().unwrap_or(0)
                } else {
                    0
                };
                let expected: Vec<u32> = (first..first + counts.len() as u32).collect();
                if counts != expected || counts.len() > 11 {
                    report.violations.push(format!(
                        "{}: key {key} sent with retry counts {counts:?}",
                        slot.label
                    ));
                }
            }
            if slot.bounded {
                if let (Some(first), Some(last)) = (slot.submits.first(), slot.submits.last()) {
                    if last.0.saturating_duration_since(first.0) > bound {
                        report.violations.push(format!(
                            "{}: submissions spanned more than {bound:?}",
                            slot.label
                        ));
                    }
                }
            }
        }
    }
}

pub(crate) fn deliver(
    machine: &mut dyn Machine<Output = ()>,
    attempt: AttemptId,
    reply: Reply,
    now: Instant,
) {
    match reply {
        Reply::Response {
            status,
            headers,
            body,
            ..
        } => {
            let mut b = http::Response::builder().status(status);
            for (k, v) in &headers {
                b = b.header(k.as_str(), v.as_str());
            }
            let head = b
                .body(())
                .unwrap_or_else(|_| http::Response::new(()))
                .into_parts()
                .0;
            machine.handle_response(attempt, head, body, now);
        }
        Reply::Fail { kind, .. } => {
            machine.handle_transport_error(attempt, TransportError::new(kind, "simulated"), now)
        }
        Reply::ResetMidBody { .. } => machine.handle_transport_error(
            attempt,
            TransportError::new(TransportErrorKind::Io, "reset mid-body"),
            now,
        ),
    }
}

/// Runs a machine alone against `server` on virtual time (a one-slot simulation), returning its
/// result and the trace. Handy for scenario tests of a single operation.
pub fn run_one<M: Machine>(
    machine: M,
    ledger: &mut Ledger,
    server: &mut dyn Server,
    clock: &VirtualClock,
) -> (Result<M::Output>, Vec<String>) {
    let mut machine = machine;
    let mut trace = Vec::new();
    let mut in_flight: Vec<(Instant, AttemptId, Reply)> = Vec::new();
    loop {
        let now = clock.now();
        let wait = loop {
            match machine.poll_output(ledger, now) {
                Output::Transmit(t) => {
                    trace.push(describe(clock.start(), now, &t.request));
                    let reply = server.respond(&t.request, now);
                    in_flight.push((now + reply.delay(), t.attempt, reply));
                }
                Output::Event(_) => {}
                Output::Wait(w) => break w,
                Output::Done(r) => return (r, trace),
            }
        };
        let next = in_flight.iter().map(|(d, _, _)| *d).chain(wait.until).min();
        let Some(next) = next else {
            return (
                Err(crate::Error::Closed(
                    "run_one: the machine is blocked forever".into(),
                )),
                trace,
            );
        };
        clock.advance_to(next);
        let now = clock.now();
        let (due, pending): (Vec<_>, Vec<_>) = in_flight.drain(..).partition(|(d, _, _)| *d <= now);
        in_flight = pending;
        for (_, attempt, reply) in due {
            let mut unit = Unit(&mut machine);
            deliver(&mut unit, attempt, reply, now);
        }
    }
}

/// Runs several machines concurrently against `server` on virtual time until all are done,
/// returning their results (in the order given) and the trace. A machine blocked forever ends
/// with an error.
pub fn run_all<M: Machine>(
    machines: Vec<M>,
    ledger: &mut Ledger,
    server: &mut dyn Server,
    clock: &VirtualClock,
) -> (Vec<Result<M::Output>>, Vec<String>) {
    let mut machines: Vec<(M, Option<Result<M::Output>>)> =
        machines.into_iter().map(|m| (m, None)).collect();
    let mut trace = Vec::new();
    let mut in_flight: Vec<(Instant, usize, AttemptId, Reply)> = Vec::new();
    loop {
        let now = clock.now();
        let mut next: Option<Instant> = None;
        // Poll every machine until a whole round leaves the ledger unchanged: one finishing
        // may unblock another that already said it waits.
        for _round in 0..1_000 {
            let generation = ledger.generation();
            next = None;
            for (i, (machine, result)) in machines.iter_mut().enumerate() {
                while result.is_none() {
                    match machine.poll_output(ledger, now) {
                        Output::Transmit(t) => {
                            trace.push(describe(clock.start(), now, &t.request));
                            let reply = server.respond(&t.request, now);
                            in_flight.push((now + reply.delay(), i, t.attempt, reply));
                        }
                        Output::Event(_) => {}
                        Output::Wait(w) => {
                            if let Some(until) = w.until {
                                next = Some(next.map_or(until, |n| n.min(until)));
                            }
                            break;
                        }
                        Output::Done(r) => *result = Some(r),
                    }
                }
            }
            if ledger.generation() == generation {
                break;
            }
        }
        if machines.iter().all(|(_, r)| r.is_some()) {
            break;
        }
        let next = in_flight.iter().map(|(d, ..)| *d).chain(next).min();
        let Some(next) = next else {
            for (_, r) in machines.iter_mut().filter(|(_, r)| r.is_none()) {
                *r = Some(Err(crate::Error::Closed(
                    "run_all: the machine is blocked forever".into(),
                )));
            }
            break;
        };
        clock.advance_to(next);
        let now = clock.now();
        let (due, pending): (Vec<_>, Vec<_>) = in_flight.drain(..).partition(|(d, ..)| *d <= now);
        in_flight = pending;
        for (_, i, attempt, reply) in due {
            let mut unit = Unit(&mut machines[i].0);
            deliver(&mut unit, attempt, reply, now);
        }
    }
    let results = machines.into_iter().filter_map(|(_, r)| r).collect();
    (results, trace)
}
