//! The one place the clients hand machines to the engine's async drive loop.
//!
//! A client method builds an operation from [`crate::ops`] with the ledger locked (so seq ids and
//! turns are reserved in call order, before any I/O), then either drives it to the end
//! ([`Exec::run`]) or until every request of it has been submitted ([`Exec::submit`], which
//! returns a [`Pending`] that keeps driving when its result is awaited). Events become `tracing`
//! records, queue-state observer calls and the wait state a timeout error reports.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tracing::Instrument;

use super::housekeeping::TelemetryInbox;
use super::options::{QueueStateEvent, QueueStateObserver};
use super::pending::{lock, Pending, SharedWaitState};
use crate::call::{CallOptions, Event, Machine};
use crate::drive::drive_async;
use crate::endpoints::ApiRequest;
use crate::error::Result;
use crate::io::{AsyncHttp, AsyncRuntime, BoxFuture};
use crate::ledger::{Ledger, SharedLedger};
use crate::retry::ClientKind;

/// Where a call comes from: the public method, the client whose queue state it reports, and its
/// deadline.
#[derive(Debug, Clone)]
pub(crate) struct CallSite {
    /// `x-sdk-method`, e.g. `TrainingClient.forward_backward`.
    pub(crate) method: &'static str,
    /// The training run or sampling session polled for (queue-state reports), if any.
    pub(crate) client: Option<(ClientKind, String)>,
    /// Bound on the whole call, from the moment it is made.
    pub(crate) deadline: Option<Duration>,
}

impl CallSite {
    pub(crate) fn new(method: &'static str, deadline: Option<Duration>) -> CallSite {
        CallSite {
            method,
            client: None,
            deadline,
        }
    }

    pub(crate) fn for_client(mut self, kind: ClientKind, id: impl Into<String>) -> CallSite {
        self.client = Some((kind, id.into()));
        self
    }
}

/// The I/O and shared state every call of one service client uses.
#[derive(Clone)]
pub(crate) struct Exec {
    pub(crate) http: Arc<dyn AsyncHttp>,
    pub(crate) runtime: Arc<dyn AsyncRuntime>,
    pub(crate) ledger: SharedLedger,
    pub(crate) observer: Option<QueueStateObserver>,
    /// Telemetry events for the housekeeper's queue.
    pub(crate) telemetry: Arc<TelemetryInbox>,
}

impl Exec {
    /// The engine options of a call made now from `site`.
    pub(crate) fn call_options(&self, site: &CallSite) -> CallOptions {
        let mut opts =
            CallOptions::default().with_deadline(site.deadline.map(|d| self.runtime.now() + d));
        // Background requests (heartbeats, telemetry) run outside any public method.
        if !site.method.is_empty() {
            opts = opts.with_sdk_method(site.method);
        }
        if let Some((kind, id)) = &site.client {
            opts = opts.with_queue_client(*kind, id.clone());
        }
        opts
    }

    /// Builds an operation with the ledger locked (a synchronous scope: nothing is awaited).
    pub(crate) fn start<M>(
        &self,
        site: &CallSite,
        build: impl FnOnce(&mut Ledger, CallOptions) -> Result<M>,
    ) -> Result<M> {
        let opts = self.call_options(site);
        let mut ledger = self.ledger.lock();
        build(&mut ledger, opts)
    }

    /// Drives `machine` to its result.
    pub(crate) async fn run<M>(&self, machine: M, site: CallSite) -> Result<M::Output>
    where
        M: Machine + 'static,
    {
        let span = call_span(&site);
        let method = site.method;
        let mut events = self.event_sink(site);
        let result = drive_async(
            machine,
            &self.ledger,
            &*self.http,
            &*self.runtime,
            move |e| events.on_event(e),
        )
        .instrument(span)
        .await;
        self.report_failure(method, &result);
        result
    }

    fn event_sink(&self, site: CallSite) -> EventSink {
        EventSink::new(
            site,
            self.observer.clone(),
            self.telemetry.clone(),
            self.runtime.clone(),
        )
    }

    /// Records the telemetry event of an error that escapes a public method (13.3). Background
    /// requests (no method) report nothing: a failing telemetry flush must not feed itself.
    fn report_failure<T>(&self, method: &str, result: &Result<T>) {
        if let (Err(e), false) = (result, method.is_empty()) {
            if let Some((kind, severity)) = crate::telemetry::error_event(method, e) {
                self.telemetry.record(kind, severity, self.runtime.now());
            }
        }
    }

