//! The driver of [`crate::recovery::RecoveryMachine`]: a background task, started with the
//! runtime's spawner like the housekeeper, that fetches watched runs and recreates corrupted ones
//! with the service client's own methods. It works unchanged on every runtime.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use futures_util::stream::{FuturesUnordered, StreamExt as _};

use super::service::ServiceClient;
use super::training::TrainingClient;
use crate::error::Result;
use crate::io::BoxFuture;
use crate::recovery::{RecoveryEvent, RecoveryMachine, RecoveryOutput, RecoveryPolicy};
use crate::types::TrainingRun;

/// A run recreated from a checkpoint, as handed to [`RecoveryHooks::on_recovered`].
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The corrupted run.
    pub run_id: String,
    /// The checkpoint the new run was created from.
    pub checkpoint: String,
    /// A training client of the new run, ready to continue training.
    pub client: TrainingClient,
}

type EventHook = Arc<dyn Fn(&RecoveryEvent) + Send + Sync>;
type RecoveredHook = Arc<dyn Fn(Recovered) + Send + Sync>;
type FailureHook = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// The user's callbacks of a [`RecoveryMonitor`]. They run on the monitor's task; a panic in
/// one is caught and logged, and the monitor carries on.
///
/// ```
/// use tinker_core::client::RecoveryHooks;
/// let hooks = RecoveryHooks::default()
///     .on_event(|e| println!("recovery of {}: {}", e.run_id(), e.stage()))
///     .on_recovered(|r| println!("{} continues as {}", r.run_id, r.client.model_id()))
///     .on_failure(|run, why| eprintln!("gave up on {run}: {why}"));
/// # let _ = hooks;
/// ```
#[derive(Clone, Default)]
pub struct RecoveryHooks {
    event: Option<EventHook>,
    recovered: Option<RecoveredHook>,
    failure: Option<FailureHook>,
}

impl std::fmt::Debug for RecoveryHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryHooks")
            .field("event", &self.event.is_some())
            .field("recovered", &self.recovered.is_some())
            .field("failure", &self.failure.is_some())
            .finish()
    }
}

impl RecoveryHooks {
    /// Called with every stage of every recovery (and failed polls).
    pub fn on_event(mut self, f: impl Fn(&RecoveryEvent) + Send + Sync + 'static) -> Self {
        self.event = Some(Arc::new(f));
        self
    }

    /// Called once a corrupted run has been recreated, with the new run's client.
    pub fn on_recovered(mut self, f: impl Fn(Recovered) + Send + Sync + 'static) -> Self {
        self.recovered = Some(Arc::new(f));
        self
    }

    /// Called with the run id and the last error when a run's attempts are exhausted.
    pub fn on_failure(mut self, f: impl Fn(&str, &str) + Send + Sync + 'static) -> Self {
        self.failure = Some(Arc::new(f));
        self
    }
}

/// What the user's handle and the task share.
struct Control {
    machine: Mutex<RecoveryMachine>,
    /// Set when a command arrived that the task has not looked at yet.
    kick: Mutex<(bool, Option<Waker>)>,
}

