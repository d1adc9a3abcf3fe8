//! What a user can tune on a client: deadlines, the queue-state observer, session metadata.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::retry::QueueState;
use crate::types::Metadata;

/// A queue-state change of a waiting request, as handed to the observer of
/// [`ClientOptions::on_queue_state`].
///
/// The server reports why a request waits (`paused_capacity`, `paused_rate_limit`, …) while the
/// client polls its future; the observer hears every change, and the client also logs a
/// rate-limited `tracing` warning naming the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStateEvent {
    /// The training run (`<session>:train:<n>`) or sampling session the request belongs to.
    pub client: String,
    /// The public method that is waiting, e.g. `TrainingClient.forward_backward`.
    pub method: String,
    /// The new state (`Active` again once a result arrives).
    pub state: QueueState,
    /// The server's reason, when it gave one.
    pub reason: Option<String>,
}

/// The observer type of [`ClientOptions::on_queue_state`].
pub type QueueStateObserver = Arc<dyn Fn(&QueueStateEvent) + Send + Sync>;

/// The hook type of [`ClientOptions::header_injector`]: called for every outgoing request (on the
/// task that sends it, inside the call's `tracing` span) with an empty map to fill. Of the headers
/// it adds, those the request already carries are dropped, so a header the user set always wins.
pub type HeaderInjector = Arc<dyn Fn(&mut http::HeaderMap) + Send + Sync>;

/// Client-wide settings that are not connection settings ([`crate::settings::Settings`] holds
/// those).
///
/// ```
/// use std::time::Duration;
/// use tinker_core::client::ClientOptions;
///
/// let options = ClientOptions::default()
///     .with_default_deadline(Duration::from_secs(600))
///     .with_display_name("sft-run")
///     .on_queue_state(|e| eprintln!("{} is {:?}: {:?}", e.client, e.state, e.reason));
/// assert_eq!(options.default_deadline, Some(Duration::from_secs(600)));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ClientOptions {
    /// Bound on every call (submission plus waiting for the result) unless a call sets its own
    /// (`with_deadline` on a client, [`crate::client::Pending::result_with_deadline`]). `None`
    /// (the default) waits as long as the server keeps working on the request; the retry
    /// policies still bound every failure loop. It also bounds each request of the one-time
    /// start-up (`client/config`, `auth/token`, `client/dynamic_config`), so an unreachable
    /// server fails within it.
    pub default_deadline: Option<Duration>,
    /// Called on every queue-state change of a waiting request.
    pub queue_state_observer: Option<QueueStateObserver>,
    /// `user_metadata` of the session (`create_session`).
    pub session_metadata: Metadata,
    /// `display_name` of the session (SDK 0.38).
    pub display_name: Option<String>,
    /// How long [`crate::client::ServiceClient::close`] may spend flushing telemetry (2 s).
    pub close_flush_timeout: Duration,
    /// Seed of the client's PRNG (jitter, idempotency keys, telemetry ids). When unset, the
    /// runtime crates draw one from the OS; tests fix it for reproducible traces.
    pub seed: Option<u64>,
    /// Whether requests are counted and timed in [`crate::metrics::Metrics`] (on by default;
    /// read them with `ServiceClient::metrics`).
    pub metrics_enabled: bool,
    /// Adds headers to every request (see [`HeaderInjector`]). With the `otel` feature the
    /// default injects the W3C trace context of the current span (`traceparent`,
    /// `tracestate`) through the global OpenTelemetry propagator; otherwise none.
    pub header_injector: Option<HeaderInjector>,
    /// How often the session heartbeat is sent (10 s, as the SDK does). Shorten it only to
    /// exercise session expiry in tests.
    pub heartbeat_period: Duration,
    /// After this long without a successful heartbeat the client logs one `tracing` warning
    /// (the server may end the session), and another only after a heartbeat succeeded again
    /// (120 s, as the SDK does).
    pub heartbeat_warn_after: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            default_deadline: None,
            queue_state_observer: None,
            session_metadata: Metadata::new(),
            display_name: None,
            close_flush_timeout: Duration::from_secs(2),
            seed: None,
            metrics_enabled: true,
            header_injector: default_header_injector(),
            heartbeat_period: Duration::from_secs(10),
            heartbeat_warn_after: Duration::from_secs(120),
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("default_deadline", &self.default_deadline)
            .field(
                "queue_state_observer",
                &self.queue_state_observer.as_ref().map(|_| "Fn"),
            )
            .field("session_metadata", &self.session_metadata)
            .field("display_name", &self.display_name)
            .field("close_flush_timeout", &self.close_flush_timeout)
            .field("seed", &self.seed)
            .field("metrics_enabled", &self.metrics_enabled)
            .field(
                "header_injector",
                &self.header_injector.as_ref().map(|_| "Fn"),
            )
            .field("heartbeat_period", &self.heartbeat_period)
            .field("heartbeat_warn_after", &self.heartbeat_warn_after)
            .finish()
    }
}

