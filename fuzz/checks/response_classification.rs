//! Response classification: a stream of (status, headers, body) replies goes through every retry
//! and poll decision of core/src/retry, as the call machine would feed them. Never a panic, and
//! every wait stays within the bounds protocol.md 8 gives: Retry-After in (0, 60] s, layer H's
//! back-off ≤ 10 s, the poll loop's ≤ 30 s, layer X's ≤ 30 s, layer R's ≤ 12.5 s.
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderMap, HeaderName, HeaderValue};
use tinker_core::io::TransportErrorKind;
use tinker_core::retry::holder_layer::{HolderDecision, HolderRetry};
use tinker_core::retry::http_layer::{self, Attempt, HttpDecision, DEFAULT_MAX_RETRIES};
use tinker_core::retry::poll::{PollAction, PollErrors};
use tinker_core::retry::sampling_layer::{SamplingDecision, SamplingRetry, SamplingRetryConfig};
use tinker_core::retry::{
    is_proxy_rejection, retry_after, BillingPause, DelaySource, Failure, ProxyRejectionCredits,
};
use tinker_core::types::FutureReply;

use super::Input;

const NAMES: [&str; 8] = [
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "content-type",
    "cf-ray",
    "server",
    "content-length",
    "x-request-id",
];
const STATUSES: [u16; 16] = [
    200, 400, 401, 402, 403, 404, 408, 409, 410, 422, 429, 500, 502, 503, 504, 599,
];
const TRANSPORT: [TransportErrorKind; 4] = [
    TransportErrorKind::Connect,
    TransportErrorKind::Timeout,
    TransportErrorKind::Io,
    TransportErrorKind::Other,
];

/// Runs one input; panics on a finding.
pub fn check(data: &[u8]) {
    let mut input = Input(data);
    #[allow(clippy::disallowed_methods)]
    let start = Instant::now();
    let mut now = start;
    let mut pool = ProxyRejectionCredits::default();
    let mut billing = BillingPause::default();
    let mut poll = PollErrors::default();
    let mut holder = HolderRetry::new(start);
    let mut sampling = SamplingRetry::new(SamplingRetryConfig::default());
    let mut retries_taken = 0u32;
    while let Some(tag) = input.byte() {
        let draw = f64::from(input.byte().unwrap_or(0)) / 256.0;
        let attempt_failure = if tag & 0x80 != 0 {
            let kind = TRANSPORT[usize::from(tag) % TRANSPORT.len()];
            check_http(Attempt::Transport(kind), retries_taken, draw);
            Some(Failure::Transport(kind))
        } else {
            let status = if tag & 0x40 != 0 {
                u16::from_le_bytes([input.byte().unwrap_or(0), input.byte().unwrap_or(0)])
            } else {
                STATUSES[usize::from(tag) % STATUSES.len()]
            };
            let mut headers = HeaderMap::new();
            for _ in 0..input.byte().unwrap_or(0) % 4 {
                let name = NAMES[usize::from(input.byte().unwrap_or(0)) % NAMES.len()];
                let len = usize::from(input.byte().unwrap_or(0) % 32);
                if let Ok(value) = HeaderValue::from_bytes(input.bytes(len)) {
                    headers.append(HeaderName::from_static(name), value);
                }
            }
            let body_len = usize::from(input.byte().unwrap_or(0));
            let body = input.bytes(body_len);
            if let Some(d) = retry_after(
                &headers,
                SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 31),
            ) {
                assert!(d > Duration::ZERO && d <= Duration::from_secs(60), "{d:?}");
            }
            let _ = is_proxy_rejection(status, &headers, body.is_empty());
            check_http(
                Attempt::Response {
                    status,
                    headers: &headers,
                },
                retries_taken,
                draw,
            );
            let content_type = headers.get("content-type").and_then(|v| v.to_str().ok());
            if (200..300).contains(&status) {
                let _ = FutureReply::classify(content_type, body);
            }
            Failure::from_response(status, &headers, body.is_empty(), &mut pool)
        };
        retries_taken = (retries_taken + 1) % (DEFAULT_MAX_RETRIES + 2);
        let Some(failure) = attempt_failure else {
            poll.on_complete();
            continue;
        };
        match poll.on_failure(failure, now, &mut billing) {
            PollAction::PollAfter(d) => {
                assert!(d <= Duration::from_secs(30), "poll back-off {d:?}");
                now += d;
            }
            PollAction::BillingPause { sleep, .. } => now += sleep,
            _ => {}
        }
        match holder.on_failure(failure, now, &mut billing, draw) {
            HolderDecision::Retry(plan) => {
                if plan.source != DelaySource::BillingPause {
                    assert!(plan.delay <= Duration::from_secs(30), "layer X {plan:?}");
                }
                now += plan.delay;
            }
            HolderDecision::GiveUp(_) => holder = HolderRetry::new(now),
        }
        if let SamplingDecision::Resubmit(plan) = sampling.on_failure(failure, draw) {
            assert!(
                plan.delay <= Duration::from_millis(12_500),
                "layer R {plan:?}"
            );
        }
    }
}

fn check_http(attempt: Attempt<'_>, retries_taken: u32, draw: f64) {
    let decision = http_layer::decide(
        attempt,
        retries_taken,
        DEFAULT_MAX_RETRIES,
        SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 31),
        draw,
    );
    match decision {
        HttpDecision::Retry(plan) => {
            assert!(retries_taken < DEFAULT_MAX_RETRIES);
            assert!(http_layer::should_retry(attempt));
            let bound = match plan.source {
                DelaySource::RetryAfterHeader => Duration::from_secs(60),
                _ => Duration::from_secs(10),
            };
            assert!(plan.delay <= bound, "layer H {plan:?}");
        }
        HttpDecision::Surface => {}
    }
}