impl Control {
    fn machine(&self) -> MutexGuard<'_, RecoveryMachine> {
        self.machine.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wake(&self) {
        let waker = {
            let mut k = self.kick.lock().unwrap_or_else(|p| p.into_inner());
            k.0 = true;
            k.1.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Whether a command arrived since the last call; registers `cx` to hear of the next.
    fn kicked(&self, cx: &Context<'_>) -> bool {
        let mut k = self.kick.lock().unwrap_or_else(|p| p.into_inner());
        if std::mem::take(&mut k.0) {
            return true;
        }
        k.1 = Some(cx.waker().clone());
        false
    }
}

/// Stops the task when the last [`RecoveryMonitor`] clone goes.
struct Owner {
    control: Arc<Control>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.control.machine().stop();
        self.control.wake();
    }
}

/// Automatic recovery of corrupted training runs (Tinkex F127/F128), running in the background
/// of a [`ServiceClient`]. Started with [`ServiceClient::start_recovery`]; stopped by
/// [`RecoveryMonitor::stop`] or when the last clone is dropped.
///
/// Every `poll_interval` it fetches each watched run (`GET training_runs/{id}`); a run the
/// server reports `corrupted: true` is recreated from the checkpoint the policy selects, with
/// `create_training_client_from_state_with_optimizer` (or without optimizer state), retrying
/// with back-off up to `max_attempts` times, at most `max_concurrent` runs at once. Each stage
/// is reported to [`RecoveryHooks`].
///
/// ```no_run
/// # async fn demo(service: tinker_core::client::ServiceClient,
/// #               training: tinker_core::client::TrainingClient) -> tinker_core::Result<()> {
/// use tinker_core::client::RecoveryHooks;
/// use tinker_core::recovery::RecoveryPolicy;
///
/// let hooks = RecoveryHooks::default()
///     .on_recovered(|r| println!("{} recovered as {}", r.run_id, r.client.model_id()));
/// let monitor = service.start_recovery(RecoveryPolicy::enabled(), hooks)?;
/// monitor.watch(training.model_id())?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RecoveryMonitor {
    owner: Arc<Owner>,
    runtime: Arc<dyn crate::io::AsyncRuntime>,
}

impl std::fmt::Debug for RecoveryMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.owner.control.machine();
        f.debug_struct("RecoveryMonitor")
            .field("runs", &m.runs().collect::<Vec<_>>())
            .finish()
    }
}

impl RecoveryMonitor {
    fn control(&self) -> &Control {
        &self.owner.control
    }

    /// Starts watching `run_id` (its first poll is one interval from now). Fails if the policy
    /// is disabled or the monitor stopped.
    pub fn watch(&self, run_id: &str) -> Result<()> {
        // The clock is read by the task's runtime; a watch only needs "now" for the first poll.
        let now = self.now();
        self.control().machine().watch(run_id, now)?;
        self.control().wake();
        Ok(())
    }

    /// Recovers `run_id` now without waiting for a poll (from `checkpoint`, or as the policy
    /// selects). Fails if its recovery is already pending.
    pub fn recover_now(&self, run_id: &str, checkpoint: Option<&str>) -> Result<()> {
        self.control()
            .machine()
            .recover(run_id, checkpoint.map(str::to_owned))?;
        self.control().wake();
        Ok(())
    }

    /// Stops watching `run_id` and abandons its pending recovery.
    pub fn unwatch(&self, run_id: &str) {
        self.control().machine().unwatch(run_id);
        self.control().wake();
    }

    /// Stops the monitor: pending work is dropped and later `watch` calls fail.
    pub fn stop(&self) {
        self.control().machine().stop();
        self.control().wake();
    }

    fn now(&self) -> std::time::Instant {
        self.runtime.now()
    }
}

/// One answer for the machine.
enum Done {
    Run(String, std::result::Result<Box<TrainingRun>, String>),
    Restored(String, u32, String, Result<TrainingClient>),
}

impl ServiceClient {
    /// Starts a [`RecoveryMonitor`] for `policy` (which must be enabled and valid) on this
    /// client's runtime. Runs are recreated through this client's session.
    pub fn start_recovery(
        &self,
        policy: RecoveryPolicy,
        hooks: RecoveryHooks,
    ) -> Result<RecoveryMonitor> {
        if !policy.enabled {
            return Err(crate::Error::invalid(
                "policy.enabled",
                "recovery is disabled; use RecoveryPolicy::enabled()",
            ));
        }
        let control = Arc::new(Control {
            machine: Mutex::new(RecoveryMachine::new(policy)?),
            kick: Mutex::new((false, None)),
        });
        let runtime = self.shared.exec.runtime.clone();
        runtime.spawn(Box::pin(run(self.clone(), control.clone(), hooks)));
        Ok(RecoveryMonitor {
            owner: Arc::new(Owner { control }),
            runtime,
        })
    }
}

/// Calls a user hook; a panic in it is logged, not propagated into the monitor.
fn guarded(what: &str, f: impl FnOnce()) {
    if catch_unwind(AssertUnwindSafe(f)).is_err() {
        tracing::error!("recovery {what} callback panicked; the monitor carries on");
    }
}

