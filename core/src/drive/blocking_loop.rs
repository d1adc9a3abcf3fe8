//! The blocking drive loop, for plain threads.

use std::io::Read;

use bytes::Bytes;

use super::{CallGuard, MAX_BODY_BYTES};
use crate::call::{Event, Machine, Output, Transmit};
use crate::error::{Error, Result};
use crate::io::{BlockingClock, BlockingHttp, TransportError, TransportErrorKind};
use crate::ledger::SharedLedger;

/// Drives `machine` to completion on the calling thread: performs its requests one after
/// another through `http` (in the order the machine produced them), sleeps with `clock`, waits
/// on the ledger's condition variable when blocked, and hands every [`Event`] to `on_event`.
///
/// ```no_run
/// # fn example(
/// #     ledger: &tinker_core::ledger::SharedLedger,
/// #     http: &dyn tinker_core::io::BlockingHttp,
/// #     clock: &dyn tinker_core::io::BlockingClock,
/// # ) -> tinker_core::Result<()> {
/// use tinker_core::{drive, ops};
/// use tinker_core::types::{AdamParams, StepParams};
///
/// let params = StepParams::Adam(AdamParams::with_learning_rate(1e-4));
/// let op = ops::optim_step(&mut ledger.lock(), "sess:train:0", params, Default::default())?;
/// let response = drive::drive_blocking(op, ledger, http, clock, |event| println!("{event:?}"))?;
/// # Ok(()) }
/// ```
pub fn drive_blocking<M: Machine>(
    machine: M,
    ledger: &SharedLedger,
    http: &dyn BlockingHttp,
    clock: &dyn BlockingClock,
    mut on_event: impl FnMut(Event),
) -> Result<M::Output> {
    let mut guard = CallGuard::new(ledger, machine, clock.now());
    let mut pending: Vec<Transmit> = Vec::new();
    loop {
        let now = clock.now();
        guard.observe(now);
        let output = {
            let mut l = ledger.lock();
            guard.machine().poll_output(&mut l, now)
        };
        let wait = match output {
            Output::Transmit(t) => {
                pending.push(t);
                continue;
            }
            Output::Event(e) => {
                on_event(e);
                continue;
            }
            Output::Done(result) => {
                guard.disarm();
                return result;
            }
            Output::Wait(w) => w,
        };
        if !pending.is_empty() {
            for t in pending.drain(..) {
                let attempt = t.attempt;
                let outcome = perform(http, t);
                let now = clock.now();
                guard.observe(now);
                match outcome {
                    Ok((head, body)) => guard.machine().handle_response(attempt, head, body, now),
                    Err(e) => guard.machine().handle_transport_error(attempt, e, now),
                }
            }
            continue;
        }
        let now = clock.now();
        match (wait.until, wait.blocked) {
            (Some(until), _) if until <= now => {}
            (None, Some((_, seen))) => {
                ledger.wait_changed_blocking(seen, None);
            }
            (Some(until), Some((_, seen))) => {
                let real = clock.real_wait(until.saturating_duration_since(now));
                if !ledger.wait_changed_blocking(seen, Some(real)) {
                    clock.sleep_until(until);
                }
            }
            (Some(until), None) => clock.sleep_until(until),
            (None, None) => {
                return Err(Error::Closed(
                    "internal error: the call waits for nothing (please report)".into(),
                ))
            }
        }
    }
}

fn perform(
    http: &dyn BlockingHttp,
    t: Transmit,
) -> std::result::Result<(http::response::Parts, Bytes), TransportError> {
    let response = http.send(t.request, t.timeouts)?;
    let mut body = Vec::new();
    let limit = u64::try_from(MAX_BODY_BYTES).unwrap_or(u64::MAX) + 1;
    response
        .body
        .take(limit)
        .read_to_end(&mut body)
        .map_err(|e| {
            let kind = match e.kind() {
                std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                    TransportErrorKind::Timeout
                }
                _ => TransportErrorKind::Io,
            };
            TransportError::new(kind, e.to_string())
        })?;
    if body.len() > MAX_BODY_BYTES {
        return Err(TransportError::new(
            TransportErrorKind::Protocol,
            format!("response body larger than {MAX_BODY_BYTES} bytes"),
        ));
    }
    Ok((response.head, Bytes::from(body)))
}
