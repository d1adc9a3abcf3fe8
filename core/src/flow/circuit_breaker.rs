//! Circuit breakers (Tinkex F84) and a registry of them by name (F85).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CircuitState {
    /// Requests flow; failures are counted.
    Closed,
    /// Requests are refused until the reset timeout has passed.
    Open,
    /// Trial requests (up to `half_open_max_calls`) may probe the service.
    HalfOpen,
}

/// Breaker constants (Tinkex defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open a closed breaker (5).
    pub failure_threshold: u32,
    /// How long an open breaker stays open before allowing trials (30 s).
    pub reset_timeout: Duration,
    /// Trial calls admitted while half-open (1).
    pub half_open_max_calls: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> CircuitBreakerConfig {
        CircuitBreakerConfig {
            failure_threshold: 5,
            reset_timeout: Duration::from_secs(30),
            half_open_max_calls: 1,
        }
    }
}

/// A call was refused because the breaker is open (or its half-open trials are taken).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("circuit breaker {name:?} is open")]
pub struct CircuitOpen {
    /// The breaker's name.
    pub name: String,
}

/// A circuit breaker.
///
/// * Closed: failures count up; at `failure_threshold` it opens (`opened_at = now`); a success
///   resets the count.
/// * Open: refuses calls; once `reset_timeout` has passed it is half-open (computed lazily from
///   `now`).
/// * Half-open: admits up to `half_open_max_calls` trials; a success closes it (counts reset), a
///   failure re-opens it with a new `opened_at` (the failure count is kept).
///
/// Unlike Tinkex's `call`, [`try_begin`](CircuitBreaker::try_begin) refuses a call when the
/// half-open trials are used up (Tinkex checks that cap only in `allow_request?`).
///
/// ```
/// use std::time::{Duration, Instant};
/// use tinker_core::flow::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
///
/// # #[allow(clippy::disallowed_methods)]
/// let t0 = Instant::now();
/// let mut cb = CircuitBreaker::new("sampler", CircuitBreakerConfig::default());
/// for _ in 0..5 {
///     cb.try_begin(t0).unwrap();
///     cb.record_failure(t0);
/// }
/// assert_eq!(cb.state(t0), CircuitState::Open);
/// assert!(cb.try_begin(t0 + Duration::from_secs(29)).is_err());
/// assert_eq!(cb.state(t0 + Duration::from_secs(30)), CircuitState::HalfOpen);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitBreaker {
    name: String,
    config: CircuitBreakerConfig,
    state: CircuitState,
    failure_count: u32,
    half_open_calls: u32,
    opened_at: Option<Instant>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(name: impl Into<String>, config: CircuitBreakerConfig) -> CircuitBreaker {
        CircuitBreaker {
            name: name.into(),
            config,
            state: CircuitState::Closed,
            failure_count: 0,
            half_open_calls: 0,
            opened_at: None,
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The configuration.
    pub fn config(&self) -> CircuitBreakerConfig {
        self.config
    }

    /// Failures counted so far.
    pub fn failure_count(&self) -> u32 {
        self.failure_count
    }

    /// The effective state at `now` (an open breaker past its reset timeout is half-open).
    pub fn state(&self, now: Instant) -> CircuitState {
        match (self.state, self.opened_at) {
            (CircuitState::Open, Some(at))
                if now.saturating_duration_since(at) >= self.config.reset_timeout =>
            {
                CircuitState::HalfOpen
            }
            (state, _) => state,
        }
    }

    fn settle(&mut self, now: Instant) {
        let effective = self.state(now);
        if effective != self.state {
            self.state = effective;
            self.half_open_calls = 0;
        }
    }

    /// Whether a call would be admitted at `now` (no state change).
    pub fn allow_request(&self, now: Instant) -> bool {
        match self.state(now) {
            CircuitState::Closed => true,
            CircuitState::Open => false,
            CircuitState::HalfOpen => {
                // A lazily half-open breaker has not counted any trial yet.
                let calls = if self.state == CircuitState::HalfOpen {
                    self.half_open_calls
                } else {
                    0
                };
                calls < self.config.half_open_max_calls
            }
        }
    }

    /// Admits a call (counting a half-open trial), or refuses it.
    pub fn try_begin(&mut self, now: Instant) -> Result<(), CircuitOpen> {
        if !self.allow_request(now) {
            return Err(CircuitOpen {
                name: self.name.clone(),
            });
        }
        self.settle(now);
        if self.state == CircuitState::HalfOpen {
            self.half_open_calls += 1;
        }
        Ok(())
    }

    /// The admitted call succeeded.
    pub fn record_success(&mut self, now: Instant) {
        self.settle(now);
        match self.state {
            CircuitState::Closed => self.failure_count = 0,
            CircuitState::HalfOpen => self.reset(),
            CircuitState::Open => {}
        }
    }

    /// The admitted call failed.
    pub fn record_failure(&mut self, now: Instant) {
        self.settle(now);
        match self.state {
            CircuitState::Closed => {
                self.failure_count += 1;
                if self.failure_count >= self.config.failure_threshold {
                    self.state = CircuitState::Open;
                    self.opened_at = Some(now);
                }
            }
            CircuitState::HalfOpen => {
                self.state = CircuitState::Open;
                self.opened_at = Some(now);
                self.half_open_calls = 0;
            }
            CircuitState::Open => {}
        }
    }

    /// Back to closed with zero counts.
    pub fn reset(&mut self) {
        self.state = CircuitState::Closed;
        self.failure_count = 0;
        self.half_open_calls = 0;
        self.opened_at = None;
    }
}

/// Breakers by name (Tinkex F85), held in the shared ledger. The ledger's lock replaces Tinkex's
/// compare-and-swap: every outcome is applied to the latest breaker, so none is lost.
///
/// ```
/// use std::time::Instant;
/// use tinker_core::flow::{CircuitBreakerRegistry, CircuitState};
///
/// # #[allow(clippy::disallowed_methods)]
/// let now = Instant::now();
/// let mut registry = CircuitBreakerRegistry::default();
/// registry.try_begin("sampling", now).unwrap();
/// registry.record("sampling", false, now);
/// assert_eq!(registry.state("sampling", now), CircuitState::Closed);
/// assert_eq!(registry.state("never-seen", now), CircuitState::Closed);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CircuitBreakerRegistry {
    defaults: CircuitBreakerConfig,
    breakers: BTreeMap<String, CircuitBreaker>,
}

