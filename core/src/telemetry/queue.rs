//! The bounded telemetry queue and its flush schedule.

use std::collections::VecDeque;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::redact_credentials;
use crate::rng::Rng;
use crate::types::{
    format_timestamp, Severity, TelemetryEvent, TelemetryEventKind, TelemetrySendRequest,
};

/// Limits and timings of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Events kept at most; more are dropped and counted (10 000).
    pub max_queued: usize,
    /// Events per request at most (100).
    pub max_batch: usize,
    /// Periodic flush interval (10 s).
    pub flush_interval: Duration,
    /// How often a failed batch is sent again before it is dropped and counted. Default 0, as
    /// SDK 0.38: a batch is dropped once the HTTP layer's own retries have failed.
    pub max_batch_retries: u32,
    /// Wait before re-sending a failed batch (1 s).
    pub retry_delay: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> TelemetryConfig {
        TelemetryConfig {
            max_queued: 10_000,
            max_batch: 100,
            flush_interval: Duration::from_secs(10),
            max_batch_retries: 0,
            retry_delay: Duration::from_secs(1),
        }
    }
}

/// The constant fields of every request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryIdentity {
    /// `Linux`, `Darwin`, `Windows`, …
    pub platform: String,
    /// The SDK version.
    pub sdk_version: String,
    /// The session id, or `sessionless-<uuid4>`.
    pub session_id: String,
    /// One UUID v4 per process.
    pub process_uuid: String,
}

/// A batch to POST; report the outcome with its `id`.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryBatch {
    /// Identifies the batch in [`TelemetryQueue::on_batch_result`].
    pub id: u64,
    /// The request body.
    pub body: TelemetrySendRequest,
}

/// Counters, for logs and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TelemetryStats {
    /// Events accepted into the queue.
    pub accepted: u64,
    /// Events the server accepted.
    pub sent: u64,
    /// Events refused because the queue was full.
    pub dropped_queue_full: u64,
    /// Events of batches that failed more than `max_batch_retries` times.
    pub dropped_failed: u64,
    /// Events still unsent when the shutdown deadline passed.
    pub dropped_at_shutdown: u64,
}

#[derive(Debug, Clone)]
struct InFlight {
    id: u64,
    events: Vec<TelemetryEvent>,
    failures: u32,
    /// Set while a failed batch waits to be re-sent.
    resend_at: Option<Instant>,
    sending: bool,
}

/// The telemetry queue of one holder (in the shared ledger; driven by the housekeeper).
///
/// * [`record`](TelemetryQueue::record) stamps an event (uuid from the PRNG, index, timestamp),
///   strips credentials, and queues it, or drops and counts it when 10 000 are queued.
/// * [`poll_flush`](TelemetryQueue::poll_flush) hands out one batch (≤ 100 events) at a time
///   when a flush is due: every 10 s, or at once after an `ERROR`/`CRITICAL` event or an
///   unhandled exception. A flush drains the whole queue, batch after batch.
/// * [`begin_shutdown`](TelemetryQueue::begin_shutdown) flushes everything at once; what is not
///   sent by the deadline is counted as dropped.
///
/// ```
/// use std::time::{Duration, Instant, SystemTime};
/// use tinker_core::rng::Rng;
/// use tinker_core::telemetry::{TelemetryConfig, TelemetryIdentity, TelemetryQueue};
/// use tinker_core::types::{Severity, TelemetryEventKind};
///
/// # #[allow(clippy::disallowed_methods)]
/// let t0 = Instant::now();
/// let id = TelemetryIdentity { platform: "Linux".into(), sdk_version: "0.1.0".into(),
///     session_id: "sess-1".into(), process_uuid: "p".into() };
/// let mut q = TelemetryQueue::new(TelemetryConfig::default(), id, t0);
/// let mut rng = Rng::from_seed(1);
/// q.record(TelemetryEventKind::SessionStart, Severity::Info, SystemTime::UNIX_EPOCH, &mut rng);
/// assert!(q.poll_flush(t0).is_none()); // not due yet
/// let batch = q.poll_flush(t0 + Duration::from_secs(10)).unwrap();
/// assert_eq!(batch.body.events.len(), 1);
/// q.on_batch_result(batch.id, true, t0 + Duration::from_secs(10));
/// assert_eq!(q.stats().sent, 1);
/// ```
#[derive(Debug, Clone)]
pub struct TelemetryQueue {
    config: TelemetryConfig,
    identity: TelemetryIdentity,
    queue: VecDeque<TelemetryEvent>,
    next_index: u64,
    next_batch_id: u64,
    next_periodic: Instant,
    urgent: bool,
    draining: bool,
    in_flight: Option<InFlight>,
    shutdown_deadline: Option<Instant>,
    stats: TelemetryStats,
}

impl TelemetryQueue {
    /// An empty queue whose first periodic flush is `flush_interval` after `now`.
    pub fn new(
        config: TelemetryConfig,
        identity: TelemetryIdentity,
        now: Instant,
    ) -> TelemetryQueue {
        TelemetryQueue {
            next_periodic: now + config.flush_interval,
            config,
            identity,
            queue: VecDeque::new(),
            next_index: 0,
            next_batch_id: 0,
            urgent: false,
            draining: false,
            in_flight: None,
            shutdown_deadline: None,
            stats: TelemetryStats::default(),
        }
    }

