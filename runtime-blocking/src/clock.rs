//! [`BlockingClock`] on the operating system's clock.

use std::time::Instant;

use tinker_core::io::BlockingClock;

/// The real clock: `Instant::now` and `thread::sleep`.
///
/// ```
/// use std::time::Duration;
/// use tinker_blocking::SystemClock;
/// use tinker_core::io::BlockingClock;
///
/// let deadline = SystemClock.now() + Duration::from_millis(5);
/// SystemClock.sleep_until(deadline);
/// assert!(SystemClock.now() >= deadline);
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl BlockingClock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep_until(&self, deadline: Instant) {
        // `sleep` may wake early on some platforms; loop until the deadline has really passed.
        loop {
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            std::thread::sleep(deadline - now);
        }
    }
}