impl ClientOptions {
    /// Sets the client-wide deadline of every call.
    pub fn with_default_deadline(mut self, deadline: Duration) -> ClientOptions {
        self.default_deadline = Some(deadline);
        self
    }

    /// Sets how long heartbeats may fail before the one warning (default 120 s), and their
    /// period (default 10 s).
    pub fn with_heartbeat(mut self, period: Duration, warn_after: Duration) -> ClientOptions {
        self.heartbeat_period = period;
        self.heartbeat_warn_after = warn_after;
        self
    }

    /// Installs a queue-state observer.
    pub fn on_queue_state(
        mut self,
        observer: impl Fn(&QueueStateEvent) + Send + Sync + 'static,
    ) -> ClientOptions {
        self.queue_state_observer = Some(Arc::new(observer));
        self
    }

    /// Sets the session's display name.
    pub fn with_display_name(mut self, name: impl Into<String>) -> ClientOptions {
        self.display_name = Some(name.into());
        self
    }

    /// Adds one `user_metadata` entry to the session.
    pub fn with_session_metadata(
        mut self,
        key: impl Into<String>,
        value: impl Into<serde_json::Value>,
    ) -> ClientOptions {
        self.session_metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the PRNG seed.
    pub fn with_seed(mut self, seed: u64) -> ClientOptions {
        self.seed = Some(seed);
        self
    }

    /// Seeds the PRNG with `entropy` unless a seed was set: how the runtime crates give every
    /// client a fresh seed (the core draws no randomness itself) while a test's fixed seed wins.
    ///
    /// ```
    /// use tinker_core::client::ClientOptions;
    ///
    /// assert_eq!(ClientOptions::default().with_seed_if_unset(7).seed, Some(7));
    /// let fixed = ClientOptions::default().with_seed(1).with_seed_if_unset(7);
    /// assert_eq!(fixed.seed, Some(1), "the caller's seed is kept");
    /// ```
    pub fn with_seed_if_unset(mut self, entropy: u64) -> ClientOptions {
        self.seed.get_or_insert(entropy);
        self
    }

    /// Sets how long `close` may spend flushing telemetry.
    pub fn with_close_flush_timeout(mut self, timeout: Duration) -> ClientOptions {
        self.close_flush_timeout = timeout;
        self
    }

    /// Turns the request metrics on or off (on by default).
    pub fn with_metrics(mut self, enabled: bool) -> ClientOptions {
        self.metrics_enabled = enabled;
        self
    }

    /// Installs a header injector, replacing the default one (see [`HeaderInjector`]).
    pub fn with_header_injector(
        mut self,
        injector: impl Fn(&mut http::HeaderMap) + Send + Sync + 'static,
    ) -> ClientOptions {
        self.header_injector = Some(Arc::new(injector));
        self
    }

    /// Removes the header injector (with the `otel` feature: stops trace propagation).
    pub fn without_header_injector(mut self) -> ClientOptions {
        self.header_injector = None;
        self
    }
}

#[cfg(feature = "otel")]
fn default_header_injector() -> Option<HeaderInjector> {
    Some(super::trace_context::otel_injector())
}

#[cfg(not(feature = "otel"))]
fn default_header_injector() -> Option<HeaderInjector> {
    None
}