impl CircuitBreakerRegistry {
    /// A registry creating breakers with `defaults`.
    pub fn new(defaults: CircuitBreakerConfig) -> CircuitBreakerRegistry {
        CircuitBreakerRegistry {
            defaults,
            breakers: BTreeMap::new(),
        }
    }

    /// The breaker called `name`, created with `config` (or the defaults) if it does not exist.
    /// `config` is used only at creation, as in Tinkex.
    pub fn get_or_create(
        &mut self,
        name: &str,
        config: Option<CircuitBreakerConfig>,
    ) -> &mut CircuitBreaker {
        let defaults = self.defaults;
        self.breakers
            .entry(name.to_owned())
            .or_insert_with(|| CircuitBreaker::new(name, config.unwrap_or(defaults)))
    }

    /// Admits or refuses a call through the breaker `name` (created if needed).
    pub fn try_begin(&mut self, name: &str, now: Instant) -> Result<(), CircuitOpen> {
        self.get_or_create(name, None).try_begin(now)
    }

    /// Records the outcome of an admitted call.
    pub fn record(&mut self, name: &str, success: bool, now: Instant) {
        let breaker = self.get_or_create(name, None);
        if success {
            breaker.record_success(now);
        } else {
            breaker.record_failure(now);
        }
    }

    /// The state of `name` (closed if unknown).
    pub fn state(&self, name: &str, now: Instant) -> CircuitState {
        self.breakers
            .get(name)
            .map_or(CircuitState::Closed, |b| b.state(now))
    }

    /// Resets `name` to closed, if it exists.
    pub fn reset(&mut self, name: &str) {
        if let Some(b) = self.breakers.get_mut(name) {
            b.reset();
        }
    }

    /// Forgets `name`.
    pub fn remove(&mut self, name: &str) -> Option<CircuitBreaker> {
        self.breakers.remove(name)
    }

    /// Every breaker with its state, sorted by name.
    pub fn list(&self, now: Instant) -> Vec<(String, CircuitState)> {
        self.breakers
            .iter()
            .map(|(n, b)| (n.clone(), b.state(now)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clock() -> impl Fn(u64) -> Instant {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        move |s| t0 + Duration::from_secs(s)
    }

    #[test]
    fn five_failures_open_it_and_a_success_in_between_resets_the_count() {
        let at = clock();
        let mut cb = CircuitBreaker::new("x", CircuitBreakerConfig::default());
        for _ in 0..4 {
            cb.record_failure(at(0));
        }
        cb.record_success(at(0));
        assert_eq!(cb.failure_count(), 0);
        for i in 0..5 {
            assert_eq!(cb.state(at(1)), CircuitState::Closed, "after {i} failures");
            cb.record_failure(at(1));
        }
        assert_eq!(cb.state(at(1)), CircuitState::Open);
        assert_eq!(cb.try_begin(at(2)), Err(CircuitOpen { name: "x".into() }));
    }

    #[test]
    fn half_open_admits_one_trial_which_closes_or_reopens_it() {
        let at = clock();
        let mut cb = CircuitBreaker::new("x", CircuitBreakerConfig::default());
        for _ in 0..5 {
            cb.record_failure(at(0));
        }
        assert_eq!(cb.state(at(30)), CircuitState::HalfOpen);
        assert!(cb.allow_request(at(30)));
        cb.try_begin(at(30)).unwrap();
        assert!(cb.try_begin(at(30)).is_err(), "only one trial");
        cb.record_failure(at(31));
        assert_eq!(cb.state(at(31)), CircuitState::Open);
        assert_eq!(cb.failure_count(), 5, "kept across re-opening");
        assert_eq!(cb.state(at(60)), CircuitState::Open);
        assert_eq!(cb.state(at(61)), CircuitState::HalfOpen);
        cb.try_begin(at(61)).unwrap();
        cb.record_success(at(62));
        assert_eq!(cb.state(at(62)), CircuitState::Closed);
        assert_eq!(cb.failure_count(), 0);
    }

    #[test]
    fn the_registry_creates_on_demand_and_keeps_breakers_apart() {
        let at = clock();
        let custom = CircuitBreakerConfig {
            failure_threshold: 1,
            ..Default::default()
        };
        let mut r = CircuitBreakerRegistry::default();
        r.get_or_create("fragile", Some(custom));
        r.record("fragile", false, at(0));
        r.record("sturdy", false, at(0));
        assert_eq!(
            r.list(at(0)),
            vec![
                ("fragile".into(), CircuitState::Open),
                ("sturdy".into(), CircuitState::Closed)
            ]
        );
        assert!(r.try_begin("fragile", at(1)).is_err());
        assert!(r.try_begin("sturdy", at(1)).is_ok());
        r.reset("fragile");
        assert_eq!(r.state("fragile", at(1)), CircuitState::Closed);
        assert!(r.remove("fragile").is_some());
        assert_eq!(r.list(at(1)).len(), 1);
    }
}
