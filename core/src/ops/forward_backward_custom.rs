//! `forward_backward_custom` with a client-side loss (protocol.md 11.3, SDK 0.38 sequencing):
//! one forward pass, the loss on the client, one backward pass, as one machine.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::forward_backward::{ForwardBackwardArgs, ForwardBackwardOp};
use crate::batching::DatumChunk;
use crate::call::{AttemptId, CallOptions, Machine, Output};
use crate::error::{Error, Result};
use crate::io::TransportError;
use crate::ledger::{Ledger, Reservation};
use crate::losses::{
    backward_pass_data, evaluate_custom_loss, extract_logprobs, forward_pass_data,
    merge_custom_metrics, CustomLoss, CustomLossOutput, LogprobBatch,
};
use crate::types::{Datum, ForwardBackwardOutput, LossFn};

/// A custom loss as the machine holds it: shared, so one loss (a pipeline, a DPO configuration)
/// can serve many steps, and thread-safe, because the machine may be driven on any thread.
pub type SharedCustomLoss = Arc<dyn CustomLoss + Send + Sync>;

enum Phase {
    /// The forward pass is out; the backward pass's seq ids wait in `backward`.
    Forward {
        op: ForwardBackwardOp,
        backward: Reservation,
    },
    /// The loss was computed and the backward pass is out.
    Backward {
        op: ForwardBackwardOp,
        loss: CustomLossOutput,
    },
    Finished,
}

/// `forward_backward_custom(data, loss)`: exactly one forward round trip and one backward round
/// trip, with both passes' turns reserved when the call is made (two consecutive turns of `k`
/// chunks, the backward pass on the same chunk boundaries), so a request made right after it
/// (an `optim_step`) runs after the backward pass. Each turn takes its `k` seq ids when it
/// starts sending, so the server sees `2k` consecutive ids, as with the official SDK.
///
/// 1. forward (`cross_entropy`, forward only) on [`forward_pass_data`];
/// 2. [`extract_logprobs`], aligned with each datum's `target_tokens`, then the loss on a
///    [`LogprobBatch`] of the *original* datums (so it can read their other inputs, such as
///    reference logprobs);
/// 3. backward (`cross_entropy`) on [`backward_pass_data`]: `weights = −∂loss/∂logprobs`;
/// 4. the backward output with [`merge_custom_metrics`] applied (`loss:sum` = the custom loss,
///    `surrogate_loss:sum` = the server's).
///
/// The loss runs inside [`Machine::poll_output`], i.e. with the ledger locked: it should be a
/// computation, not a wait.
///
/// # Cancellation and failure
///
/// * Before the forward pass started sending: both turns are given back; no seq id is used.
/// * Once a forward chunk went out: the rest of the forward pass is still sent in the
///   background (a started turn is always sent in full) and its result discarded.
/// * Before the backward pass started sending (cancelled, the forward pass failed, or the loss
///   returned an error): the backward turn is given back. It has taken no seq id yet, so the
///   next request of the run takes the id right after the forward pass's: there is no hole for
///   the server to wait out, and no backward pass needs to be sent. (A backward pass with all
///   weights zero — a zero gradient — would also fill the ids, at the cost of `k` useless
///   requests; with ids taken at send time it is not needed.)
/// * Once a backward chunk went out: the rest of the backward pass, with the gradients the
///   loss computed, is sent in the background and its result discarded.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Instant;
/// use tinker_core::call::{CallOptions, Machine, Output};
/// use tinker_core::endpoints::RequestContext;
/// use tinker_core::ledger::Ledger;
/// use tinker_core::losses::{CustomLossOutput, LogprobBatch};
/// use tinker_core::ops::ForwardBackwardCustomOp;
/// use tinker_core::settings::ApiKey;
/// use tinker_core::types::{Datum, ModelInput, TensorData};
///
/// let ctx = RequestContext::new("http://127.0.0.1:8000", ApiKey::new("tml-test-key-0001").unwrap()).unwrap();
/// let mut ledger = Ledger::new(ctx, 7);
/// let datum = Datum::new(ModelInput::from_tokens(vec![1, 2]))
///     .with_input("target_tokens", TensorData::from_i64(vec![2, 3]));
/// let nll = |b: &LogprobBatch<'_>| -> tinker_core::Result<CustomLossOutput> {
///     let g = b.logprobs().iter().map(|r| vec![-1.0; r.len()]).collect();
///     Ok(CustomLossOutput { loss: -b.logprobs().iter().flatten().sum::<f64>(), gradients: g, ..Default::default() })
/// };
/// let mut op = ForwardBackwardCustomOp::new(
///     &mut ledger, "s:train:0".into(), vec![datum], Arc::new(nll), CallOptions::default(),
/// ).unwrap();
/// // Two turns are reserved now; no seq id is taken before a pass starts sending.
/// assert_eq!(ledger.turns().open_turns(), 2);
/// # #[allow(clippy::disallowed_methods)]
/// let now = Instant::now();
/// let Output::Transmit(t) = op.poll_output(&mut ledger, now) else { panic!() };
/// // The forward pass is a `forward_backward` request with `forward_only` set; it took seq 1,
/// // and the backward pass will take 2 when it starts.
/// assert_eq!(t.request.uri().path(), "/api/v1/forward_backward");
/// assert_eq!(ledger.turns().next_seq_id("s:train:0"), 2);
/// ```
pub struct ForwardBackwardCustomOp {
    model_id: String,
    data: Vec<Datum>,
    chunks: Vec<DatumChunk>,
    loss: SharedCustomLoss,
    opts: CallOptions,
    phase: Phase,
}

