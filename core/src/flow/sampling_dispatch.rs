//! The three gates every `asample` POST passes (protocol.md 8.5).

use std::time::{Duration, Instant};

use super::{Acquire, ByteBudget, BytePermit, CountGate, GatePermit};

/// Sizes and timings of the sampling dispatch gates (holder-wide: one per process + session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplingDispatchConfig {
    /// Concurrent dispatches (400).
    pub count_limit: usize,
    /// Concurrent dispatches while back-off was requested recently (10).
    pub throttled_limit: usize,
    /// The byte budget (client config `sample_dispatch_bytes_semaphore_size`, 10 MiB).
    pub bytes: u64,
    /// Estimate multiplier while back-off is recent (20).
    pub throttled_bytes_factor: u64,
    /// "Recent" lasts until this long after the back-off deadline (10 s).
    pub recent_window: Duration,
    /// Back-off after a rejected small prompt (1 s).
    pub small_backoff: Duration,
    /// Back-off after a rejected prompt above `small_prompt_bytes` (5 s).
    pub large_backoff: Duration,
    /// The largest estimate that counts as small (128 KiB).
    pub small_prompt_bytes: u64,
    /// Sleep step while waiting for the back-off deadline (1 s).
    pub resend_poll: Duration,
}

impl Default for SamplingDispatchConfig {
    fn default() -> SamplingDispatchConfig {
        SamplingDispatchConfig {
            count_limit: 400,
            throttled_limit: 10,
            bytes: 10 << 20,
            throttled_bytes_factor: 20,
            recent_window: Duration::from_secs(10),
            small_backoff: Duration::from_secs(1),
            large_backoff: Duration::from_secs(5),
            small_prompt_bytes: 128 << 10,
            resend_poll: Duration::from_secs(1),
        }
    }
}

/// A gate an entry is waiting at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DispatchStage {
    /// The 400-slot count gate.
    Count,
    /// The 10-slot throttled gate (only while back-off is recent).
    Throttled,
    /// The byte budget.
    Bytes,
}

/// The answer to [`SamplingDispatch::advance`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchProgress {
    /// Every gate is held: POST `asample` now.
    Admitted,
    /// Blocked at this gate; call `advance` again after the next ledger change.
    Waiting(DispatchStage),
}

/// One sample's passage through the gates. Gates are entered in order (count → throttled →
/// bytes) and held as entered, as the SDK's nested `async with` blocks do. Give it back with
/// [`SamplingDispatch::release`] once the future is obtained, or on cancellation at any point.
#[derive(Debug)]
#[must_use = "a dispatch entry must be released, or its gates leak"]
pub struct DispatchEntry {
    estimate: u64,
    throttled: bool,
    count_permit: Option<GatePermit>,
    throttled_permit: Option<GatePermit>,
    bytes_permit: Option<BytePermit>,
}

impl DispatchEntry {
    /// Whether this entry goes through the throttled gate (back-off was recent when it began).
    pub fn is_throttled(&self) -> bool {
        self.throttled
    }

    /// The bytes it takes from the budget (the estimate, ×20 when throttled).
    pub fn effective_bytes(&self, config: &SamplingDispatchConfig) -> u64 {
        if self.throttled {
            self.estimate.saturating_mul(config.throttled_bytes_factor)
        } else {
            self.estimate
        }
    }
}

/// The holder-wide sampling dispatch state: three gates and the back-off deadline.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tinker_core::flow::{DispatchProgress, SamplingDispatch, SamplingDispatchConfig};
///
/// # #[allow(clippy::disallowed_methods)]
/// let t0 = Instant::now();
/// let mut gates = SamplingDispatch::new(SamplingDispatchConfig::default());
/// let mut entry = gates.begin(1_000, t0);
/// assert_eq!(gates.advance(&mut entry), DispatchProgress::Admitted);
/// // The server answered 429: back off 1 s (small prompt), then re-POST.
/// gates.on_rejected(1_000, t0);
/// assert_eq!(gates.resend_wait(t0), Some(Duration::from_secs(1)));
/// assert_eq!(gates.resend_wait(t0 + Duration::from_secs(1)), None);
/// gates.release(entry);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplingDispatch {
    config: SamplingDispatchConfig,
    count: CountGate,
    throttled: CountGate,
    bytes: ByteBudget,
    backoff_until: Option<Instant>,
}