    /// A direct request: build, drive, decode.
    pub(crate) async fn direct<R>(&self, request: R, site: CallSite) -> Result<R::Response>
    where
        R: ApiRequest + Send + Sync + 'static,
        R::Response: Send + 'static,
    {
        let op = self.start(&site, |l, o| crate::ops::direct(l, request, o))?;
        self.run(op, site).await
    }

    /// Drives `machine` until `requests` server futures have been obtained, then hands back a
    /// [`Pending`] that drives the rest when awaited.
    ///
    /// It is one drive of the machine throughout: this function polls the drive future until
    /// the last `Submitted` event has been seen, and the [`Pending`] keeps the same future.
    pub(crate) async fn submit<M>(
        &self,
        machine: M,
        requests: usize,
        site: CallSite,
    ) -> Result<Pending<M::Output>>
    where
        M: Machine + 'static,
    {
        let span = call_span(&site);
        let method = site.method;
        let mut events = self.event_sink(site);
        let wait = events.wait.clone();
        let submitted = Arc::new(AtomicUsize::new(0));
        let counter = submitted.clone();
        let exec = self.clone();
        let mut drive: BoxFuture<'static, Result<M::Output>> = Box::pin(
            async move {
                let result = drive_async(
                    machine,
                    &exec.ledger,
                    &*exec.http,
                    &*exec.runtime,
                    move |e| {
                        if matches!(e, Event::Submitted { .. }) {
                            counter.fetch_add(1, Ordering::SeqCst);
                        }
                        events.on_event(e)
                    },
                )
                .await;
                exec.report_failure(method, &result);
                result
            }
            .instrument(span),
        );
        let finished = std::future::poll_fn(|cx| match drive.as_mut().poll(cx) {
            Poll::Ready(result) => Poll::Ready(Some(result)),
            Poll::Pending if submitted.load(Ordering::SeqCst) >= requests => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        match finished {
            // Finished while submitting (the server answered at once, or the call failed).
            Some(result) => result.map(|v| Pending::ready(method, v, self.runtime.clone(), wait)),
            None => Ok(Pending::new(method, drive, self.runtime.clone(), wait)),
        }
    }
}

fn call_span(site: &CallSite) -> tracing::Span {
    tracing::info_span!(
        "tinker.call",
        method = site.method,
        client = site
            .client
            .as_ref()
            .map(|(_, id)| id.as_str())
            .unwrap_or(""),
        request_id = tracing::field::Empty,
        attempt = tracing::field::Empty,
    )
}

/// Turns a call's events into logs, observer calls and the wait state.
struct EventSink {
    site: CallSite,
    observer: Option<QueueStateObserver>,
    wait: SharedWaitState,
    telemetry: Arc<TelemetryInbox>,
    runtime: Arc<dyn AsyncRuntime>,
}

impl EventSink {
    fn new(
        site: CallSite,
        observer: Option<QueueStateObserver>,
        telemetry: Arc<TelemetryInbox>,
        runtime: Arc<dyn AsyncRuntime>,
    ) -> EventSink {
        EventSink {
            site,
            observer,
            wait: SharedWaitState::default(),
            telemetry,
            runtime,
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Submitted { request_id } => {
                tracing::Span::current().record("request_id", request_id.as_str());
                tracing::debug!(request_id = %request_id, "submitted");
                lock(&self.wait).request_ids.push(request_id);
            }
            Event::QueueState { state, reason, log } => {
                let text = match &reason {
                    Some(r) => format!("{} ({r})", state.name()),
                    None => state.name().to_owned(),
                };
                lock(&self.wait).queue_state = Some(text);
                if let Some(line) = log {
                    // Already rate-limited by the ledger's queue-state tracker.
                    tracing::warn!(method = self.site.method, "{line}");
                }
                if let Some(observer) = &self.observer {
                    observer(&QueueStateEvent {
                        client: self
                            .site
                            .client
                            .as_ref()
                            .map(|(_, id)| id.clone())
                            .unwrap_or_default(),
                        method: self.site.method.to_owned(),
                        state,
                        reason,
                    });
                }
            }
            Event::Retrying {
                endpoint,
                attempt,
                delay,
                reason,
            } => {
                tracing::Span::current().record("attempt", attempt);
                tracing::info!(endpoint, attempt, ?delay, %reason, "retrying");
                if !self.site.method.is_empty() {
                    let (kind, severity) = crate::telemetry::retry_event(
                        self.site.method,
                        endpoint,
                        attempt,
                        delay,
                        &reason,
                    );
                    self.telemetry.record(kind, severity, self.runtime.now());
                }
            }
            Event::StillQueued { queue_state } => {
                lock(&self.wait).queue_state = Some(queue_state);
            }
            Event::BillingPaused => {
                tracing::warn!("The job is paused due to billing status");
            }
        }
    }
}
