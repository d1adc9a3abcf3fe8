//! Operations: what the clients' methods run, as sans-IO [`Machine`]s built from calls.
//!
//! Every constructor takes the ledger (to reserve the training run's turn and draw keys *at call
//! time*, before any I/O; seq ids are taken when the turn starts sending) and returns a machine to hand to a driver ([`crate::drive::drive_async`] or
//! [`crate::drive::drive_blocking`]). Invalid input is an error from the constructor, before
//! anything is sent.
//!
//! | Operation | Constructor | Result |
//! |---|---|---|
//! | any direct endpoint | [`direct`] | the request's response type |
//! | any future endpoint with a JSON result | [`future`] | `T` |
//! | a training-run request (turn + seq id) | [`training`] | `T` |
//! | `create_model` | [`create_model`] | [`CreateModelResponse`] |
//! | `optim_step` | [`optim_step`] | [`OptimStepResponse`] |
//! | `forward_backward` / `forward` | [`ForwardBackwardOp::new`] | [`ForwardBackwardOutput`] |
//! | `forward_backward_custom` (client-side loss) | [`ForwardBackwardCustomOp::new`] | [`ForwardBackwardOutput`] |
//! | `sample` / `compute_logprobs` | [`SampleOp::new`] | [`SampleResponse`] |
//! | a named save (409 resolved, A10) | [`IdempotentSave::new`] | the save's response |
//! | `stream_sample` (server-sent events; the client does the I/O) | [`SampleStreamStart::new`] + [`SampleStreamDecoder`] | [`SampleStreamChunk`]s |
//!
//! [`ForwardBackwardOutput`]: crate::types::ForwardBackwardOutput
//! [`SampleResponse`]: crate::types::SampleResponse

mod forward_backward;
mod forward_backward_custom;
mod sample;
mod sample_stream;
mod save;

#[cfg(test)]
mod tests;

pub use forward_backward::{ForwardBackwardArgs, ForwardBackwardOp};
pub use forward_backward_custom::{ForwardBackwardCustomOp, SharedCustomLoss};
pub use sample::SampleOp;
pub use sample_stream::{
    SampleStreamChunk, SampleStreamChunkKind, SampleStreamDecoder, SampleStreamStart, EVENT_STREAM,
    STREAM_SAMPLE_PATH,
};
pub use save::{
    find_checkpoint, on_save_conflict, ConflictAction, IdempotentSave, SavedCheckpoint,
};

use std::time::Instant;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::call::{
    AttemptId, Call, CallOptions, CallResult, FuturePayload, Gates, Machine, Output, Sequenced,
    TrainingRequest,
};
use crate::endpoints::{ApiRequest, EndpointSpec, ResponseBody};
use crate::error::{Error, Result};
use crate::io::TransportError;
use crate::ledger::{ChunkOrder, Ledger};
use crate::types::{
    CreateModelRequest, CreateModelResponse, OptimStepRequest, OptimStepResponse, StepParams,
};

/// One call whose raw result is decoded into `T`.
#[derive(Debug)]
pub struct TypedCall<T> {
    call: Call,
    decode: fn(&'static EndpointSpec, CallResult) -> Result<T>,
}

impl<T> TypedCall<T> {
    /// Wraps a call with a decoder.
    pub fn new(
        call: Call,
        decode: fn(&'static EndpointSpec, CallResult) -> Result<T>,
    ) -> TypedCall<T> {
        TypedCall { call, decode }
    }

    /// The underlying call.
    pub fn call(&self) -> &Call {
        &self.call
    }

    /// The underlying call, mutably.
    pub fn call_mut(&mut self) -> &mut Call {
        &mut self.call
    }
}

impl<T: Send> Machine for TypedCall<T> {
    type Output = T;

