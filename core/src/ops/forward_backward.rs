//! `forward_backward` / `forward`: one call per chunk, one turn for the whole call
//! (protocol.md 11.1-11.3, 8.9).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::batching::{combine_forward_backward_outputs, plan_chunks, ChunkLimits, DatumChunk};
use crate::call::{
    AttemptId, Call, CallOptions, CallResult, FuturePayload, Gates, Machine, Output, Submission,
    Wait,
};
use crate::endpoints::{AttemptHeaders, EndpointSpec, ForwardBackward, RequestContext};
use crate::error::{Error, Result};
use crate::io::TransportError;
use crate::ledger::{ChunkOrder, Ledger, Reservation};
use crate::proto::{
    compress_body, decode_forward_backward_output, encode_forward_backward,
    ForwardBackwardRequestRef, ZSTD_LEVEL,
};
use crate::retry::ClientKind;
use crate::types::{Datum, ForwardBackwardOutput, LossConfigValue, LossFn, RequestType};

/// The user's arguments of one forward_backward (or forward) call.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardBackwardArgs {
    /// The training run.
    pub model_id: String,
    /// The batch, in order.
    pub data: Vec<Datum>,
    /// The loss function.
    pub loss_fn: LossFn,
    /// Its config (numbers and, in 0.38, strings).
    pub loss_fn_config: Option<BTreeMap<String, LossConfigValue>>,
    /// `forward()` rather than `forward_backward()`.
    pub forward_only: bool,
}

#[derive(Debug)]
struct Chunk {
    call: Call,
    datums: usize,
    result: Option<ForwardBackwardOutput>,
}

/// A forward_backward call as one machine: validates and chunks the batch, reserves one turn,
/// encodes each chunk when it is first sent (its seq id is known only then: protobuf, zstd when
/// the server asks; retries reuse the encoded body), submits each chunk with
/// its estimated bytes taken from the dispatch budget during its POST — chunks 2..k first and
/// chunk 1 last with `parallel_fwdbwd_chunks` — polls every chunk's future and combines the
/// results in datum order.
///
/// Cancelling it before any chunk was sent gives the turn back (no seq id is used); once one
/// chunk went out, the unsent chunks are handed to the background and sent anyway, so the
/// run's seq ids have no hole (the result is discarded).
#[derive(Debug)]
pub struct ForwardBackwardOp {
    chunks: Vec<Chunk>,
    routes: BTreeMap<AttemptId, usize>,
    reservation: Reservation,
    done: bool,
}

impl ForwardBackwardOp {
    /// Plans, reserves and encodes the call. Errors on invalid input before anything is sent
    /// (nothing is reserved then).
    pub fn new(
        ledger: &mut Ledger,
        args: ForwardBackwardArgs,
        opts: CallOptions,
    ) -> Result<ForwardBackwardOp> {
        let chunks = plan_for(ledger, &args.data)?;
        let reservation = ledger.reserve_turn(&args.model_id, chunks.len(), chunk_order(ledger));
        ForwardBackwardOp::with_reservation(ledger, args, &chunks, reservation, opts)
    }

    /// Validates and plans a batch for `forward_backward_custom` (client-side loss, 0.38) and
    /// reserves its two turns (`2k` seq ids once sent): the forward pass uses the first
    /// reservation, the backward pass (same chunk boundaries) the second. Give a reservation
    /// whose turn has not started back with [`Ledger::release_reservation`].
    pub fn reserve_custom(
        ledger: &mut Ledger,
        model_id: &str,
        data: &[Datum],
    ) -> Result<(Vec<DatumChunk>, Reservation, Reservation)> {
        let chunks = plan_for(ledger, data)?;
        let order = chunk_order(ledger);
        let (forward, backward) = ledger.reserve_custom_loss(model_id, chunks.len(), order);
        Ok((chunks, forward, backward))
    }

    /// Builds the machine on an existing reservation and chunk plan (as returned by
    /// [`ForwardBackwardOp::reserve_custom`]). On error the reservation is released.
    pub fn with_reservation(
        ledger: &mut Ledger,
        args: ForwardBackwardArgs,
        chunks: &[DatumChunk],
        reservation: Reservation,
        opts: CallOptions,
    ) -> Result<ForwardBackwardOp> {
        match build_chunks(ledger, args, chunks, &reservation, opts) {
            Ok(calls) => Ok(ForwardBackwardOp {
                chunks: calls,
                routes: BTreeMap::new(),
                reservation,
                done: false,
            }),
            Err(e) => {
                ledger.release_reservation(&reservation);
                Err(e)
            }
        }
    }

    /// The turn this call holds (its seq ids are taken when it starts sending).
    pub fn reservation(&self) -> &Reservation {
        &self.reservation
    }

