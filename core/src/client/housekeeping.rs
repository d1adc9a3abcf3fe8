//! The one background task of a session: drives [`Housekeeper`] (heartbeats, dynamic-config
//! refresh, telemetry flushes) with the runtime's spawner and timers, and does the session's
//! best-effort chores: `cancel_future` for abandoned samples (protocol.md 7.8) and ack-only
//! `retrieve_futures` polls nobody else will send (7.7).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::exec::{CallSite, Exec};
use super::pending::race;
use super::service::Shared;
use crate::auth::BackgroundRefresh;
use crate::endpoints::{GetDynamicConfig, SendTelemetry};
use crate::error::Error;
use crate::error::ErrorKind;
use crate::housekeeping::{
    HeartbeatOutcome, Housekeeper, HousekeeperAction, HousekeeperConfig, HousekeeperWarning,
};
use crate::io::AsyncRuntime;
use crate::retry::Failure;
use crate::rng::Rng;
use crate::telemetry::{TelemetryConfig, TelemetryIdentity, TelemetryQueue};
use crate::types::{
    format_timedelta, CancelFutureRequest, RetrieveFuturesResponse, SessionHeartbeatRequest,
    Severity, TelemetryEventKind,
};

/// `cancel_future` requests have 30 s each (protocol.md 7.8).
const CANCEL_TIMEOUT: Duration = Duration::from_secs(30);

/// Ack-only `retrieve_futures` polls have 5 s (protocol.md 7.7).
const ACK_POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// Events held for the housekeeper before it runs (or between its turns) at most; more are
/// dropped and counted, as the queue itself does beyond its limit.
const INBOX_LIMIT: usize = 10_000;

#[derive(Default)]
struct InboxState {
    events: Vec<(TelemetryEventKind, Severity, Instant)>,
    dropped: u64,
    waker: Option<Waker>,
}

/// Telemetry events the clients record, handed to the housekeeper's queue on its next turn
/// (the queue itself lives inside the housekeeper task).
pub(crate) struct TelemetryInbox {
    enabled: bool,
    state: Mutex<InboxState>,
}