    fn poll_output(&mut self, ledger: &mut Ledger, now: Instant) -> Output<T> {
        match self.call.poll_output(ledger, now) {
            Output::Transmit(t) => Output::Transmit(t),
            Output::Wait(w) => Output::Wait(w),
            Output::Event(e) => Output::Event(e),
            Output::Done(r) => {
                let spec = self.call.endpoint();
                Output::Done(r.and_then(|r| (self.decode)(spec, r)))
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
        self.call.handle_response(attempt, head, body, now);
    }

    fn handle_transport_error(&mut self, attempt: AttemptId, error: TransportError, now: Instant) {
        self.call.handle_transport_error(attempt, error, now);
    }

    fn cancel(&mut self, ledger: &mut Ledger, now: Instant) {
        self.call.cancel(ledger, now);
    }
}

fn decode_direct<R: ApiRequest>(
    spec: &'static EndpointSpec,
    result: CallResult,
) -> Result<R::Response> {
    match result {
        CallResult::Direct { body, .. } => R::Response::from_body(spec, &body),
        CallResult::Future { .. } => Err(Error::decode(
            std::any::type_name::<R>(),
            "a future where a direct reply was expected",
        )),
    }
}

/// Decodes a future's JSON result as `T`.
pub fn decode_future_json<T: DeserializeOwned>(
    _spec: &'static EndpointSpec,
    result: CallResult,
) -> Result<T> {
    match result {
        CallResult::Future {
            payload: FuturePayload::Json(v),
            ..
        } => serde_json::from_value(v).map_err(|e| {
            Error::decode(
                std::any::type_name::<T>()
                    .rsplit("::")
                    .next()
                    .unwrap_or("result"),
                e.to_string(),
            )
        }),
        CallResult::Future {
            payload: FuturePayload::Protobuf(_),
            ..
        } => Err(Error::decode(
            std::any::type_name::<T>(),
            "a protobuf result where JSON was expected",
        )),
        CallResult::Direct { .. } => Err(Error::decode(
            std::any::type_name::<T>(),
            "a direct reply where a future was expected",
        )),
    }
}

/// `auth/token`: exchanges the API key for a JWT (JWT mode, protocol.md 2.3). Sent with the API
/// key even after the context switched to a JWT. Marks the exchange as running in the ledger, so
/// requests needing a token wait for it; feed the result to [`Ledger::install_jwt`] (or
/// [`crate::auth::JwtState::on_exchange_failed`]).
pub fn exchange_token(
    ledger: &mut Ledger,
    opts: CallOptions,
) -> Result<TypedCall<crate::types::AuthTokenResponse>> {
    let Some(key) = ledger.jwt_api_key().cloned() else {
        return Err(Error::Config("JWT auth is not enabled".into()));
    };
    let request = crate::call::WithCredential {
        request: crate::types::AuthTokenRequest {},
        credential: key,
    };
    let call = Call::new(ledger, request, opts, Gates::default())?;
    if let Some(jwt) = ledger.jwt_mut() {
        jwt.begin_exchange();
    }
    Ok(TypedCall::new(
        call,
        decode_direct::<crate::types::AuthTokenRequest>,
    ))
}

/// A direct (non-future) endpoint: one call, the 2xx body decoded as `R::Response`.
pub fn direct<R>(
    ledger: &mut Ledger,
    request: R,
    opts: CallOptions,
) -> Result<TypedCall<R::Response>>
where
    R: ApiRequest + Send + Sync + 'static,
{
    let call = Call::new(ledger, request, opts, Gates::default())?;
    Ok(TypedCall::new(call, decode_direct::<R>))
}

/// A future endpoint whose result is JSON, decoded as `T` (no training turn: use [`training`]
/// for requests of a training run).
pub fn future<R, T>(ledger: &mut Ledger, request: R, opts: CallOptions) -> Result<TypedCall<T>>
where
    R: ApiRequest + Send + Sync + 'static,
    T: DeserializeOwned,
{
    let call = Call::new(ledger, request, opts, Gates::default())?;
    Ok(TypedCall::new(call, decode_future_json::<T>))
}

/// A request of a training run: reserves the run's next turn now and submits the request in
/// turn order (optim_step, save_weights, save_weights_for_sampler, save_weights_external,
/// load_weights onto a model). Build `request` with any seq id (0 by convention): the run's
/// next seq id is put in when its turn starts, just before it is sent, so a call given up
/// before that takes no id.
pub fn training<R, T>(
    ledger: &mut Ledger,
    model_id: &str,
    request: R,
    opts: CallOptions,
) -> Result<TypedCall<T>>
where
    R: TrainingRequest + 'static,
    T: DeserializeOwned,
{
    let reservation = ledger.reserve_turn(model_id, 1, ChunkOrder::Sequential);
    let gates = Gates {
        turn: Some(reservation.slot(0)),
        ..Gates::default()
    };
    match Call::new(ledger, Sequenced(request), opts, gates) {
        Ok(call) => Ok(TypedCall::new(call, decode_future_json::<T>)),
        Err(e) => {
            ledger.release_reservation(&reservation);
            Err(e)
        }
    }
}

/// `create_model`: the request is built with the session's next `model_seq_id`.
pub fn create_model(
    ledger: &mut Ledger,
    build: impl FnOnce(u64) -> CreateModelRequest,
    opts: CallOptions,
) -> Result<TypedCall<CreateModelResponse>> {
    let seq = ledger.next_model_seq_id();
    future(ledger, build(seq), opts)
}

/// `optim_step` on a training run, in turn order.
pub fn optim_step(
    ledger: &mut Ledger,
    model_id: &str,
    params: StepParams,
    opts: CallOptions,
) -> Result<TypedCall<OptimStepResponse>> {
    let request = OptimStepRequest::new(model_id, 0, params);
    training(ledger, model_id, request, opts)
}