impl std::fmt::Debug for ForwardBackwardCustomOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let phase = match &self.phase {
            Phase::Forward { .. } => "forward",
            Phase::Backward { .. } => "backward",
            Phase::Finished => "finished",
        };
        f.debug_struct("ForwardBackwardCustomOp")
            .field("model_id", &self.model_id)
            .field("datums", &self.data.len())
            .field("chunks", &self.chunks.len())
            .field("phase", &phase)
            .finish_non_exhaustive()
    }
}

impl ForwardBackwardCustomOp {
    /// Validates the batch (every datum needs `target_tokens`), plans its chunks, reserves the
    /// two turns and builds the forward pass. Errors before anything is sent or reserved.
    pub fn new(
        ledger: &mut Ledger,
        model_id: String,
        data: Vec<Datum>,
        loss: SharedCustomLoss,
        opts: CallOptions,
    ) -> Result<ForwardBackwardCustomOp> {
        let forward_data = forward_pass_data(&data)?;
        let (chunks, forward, backward) =
            ForwardBackwardOp::reserve_custom(ledger, &model_id, &forward_data)?;
        let args = ForwardBackwardArgs {
            model_id: model_id.clone(),
            data: forward_data,
            loss_fn: LossFn::CrossEntropy,
            loss_fn_config: None,
            forward_only: true,
        };
        let op =
            match ForwardBackwardOp::with_reservation(ledger, args, &chunks, forward, opts.clone())
            {
                Ok(op) => op,
                Err(e) => {
                    ledger.release_reservation(&backward);
                    return Err(e);
                }
            };
        Ok(ForwardBackwardCustomOp {
            model_id,
            data,
            chunks,
            loss,
            opts,
            phase: Phase::Forward { op, backward },
        })
    }

    /// How many requests each pass is split into (`k`).
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// How many requests the call submits: `2k`.
    pub fn request_count(&self) -> usize {
        2 * self.chunks.len()
    }

    /// From the forward pass's output to the backward pass's machine (or the first error; the
    /// caller then releases `backward`, which is harmless if it was already released).
    fn start_backward(
        &self,
        ledger: &mut Ledger,
        forward: &ForwardBackwardOutput,
        backward: Reservation,
    ) -> Result<(ForwardBackwardOp, CustomLossOutput)> {
        let rows = extract_logprobs(&self.data, forward)?;
        let batch = LogprobBatch::with_data(&self.data, &rows)?;
        let loss = evaluate_custom_loss(&*self.loss, &batch)?;
        let data = backward_pass_data(&self.data, &loss)?;
        let args = ForwardBackwardArgs {
            model_id: self.model_id.clone(),
            data,
            loss_fn: LossFn::CrossEntropy,
            loss_fn_config: None,
            forward_only: false,
        };
        let op = ForwardBackwardOp::with_reservation(
            ledger,
            args,
            &self.chunks,
            backward,
            self.opts.clone(),
        )?;
        Ok((op, loss))
    }

    fn inner(&mut self) -> Option<&mut ForwardBackwardOp> {
        match &mut self.phase {
            Phase::Forward { op, .. } | Phase::Backward { op, .. } => Some(op),
            Phase::Finished => None,
        }
    }
}

impl Machine for ForwardBackwardCustomOp {
    type Output = ForwardBackwardOutput;

    fn poll_output(&mut self, ledger: &mut Ledger, now: Instant) -> Output<ForwardBackwardOutput> {
        loop {
            let result = match self.inner() {
                None => {
                    return Output::Done(Err(Error::Closed(
                        "the forward_backward_custom call already finished".into(),
                    )))
                }
                Some(op) => match op.poll_output(ledger, now) {
                    Output::Done(result) => result,
                    other => return other,
                },
            };
            match std::mem::replace(&mut self.phase, Phase::Finished) {
                Phase::Forward { backward, .. } => {
                    let started = result.and_then(|forward| {
                        self.start_backward(ledger, &forward, backward.clone())
                    });
                    match started {
                        Ok((op, loss)) => self.phase = Phase::Backward { op, loss },
                        Err(e) => {
                            // Covers a failed forward pass too: its backward ids go back.
                            ledger.release_reservation(&backward);
                            return Output::Done(Err(e));
                        }
                    }
                }
                Phase::Backward { loss, .. } => {
                    return Output::Done(result.map(|mut out| {
                        out.metrics = merge_custom_metrics(std::mem::take(&mut out.metrics), &loss);
                        out
                    }))
                }
                Phase::Finished => {
                    return Output::Done(Err(Error::Closed(
                        "the forward_backward_custom call already finished".into(),
                    )))
                }
            }
        }
    }