    /// The seq ids the chunks carry, in chunk order; `None` for a chunk whose turn has not
    /// started yet.
    pub fn seq_ids(&self) -> Vec<Option<u64>> {
        self.chunks.iter().map(|c| c.call.seq_id()).collect()
    }

    /// How many requests the batch was split into.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    fn fail(
        &mut self,
        ledger: &mut Ledger,
        now: Instant,
        error: Error,
    ) -> Output<ForwardBackwardOutput> {
        for chunk in &mut self.chunks {
            chunk.call.cancel(ledger, now);
        }
        self.done = true;
        Output::Done(Err(error))
    }
}

fn chunk_order(ledger: &Ledger) -> ChunkOrder {
    if ledger.client_config().parallel_fwdbwd_chunks {
        ChunkOrder::FirstChunkLast
    } else {
        ChunkOrder::Sequential
    }
}

fn plan_for(ledger: &Ledger, data: &[Datum]) -> Result<Vec<DatumChunk>> {
    for (i, datum) in data.iter().enumerate() {
        datum.validate(i)?;
    }
    let config = ledger.client_config();
    let limits = ChunkLimits {
        max_datums: usize::try_from(config.fwdbwd_max_chunk_len).unwrap_or(usize::MAX),
        max_bytes: usize::try_from(config.fwdbwd_max_chunk_bytes_count).unwrap_or(usize::MAX),
    };
    plan_chunks(data, limits)
}

fn build_chunks(
    ledger: &mut Ledger,
    args: ForwardBackwardArgs,
    chunks: &[DatumChunk],
    reservation: &Reservation,
    mut opts: CallOptions,
) -> Result<Vec<Chunk>> {
    if chunks.len() != reservation.count {
        return Err(Error::invalid(
            "forward_backward",
            format!(
                "{} chunks planned for a reservation of {} seq ids",
                chunks.len(),
                reservation.count
            ),
        ));
    }
    if opts.queue_client.is_none() {
        opts.queue_client = Some((ClientKind::Training, args.model_id.clone()));
    }
    let compress = ledger.client_config().proto_compress_fwdbwd;
    let total = args.data.len();
    // Each chunk takes its datums by move: they are encoded when the chunk is first sent.
    let mut datums = args.data.into_iter();
    let mut next = 0;
    let mut out = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.iter().enumerate() {
        if chunk.range.start != next || chunk.range.end > total {
            return Err(Error::invalid(
                "forward_backward",
                "a chunk range lies outside the batch",
            ));
        }
        next = chunk.range.end;
        let data: Vec<Datum> = datums.by_ref().take(chunk.range.len()).collect();
        let gates = Gates {
            turn: Some(reservation.slot(i)),
            fwdbwd_bytes: Some(chunk.estimated_bytes as u64),
            sampling_estimate: None,
        };
        let datum_count = data.len();
        let submit = ChunkRequest {
            submit: ForwardBackward {
                body: Bytes::new(),
                compressed: compress,
                forward_only: args.forward_only,
            },
            unsent: Some(UnsentChunk {
                model_id: args.model_id.clone(),
                data,
                loss_fn: args.loss_fn,
                loss_fn_config: args.loss_fn_config.clone(),
            }),
        };
        out.push(Chunk {
            call: Call::new(ledger, submit, opts.clone(), gates)?,
            datums: datum_count,
            result: None,
        });
    }
    Ok(out)
}

/// A chunk's request before its turn started: the datums, kept (moved from the batch) until
/// the seq id is known.
#[derive(Debug)]
struct UnsentChunk {
    model_id: String,
    data: Vec<Datum>,
    loss_fn: LossFn,
    loss_fn_config: Option<BTreeMap<String, LossConfigValue>>,
}

/// One chunk as a submission: encoded (and zstd-compressed when the server asks) once, when its
/// seq id is bound at first send; every retry reuses the encoded body.
#[derive(Debug)]
struct ChunkRequest {
    /// The endpoint request; its body is empty until the seq id is bound.
    submit: ForwardBackward,
    /// The chunk's data until it is encoded.
    unsent: Option<UnsentChunk>,
}

