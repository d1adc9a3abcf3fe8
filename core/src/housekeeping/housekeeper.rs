//! One machine for everything a session does in the background.

use std::time::{Duration, Instant};

use crate::telemetry::{TelemetryBatch, TelemetryQueue};

/// Timings of the housekeeper (SDK values by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HousekeeperConfig {
    /// Send heartbeats (only holders with a session id do).
    pub heartbeat: bool,
    /// Heartbeat period, sleep first (10 s). Each heartbeat has a 10 s timeout (the adapter's
    /// read timeout) and is never retried.
    pub heartbeat_period: Duration,
    /// Warn when no heartbeat succeeded for longer than this (120 s).
    pub heartbeat_warn_after: Duration,
    /// Refresh the dynamic client config.
    pub config_refresh: bool,
    /// `refresh_interval_sec` from the last config (default 300 s); never below the floor.
    pub config_refresh_interval: Duration,
    /// Lower bound of the refresh interval (10 s).
    pub config_refresh_floor: Duration,
}

impl Default for HousekeeperConfig {
    fn default() -> HousekeeperConfig {
        HousekeeperConfig {
            heartbeat: true,
            heartbeat_period: Duration::from_secs(10),
            heartbeat_warn_after: Duration::from_secs(120),
            config_refresh: true,
            config_refresh_interval: Duration::from_secs(300),
            config_refresh_floor: Duration::from_secs(10),
        }
    }
}

/// A warning the driver should log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HousekeeperWarning {
    /// No heartbeat succeeded for `since_success`; the server may end the session.
    HeartbeatOverdue {
        /// Time since the last success (or since start).
        since_success: Duration,
    },
}

/// The next thing the housekeeper wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum HousekeeperAction {
    /// POST `/api/v1/session_heartbeat`, then call
    /// [`on_heartbeat_result`](Housekeeper::on_heartbeat_result).
    SendHeartbeat,
    /// POST `/api/v1/client/dynamic_config`, then call
    /// [`on_config_result`](Housekeeper::on_config_result).
    RefreshConfig,
    /// POST this telemetry batch, then call
    /// [`on_telemetry_result`](Housekeeper::on_telemetry_result).
    FlushTelemetry(TelemetryBatch),
    /// Log this warning.
    LogWarning(HousekeeperWarning),
    /// Nothing to do before this instant (or before an input arrives, whichever is first).
    WaitUntil(Instant),
    /// Nothing left to do, ever (after shutdown, or with every duty disabled or stopped).
    Stopped,
}

/// How a heartbeat went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// 2xx.
    Ok,
    /// 410: the session has finished; heartbeats stop (SDK 0.38).
    SessionGone,
    /// Anything else (error status, timeout, transport error): swallowed.
    Failed,
}

#[derive(Debug, Clone)]
struct Periodic {
    enabled: bool,
    next_at: Instant,
    in_flight: bool,
}

impl Periodic {
    fn due(&self, now: Instant) -> bool {
        self.enabled && !self.in_flight && now >= self.next_at
    }
    fn wake(&self) -> Option<Instant> {
        (self.enabled && !self.in_flight).then_some(self.next_at)
    }
}

/// The background duties of one session, driven by one task in the adapter.
///
/// Drive it like every core machine: call [`poll`](Housekeeper::poll) and act on the answer
/// until it says [`HousekeeperAction::WaitUntil`]; sleep until then (or until an input such as a
/// result or [`shutdown`](Housekeeper::shutdown) arrives) and poll again. Several requests may be
/// in flight at once (a heartbeat, a config refresh and a telemetry batch); each duty has at most
/// one.
///
/// Heartbeat warning: after 120 s without a successful heartbeat it warns **once**, and again
/// only after a success has reset the clock (the SDK repeats the warning every period; one line
/// per outage is enough to act on). A 410 stops heartbeats for good.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tinker_core::housekeeping::{HeartbeatOutcome, Housekeeper, HousekeeperAction, HousekeeperConfig};
///
/// # #[allow(clippy::disallowed_methods)]
/// let t0 = Instant::now();
/// let mut hk = Housekeeper::new(HousekeeperConfig::default(), None, t0);
/// assert_eq!(hk.poll(t0), HousekeeperAction::WaitUntil(t0 + Duration::from_secs(10)));
/// let t10 = t0 + Duration::from_secs(10);
/// assert_eq!(hk.poll(t10), HousekeeperAction::SendHeartbeat);
/// hk.on_heartbeat_result(HeartbeatOutcome::Ok, t10);
/// assert_eq!(hk.poll(t10), HousekeeperAction::WaitUntil(t10 + Duration::from_secs(10)));
/// ```
#[derive(Debug, Clone)]
pub struct Housekeeper {
    config: HousekeeperConfig,
    heartbeat: Periodic,
    last_heartbeat_success: Instant,
    heartbeat_warned: bool,
    refresh: Periodic,
    refresh_interval: Duration,
    telemetry: Option<TelemetryQueue>,
    shutting_down: bool,
}