    /// Stamps and queues an event; returns `false` if it was dropped (queue full or shut down).
    pub fn record(
        &mut self,
        mut kind: TelemetryEventKind,
        severity: Severity,
        now_unix: SystemTime,
        rng: &mut Rng,
    ) -> bool {
        if self.shutdown_deadline.is_some() && self.is_finished() {
            self.stats.dropped_at_shutdown += 1;
            return false;
        }
        if self.queue.len() >= self.config.max_queued {
            self.stats.dropped_queue_full += 1;
            return false;
        }
        if let TelemetryEventKind::GenericEvent { event_data, .. } = &mut kind {
            let mut value = Value::Object(std::mem::take(event_data));
            redact_credentials(&mut value);
            if let Value::Object(map) = value {
                *event_data = map;
            }
        }
        if let TelemetryEventKind::UnhandledException {
            error_message,
            traceback,
            ..
        } = &mut kind
        {
            for text in std::iter::once(error_message).chain(traceback.as_mut()) {
                let mut value = Value::String(std::mem::take(text));
                redact_credentials(&mut value);
                if let Value::String(s) = value {
                    *text = s;
                }
            }
        }
        let exceptional = severity >= Severity::Error
            || matches!(kind, TelemetryEventKind::UnhandledException { .. });
        self.queue.push_back(TelemetryEvent {
            kind,
            event_id: rng.uuid_v4(),
            event_session_index: self.next_index,
            severity,
            timestamp: format_timestamp(now_unix),
        });
        self.next_index += 1;
        self.stats.accepted += 1;
        if exceptional {
            self.urgent = true;
        }
        true
    }

    /// The next batch to send at `now`, if one is due and none is in flight.
    pub fn poll_flush(&mut self, now: Instant) -> Option<TelemetryBatch> {
        if self.shutdown_deadline.is_some_and(|d| now >= d) {
            self.abandon();
            return None;
        }
        if let Some(f) = &mut self.in_flight {
            if f.sending || f.resend_at.is_some_and(|t| now < t) {
                return None;
            }
            f.sending = true;
            f.resend_at = None;
            return Some(TelemetryBatch {
                id: f.id,
                body: body(&self.identity, f.events.clone()),
            });
        }
        if now >= self.next_periodic {
            self.next_periodic = now + self.config.flush_interval;
            self.draining = true;
        }
        if self.urgent || self.shutdown_deadline.is_some() {
            self.urgent = false;
            self.draining = true;
        }
        if !self.draining || self.queue.is_empty() {
            self.draining = false;
            return None;
        }
        let take = self.queue.len().min(self.config.max_batch.max(1));
        let events: Vec<TelemetryEvent> = self.queue.drain(..take).collect();
        let id = self.next_batch_id;
        self.next_batch_id += 1;
        self.in_flight = Some(InFlight {
            id,
            events: events.clone(),
            failures: 0,
            resend_at: None,
            sending: true,
        });
        Some(TelemetryBatch {
            id,
            body: body(&self.identity, events),
        })
    }

    /// The POST of batch `id` finished (`ok` = 2xx). Results for unknown ids are ignored.
    pub fn on_batch_result(&mut self, id: u64, ok: bool, now: Instant) {
        let Some(f) = self.in_flight.as_mut().filter(|f| f.id == id && f.sending) else {
            return;
        };
        f.sending = false;
        if ok {
            self.stats.sent += f.events.len() as u64;
            self.in_flight = None;
        } else if f.failures < self.config.max_batch_retries {
            f.failures += 1;
            f.resend_at = Some(now + self.config.retry_delay);
        } else {
            self.stats.dropped_failed += f.events.len() as u64;
            self.in_flight = None;
        }
    }

    /// When [`poll_flush`](TelemetryQueue::poll_flush) may next have work, seen at `now`
    /// (`None`: only after a new event or a batch result).
    pub fn next_wake(&self, now: Instant) -> Option<Instant> {
        if let Some(f) = &self.in_flight {
            let resend = if f.sending { None } else { f.resend_at };
            return match (resend, self.shutdown_deadline) {
                (Some(r), Some(d)) => Some(r.min(d)),
                (r, d) => r.or(d),
            };
        }
        if self.queue.is_empty() {
            return None;
        }
        if self.urgent || self.draining || self.shutdown_deadline.is_some() {
            return Some(now);
        }
        Some(self.next_periodic)
    }

    /// Starts the final flush: everything queued is sent back to back until `deadline`; then the
    /// rest is dropped and counted. Events recorded while the final flush runs are sent too.
    pub fn begin_shutdown(&mut self, deadline: Instant) {
        self.shutdown_deadline = Some(deadline);
        if let Some(f) = &mut self.in_flight {
            f.resend_at = None;
        }
    }

    /// Whether nothing is queued or in flight.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && self.in_flight.is_none()
    }

    /// After shutdown began: whether the final flush is over (all sent, or the deadline passed).
    pub fn is_finished(&self) -> bool {
        self.shutdown_deadline.is_some() && self.is_idle()
    }

    /// Events waiting (not counting a batch in flight).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The counters.
    pub fn stats(&self) -> TelemetryStats {
        self.stats
    }

    fn abandon(&mut self) {
        let in_flight = self.in_flight.take().map_or(0, |f| f.events.len());
        self.stats.dropped_at_shutdown += (self.queue.len() + in_flight) as u64;
        self.queue.clear();
        self.draining = false;
        self.urgent = false;
    }
}

fn body(identity: &TelemetryIdentity, events: Vec<TelemetryEvent>) -> TelemetrySendRequest {
    TelemetrySendRequest {
        events,
        platform: identity.platform.clone(),
        sdk_version: identity.sdk_version.clone(),
        session_id: identity.session_id.clone(),
        process_uuid: identity.process_uuid.clone(),
    }
}
