//! OpenTelemetry trace propagation (Tinkex F26, `otel` feature): the W3C trace context of the
//! current `tracing` span goes out with every request.
//!
//! The context is read through `tracing-opentelemetry` (so the application must install its
//! layer in the subscriber) and written by the global text-map propagator (so it must set one,
//! usually `TraceContextPropagator`); without either, nothing is injected. Calls run inside a
//! `tinker.call` span that is a child of the caller's span, so a request's `traceparent`
//! carries the caller's trace id. Headers already on the request are never replaced (see
//! [`super::HeaderInjector`]).

use std::collections::HashMap;

use http::{HeaderName, HeaderValue};
use opentelemetry::propagation::Injector;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::options::HeaderInjector;

/// The W3C header carrying the trace and parent span id.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header carrying vendor trace state.
pub const TRACESTATE: &str = "tracestate";

/// The propagator's output, collected before it becomes headers.
struct Carrier(HashMap<String, String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_ascii_lowercase(), value);
    }
}

/// The injector [`super::ClientOptions`] uses by default with the `otel` feature: the current
/// span's context through the global propagator. A key or value that is not a valid header is
/// skipped; the request goes out regardless.
///
/// ```
/// use tinker_core::client::{otel_injector, ClientOptions};
/// let options = ClientOptions::default().with_header_injector({
///     let otel = otel_injector();
///     move |headers| otel(headers)
/// });
/// assert!(options.header_injector.is_some());
/// ```
pub fn otel_injector() -> HeaderInjector {
    std::sync::Arc::new(|headers: &mut http::HeaderMap| {
        let context = tracing::Span::current().context();
        let mut carrier = Carrier(HashMap::new());
        opentelemetry::global::get_text_map_propagator(|p| {
            p.inject_context(&context, &mut carrier)
        });
        for (key, value) in carrier.0 {
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(key.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                headers.insert(name, value);
            }
        }
    })
}
