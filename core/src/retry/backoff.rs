//! Exponential back-off with the SDK's two jitter styles.

use std::time::Duration;

/// How a nominal back-off delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Jitter {
    /// No randomness (layer X, the poll loop's connection back-off).
    None,
    /// Multiply by `1 − f·draw`, i.e. land in `[(1 − f)·d, d]` (layer H, f = 0.25).
    Shrink(f64),
    /// Add `d·f·(2·draw − 1)`, i.e. ±f around `d`, then clamp to `[0, max]` (layer R, f = 0.25).
    Symmetric(f64),
}

/// `delay(k) = min(initial · 2^k, max)`, jittered, where `k` is the number of retries already
/// taken (0 before the first retry).
///
/// Presets match the SDK layers; build your own for anything else.
///
/// ```
/// use std::time::Duration;
/// use tinker_core::retry::BackoffPolicy;
///
/// let holder = BackoffPolicy::holder();
/// let waits: Vec<u64> = (0..7).map(|k| holder.delay(k, 0.5).as_secs()).collect();
/// assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffPolicy {
    /// Delay before the first retry (before jitter).
    pub initial: Duration,
    /// Cap on the nominal delay; symmetric jitter is clamped to it as well.
    pub max: Duration,
    /// The jitter style.
    pub jitter: Jitter,
}

impl BackoffPolicy {
    /// Layer H (generated HTTP client): 0.5 s · 2^k ≤ 10 s, × [0.75, 1].
    pub fn http() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
            jitter: Jitter::Shrink(0.25),
        }
    }

    /// Layer X (holder `execute_with_retries`): 1, 2, 4, 8, 16, 30, 30 … s, no jitter.
    pub fn holder() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            jitter: Jitter::None,
        }
    }

    /// Layer R (sampling `RetryHandler`): 0.5 s · 2^k ≤ 10 s, ± 25 %, clamped to [0, 10 s].
    pub fn sampling() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(10),
            jitter: Jitter::Symmetric(0.25),
        }
    }

    /// The `retrieve_future` connection back-off: min(2^n, 30) s, no jitter (protocol.md 7.5).
    pub fn poll_connection() -> BackoffPolicy {
        BackoffPolicy::holder()
    }

    /// The `retrieve_future` back-off during a run of 5xx replies (from the second one on):
    /// 0.1 s · 2^k ≤ 5 s, no jitter. The official SDK re-polls at once; see [`super::poll`].
    pub fn poll_server_error() -> BackoffPolicy {
        BackoffPolicy {
            initial: super::poll::SERVER_ERROR_BACKOFF_INITIAL,
            max: super::poll::SERVER_ERROR_BACKOFF_MAX,
            jitter: Jitter::None,
        }
    }

    /// The capped delay before jitter.
    pub fn nominal(&self, retries_taken: u32) -> Duration {
        // f64 keeps 2^k exact for every k that matters and saturates instead of overflowing.
        let secs = self.initial.as_secs_f64() * 2f64.powi(retries_taken.min(1024) as i32);
        Duration::from_secs_f64(secs.min(self.max.as_secs_f64()))
    }

    /// The delay before retry number `retries_taken + 1`, with `draw` in `[0, 1)` from the PRNG.
    pub fn delay(&self, retries_taken: u32, draw: f64) -> Duration {
        let nominal = self.nominal(retries_taken).as_secs_f64();
        let draw = if draw.is_finite() {
            draw.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let secs = match self.jitter {
            Jitter::None => nominal,
            Jitter::Shrink(f) => nominal * (1.0 - f * draw),
            Jitter::Symmetric(f) => {
                (nominal + nominal * f * (2.0 * draw - 1.0)).clamp(0.0, self.max.as_secs_f64())
            }
        };
        Duration::from_secs_f64(secs.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn http_layer_delays_match_the_captured_sdk_values() {
        let h = BackoffPolicy::http();
        // Captured: 0.48 s then 0.78 s for two 500s, i.e. inside [0.375, 0.5] and [0.75, 1].
        assert_eq!(h.delay(0, 0.0), Duration::from_millis(500));
        assert_eq!(h.delay(0, 1.0), Duration::from_millis(375));
        assert_eq!(h.delay(1, 0.0), Duration::from_secs(1));
        assert_eq!(h.delay(5, 0.0), Duration::from_secs(10));
        assert_eq!(h.delay(u32::MAX, 0.0), Duration::from_secs(10));
    }

    #[test]
    fn sampling_layer_jitter_is_symmetric_and_never_exceeds_the_cap() {
        let r = BackoffPolicy::sampling();
        assert_eq!(r.delay(0, 0.5), Duration::from_millis(500));
        assert_eq!(r.delay(0, 0.0), Duration::from_millis(375));
        assert_eq!(r.delay(0, 1.0), Duration::from_millis(625));
        assert_eq!(r.delay(10, 1.0), Duration::from_secs(10));
        assert_eq!(r.delay(10, 0.0), Duration::from_millis(7500));
    }

    proptest! {
        #[test]
        fn every_delay_stays_inside_its_policy_bounds(k in 0u32..2000, draw in 0.0f64..1.0, which in 0usize..3) {
            let p = [BackoffPolicy::http(), BackoffPolicy::holder(), BackoffPolicy::sampling()][which];
            let nominal = p.nominal(k).as_secs_f64();
            let d = p.delay(k, draw).as_secs_f64();
            prop_assert!(nominal <= p.max.as_secs_f64() + 1e-9);
            let (lo, hi) = match p.jitter {
                Jitter::None => (nominal, nominal),
                Jitter::Shrink(f) => (nominal * (1.0 - f), nominal),
                Jitter::Symmetric(f) => (nominal * (1.0 - f), (nominal * (1.0 + f)).min(p.max.as_secs_f64())),
            };
            prop_assert!(d >= lo - 1e-9 && d <= hi + 1e-9, "k={k} draw={draw} d={d} not in [{lo}, {hi}]");
            prop_assert!(d <= p.max.as_secs_f64() + 1e-9);
        }
    }
}