fn log(event: &RecoveryEvent) {
    match event {
        RecoveryEvent::Failed { error, .. } | RecoveryEvent::Exhausted { error, .. } => {
            tracing::warn!(run_id = event.run_id(), stage = event.stage(), %error, "recovery")
        }
        RecoveryEvent::PollFailed { error, .. } => {
            tracing::debug!(run_id = event.run_id(), %error, "recovery poll failed")
        }
        _ => tracing::info!(run_id = event.run_id(), stage = event.stage(), "recovery"),
    }
}

async fn run(service: ServiceClient, control: Arc<Control>, hooks: RecoveryHooks) {
    let runtime = service.shared.exec.runtime.clone();
    let rest = service.create_rest_client();
    let mut work: FuturesUnordered<BoxFuture<'static, Done>> = FuturesUnordered::new();
    let mut recovered: Vec<Recovered> = Vec::new();
    loop {
        let now = runtime.now();
        let mut events = Vec::new();
        let until = {
            let mut m = control.machine();
            loop {
                match m.poll_output(now) {
                    RecoveryOutput::Event(e) => events.push(e),
                    RecoveryOutput::FetchRun { run_id } => {
                        let rest = rest.clone();
                        work.push(Box::pin(async move {
                            let run = rest
                                .get_training_run(&run_id)
                                .await
                                .map(Box::new)
                                .map_err(|e| e.to_string());
                            Done::Run(run_id, run)
                        }));
                    }
                    RecoveryOutput::Restore {
                        run_id,
                        attempt,
                        checkpoint,
                        with_optimizer,
                    } => {
                        let service = service.clone();
                        work.push(Box::pin(async move {
                            let client = if with_optimizer {
                                service
                                    .create_training_client_from_state_with_optimizer(&checkpoint)
                                    .await
                            } else {
                                service.create_training_client_from_state(&checkpoint).await
                            };
                            Done::Restored(run_id, attempt, checkpoint, client)
                        }));
                    }
                    RecoveryOutput::Wait { until } => break Some(until),
                    RecoveryOutput::Stopped => break None,
                }
            }
        };
        for event in &events {
            log(event);
            if let Some(f) = &hooks.event {
                guarded("event", || f(event));
            }
            match (event, &hooks.failure) {
                (RecoveryEvent::Exhausted { run_id, error, .. }, Some(f)) => {
                    guarded("failure", || f(run_id, error));
                }
                (RecoveryEvent::Completed { run_id, .. }, _) => {
                    // The new client goes to the user right after its `completed` event.
                    let found = recovered.iter().position(|r| &r.run_id == run_id);
                    if let (Some(i), Some(f)) = (found, &hooks.recovered) {
                        let r = recovered.swap_remove(i);
                        guarded("recovered", || f(r));
                    }
                }
                _ => {}
            }
        }
        // A client whose recovery was abandoned meanwhile (unwatched, stopped) is dropped.
        recovered.clear();
        let Some(until) = until else { return };

        let mut sleep = until.map(|t| runtime.sleep_until(t));
        let done = std::future::poll_fn(|cx| {
            if let Poll::Ready(Some(done)) = work.poll_next_unpin(cx) {
                return Poll::Ready(Some(done));
            }
            if control.kicked(cx) {
                return Poll::Ready(None);
            }
            if let Some(s) = sleep.as_mut() {
                if Pin::new(s).poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
            }
            Poll::Pending
        })
        .await;
        let now = runtime.now();
        match done {
            Some(Done::Run(run_id, result)) => {
                control
                    .machine()
                    .on_run(&run_id, result.as_deref().map_err(Clone::clone), now)
            }
            Some(Done::Restored(run_id, attempt, checkpoint, result)) => {
                let answer = match &result {
                    Ok(client) => Ok(client.model_id().to_owned()),
                    Err(e) => Err(e.to_string()),
                };
                control.machine().on_restored(&run_id, attempt, answer, now);
                if let Ok(client) = result {
                    recovered.push(Recovered {
                        run_id,
                        checkpoint,
                        client,
                    });
                }
            }
            None => {}
        }
    }
}