impl TelemetryInbox {
    /// An inbox that keeps events only when telemetry is `enabled` (`TINKER_TELEMETRY`).
    pub(crate) fn new(enabled: bool) -> TelemetryInbox {
        TelemetryInbox {
            enabled,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an event that happened at `at`; never blocks on I/O.
    pub(crate) fn record(&self, kind: TelemetryEventKind, severity: Severity, at: Instant) {
        if !self.enabled {
            return;
        }
        let waker = {
            let mut s = self.lock();
            if s.events.len() >= INBOX_LIMIT {
                s.dropped += 1;
                return;
            }
            s.events.push((kind, severity, at));
            s.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Events dropped because the inbox was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn take(&self) -> Vec<(TelemetryEventKind, Severity, Instant)> {
        std::mem::take(&mut self.lock().events)
    }
}

/// Heartbeats and config refreshes have a 10 s budget and are never retried (protocol.md 4.4).
const BACKGROUND_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// One UUID per process (protocol.md 13.3), drawn from the first client's seeded PRNG.
static PROCESS_UUID: OnceLock<String> = OnceLock::new();

#[derive(Default)]
struct ControlState {
    /// Set by `stop`: flush telemetry until then, then end.
    stop_deadline: Option<Instant>,
    /// Whether the task has seen `stop_deadline`.
    stop_seen: bool,
    task_waker: Option<Waker>,
    stopped: bool,
    stopped_wakers: Vec<Waker>,
    /// Why the session is over, once the server said so (410 on a heartbeat).
    session_gone: Option<String>,
}

struct Control {
    state: Mutex<ControlState>,
}

impl Control {
    fn lock(&self) -> std::sync::MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The handle a service client keeps on its housekeeper task.
pub(crate) struct Housekeeping {
    control: Arc<Control>,
    started: Instant,
}

impl Housekeeping {
    /// Spawns the task for `session_id`, recording `SESSION_START`.
    pub(crate) fn start(shared: &Shared, session_id: &str, refresh: Duration) -> Housekeeping {
        let exec = shared.exec.clone();
        let now = exec.runtime.now();
        let mut rng = Rng::from_seed(shared.options.seed.unwrap_or(0) ^ 0x6865_6172_7462_6561);
        let telemetry_rng = Rng::from_seed(rng.next_u64());
        let telemetry = shared.settings.telemetry_enabled.then(|| {
            let process_uuid = PROCESS_UUID.get_or_init(|| rng.uuid_v4()).clone();
            let identity = TelemetryIdentity {
                platform: platform_name(),
                sdk_version: shared.settings.sdk_version.clone(),
                session_id: session_id.to_owned(),
                process_uuid,
            };
            let mut queue = TelemetryQueue::new(TelemetryConfig::default(), identity, now);
            let wall = exec.ledger.lock().wall_time(now);
            queue.record(
                TelemetryEventKind::SessionStart,
                Severity::Info,
                wall,
                &mut rng,
            );
            queue
        });
        let config = HousekeeperConfig {
            config_refresh_interval: refresh,
            heartbeat_period: shared.options.heartbeat_period,
            heartbeat_warn_after: shared.options.heartbeat_warn_after,
            ..HousekeeperConfig::default()
        };
        let housekeeper = Housekeeper::new(config, telemetry, now);
        let control = Arc::new(Control {
            state: Mutex::new(ControlState::default()),
        });
        let task = run(
            exec.clone(),
            housekeeper,
            control.clone(),
            session_id.to_owned(),
            shared.settings.sdk_version.clone(),
            telemetry_rng,
        );
        exec.runtime.spawn(Box::pin(task));
        Housekeeping {
            control,
            started: now,
        }
    }

    /// Records `SESSION_END` with the session's duration (sent with the final flush).
    pub(crate) fn end_session(&self, exec: &Exec) {
        let now = exec.runtime.now();
        let duration = format_timedelta(now.saturating_duration_since(self.started));
        exec.telemetry.record(
            TelemetryEventKind::SessionEnd {
                duration: Some(duration),
            },
            Severity::Info,
            now,
        );
    }

    /// Asks the task to stop heartbeats and refreshes, flush telemetry until `deadline`, and
    /// end. Returns at once.
    pub(crate) fn stop(&self, deadline: Instant) {
        let waker = {
            let mut s = self.control.lock();
            if s.stop_deadline.is_none() {
                s.stop_deadline = Some(deadline);
            }
            s.task_waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }

    /// Waits until the task has ended, or `deadline` passes.
    pub(crate) async fn wait_stopped(&self, runtime: &dyn AsyncRuntime, deadline: Instant) {
        let control = self.control.clone();
        let stopped = std::future::poll_fn(move |cx: &mut Context<'_>| {
            let mut s = control.lock();
            if s.stopped {
                Poll::Ready(())
            } else {
                s.stopped_wakers.push(cx.waker().clone());
                Poll::Pending
            }
        });
        // A little grace over the flush deadline for the task to notice and report.
        let timer = runtime.sleep_until(deadline + Duration::from_millis(100));
        race(Box::pin(stopped), timer).await;
    }

    /// Why the session is over, if the server ended it.
    pub(crate) fn session_gone(&self) -> Option<String> {
        self.control.lock().session_gone.clone()
    }
}

fn platform_name() -> String {
    match std::env::consts::OS {
        "linux" => "Linux",
        "macos" => "Darwin",
        "windows" => "Windows",
        other => other,
    }
    .to_owned()
}

/// Resolves when the task has something to do before its next timer: a stop request it has
/// not seen, telemetry recorded by the clients, an abandoned future to cancel, or a detached
/// call to send.
struct Nudged {
    control: Arc<Control>,
    exec: Exec,
}

impl Future for Nudged {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        {
            let mut s = self.control.lock();
            if s.stop_deadline.is_some() && !s.stop_seen {
                return Poll::Ready(());
            }
            s.task_waker = Some(cx.waker().clone());
        }
        {
            let mut inbox = self.exec.telemetry.lock();
            if !inbox.events.is_empty() {
                return Poll::Ready(());
            }
            inbox.waker = Some(cx.waker().clone());
        }
        let mut ledger = self.exec.ledger.lock();
        if ledger.has_abandoned_futures() || ledger.has_detached_calls() {
            return Poll::Ready(());
        }
        ledger.set_background_waker(cx.waker());
        Poll::Pending
    }
}

/// Exchanges the API key for a fresh JWT in the background; on failure the ledger schedules the
/// next attempt 60 s later and requests keep the cached token while it lasts.
async fn refresh_jwt(exec: &Exec) {
    let site = CallSite::new("", Some(BACKGROUND_REQUEST_TIMEOUT * 3));
    let op = match exec.start(&site, crate::ops::exchange_token) {
        Ok(op) => op,
        Err(e) => {
            tracing::debug!(error = %e, "JWT refresh could not start");
            return;
        }
    };
    let result = exec.run(op, site).await;
    let now = exec.runtime.now();
    let mut ledger = exec.ledger.lock();
    let outcome = result.and_then(|token| ledger.install_jwt(token.jwt, now));
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "JWT refresh failed; retrying in 60 s");
        let unauthorized = e.status() == Some(401);
        if let Some(jwt) = ledger.jwt_mut() {
            jwt.on_exchange_failed(now, unauthorized);
        }
    }
    ledger.bump();
}

/// Sends `cancel_future` for `request_ids` in parallel; failures are only logged (7.8).
async fn cancel_abandoned(exec: &Exec, request_ids: Vec<String>, timeout: Duration) {
    let sends = request_ids.into_iter().map(|request_id| {
        let site = CallSite::new("", Some(timeout));
        async move {
            let result = exec
                .direct(
                    CancelFutureRequest {
                        request_id: request_id.clone(),
                    },
                    site,
                )
                .await;
            match result {
                Ok(_) => tracing::debug!(request_id = %request_id, "cancelled an abandoned sample"),
                Err(e) => {
                    tracing::debug!(request_id = %request_id, error = %e, "cancel_future failed")
                }
            }
        }
    });
    futures_util::future::join_all(sends).await;
}

/// Finishes the POSTs of calls given up after their training turn started (so the run's seq
/// ids reach the server without a hole), on a task of their own: a submission that keeps being
/// retried must not hold up heartbeats. Results are discarded; failures are only logged.
fn send_detached(exec: &Exec, calls: Vec<crate::call::Call>) {
    let task_exec = exec.clone();
    let task = async move {
        let exec = &task_exec;
        let sends = calls.into_iter().map(|call| async move {
            let seq_id = call.seq_id();
            let result = exec
                .run(crate::call::DetachedSubmission(call), CallSite::new("", None))
                .await;
            if let Err(e) = result {
                tracing::warn!(seq_id, error = %e, "a request given up mid-turn could not be sent; the server may wait for its seq id");
            }
        });
        futures_util::future::join_all(sends).await;
    };
    exec.runtime.spawn(Box::pin(task));
}

/// Sends one ack-only `retrieve_futures` poll for the first poller that has acknowledgements
/// and no waiter. Returns whether one was sent.
async fn acknowledge_retrieved(exec: &Exec, timeout: Duration) -> bool {
    let leased = {
        let mut ledger = exec.ledger.lock();
        let attempt = ledger.next_id();
        let now = exec.runtime.now();
        let leased = ledger.completion_pollers_mut().find_map(|(key, poller)| {
            poller
                .lease_ack_poll(attempt, now)
                .map(|poll| (key.clone(), attempt, poll))
        });
        leased
    };
    let Some(((session, clone), attempt, poll)) = leased else {
        return false;
    };
    let result: Result<RetrieveFuturesResponse, Error> =
        exec.direct(poll, CallSite::new("", Some(timeout))).await;
    let now = exec.runtime.now();
    let mut ledger = exec.ledger.lock();
    match result {
        Ok(reply) => {
            ledger
                .completion_poller(&session, clone)
                .on_reply(attempt, reply);
        }
        Err(e) => {
            tracing::debug!(error = %e, "ack-only retrieve_futures poll failed");
            let failure = match (e.status(), e.kind()) {
                (Some(status), _) => Failure::Status(status),
                (None, ErrorKind::Transport | ErrorKind::Timeout) => {
                    Failure::Transport(crate::io::TransportErrorKind::Other)
                }
                _ => Failure::Permanent,
            };
            let mut billing = std::mem::take(ledger.billing());
            ledger.completion_poller(&session, clone).on_failure(
                attempt,
                failure,
                &e.to_string(),
                now,
                &mut billing,
            );
            *ledger.billing() = billing;
        }
    }
    ledger.bump();
    true
}

async fn run(
    exec: Exec,
    mut hk: Housekeeper,
    control: Arc<Control>,
    session_id: String,
    sdk_version: String,
    mut rng: Rng,
) {
    let mut shutdown_at: Option<Instant> = None;
    loop {
        let stop = {
            let mut s = control.lock();
            match (s.stop_deadline, s.stop_seen) {
                (Some(d), false) => {
                    s.stop_seen = true;
                    Some(d)
                }
                _ => None,
            }
        };
        if let Some(deadline) = stop {
            hk.shutdown(deadline);
            shutdown_at = Some(deadline);
        }
        let now = exec.runtime.now();
        // During shutdown every request is bounded by the flush deadline.
        let budget = |limit: Duration| match shutdown_at {
            Some(d) => limit.min(d.saturating_duration_since(now)),
            None => limit,
        };
        // Telemetry recorded by the clients since the last turn.
        let events = exec.telemetry.take();
        if !events.is_empty() {
            if let Some(queue) = hk.telemetry_mut() {
                for (kind, severity, at) in events {
                    let wall = exec.ledger.lock().wall_time(at);
                    queue.record(kind, severity, wall, &mut rng);
                }
            }
        }
        // Abandoned samples: cancel them in parallel batches (7.8).
        let cancels = {
            let mut ledger = exec.ledger.lock();
            let batch = ledger.dynamic_config().sample_cancel_max_batch_size.max(1);
            ledger.take_abandoned_futures(usize::try_from(batch).unwrap_or(64))
        };
        if !cancels.is_empty() {
            cancel_abandoned(&exec, cancels, budget(CANCEL_TIMEOUT)).await;
            continue;
        }
        // Calls given up after their training turn started: their POSTs still go out.
        let detached = exec.ledger.lock().take_detached_calls();
        if !detached.is_empty() {
            send_detached(&exec, detached);
            continue;
        }
        // Acknowledgements no waiting sample will carry (7.7).
        if acknowledge_retrieved(&exec, budget(ACK_POLL_TIMEOUT)).await {
            continue;
        }
        // The JWT, refreshed at 45-55 % of its lifetime (2.3).
        let refresh = exec.ledger.lock().jwt().map(|j| j.poll_background(now));
        let mut jwt_wake = None;
        match refresh {
            Some(BackgroundRefresh::Exchange) if shutdown_at.is_none() => {
                refresh_jwt(&exec).await;
                continue;
            }
            Some(BackgroundRefresh::WaitUntil(at)) => jwt_wake = Some(at),
            _ => {}
        }
        match hk.poll(now) {
            HousekeeperAction::SendHeartbeat => {
                let site = CallSite::new("", Some(budget(BACKGROUND_REQUEST_TIMEOUT)));
                let result = exec
                    .direct(SessionHeartbeatRequest::new(&session_id), site)
                    .await;
                let outcome = match result {
                    Ok(_) => HeartbeatOutcome::Ok,
                    Err(e) if e.kind() == ErrorKind::Gone => {
                        control.lock().session_gone = Some(format!(
                            "session {session_id} has ended: the server no longer accepts its heartbeats ({e})"
                        ));
                        tracing::warn!(session_id = %session_id, "session has finished on the server; heartbeats stop");
                        HeartbeatOutcome::SessionGone
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "heartbeat failed");
                        HeartbeatOutcome::Failed
                    }
                };
                hk.on_heartbeat_result(outcome, exec.runtime.now());
            }
            HousekeeperAction::RefreshConfig => {
                let site = CallSite::new("", Some(budget(BACKGROUND_REQUEST_TIMEOUT)));
                let result = exec
                    .direct(GetDynamicConfig::new(sdk_version.clone()), site)
                    .await;
                let report = match result {
                    Ok(dynamic) => {
                        let period = dynamic.refresh_period();
                        exec.ledger.lock().set_dynamic_config(dynamic);
                        Ok(Some(period))
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "dynamic config refresh failed; keeping the last one");
                        Err(())
                    }
                };
                hk.on_config_result(report, exec.runtime.now());
            }
            HousekeeperAction::FlushTelemetry(batch) => {
                let site = CallSite::new("", Some(budget(Duration::from_secs(30))));
                let ok = exec
                    .direct(SendTelemetry { body: batch.body }, site)
                    .await
                    .is_ok();
                hk.on_telemetry_result(batch.id, ok, exec.runtime.now());
            }
            HousekeeperAction::LogWarning(HousekeeperWarning::HeartbeatOverdue {
                since_success,
            }) => {
                tracing::warn!(
                    session_id = %session_id,
                    "no heartbeat has succeeded for {}s; the session will be terminated by the server if this continues",
                    since_success.as_secs()
                );
            }
            HousekeeperAction::WaitUntil(at) => {
                let at = jwt_wake.map_or(at, |j| j.min(at));
                let nudged = Nudged {
                    control: control.clone(),
                    exec: exec.clone(),
                };
                race(Box::pin(nudged), exec.runtime.sleep_until(at)).await;
            }
            HousekeeperAction::Stopped => break,
        }
    }
    let dropped = exec.telemetry.dropped();
    if dropped > 0 {
        tracing::warn!(dropped, "telemetry events dropped: the queue was full");
    }
    let wakers = {
        let mut s = control.lock();
        s.stopped = true;
        std::mem::take(&mut s.stopped_wakers)
    };
    for w in wakers {
        w.wake();
    }
}
