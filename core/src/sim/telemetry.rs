//! The session's telemetry inside a simulation: the machines' retries and failures become events,
//! the housekeeper flushes them to the fake server (which injects its faults into these requests
//! too), and at the end every event must be either sent or counted as dropped.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;

use super::{Reply, Server};
use crate::call::Event;
use crate::error::Error;
use crate::housekeeping::{Housekeeper, HousekeeperAction, HousekeeperConfig};
use crate::rng::Rng;
use crate::telemetry::{
    error_event, retry_event, TelemetryConfig, TelemetryIdentity, TelemetryQueue,
};
use crate::types::{Severity, TelemetryEventKind};

/// The drain allowed at the end of a run (the SDK's 30 s).
const DRAIN: Duration = Duration::from_secs(30);

pub(crate) struct SimTelemetry {
    hk: Housekeeper,
    rng: Rng,
    /// Events offered to the queue (accepted or refused).
    offered: u64,
    /// A batch on the wire: when its reply lands, its id, whether it succeeded.
    in_flight: Option<(Instant, u64, bool)>,
    pub(crate) batches: u64,
}

impl SimTelemetry {
    pub(crate) fn new(seed: u64, start: Instant) -> SimTelemetry {
        let identity = TelemetryIdentity {
            platform: "Linux".into(),
            sdk_version: "sim".into(),
            session_id: "sim-session".into(),
            process_uuid: "sim-process".into(),
        };
        // A small queue, so the simulation also exercises dropping when full.
        let config = TelemetryConfig {
            max_queued: 64,
            max_batch: 16,
            ..TelemetryConfig::default()
        };
        let queue = TelemetryQueue::new(config, identity, start);
        let hk_config = HousekeeperConfig {
            heartbeat: false,
            config_refresh: false,
            ..HousekeeperConfig::default()
        };
        let mut t = SimTelemetry {
            hk: Housekeeper::new(hk_config, Some(queue), start),
            rng: Rng::from_seed(seed ^ 0x7e1e),
            offered: 0,
            in_flight: None,
            batches: 0,
        };
        t.record(TelemetryEventKind::SessionStart, Severity::Info);
        t
    }

    fn record(&mut self, kind: TelemetryEventKind, severity: Severity) {
        self.offered += 1;
        if let Some(q) = self.hk.telemetry_mut() {
            q.record(kind, severity, SystemTime::UNIX_EPOCH, &mut self.rng);
        }
    }

    /// A machine's event.
    pub(crate) fn on_event(&mut self, method: &str, event: &Event) {
        if let Event::Retrying {
            endpoint,
            attempt,
            delay,
            reason,
        } = event
        {
            let (kind, severity) = retry_event(method, endpoint, *attempt, *delay, reason);
            self.record(kind, severity);
        }
    }

    /// A machine's final error.
    pub(crate) fn on_error(&mut self, method: &str, error: &Error) {
        if let Some((kind, severity)) = error_event(method, error) {
            self.record(kind, severity);
        }
    }

    /// Delivers a due reply and sends what the housekeeper wants sent at `now`; returns when it
    /// next needs attention.
    pub(crate) fn pump(
        &mut self,
        server: &mut dyn Server,
        now: Instant,
        trace: &mut Vec<String>,
    ) -> Option<Instant> {
        if let Some((due, id, ok)) = self.in_flight {
            if due > now {
                return Some(due);
            }
            self.in_flight = None;
            self.hk.on_telemetry_result(id, ok, now);
        }
        loop {
            match self.hk.poll(now) {
                HousekeeperAction::FlushTelemetry(batch) => {
                    let body = serde_json::to_vec(&batch.body).unwrap_or_default();
                    let request = http::Request::builder()
                        .method("POST")
                        .uri("http://sim.local/api/v1/telemetry")
                        .header("content-type", "application/json")
                        .body(Bytes::from(body))
                        .unwrap_or_else(|_| http::Request::new(Bytes::new()));
                    let reply = server.respond(&request, now);
                    let ok = matches!(&reply, Reply::Response { status, .. } if (200..300).contains(status));
                    trace.push(format!(
                        "telemetry batch {} of {} events: {}",
                        batch.id,
                        batch.body.events.len(),
                        if ok { "accepted" } else { "failed" }
                    ));
                    self.batches += 1;
                    let due = now + reply.delay() + Duration::from_millis(5);
                    self.in_flight = Some((due, batch.id, ok));
                    return Some(due);
                }
                HousekeeperAction::WaitUntil(at) => return Some(at),
                HousekeeperAction::Stopped => return None,
                // No heartbeats or refreshes are enabled here.
                _ => continue,
            }
        }
    }

    /// Shuts the queue down at `now` and drains it on virtual time; returns the broken
    /// conservation rule, if any.
    pub(crate) fn finish(
        &mut self,
        server: &mut dyn Server,
        clock: &super::VirtualClock,
        trace: &mut Vec<String>,
    ) -> Option<String> {
        self.record(
            TelemetryEventKind::SessionEnd { duration: None },
            Severity::Info,
        );
        self.hk.shutdown(clock.now() + DRAIN);
        for _ in 0..100_000 {
            match self.pump(server, clock.now(), trace) {
                Some(at) => clock.advance_to(at.max(clock.now())),
                None => break,
            }
        }
        let queue = self.hk.telemetry()?;
        let s = queue.stats();
        let refused = self.offered - s.accepted;
        let accounted = s.sent + s.dropped_failed + s.dropped_at_shutdown;
        if !queue.is_finished() {
            return Some("the telemetry queue did not finish its final flush".into());
        }
        if s.accepted != accounted || refused != s.dropped_queue_full {
            return Some(format!(
                "telemetry events unaccounted for: {} offered, {s:?}",
                self.offered
            ));
        }
        None
    }
}