impl SamplingDispatch {
    /// Fresh gates.
    pub fn new(config: SamplingDispatchConfig) -> SamplingDispatch {
        SamplingDispatch {
            count: CountGate::new(config.count_limit),
            throttled: CountGate::new(config.throttled_limit),
            bytes: ByteBudget::new(config.bytes),
            backoff_until: None,
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SamplingDispatchConfig {
        &self.config
    }

    /// Whether back-off was requested recently: from the rejection until `recent_window` after
    /// the back-off deadline (`now − backoff_until < 10 s`).
    pub fn is_backoff_recent(&self, now: Instant) -> bool {
        self.backoff_until
            .is_some_and(|until| now.saturating_duration_since(until) < self.config.recent_window)
    }

    /// Starts a passage for a prompt of `estimate` bytes. Whether it is throttled is decided
    /// now, once, for all three gates.
    pub fn begin(&self, estimate: u64, now: Instant) -> DispatchEntry {
        DispatchEntry {
            estimate,
            throttled: self.is_backoff_recent(now),
            count_permit: None,
            throttled_permit: None,
            bytes_permit: None,
        }
    }

    /// Enters as many gates as possible, in order.
    pub fn advance(&mut self, entry: &mut DispatchEntry) -> DispatchProgress {
        if entry.count_permit.is_none() {
            match self.count.try_enter() {
                Some(p) => entry.count_permit = Some(p),
                None => return DispatchProgress::Waiting(DispatchStage::Count),
            }
        }
        if entry.throttled && entry.throttled_permit.is_none() {
            match self.throttled.try_enter() {
                Some(p) => entry.throttled_permit = Some(p),
                None => return DispatchProgress::Waiting(DispatchStage::Throttled),
            }
        }
        if entry.bytes_permit.is_none() {
            match self.bytes.try_acquire(entry.effective_bytes(&self.config)) {
                Acquire::Admitted(p) => entry.bytes_permit = Some(p),
                Acquire::MustWait => return DispatchProgress::Waiting(DispatchStage::Bytes),
            }
        }
        DispatchProgress::Admitted
    }

    /// Leaves every gate the entry holds, in reverse order (also the cancellation path).
    pub fn release(&mut self, entry: DispatchEntry) {
        let DispatchEntry {
            bytes_permit,
            throttled_permit,
            count_permit,
            ..
        } = entry;
        if let Some(p) = bytes_permit {
            self.bytes.release(p);
        }
        if let Some(p) = throttled_permit {
            self.throttled.exit(p);
        }
        if let Some(p) = count_permit {
            self.count.exit(p);
        }
    }

    /// The server rejected an `asample` (429, or 402 inside the billing window): back off for
    /// 1 s (estimate ≤ 128 KiB) or 5 s from `now`, holder-wide.
    pub fn on_rejected(&mut self, estimate: u64, now: Instant) {
        let wait = if estimate <= self.config.small_prompt_bytes {
            self.config.small_backoff
        } else {
            self.config.large_backoff
        };
        self.backoff_until = Some(now + wait);
    }

    /// Before re-POSTing a rejected sample: `Some(1 s)` while `now < backoff_until` (sleep, then
    /// ask again), `None` when it may be sent (with the same `seq_id` and a new idempotency key).
    pub fn resend_wait(&self, now: Instant) -> Option<Duration> {
        self.backoff_until
            .filter(|until| now < *until)
            .map(|_| self.config.resend_poll)
    }

    /// The current back-off deadline.
    pub fn backoff_until(&self) -> Option<Instant> {
        self.backoff_until
    }

    /// Dispatches holding the count gate.
    pub fn in_flight(&self) -> usize {
        self.count.held()
    }

    /// The byte budget's balance.
    pub fn bytes_balance(&self) -> i64 {
        self.bytes.balance()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small(count: usize, throttled: usize, bytes: u64) -> SamplingDispatch {
        SamplingDispatch::new(SamplingDispatchConfig {
            count_limit: count,
            throttled_limit: throttled,
            bytes,
            ..Default::default()
        })
    }

    #[test]
    fn without_back_off_only_the_count_and_byte_gates_apply() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut g = small(2, 1, 1000);
        let mut a = g.begin(100, t0);
        let mut b = g.begin(100, t0);
        let mut c = g.begin(100, t0);
        assert_eq!(g.advance(&mut a), DispatchProgress::Admitted);
        assert_eq!(
            g.advance(&mut b),
            DispatchProgress::Admitted,
            "the throttled gate is not used"
        );
        assert_eq!(
            g.advance(&mut c),
            DispatchProgress::Waiting(DispatchStage::Count)
        );
        assert_eq!(g.bytes_balance(), 800);
        g.release(a);
        assert_eq!(g.advance(&mut c), DispatchProgress::Admitted);
        g.release(b);
        g.release(c);
        assert_eq!((g.in_flight(), g.bytes_balance()), (0, 1000));
    }

    #[test]
    fn a_recent_back_off_throttles_to_ten_and_multiplies_bytes_by_twenty() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut g = small(400, 1, 1000);
        g.on_rejected(100, t0);
        assert_eq!(g.backoff_until(), Some(t0 + Duration::from_secs(1)));
        // Recent from the rejection until 10 s after the deadline.
        assert!(g.is_backoff_recent(t0));
        assert!(g.is_backoff_recent(t0 + Duration::from_millis(10_999)));
        assert!(!g.is_backoff_recent(t0 + Duration::from_secs(11)));

        let mut a = g.begin(100, t0 + Duration::from_secs(2));
        assert!(a.is_throttled());
        assert_eq!(g.advance(&mut a), DispatchProgress::Admitted);
        assert_eq!(g.bytes_balance(), 1000 - 2000, "100 bytes count as 2000");
        let mut b = g.begin(1, t0 + Duration::from_secs(2));
        assert_eq!(
            g.advance(&mut b),
            DispatchProgress::Waiting(DispatchStage::Throttled)
        );
        assert_eq!(
            g.in_flight(),
            2,
            "b holds its count slot while waiting, as in the SDK"
        );
        g.release(a);
        assert_eq!(g.advance(&mut b), DispatchProgress::Admitted);
        g.release(b);
        // Long after the back-off, new entries are not throttled.
        let c = g.begin(100, t0 + Duration::from_secs(60));
        assert!(!c.is_throttled());
        g.release(c);
        assert_eq!((g.in_flight(), g.bytes_balance()), (0, 1000));
    }

    #[test]
    fn a_waiting_entry_cancelled_midway_gives_back_what_it_held() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut g = small(10, 10, 100);
        let mut hog = g.begin(500, t0);
        assert_eq!(g.advance(&mut hog), DispatchProgress::Admitted);
        let mut waiter = g.begin(1, t0);
        assert_eq!(
            g.advance(&mut waiter),
            DispatchProgress::Waiting(DispatchStage::Bytes)
        );
        g.release(waiter);
        assert_eq!(g.in_flight(), 1);
        g.release(hog);
        assert_eq!((g.in_flight(), g.bytes_balance()), (0, 100));
    }

    #[test]
    fn large_prompts_back_off_five_seconds_and_resends_poll_each_second() {
        #[allow(clippy::disallowed_methods)]
        let t0 = Instant::now();
        let mut g = SamplingDispatch::new(SamplingDispatchConfig::default());
        g.on_rejected(128 << 10, t0);
        assert_eq!(g.backoff_until(), Some(t0 + Duration::from_secs(1)));
        g.on_rejected((128 << 10) + 1, t0);
        assert_eq!(g.backoff_until(), Some(t0 + Duration::from_secs(5)));
        let waits: Vec<Option<Duration>> = (0..6)
            .map(|s| g.resend_wait(t0 + Duration::from_secs(s)))
            .collect();
        let one = Some(Duration::from_secs(1));
        assert_eq!(waits, [one, one, one, one, one, None]);
    }
}
