//! `Pending<T>`: the handle of a request the server accepted and is still working on.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::io::{AsyncRuntime, BoxFuture};

/// What a waiting call last heard from the server, shared between the call's event handler and
/// its handle so a timeout can say what it was waiting for.
#[derive(Debug, Default)]
pub(crate) struct WaitState {
    /// The server futures' request ids, in submission order.
    pub(crate) request_ids: Vec<String>,
    /// The last queue state reported, with its reason (`paused_capacity (reason)`).
    pub(crate) queue_state: Option<String>,
}

pub(crate) type SharedWaitState = Arc<Mutex<WaitState>>;

pub(crate) fn lock(state: &SharedWaitState) -> std::sync::MutexGuard<'_, WaitState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A request the server has accepted: its result arrives later.
///
/// Operations that return a server future (`forward_backward`, `optim_step`, `save_state`, …)
/// resolve to a `Pending` as soon as the request has been *submitted*, so several requests can be
/// put on the wire back to back and their results awaited afterwards, as the cookbook does:
///
/// ```no_run
/// # async fn step(training: tinker_core::client::TrainingClient,
/// #               batch: Vec<tinker_core::types::Datum>) -> tinker_core::Result<()> {
/// use tinker_core::types::{AdamParams, LossFn};
/// let fb = training.forward_backward(batch, LossFn::CrossEntropy).await?;
/// let opt = training.optim_step(AdamParams::with_learning_rate(1e-4)).await?;
/// let loss = fb.result().await?.loss();
/// opt.result().await?;
/// # Ok(()) }
/// ```
///
/// Awaiting the `Pending` itself is the same as [`Pending::result`]. Polling for the result
/// happens while the result is awaited; the server works on the request either way. Dropping a
/// `Pending` abandons the result (the ledger is left consistent: budgets refunded, turns
/// advanced).
#[must_use = "a Pending does nothing until its result is awaited"]
pub struct Pending<T> {
    what: &'static str,
    rest: BoxFuture<'static, Result<T>>,
    runtime: Arc<dyn AsyncRuntime>,
    wait: SharedWaitState,
    submitted_at: Instant,
}

impl<T> fmt::Debug for Pending<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("what", &self.what)
            .field("request_ids", &lock(&self.wait).request_ids)
            .finish_non_exhaustive()
    }
}

impl<T: Send + 'static> Pending<T> {
    pub(crate) fn new(
        what: &'static str,
        rest: BoxFuture<'static, Result<T>>,
        runtime: Arc<dyn AsyncRuntime>,
        wait: SharedWaitState,
    ) -> Pending<T> {
        let submitted_at = runtime.now();
        Pending {
            what,
            rest,
            runtime,
            wait,
            submitted_at,
        }
    }

    /// A handle whose result is already known (operations the server answers directly).
    pub(crate) fn ready(
        what: &'static str,
        value: T,
        runtime: Arc<dyn AsyncRuntime>,
        wait: SharedWaitState,
    ) -> Pending<T> {
        Pending::new(what, Box::pin(async move { Ok(value) }), runtime, wait)
    }

    /// The request id of the server future (the first one when the operation was split into
    /// several requests, as a large `forward_backward` is).
    pub fn request_id(&self) -> Option<String> {
        lock(&self.wait).request_ids.first().cloned()
    }

    /// Every request id of the operation, in submission order.
    pub fn request_ids(&self) -> Vec<String> {
        lock(&self.wait).request_ids.clone()
    }

    /// The public method this handle belongs to, e.g. `TrainingClient.forward_backward`.
    pub fn method(&self) -> &'static str {
        self.what
    }

    /// Waits for the result, bounded by the deadline the call was made with (the client's
    /// default unless the client was narrowed with `with_deadline`).
    pub async fn result(self) -> Result<T> {
        self.rest.await
    }

    /// Waits for the result for at most `timeout` from now. On expiry the error is
    /// [`Error::Timeout`] naming the request id and the last queue state the server reported,
    /// and the call is abandoned (the server may still finish it).
    pub async fn result_with_deadline(self, timeout: Duration) -> Result<T> {
        let deadline = self.runtime.now() + timeout;
        let sleep = self.runtime.sleep_until(deadline);
        let Pending {
            what,
            rest,
            wait,
            submitted_at,
            runtime,
        } = self;
        match race(rest, sleep).await {
            Some(result) => result,
            None => {
                let state = lock(&wait);
                Err(Error::Timeout {
                    waiting_for: format!("the result of {what}"),
                    request_id: state.request_ids.first().cloned(),
                    queue_state: state.queue_state.clone(),
                    elapsed: runtime.now().saturating_duration_since(submitted_at),
                })
            }
        }
    }
}

impl<T: Send + 'static> IntoFuture for Pending<T> {
    type Output = Result<T>;
    type IntoFuture = BoxFuture<'static, Result<T>>;

    fn into_future(self) -> Self::IntoFuture {
        self.rest
    }
}

/// Polls `work` until it finishes (`Some`) or `timer` fires first (`None`; `work` is dropped,
/// which cancels it).
pub(crate) async fn race<T>(
    mut work: BoxFuture<'static, T>,
    mut timer: BoxFuture<'static, ()>,
) -> Option<T> {
    std::future::poll_fn(move |cx: &mut Context<'_>| {
        if let Poll::Ready(v) = work.as_mut().poll(cx) {
            return Poll::Ready(Some(v));
        }
        if Pin::new(&mut timer).poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}
