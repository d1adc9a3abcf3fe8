//! Fault injection: rules that replace, delay or break the server's replies on a schedule.
//!
//! A rule names an endpoint (the path after `/api/v1/`: `"asample"`, `"retrieve_future"`, a
//! prefix pattern `"training_runs/*"`, or `"*"` for all), when it fires (skip the first `after`
//! matching requests, then fire `count` times — or for `duration_ms` after the first firing, or
//! on every match with `always`; optionally only with a seeded `probability`) and the `fault`:
//!
//! ```json
//! {"endpoint": "create_session", "count": 1, "fault": {"kind": "rate_limit", "retry_after": "1.5"}}
//! {"endpoint": "asample", "duration_ms": 2000, "fault": {"kind": "status", "status": 503}}
//! {"endpoint": "retrieve_future", "count": 3, "fault": {"kind": "try_again", "queue_states": ["paused_capacity", "active"]}}
//! {"endpoint": "optim_step", "count": 2, "fault": {"kind": "empty_bad_request"}}
//! {"endpoint": "forward_backward", "fault": {"kind": "reset"}}
//! {"endpoint": "retrieve_future", "request_type": "Sample", "fault": {"kind": "stall_body", "stall_ms": 5000}}
//! {"endpoint": "asample", "fault": {"kind": "hang_future"}}
//! ```
//!
//! Rules are checked in order on every `/api/v1/` request; each matching rule counts the request,
//! and the first one due to fire decides the fault. Faults act before authentication, like a load
//! balancer or proxy would. How connection faults are produced: `reset` makes the connection's
//! service return an error, so hyper closes the socket without writing a response (the request
//! is not executed unless `after_handler` is set); `reset_mid_body` and `stall_body` send the real
//! status, headers (with the real `Content-Length`) and the first half of the real body, then
//! close the connection (reset) or send nothing more (stall; closed after `stall_ms` if given).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::SplitMix64;

/// One fault rule. See the module docs for the format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Path after `/api/v1/`; a trailing `*` matches a prefix; `"*"` matches everything.
    pub endpoint: String,
    /// Only this HTTP method (any when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Only polls with this `X-Tinker-Request-Type` (e.g. `"Sample"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_type: Option<String>,
    /// Let this many matching requests through first.
    #[serde(default)]
    pub after: u64,
    /// Fire this many times (default 1, or unlimited within `duration_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Keep firing for this long after the first firing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Fire on every matching request (after `after`), forever.
    #[serde(default)]
    pub always: bool,
    /// Fire an eligible request with this probability, drawn from the server's seeded PRNG.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// What happens.
    pub fault: Fault,
}

impl FaultRule {
    /// A rule firing `fault` once on the next request to `endpoint`.
    pub fn once(endpoint: impl Into<String>, fault: Fault) -> FaultRule {
        FaultRule::times(endpoint, 1, fault)
    }

    /// A rule firing `fault` on the next `count` requests to `endpoint`.
    pub fn times(endpoint: impl Into<String>, count: u64, fault: Fault) -> FaultRule {
        FaultRule {
            endpoint: endpoint.into(),
            method: None,
            request_type: None,
            after: 0,
            count: Some(count),
            duration_ms: None,
            always: false,
            probability: None,
            fault,
        }
    }

    /// Skips the first `after` matching requests.
    pub fn after(mut self, after: u64) -> FaultRule {
        self.after = after;
        self
    }

    /// Only polls of this request type (`X-Tinker-Request-Type`).
    pub fn for_request_type(mut self, request_type: impl Into<String>) -> FaultRule {
        self.request_type = Some(request_type.into());
        self
    }

    fn matches(&self, method: &str, endpoint: &str, request_type: Option<&str>) -> bool {
        let path_ok = match self.endpoint.strip_suffix('*') {
            Some(prefix) => endpoint.starts_with(prefix),
            None => endpoint == self.endpoint,
        };
        path_ok
            && self
                .method
                .as_deref()
                .is_none_or(|m| m.eq_ignore_ascii_case(method))
            && self
                .request_type
                .as_deref()
                .is_none_or(|t| Some(t) == request_type)
    }
}

/// What a fault does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Answer this status. `body` defaults to `{"detail": "injected fault: <status>"}`; a JSON
    /// `null` body means an empty body.
    Status {
        /// HTTP status (500, 503, 402, …).
        status: u16,
        /// Response body (JSON).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Value>,
        /// Extra headers.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
    },
    /// 429, with `Retry-After: <retry_after>` when given (seconds like `"1.5"`, or an HTTP date).
    RateLimit {
        /// The `Retry-After` value.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_after: Option<String>,
    },
    /// 408 with a try-again body; successive firings cycle through `queue_states`
    /// (default: paused_capacity, paused_rate_limit, active).
    TryAgain {
        /// Queue states to report, in turn.
        #[serde(default)]
        queue_states: Vec<String>,
    },
    /// 410 ("promise expired" on `retrieve_future`).
    Gone,
    /// 400 with an empty body (a Cloudflare rejection to the SDK).
    EmptyBadRequest,
    /// Close the connection without a response.
    Reset {
        /// Run the request first (its effect happens, only the reply is lost).
        #[serde(default)]
        after_handler: bool,
    },
    /// Send the head and half the body, then close the connection.
    ResetMidBody,
    /// Send the head and half the body, then nothing (closed after `stall_ms` when given).
    StallBody {
        /// How long to stall before closing; absent = until the client gives up.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stall_ms: Option<u64>,
    },
    /// Wait this long, then answer normally.
    Delay {
        /// Milliseconds.
        ms: u64,
    },
    /// Accept the request normally, but its future never completes.
    HangFuture,
    /// Accept the request normally, but its future fails with this error.
    FailFuture {
        /// The `error` message.
        error: String,
        /// `"user"` or `"server"`.
        #[serde(default = "user_category")]
        category: String,
    },
}

