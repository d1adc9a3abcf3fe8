//! The async drive loop, shared unchanged by every async runtime adapter.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::Poll;

use bytes::{Bytes, BytesMut};

use super::{CallGuard, MAX_BODY_BYTES};
use crate::call::{AttemptId, Event, Machine, Output, Transmit, Wait};
use crate::error::{Error, Result};
use crate::io::{AsyncHttp, AsyncRuntime, BoxFuture, TransportError, TransportErrorKind};
use crate::ledger::SharedLedger;

type Outcome = (
    AttemptId,
    std::result::Result<(http::response::Parts, Bytes), TransportError>,
);

/// Drives `machine` to completion on an async runtime: sends its requests through `http`
/// (concurrently when it has several out), sleeps with `runtime`, waits for ledger changes when
/// it is blocked, and hands every [`Event`] to `on_event`.
///
/// The machine is guarded from the moment this function is called: dropping the returned future
/// at any point (even before its first poll) cancels it.
///
/// ```no_run
/// # async fn example(
/// #     ledger: &tinker_core::ledger::SharedLedger,
/// #     http: &dyn tinker_core::io::AsyncHttp,
/// #     rt: &dyn tinker_core::io::AsyncRuntime,
/// # ) -> tinker_core::Result<()> {
/// use tinker_core::{drive, ops};
/// use tinker_core::types::{AdamParams, StepParams};
///
/// let params = StepParams::Adam(AdamParams::with_learning_rate(1e-4));
/// let op = ops::optim_step(&mut ledger.lock(), "sess:train:0", params, Default::default())?;
/// let response = drive::drive_async(op, ledger, http, rt, |event| println!("{event:?}")).await?;
/// # Ok(()) }
/// ```
pub fn drive_async<'a, M>(
    machine: M,
    ledger: &'a SharedLedger,
    http: &'a dyn AsyncHttp,
    runtime: &'a dyn AsyncRuntime,
    mut on_event: impl FnMut(Event) + Send + 'a,
) -> impl Future<Output = Result<M::Output>> + Send + 'a
where
    M: Machine + 'a,
{
    let mut guard = CallGuard::new(ledger, machine, runtime.now());
    async move {
        let mut in_flight: Vec<BoxFuture<'a, Outcome>> = Vec::new();
        loop {
            let wait = loop {
                let now = runtime.now();
                guard.observe(now);
                let output = {
                    let mut l = ledger.lock();
                    guard.machine().poll_output(&mut l, now)
                };
                match output {
                    Output::Transmit(t) => in_flight.push(Box::pin(perform(http, t))),
                    Output::Event(e) => on_event(e),
                    Output::Wait(w) => break w,
                    Output::Done(result) => {
                        guard.disarm();
                        return result;
                    }
                }
            };
            if in_flight.is_empty() && wait.until.is_none() && wait.blocked.is_none() {
                return Err(Error::Closed(
                    "internal error: the call waits for nothing (please report)".into(),
                ));
            }
            let completed = wait_any(&mut in_flight, wait, ledger, runtime).await;
            let now = runtime.now();
            guard.observe(now);
            for (attempt, outcome) in completed {
                match outcome {
                    Ok((head, body)) => guard.machine().handle_response(attempt, head, body, now),
                    Err(e) => guard.machine().handle_transport_error(attempt, e, now),
                }
            }
        }
    }
}

/// Waits until at least one attempt completes (returning every one that has, in the order they
/// were started), the wait's instant passes, or the ledger moves past the blocked generation.
async fn wait_any<'a>(
    in_flight: &mut Vec<BoxFuture<'a, Outcome>>,
    wait: Wait,
    ledger: &SharedLedger,
    runtime: &dyn AsyncRuntime,
) -> Vec<Outcome> {
    let mut sleep = wait.until.map(|t| runtime.sleep_until(t));
    let mut changed = wait.blocked.map(|(_, seen)| ledger.changed(seen));
    poll_fn(|cx| {
        let mut done = Vec::new();
        let mut i = 0;
        while i < in_flight.len() {
            if let Poll::Ready(outcome) = in_flight[i].as_mut().poll(cx) {
                done.push(outcome);
                drop(in_flight.remove(i));
            } else {
                i += 1;
            }
        }
        if !done.is_empty() {
            return Poll::Ready(done);
        }
        if let Some(s) = sleep.as_mut() {
            if s.as_mut().poll(cx).is_ready() {
                return Poll::Ready(done);
            }
        }
        if let Some(c) = changed.as_mut() {
            if Pin::new(c).poll(cx).is_ready() {
                return Poll::Ready(done);
            }
        }
        Poll::Pending
    })
    .await
}

async fn perform(http: &dyn AsyncHttp, t: Transmit) -> Outcome {
    let attempt = t.attempt;
    let outcome = async {
        let response = http.send(t.request, t.timeouts).await?;
        let mut body = response.body;
        let mut first: Option<Bytes> = None;
        let mut rest = BytesMut::new();
        while let Some(chunk) = body.next_chunk().await {
            let chunk = chunk?;
            let have = first.as_ref().map_or(0, Bytes::len) + rest.len();
            if have + chunk.len() > MAX_BODY_BYTES {
                return Err(TransportError::new(
                    TransportErrorKind::Protocol,
                    format!("response body larger than {MAX_BODY_BYTES} bytes"),
                ));
            }
            match &first {
                None if rest.is_empty() => first = Some(chunk),
                _ => {
                    if let Some(f) = first.take() {
                        rest.extend_from_slice(&f);
                    }
                    rest.extend_from_slice(&chunk);
                }
            }
        }
        let body = match first {
            Some(f) if rest.is_empty() => f,
            _ => rest.freeze(),
        };
        Ok((response.head, body))
    }
    .await;
    (attempt, outcome)
}