impl Housekeeper {
    /// Starts at `now`: the first heartbeat is due one period later, the first refresh one
    /// refresh interval later (the initial config was fetched at startup).
    pub fn new(
        config: HousekeeperConfig,
        telemetry: Option<TelemetryQueue>,
        now: Instant,
    ) -> Housekeeper {
        let refresh_interval = config
            .config_refresh_interval
            .max(config.config_refresh_floor);
        Housekeeper {
            heartbeat: Periodic {
                enabled: config.heartbeat,
                next_at: now + config.heartbeat_period,
                in_flight: false,
            },
            last_heartbeat_success: now,
            heartbeat_warned: false,
            refresh: Periodic {
                enabled: config.config_refresh,
                next_at: now + refresh_interval,
                in_flight: false,
            },
            refresh_interval,
            telemetry,
            shutting_down: false,
            config,
        }
    }

    /// The telemetry queue, to record events into.
    pub fn telemetry_mut(&mut self) -> Option<&mut TelemetryQueue> {
        self.telemetry.as_mut()
    }

    /// The telemetry queue.
    pub fn telemetry(&self) -> Option<&TelemetryQueue> {
        self.telemetry.as_ref()
    }

    /// The current config refresh interval.
    pub fn config_refresh_interval(&self) -> Duration {
        self.refresh_interval
    }

    /// Whether heartbeats are still being sent.
    pub fn heartbeat_active(&self) -> bool {
        self.heartbeat.enabled
    }

    /// The next action at `now`.
    pub fn poll(&mut self, now: Instant) -> HousekeeperAction {
        if !self.shutting_down {
            if self.heartbeat.enabled && !self.heartbeat_warned {
                let since = now.saturating_duration_since(self.last_heartbeat_success);
                if since > self.config.heartbeat_warn_after {
                    self.heartbeat_warned = true;
                    return HousekeeperAction::LogWarning(HousekeeperWarning::HeartbeatOverdue {
                        since_success: since,
                    });
                }
            }
            if self.heartbeat.due(now) {
                self.heartbeat.in_flight = true;
                return HousekeeperAction::SendHeartbeat;
            }
            if self.refresh.due(now) {
                self.refresh.in_flight = true;
                return HousekeeperAction::RefreshConfig;
            }
        }
        if let Some(batch) = self.telemetry.as_mut().and_then(|t| t.poll_flush(now)) {
            return HousekeeperAction::FlushTelemetry(batch);
        }
        let telemetry_wake = self.telemetry.as_ref().and_then(|t| t.next_wake(now));
        let mut wakes = vec![telemetry_wake];
        if !self.shutting_down {
            wakes.push(self.heartbeat.wake());
            wakes.push(self.refresh.wake());
            if self.heartbeat.enabled && !self.heartbeat_warned {
                // The instant just past the warning threshold.
                wakes.push(Some(
                    self.last_heartbeat_success
                        + self.config.heartbeat_warn_after
                        + Duration::from_nanos(1),
                ));
            }
        }
        match wakes.into_iter().flatten().min() {
            Some(at) => HousekeeperAction::WaitUntil(at),
            None if self.is_done() => HousekeeperAction::Stopped,
            // Only requests in flight: their results are the next inputs.
            None => HousekeeperAction::WaitUntil(now + self.config.heartbeat_period),
        }
    }

    fn is_done(&self) -> bool {
        if self.shutting_down {
            // Late heartbeat or config results no longer matter.
            return self
                .telemetry
                .as_ref()
                .is_none_or(TelemetryQueue::is_finished);
        }
        !self.heartbeat.enabled && !self.refresh.enabled && self.telemetry.is_none()
    }

    /// A heartbeat finished at `now`. The next one is due a period later.
    pub fn on_heartbeat_result(&mut self, outcome: HeartbeatOutcome, now: Instant) {
        self.heartbeat.in_flight = false;
        self.heartbeat.next_at = now + self.config.heartbeat_period;
        match outcome {
            HeartbeatOutcome::Ok => {
                self.last_heartbeat_success = now;
                self.heartbeat_warned = false;
            }
            HeartbeatOutcome::SessionGone => self.heartbeat.enabled = false,
            HeartbeatOutcome::Failed => {}
        }
    }

    /// A config refresh finished at `now`. On success pass the new `refresh_interval_sec` (if the
    /// config had one); on failure pass `Err(())`: the caller keeps its last good config, and the
    /// next refresh is one interval later either way.
    pub fn on_config_result(&mut self, result: Result<Option<Duration>, ()>, now: Instant) {
        self.refresh.in_flight = false;
        if let Ok(Some(interval)) = result {
            self.refresh_interval = interval.max(self.config.config_refresh_floor);
        }
        self.refresh.next_at = now + self.refresh_interval;
    }

    /// A telemetry batch finished (`ok` = 2xx).
    pub fn on_telemetry_result(&mut self, batch_id: u64, ok: bool, now: Instant) {
        if let Some(t) = &mut self.telemetry {
            t.on_batch_result(batch_id, ok, now);
        }
    }

    /// Stops heartbeats and refreshes and flushes telemetry until `deadline`; afterwards
    /// [`poll`](Housekeeper::poll) says [`HousekeeperAction::Stopped`].
    pub fn shutdown(&mut self, deadline: Instant) {
        self.shutting_down = true;
        if let Some(t) = &mut self.telemetry {
            t.begin_shutdown(deadline);
        }
    }
}