impl Submission for ChunkRequest {
    fn spec(&self) -> &'static EndpointSpec {
        self.submit.spec()
    }
    fn check(&self) -> Result<()> {
        // The batch was validated when it was planned.
        Ok(())
    }
    fn build_attempt(
        &self,
        context: &RequestContext,
        attempt: &AttemptHeaders,
    ) -> Result<http::Request<Bytes>> {
        if self.unsent.is_some() {
            return Err(Error::Closed(
                "internal error: a forward_backward chunk was sent before its seq id was known"
                    .into(),
            ));
        }
        self.submit.build_attempt(context, attempt)
    }
    fn rendered_path(&self, context: &RequestContext) -> String {
        self.submit.rendered_path(context)
    }
    fn result_type(&self) -> Option<RequestType> {
        self.submit.result_type()
    }
    fn read_timeout_duration(&self) -> Duration {
        self.submit.read_timeout_duration()
    }
    fn bind_seq_id(&mut self, seq_id: u64) -> Result<()> {
        let Some(chunk) = self.unsent.take() else {
            return Ok(());
        };
        let seq_id = i32::try_from(seq_id)
            .map_err(|_| Error::invalid("seq_id", "the training run ran out of seq ids"))?;
        let request = ForwardBackwardRequestRef {
            model_id: &chunk.model_id,
            seq_id,
            data: &chunk.data,
            loss_fn: chunk.loss_fn,
            loss_fn_config: chunk.loss_fn_config.as_ref(),
            forward_only: self.submit.forward_only,
        };
        self.submit.body = encode_chunk(&request, self.submit.compressed)?;
        Ok(())
    }
}

/// The body of one chunk: protobuf, zstd-compressed when `compress`.
fn encode_chunk(request: &ForwardBackwardRequestRef<'_>, compress: bool) -> Result<Bytes> {
    let mut body = Vec::new();
    encode_forward_backward(request, &mut body)?;
    if compress {
        Ok(Bytes::from(compress_body(&body, ZSTD_LEVEL)?))
    } else {
        // Encoded straight into the body that is sent (the encoder reserves the exact size),
        // so the multi-MB chunk is not copied once more.
        Ok(Bytes::from(body))
    }
}

fn decode_chunk(result: CallResult, datums: usize) -> Result<ForwardBackwardOutput> {
    match result {
        CallResult::Future {
            payload: FuturePayload::Protobuf(bytes),
            ..
        } => {
            let out = decode_forward_backward_output(bytes)?;
            if out.loss_fn_outputs.len() != datums {
                return Err(Error::decode(
                    "ForwardBackwardOutput",
                    format!(
                        "loss_fn_outputs has {} entries for a chunk of {datums} datums",
                        out.loss_fn_outputs.len()
                    ),
                ));
            }
            Ok(out)
        }
        _ => Err(Error::decode(
            "ForwardBackwardOutput",
            "expected a protobuf result",
        )),
    }
}

impl Machine for ForwardBackwardOp {
    type Output = ForwardBackwardOutput;

    fn poll_output(&mut self, ledger: &mut Ledger, now: Instant) -> Output<ForwardBackwardOutput> {
        if self.done {
            return Output::Done(Err(Error::Closed(
                "the forward_backward call already finished".into(),
            )));
        }
        let mut wait: Option<Wait> = None;
        for i in 0..self.chunks.len() {
            if self.chunks[i].result.is_some() {
                continue;
            }
            match self.chunks[i].call.poll_output(ledger, now) {
                Output::Transmit(t) => {
                    self.routes.insert(t.attempt, i);
                    return Output::Transmit(t);
                }
                Output::Event(e) => return Output::Event(e),
                Output::Wait(w) => wait = Some(wait.map_or(w, |x| x.merge(w))),
                Output::Done(Ok(result)) => match decode_chunk(result, self.chunks[i].datums) {
                    Ok(out) => self.chunks[i].result = Some(out),
                    Err(e) => return self.fail(ledger, now, e),
                },
                Output::Done(Err(e)) => return self.fail(ledger, now, e),
            }
        }
        if let Some(w) = wait {
            return Output::Wait(w);
        }
        self.done = true;
        self.routes.clear();
        let outputs = self
            .chunks
            .iter_mut()
            .filter_map(|c| c.result.take())
            .collect();
        Output::Done(Ok(combine_forward_backward_outputs(outputs)))
    }

    fn handle_response(
        &mut self,
        attempt: AttemptId,
        head: http::response::Parts,
        body: Bytes,
        now: Instant,
    ) {
        if let Some(i) = self.routes.remove(&attempt) {
            self.chunks[i]
                .call
                .handle_response(attempt, head, body, now);
        }
    }

    fn handle_transport_error(&mut self, attempt: AttemptId, error: TransportError, now: Instant) {
        if let Some(i) = self.routes.remove(&attempt) {
            self.chunks[i]
                .call
                .handle_transport_error(attempt, error, now);
        }
    }

    fn cancel(&mut self, ledger: &mut Ledger, now: Instant) {
        for chunk in &mut self.chunks {
            chunk.call.cancel(ledger, now);
        }
        self.routes.clear();
        self.done = true;
    }
}