    fn handle_response(
        &mut self,
        attempt: AttemptId,
        head: http::response::Parts,
        body: Bytes,
        now: Instant,
    ) {
        if let Some(op) = self.inner() {
            op.handle_response(attempt, head, body, now);
        }
    }

    fn handle_transport_error(&mut self, attempt: AttemptId, error: TransportError, now: Instant) {
        if let Some(op) = self.inner() {
            op.handle_transport_error(attempt, error, now);
        }
    }

    fn cancel(&mut self, ledger: &mut Ledger, now: Instant) {
        match std::mem::replace(&mut self.phase, Phase::Finished) {
            Phase::Forward { mut op, backward } => {
                op.cancel(ledger, now);
                ledger.release_reservation(&backward);
            }
            Phase::Backward { mut op, .. } => op.cancel(ledger, now),
            Phase::Finished => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::Output;
    use crate::error::ErrorKind;
    use crate::losses::{Dpo, ReferenceLogprobs};
    use crate::sim::Sim;
    use crate::types::{ModelInput, TensorData};

    fn datum(n: usize) -> Datum {
        Datum::new(ModelInput::from_tokens(vec![1; n]))
            .with_input("target_tokens", TensorData::from_i64(vec![2; n]))
    }

    fn dpo() -> SharedCustomLoss {
        Arc::new(Dpo::new(
            0.1,
            ReferenceLogprobs::PerToken(vec![vec![-1.0; 3]; 2]),
        ))
    }

    #[test]
    fn a_datum_without_targets_is_rejected_before_any_seq_id_is_taken() {
        let mut ledger = Sim::ledger(1);
        let bad = vec![datum(3), Datum::new(ModelInput::from_tokens(vec![1, 2]))];
        let err = ForwardBackwardCustomOp::new(
            &mut ledger,
            "m".into(),
            bad,
            dpo(),
            CallOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(
            err.to_string()
                .contains("data[1].loss_fn_inputs.target_tokens"),
            "{err}"
        );
        assert_eq!(ledger.turns().next_seq_id("m"), 1);
        assert_eq!(ledger.turns().open_turns(), 0);
    }

    #[test]
    fn both_passes_are_reserved_up_front_and_cancelling_before_sending_gives_both_back() {
        let mut ledger = Sim::ledger(1);
        let mut op = ForwardBackwardCustomOp::new(
            &mut ledger,
            "m".into(),
            vec![datum(3), datum(3)],
            dpo(),
            CallOptions::default(),
        )
        .unwrap();
        // Forward and backward turns; a request made now waits for both.
        assert_eq!((op.chunk_count(), op.request_count()), (1, 2));
        assert_eq!(ledger.turns().open_turns(), 2);
        #[allow(clippy::disallowed_methods)]
        let now = std::time::Instant::now();
        op.cancel(&mut ledger, now);
        assert_eq!(ledger.turns().open_turns(), 0);
        assert_eq!(ledger.turns().next_seq_id("m"), 1, "no seq id was used");
        assert!(!ledger.has_detached_calls());
        assert!(matches!(
            op.poll_output(&mut ledger, now),
            Output::Done(Err(Error::Closed(_)))
        ));
    }

    #[test]
    fn cancelled_after_the_forward_pass_went_out_the_next_request_follows_it_without_a_hole() {
        use crate::call::DetachedSubmission;
        use crate::sim::{run_all, run_one, FaultConfig, FaultyServer, VirtualClock};
        use crate::types::{AdamParams, StepParams};
        let mut ledger = Sim::ledger(1);
        #[allow(clippy::disallowed_methods)]
        let clock = VirtualClock::new(std::time::Instant::now());
        let mut op = ForwardBackwardCustomOp::new(
            &mut ledger,
            "m".into(),
            vec![datum(3), datum(3)],
            dpo(),
            CallOptions::default(),
        )
        .unwrap();
        let params = StepParams::Adam(AdamParams::with_learning_rate(1e-4));
        let step =
            crate::ops::optim_step(&mut ledger, "m", params, CallOptions::default()).unwrap();
        let Output::Transmit(_) = op.poll_output(&mut ledger, clock.now()) else {
            panic!("the forward pass is sent first")
        };
        // The caller gives up with the forward POST (seq 1) in flight.
        op.cancel(&mut ledger, clock.now());
        let detached: Vec<_> = ledger
            .take_detached_calls()
            .into_iter()
            .map(DetachedSubmission)
            .collect();
        assert_eq!(detached.len(), 1, "the forward chunk is still sent");
        let mut server = FaultyServer::new(3, FaultConfig::none());
        let (sent, _) = run_all(detached, &mut ledger, &mut server, &clock);
        assert!(sent.iter().all(Result::is_ok), "{sent:?}");
        // The backward turn never started: the step takes seq 2, right after the forward pass.
        let (result, trace) = run_one(step, &mut ledger, &mut server, &clock);
        assert!(result.is_ok(), "{trace:#?}");
        let seqs: Vec<u64> = server.accepted().iter().map(|(_, s)| *s).collect();
        assert_eq!(seqs, [1, 2]);
        assert!(ledger.is_quiescent());
    }
}
