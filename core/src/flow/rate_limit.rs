//! The tenant-wide rate-limit back-off window (Tinkex F74).

use std::time::{Duration, Instant};

/// "Back off until T" for one tenant (base URL + API key), shared by every client of it.
///
/// Setting a window overwrites the previous one, so it may also shorten it, as in Tinkex.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tinker_core::flow::RateLimitWindow;
///
/// # #[allow(clippy::disallowed_methods)]
/// let t0 = Instant::now();
/// let mut window = RateLimitWindow::default();
/// window.set_backoff(t0, Duration::from_secs(2));
/// assert!(window.should_back_off(t0 + Duration::from_secs(1)));
/// assert_eq!(window.wait_time(t0 + Duration::from_secs(1)), Some(Duration::from_secs(1)));
/// assert!(!window.should_back_off(t0 + Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateLimitWindow {
    until: Option<Instant>,
}

impl RateLimitWindow {
    /// Whether requests should hold back at `now`.
    pub fn should_back_off(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }

    /// Starts (or replaces) a window of `duration` from `now`.
    pub fn set_backoff(&mut self, now: Instant, duration: Duration) {
        self.until = Some(now + duration);
    }

    /// Ends the window.
    pub fn clear(&mut self) {
        self.until = None;
    }

    /// How long to wait at `now` before sending (None when not backing off).
    pub fn wait_time(&self, now: Instant) -> Option<Duration> {
        self.until
            .filter(|u| now < *u)
            .map(|u| u.duration_since(now))
    }

    /// The end of the window, if one was set.
    pub fn until(&self) -> Option<Instant> {
        self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_window_replaces_the_old_one_even_if_shorter() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut w = RateLimitWindow::default();
        assert!(!w.should_back_off(t0));
        w.set_backoff(t0, Duration::from_secs(10));
        w.set_backoff(t0, Duration::from_secs(1));
        assert!(!w.should_back_off(t0 + Duration::from_secs(2)));
        assert_eq!(w.wait_time(t0 + Duration::from_secs(2)), None);
        w.set_backoff(t0, Duration::from_secs(5));
        w.clear();
        assert!(!w.should_back_off(t0));
        assert_eq!(w.until(), None);
    }
}
