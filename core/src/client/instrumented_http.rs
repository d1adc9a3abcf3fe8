//! The HTTP stack as the clients see it: the runtime's stack plus the two per-request hooks,
//! metrics ([`crate::metrics`]) and header injection ([`ClientOptions::header_injector`], used
//! for OpenTelemetry trace propagation).
//!
//! Every request of every client (calls, polls, heartbeats, telemetry, downloads) passes through
//! [`InstrumentedHttp::send`], so this is the one place a request is timed: from handing it to
//! the stack until its body ends. The clock is the runtime's.
//!
//! [`ClientOptions::header_injector`]: super::ClientOptions::header_injector

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;

use super::options::HeaderInjector;
use crate::endpoints::EndpointId;
use crate::io::{AsyncBody, AsyncHttp, AsyncResponse, AsyncRuntime, Timeouts, TransportError};
use crate::metrics::{Metrics, RequestOutcome};

/// Wraps `http` with the hooks that are on; returns it unchanged when none is.
pub(crate) fn instrument(
    http: Arc<dyn AsyncHttp>,
    runtime: Arc<dyn AsyncRuntime>,
    metrics: Option<Arc<Metrics>>,
    injector: Option<HeaderInjector>,
) -> Arc<dyn AsyncHttp> {
    if metrics.is_none() && injector.is_none() {
        return http;
    }
    Arc::new(InstrumentedHttp {
        inner: http,
        runtime,
        metrics,
        injector,
    })
}

struct InstrumentedHttp {
    inner: Arc<dyn AsyncHttp>,
    runtime: Arc<dyn AsyncRuntime>,
    metrics: Option<Arc<Metrics>>,
    injector: Option<HeaderInjector>,
}

/// Adds the injector's headers that the request does not already carry: a header the user set
/// (default headers, overrides) always wins.
fn inject(injector: &HeaderInjector, headers: &mut HeaderMap) {
    let mut extra = HeaderMap::new();
    injector(&mut extra);
    for (name, value) in extra {
        if let Some(name) = name {
            if !headers.contains_key(&name) {
                headers.insert(name, value);
            }
        }
    }
}

#[async_trait::async_trait]
impl AsyncHttp for InstrumentedHttp {
    async fn send(
        &self,
        mut request: http::Request<Bytes>,
        timeouts: Timeouts,
    ) -> Result<AsyncResponse, TransportError> {
        if let Some(injector) = &self.injector {
            inject(injector, request.headers_mut());
        }
        let Some(metrics) = &self.metrics else {
            return self.inner.send(request, timeouts).await;
        };
        let timing = Timing {
            metrics: metrics.clone(),
            runtime: self.runtime.clone(),
            endpoint: request.extensions().get::<EndpointId>().copied(),
            started: self.runtime.now(),
        };
        match self.inner.send(request, timeouts).await {
            Ok(response) => {
                let ok = response.head.status.is_success();
                Ok(AsyncResponse {
                    head: response.head,
                    body: Box::new(TimedBody {
                        inner: response.body,
                        timing: Some((timing, ok)),
                    }),
                })
            }
            Err(e) => {
                timing.finish(RequestOutcome::Failure);
                Err(e)
            }
        }
    }
}

/// A request being timed.
struct Timing {
    metrics: Arc<Metrics>,
    runtime: Arc<dyn AsyncRuntime>,
    endpoint: Option<EndpointId>,
    started: Instant,
}

impl Timing {
    fn finish(self, outcome: RequestOutcome) {
        let elapsed = self.runtime.now().saturating_duration_since(self.started);
        self.metrics.record(self.endpoint, outcome, elapsed);
    }
}

/// A response body that records its request when it ends, fails, or is dropped unread.
struct TimedBody {
    inner: Box<dyn AsyncBody>,
    /// The timing and whether the status was 2xx; taken when recorded.
    timing: Option<(Timing, bool)>,
}

#[async_trait::async_trait]
impl AsyncBody for TimedBody {
    async fn next_chunk(&mut self) -> Option<Result<Bytes, TransportError>> {
        let chunk = self.inner.next_chunk().await;
        let outcome = match &chunk {
            Some(Ok(_)) => return chunk,
            None if self.timing.as_ref().is_some_and(|(_, ok)| *ok) => RequestOutcome::Success,
            None | Some(Err(_)) => RequestOutcome::Failure,
        };
        if let Some((timing, _)) = self.timing.take() {
            timing.finish(outcome);
        }
        chunk
    }
}

impl Drop for TimedBody {
    fn drop(&mut self) {
        // Abandoned before its end (a cancelled call, a timeout): the request did not complete.
        if let Some((timing, _)) = self.timing.take() {
            timing.finish(RequestOutcome::Failure);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn injected_headers_never_replace_the_ones_a_request_carries() {
        let injector: HeaderInjector = Arc::new(|h: &mut HeaderMap| {
            h.insert("traceparent", "00-injected".parse().unwrap());
            h.insert("tracestate", "vendor=1".parse().unwrap());
        });
        let mut headers = HeaderMap::new();
        headers.insert("traceparent", "00-set-by-user".parse().unwrap());
        inject(&injector, &mut headers);
        assert_eq!(headers["traceparent"], "00-set-by-user");
        assert_eq!(headers["tracestate"], "vendor=1");
    }
}
