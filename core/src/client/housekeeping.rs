//! The one background task of a session: drives [`Housekeeper`] (heartbeats, dynamic-config
//! refresh, telemetry flushes) with the runtime's spawner and timers.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::exec::{CallSite, Exec};
use super::pending::race;
use super::service::Shared;
use crate::endpoints::{GetDynamicConfig, SendTelemetry};
use crate::error::ErrorKind;
use crate::housekeeping::{
    HeartbeatOutcome, Housekeeper, HousekeeperAction, HousekeeperConfig, HousekeeperWarning,
};
use crate::io::AsyncRuntime;
use crate::rng::Rng;
use crate::telemetry::{TelemetryConfig, TelemetryIdentity, TelemetryQueue};
use crate::types::{SessionHeartbeatRequest, Severity, TelemetryEventKind};

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
}

impl Housekeeping {
    /// Spawns the task for `session_id`, recording `SESSION_START`.
    pub(crate) fn start(shared: &Shared, session_id: &str, refresh: Duration) -> Housekeeping {
        let exec = shared.exec.clone();
        let now = exec.runtime.now();
        let mut rng = Rng::from_seed(shared.options.seed.unwrap_or(0) ^ 0x6865_6172_7462_6561);
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
        );
        exec.runtime.spawn(Box::pin(task));
        Housekeeping { control }
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

/// Resolves when a stop request arrives that the task has not seen yet.
struct StopRequested {
    control: Arc<Control>,
}

impl Future for StopRequested {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.control.lock();
        if s.stop_deadline.is_some() && !s.stop_seen {
            Poll::Ready(())
        } else {
            s.task_waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

async fn run(
    exec: Exec,
    mut hk: Housekeeper,
    control: Arc<Control>,
    session_id: String,
    sdk_version: String,
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
                let stop = StopRequested {
                    control: control.clone(),
                };
                race(Box::pin(stop), exec.runtime.sleep_until(at)).await;
            }
            HousekeeperAction::Stopped => break,
        }
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