fn user_category() -> String {
    "user".into()
}

impl Fault {
    /// A short name for the recording (`"status 503"`, `"reset"`, …).
    pub fn label(&self) -> String {
        match self {
            Fault::Status { status, .. } => format!("status {status}"),
            Fault::RateLimit {
                retry_after: Some(r),
            } => format!("rate_limit retry-after {r}"),
            Fault::RateLimit { retry_after: None } => "rate_limit".into(),
            Fault::TryAgain { .. } => "try_again 408".into(),
            Fault::Gone => "gone 410".into(),
            Fault::EmptyBadRequest => "empty_bad_request".into(),
            Fault::Reset { .. } => "reset".into(),
            Fault::ResetMidBody => "reset_mid_body".into(),
            Fault::StallBody { .. } => "stall_body".into(),
            Fault::Delay { ms } => format!("delay {ms}ms"),
            Fault::HangFuture => "hang_future".into(),
            Fault::FailFuture { .. } => "fail_future".into(),
        }
    }
}

/// A fault chosen for one request, with how many times its rule fired before (for cycling).
#[derive(Debug, Clone)]
pub(crate) struct Firing {
    pub fault: Fault,
    pub nth: u64,
}

#[derive(Debug)]
struct RuleState {
    rule: FaultRule,
    seen: u64,
    fired: u64,
    first_fired: Option<Instant>,
}

/// A rule with its counters, as `GET /_admin/faults` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultStatus {
    /// The rule.
    pub rule: FaultRule,
    /// Matching requests seen.
    pub seen: u64,
    /// Times it fired.
    pub fired: u64,
}

/// The active rules and their counters.
#[derive(Debug)]
pub(crate) struct FaultSchedule {
    rules: Mutex<(Vec<RuleState>, SplitMix64)>,
}

impl FaultSchedule {
    pub fn new(rules: Vec<FaultRule>, seed: u64) -> FaultSchedule {
        let s = FaultSchedule {
            rules: Mutex::new((Vec::new(), SplitMix64::new(seed ^ 0xFA17_5EED))),
        };
        s.replace(rules);
        s
    }

    pub fn replace(&self, rules: Vec<FaultRule>) {
        let mut g = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        g.0 = rules.into_iter().map(RuleState::new).collect();
    }

    pub fn add(&self, rules: Vec<FaultRule>) {
        let mut g = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        g.0.extend(rules.into_iter().map(RuleState::new));
    }

    pub fn status(&self) -> Vec<FaultStatus> {
        let g = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        g.0.iter()
            .map(|r| FaultStatus {
                rule: r.rule.clone(),
                seen: r.seen,
                fired: r.fired,
            })
            .collect()
    }

    /// Counts the request against every matching rule and returns the fault to apply, if any.
    pub fn check(
        &self,
        method: &str,
        endpoint: &str,
        request_type: Option<&str>,
    ) -> Option<Firing> {
        let mut g = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        if g.0.is_empty() {
            return None;
        }
        let now = Instant::now();
        let (rules, rng) = &mut *g;
        let mut chosen = None;
        for r in rules.iter_mut() {
            if !r.rule.matches(method, endpoint, request_type) {
                continue;
            }
            r.seen += 1;
            if chosen.is_some() || r.seen <= r.rule.after || !r.due(now) {
                continue;
            }
            if let Some(p) = r.rule.probability {
                if rng.next_f64() >= p {
                    continue;
                }
            }
            r.first_fired.get_or_insert(now);
            chosen = Some(Firing {
                fault: r.rule.fault.clone(),
                nth: r.fired,
            });
            r.fired += 1;
        }
        chosen
    }
}

impl RuleState {
    fn new(rule: FaultRule) -> RuleState {
        RuleState {
            rule,
            seen: 0,
            fired: 0,
            first_fired: None,
        }
    }

    /// Whether the rule may still fire.
    fn due(&self, now: Instant) -> bool {
        if self.rule.always {
            return true;
        }
        if let Some(ms) = self.rule.duration_ms {
            let within = self
                .first_fired
                .is_none_or(|t| now.duration_since(t).as_millis() < u128::from(ms));
            return within && self.rule.count.is_none_or(|c| self.fired < c);
        }
        self.fired < self.rule.count.unwrap_or(1)
    }
}
