//! The shared ledger: all state that crosses calls, sans-IO and synchronous.
//!
//! One [`Ledger`] per client session holds what several logical calls share: the seeded PRNG,
//! the session counters, the training runs' turn tables, the sampling clients' seq ids, the byte
//! budgets, the retry budget, the proxy-rejection credits, the billing pause, the queue-state
//! trackers and the server's client config. Call machines take `&mut Ledger` explicitly; there
//! are no hidden locks. Drivers share it as a [`SharedLedger`] (`Arc<Mutex<Ledger>>`) and lock it
//! only inside synchronous scopes.
//!
//! Every change that could unblock a waiting call bumps [`Ledger::generation`]. A blocked call
//! reports the generation it saw; a driver waits until the generation moves
//! ([`SharedLedger::changed`] or [`SharedLedger::wait_changed_blocking`]), so a wake-up that lands
//! between unlocking and waiting is never lost.
//!
//! ```
//! use tinker_core::endpoints::RequestContext;
//! use tinker_core::ledger::{ChunkOrder, Ledger};
//! use tinker_core::settings::ApiKey;
//!
//! let ctx = RequestContext::new("http://127.0.0.1:8000", ApiKey::new("tml-test-key-0001").unwrap()).unwrap();
//! let mut ledger = Ledger::new(ctx, 7);
//! let fb = ledger.reserve_turn("sess:train:0", 3, ChunkOrder::FirstChunkLast);
//! let step = ledger.reserve_turn("sess:train:0", 1, ChunkOrder::Sequential);
//! // Seq ids are taken when a turn starts sending, in turn order.
//! assert_eq!(ledger.start_chunk(&fb.slot(1)), Some(2));
//! assert_eq!(ledger.start_chunk(&step.slot(0)), None, "waits for the forward_backward");
//! ```

mod shared;
mod turns;

pub use shared::{Changed, LedgerGuard, SharedLedger};
pub use turns::{ChunkOrder, Reservation, StartedTurn, TurnSlot, TurnTable};

use std::collections::BTreeMap;
use std::task::Waker;
use std::time::{Duration, Instant, SystemTime};

use crate::auth::JwtState;
use crate::call::Call;
use crate::endpoints::RequestContext;
use crate::flow::{
    Acquire, ByteBudget, BytePermit, CompletionPoller, SamplingDispatch, SamplingDispatchConfig,
};
use crate::retry::sampling_layer::{ProgressWatch, SamplingRetryConfig};
use crate::retry::{
    BillingPause, ClientKind, ProxyRejectionCredits, QueueStateTracker, RetryBudget,
    RetryBudgetConfig,
};
use crate::rng::Rng;
use crate::settings::ApiKey;
use crate::types::{ClientConfig, DynamicConfig};

/// Sampling-client seq ids of clones start at `clone_id × 10⁹` (protocol.md 3.3).
pub const CLONE_SEQ_BLOCK: u64 = 1_000_000_000;

/// A sampling client registered in the ledger (its seq-id counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SamplerHandle(usize);

/// Cross-call state of one client session. See the module documentation.
#[derive(Debug)]
pub struct Ledger {
    context: RequestContext,
    rng: Rng,
    wall_clock: Option<(Instant, SystemTime)>,
    config: ClientConfig,
    dynamic: DynamicConfig,
    generation: u64,
    wakers: Vec<Waker>,
    next_id: u64,
    model_seq_id: u64,
    sampling_session_seq_id: u64,
    custom_loss_seq_id: u64,
    turns: TurnTable,
    samplers: Vec<u64>,
    fwdbwd_budget: ByteBudget,
    inflight_budget: ByteBudget,
    sampling: SamplingDispatch,
    retry_budget: RetryBudget,
    proxy_credits: ProxyRejectionCredits,
    billing: BillingPause,
    queue_states: BTreeMap<String, QueueStateTracker>,
    sampling_retry: SamplingRetryConfig,
    progress: BTreeMap<String, ProgressWatch>,
    abandoned_futures: Vec<String>,
    detached: Vec<Call>,
    completion_pollers: BTreeMap<(String, u64), CompletionPoller>,
    background_waker: Option<Waker>,
    jwt: Option<(JwtState, ApiKey)>,
}

impl Ledger {
    /// A ledger for requests built with `context`, drawing every random value from `seed`, with
    /// the default client config until [`Ledger::set_client_config`] installs the server's.
    pub fn new(context: RequestContext, seed: u64) -> Ledger {
        let config = ClientConfig::default();
        Ledger {
            context,
            rng: Rng::from_seed(seed),
            wall_clock: None,
            fwdbwd_budget: ByteBudget::new(config.fwdbwd_dispatch_bytes_semaphore_size),
            inflight_budget: ByteBudget::new(config.inflight_response_bytes_semaphore_size),
            sampling: SamplingDispatch::new(sampling_config(&config)),
            billing: BillingPause::new(Duration::from_secs(
                config.billing_exception_max_pause_duration_sec,
            )),
            config,
            dynamic: DynamicConfig::default(),
            generation: 0,
            wakers: Vec::new(),
            next_id: 0,
            model_seq_id: 0,
            sampling_session_seq_id: 0,
            custom_loss_seq_id: 0,
            turns: TurnTable::default(),
            samplers: Vec::new(),
            retry_budget: RetryBudget::default(),
            proxy_credits: ProxyRejectionCredits::default(),
            queue_states: BTreeMap::new(),
            sampling_retry: SamplingRetryConfig::default(),
            progress: BTreeMap::new(),
            abandoned_futures: Vec::new(),
            detached: Vec::new(),
            completion_pollers: BTreeMap::new(),
            background_waker: None,
            jwt: None,
        }
    }

    // ------------------------------------------------------------------ context and clock

    /// What every request shares (base URL, credential, headers).
    pub fn context(&self) -> &RequestContext {
        &self.context
    }

    /// Mutable access to the request context (e.g. to install a JWT credential).
    pub fn context_mut(&mut self) -> &mut RequestContext {
        &mut self.context
    }

    /// Tells the ledger which wall-clock time `instant` corresponds to, so HTTP-date
    /// `Retry-After` headers can be read. Without it such dates are ignored (normal back-off).
    pub fn set_wall_clock(&mut self, instant: Instant, wall: SystemTime) {
        self.wall_clock = Some((instant, wall));
    }

    /// The wall-clock time at `now` (the Unix epoch when no anchor was given).
    pub fn wall_time(&self, now: Instant) -> SystemTime {
        match self.wall_clock {
            Some((at, wall)) if now >= at => wall + (now - at),
            Some((at, wall)) => wall - (at - now),
            None => SystemTime::UNIX_EPOCH,
        }
    }

    /// The seeded PRNG (jitter, idempotency keys).
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// A fresh id, unique within this ledger (calls and attempts).
    pub fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    // ------------------------------------------------------------------ config

    /// The server's client config in force.
    pub fn client_config(&self) -> &ClientConfig {
        &self.config
    }

    /// Installs the server's client config: chunk limits, budget sizes, flags, billing window.
    /// A budget is resized only while nothing holds it (an in-use budget keeps its size).
    pub fn set_client_config(&mut self, config: ClientConfig) {
        if self.fwdbwd_budget.outstanding() == 0 {
            self.fwdbwd_budget = ByteBudget::new(config.fwdbwd_dispatch_bytes_semaphore_size);
        }
        if self.inflight_budget.outstanding() == 0 {
            self.inflight_budget = ByteBudget::new(config.inflight_response_bytes_semaphore_size);
        }
        if self.sampling.in_flight() == 0 && self.sampling.backoff_until().is_none() {
            self.sampling = SamplingDispatch::new(sampling_config(&config));
        }
        self.billing.set_window(Duration::from_secs(
            config.billing_exception_max_pause_duration_sec,
        ));
        self.sampling_retry.enable_stuck_detection = config.sample_enable_stuck_detection;
        self.config = config;
        self.bump();
    }

    /// The refreshable config in force.
    pub fn dynamic_config(&self) -> &DynamicConfig {
        &self.dynamic
    }

    /// Installs a refreshed dynamic config.
    pub fn set_dynamic_config(&mut self, dynamic: DynamicConfig) {
        self.dynamic = dynamic;
    }

    /// Layer R settings used by new samples.
    pub fn sampling_retry_config(&self) -> SamplingRetryConfig {
        self.sampling_retry
    }

    /// Overrides layer R settings (the user's `RetryConfig`).
    pub fn set_sampling_retry_config(&mut self, config: SamplingRetryConfig) {
        self.sampling_retry = config;
    }

    // ------------------------------------------------------------------ generation and wakers

    /// The change counter: bumped by every change that could unblock a waiting call.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Records a change that could unblock waiters.
    pub fn bump(&mut self) {
        self.generation = self.generation.wrapping_add(1);
    }

    /// Registers `waker` to be woken at the next change, unless the generation already moved
    /// past `seen` (then returns `true` and registers nothing).
    pub fn register_waker(&mut self, seen: u64, waker: &Waker) -> bool {
        if self.generation != seen {
            return true;
        }
        if !self.wakers.iter().any(|w| w.will_wake(waker)) {
            self.wakers.push(waker.clone());
        }
        false
    }

    /// Takes the registered wakers (the shared wrapper wakes them after unlocking).
    pub fn take_wakers(&mut self) -> Vec<Waker> {
        std::mem::take(&mut self.wakers)
    }

    // ------------------------------------------------------------------ session counters

    /// The next `model_seq_id` (create_lora_training_client, create_training_client_from_state).
    pub fn next_model_seq_id(&mut self) -> u64 {
        let v = self.model_seq_id;
        self.model_seq_id += 1;
        v
    }

    /// The next `sampling_session_seq_id`, shared by create_sampling_session and unnamed
    /// save_weights_for_sampler (protocol.md 3.3).
    pub fn next_sampling_session_seq_id(&mut self) -> u64 {
        let v = self.sampling_session_seq_id;
        self.sampling_session_seq_id += 1;
        v
    }

    /// The next `custom_loss_seq_id`.
    pub fn next_custom_loss_seq_id(&mut self) -> u64 {
        let v = self.custom_loss_seq_id;
        self.custom_loss_seq_id += 1;
        v
    }

    // ------------------------------------------------------------------ training turns

    /// Reserves the training run's next turn of `count` chunks (call time, before I/O). Its seq
    /// ids are taken when it starts sending ([`Ledger::start_chunk`]).
    pub fn reserve_turn(&mut self, model_id: &str, count: usize, order: ChunkOrder) -> Reservation {
        self.turns.reserve(model_id, count, order)
    }

    /// `forward_backward_custom` with a client-side loss (0.38): two consecutive turns of
    /// `chunks` each (forward chunks, then backward chunks with the same boundaries), so `2k`
    /// consecutive ids once both have started.
    pub fn reserve_custom_loss(
        &mut self,
        model_id: &str,
        chunks: usize,
        order: ChunkOrder,
    ) -> (Reservation, Reservation) {
        let forward = self.turns.reserve(model_id, chunks, order);
        let backward = self.turns.reserve(model_id, chunks, order);
        (forward, backward)
    }

    /// Gives back a reservation that will never be submitted: its turn is finished. Only for a
    /// turn that has not started (see [`Ledger::turn_started`]); a started one must be sent.
    pub fn release_reservation(&mut self, reservation: &Reservation) {
        if self.turns.release(reservation) {
            self.bump();
        }
    }

    /// The chunk in `slot` passed its gates and is about to POST: starts its turn if needed and
    /// returns its seq id (`None` if it may not submit, or its turn is gone).
    pub fn start_chunk(&mut self, slot: &TurnSlot) -> Option<u64> {
        self.turns.start_chunk(slot)
    }

    /// Whether the turn of `reservation` has started (took its seq ids) and is still open.
    pub fn turn_started(&self, model_id: &str, turn: u64) -> bool {
        self.turns.started_at(model_id, turn).is_some()
    }

    /// Whether the chunk in `slot` may POST now.
    pub fn may_submit(&self, slot: &TurnSlot) -> bool {
        self.turns.may_submit(slot)
    }

    /// A chunk's POST returned (a future, or a final failure), or its call was cancelled.
    pub fn finish_chunk(&mut self, slot: &TurnSlot) {
        if self.turns.finish_chunk(slot) {
            self.bump();
        }
    }

    /// Keeps a record of every turn that starts ([`TurnTable::history`]), for checks.
    pub fn keep_turn_history(&mut self) {
        self.turns.keep_history();
    }

    /// The turn tables (read-only, for tests and diagnostics).
    pub fn turns(&self) -> &TurnTable {
        &self.turns
    }

    // ------------------------------------------------------------------ sampling clients

    /// Registers a sampling client whose seq ids start at `first_seq_id` (0 for an original
    /// client, `clone_id × 10⁹` for a clone; see [`CLONE_SEQ_BLOCK`]).
    pub fn register_sampler(&mut self, first_seq_id: u64) -> SamplerHandle {
        self.samplers.push(first_seq_id);
        SamplerHandle(self.samplers.len() - 1)
    }

    /// The next seq id of a sampling client (each attempt-level sample takes one).
    pub fn next_sample_seq_id(&mut self, sampler: SamplerHandle) -> u64 {
        match self.samplers.get_mut(sampler.0) {
            Some(next) => {
                let v = *next;
                *next += 1;
                v
            }
            None => 0,
        }
    }

    // ------------------------------------------------------------------ budgets

    /// Takes `bytes` from the forward/backward dispatch budget (8.9), or `None` to wait.
    pub fn acquire_fwdbwd_bytes(&mut self, bytes: u64) -> Option<BytePermit> {
        match self.fwdbwd_budget.try_acquire(bytes) {
            Acquire::Admitted(p) => Some(p),
            Acquire::MustWait => None,
        }
    }

    /// Gives forward/backward dispatch bytes back.
    pub fn release_fwdbwd_bytes(&mut self, permit: BytePermit) {
        self.fwdbwd_budget.release(permit);
        self.bump();
    }

    /// Takes `bytes` from the inflight response budget (7.4), or `None` to wait.
    pub fn acquire_inflight_bytes(&mut self, bytes: u64) -> Option<BytePermit> {
        match self.inflight_budget.try_acquire(bytes) {
            Acquire::Admitted(p) => Some(p),
            Acquire::MustWait => None,
        }
    }

    /// Gives inflight response bytes back.
    pub fn release_inflight_bytes(&mut self, permit: BytePermit) {
        self.inflight_budget.release(permit);
        self.bump();
    }

    /// The forward/backward dispatch budget (read-only).
    pub fn fwdbwd_budget(&self) -> &ByteBudget {
        &self.fwdbwd_budget
    }

    /// The inflight response budget (read-only).
    pub fn inflight_budget(&self) -> &ByteBudget {
        &self.inflight_budget
    }

    /// The sampling dispatch gates (8.5).
    pub fn sampling_dispatch(&mut self) -> &mut SamplingDispatch {
        &mut self.sampling
    }

    /// The sampling dispatch gates (read-only).
    pub fn sampling_dispatch_state(&self) -> &SamplingDispatch {
        &self.sampling
    }

    /// The retry token bucket.
    pub fn retry_budget(&mut self) -> &mut RetryBudget {
        &mut self.retry_budget
    }

    /// Replaces the retry token bucket's settings (a full bucket).
    pub fn set_retry_budget(&mut self, config: RetryBudgetConfig) {
        self.retry_budget = RetryBudget::new(config);
    }

    /// The Cloudflare empty-400 credits (8.7).
    pub fn proxy_credits(&mut self) -> &mut ProxyRejectionCredits {
        &mut self.proxy_credits
    }

    /// The holder-wide billing pause (8.8).
    pub fn billing(&mut self) -> &mut BillingPause {
        &mut self.billing
    }

    // ------------------------------------------------------------------ observation

    /// The queue-state tracker of a client (one per model id or sampling session).
    pub fn queue_state(&mut self, kind: ClientKind, identifier: &str) -> &mut QueueStateTracker {
        self.queue_states
            .entry(identifier.to_owned())
            .or_insert_with(|| QueueStateTracker::new(kind, identifier))
    }

    /// The stuck-detection watch of a sampling session.
    pub fn progress_watch(&mut self, session: &str, now: Instant) -> &mut ProgressWatch {
        let config = self.sampling_retry;
        self.progress
            .entry(session.to_owned())
            .or_insert_with(|| ProgressWatch::new(&config, now))
    }

    /// Records a sample future abandoned by its caller: with dynamic config
    /// `sample_cancel_enabled`, the housekeeping driver sends `cancel_future` for it (7.8).
    pub fn record_abandoned_future(&mut self, request_id: String) {
        if self.dynamic.sample_cancel_enabled {
            self.abandoned_futures.push(request_id);
            self.bump();
            // Woken by the shared wrapper after unlocking, like every other waiter.
            if let Some(w) = self.background_waker.take() {
                self.wakers.push(w);
            }
        }
    }

    /// Switches to JWT authentication (client config `pjwt_auth_enabled`): the current
    /// credential is the API key every exchange is sent with; requests use the JWT once one is
    /// installed.
    pub fn enable_jwt(&mut self) {
        if self.jwt.is_none() {
            self.jwt = Some((JwtState::default(), self.context.credential().clone()));
        }
    }

    /// The JWT schedule, in JWT mode.
    pub fn jwt(&self) -> Option<&JwtState> {
        self.jwt.as_ref().map(|(state, _)| state)
    }

    /// The JWT schedule, in JWT mode.
    pub fn jwt_mut(&mut self) -> Option<&mut JwtState> {
        self.jwt.as_mut().map(|(state, _)| state)
    }

    /// The API key exchanges are sent with, in JWT mode.
    pub fn jwt_api_key(&self) -> Option<&ApiKey> {
        self.jwt.as_ref().map(|(_, key)| key)
    }

    /// Installs a token the exchange returned at `now`: requests use it from now on, and the
    /// background refresh is scheduled at 45-55 % of its lifetime.
    pub fn install_jwt(&mut self, jwt: String, now: Instant) -> crate::Result<()> {
        let wall = self.wall_time(now);
        let Some((state, _)) = self.jwt.as_mut() else {
            return Err(crate::Error::Config("JWT auth is not enabled".into()));
        };
        let credential = ApiKey::new(jwt.clone())?;
        state.on_exchange_ok(jwt, now, wall, &mut self.rng)?;
        self.context.set_credential(credential);
        self.bump();
        Ok(())
    }

    /// Whether abandoned sample futures wait for their `cancel_future`.
    pub fn has_abandoned_futures(&self) -> bool {
        !self.abandoned_futures.is_empty()
    }

    /// Registers the housekeeper's waker: woken once when a future is abandoned or a call is
    /// detached, so the background acts promptly rather than at its next timer.
    pub fn set_background_waker(&mut self, waker: &Waker) {
        self.background_waker = Some(waker.clone());
    }

    /// Takes up to `max` abandoned sample futures to cancel.
    pub fn take_abandoned_futures(&mut self, max: usize) -> Vec<String> {
        let n = max.min(self.abandoned_futures.len());
        self.abandoned_futures.drain(..n).collect()
    }

    /// Hands over a call whose training turn has started but which its caller gave up on (or
    /// which must be sent for a call that failed): the background drives it until its POST is
    /// over and discards the result, so the turn's seq ids all reach the server
    /// ([`crate::call::DetachedSubmission`]).
    pub fn detach_call(&mut self, call: Call) {
        self.detached.push(call);
        self.bump();
        if let Some(w) = self.background_waker.take() {
            self.wakers.push(w);
        }
    }

    /// Whether detached calls wait to be driven.
    pub fn has_detached_calls(&self) -> bool {
        !self.detached.is_empty()
    }

    /// Takes every detached call, to drive in the background.
    pub fn take_detached_calls(&mut self) -> Vec<Call> {
        std::mem::take(&mut self.detached)
    }

    /// The `retrieve_futures` completion poller of a sampling session's clone (7.7), created on
    /// first use.
    pub fn completion_poller(
        &mut self,
        sampling_session_id: &str,
        cloned_sampler_id: u64,
    ) -> &mut CompletionPoller {
        self.completion_pollers
            .entry((sampling_session_id.to_owned(), cloned_sampler_id))
            .or_insert_with(|| CompletionPoller::new(sampling_session_id, cloned_sampler_id))
    }

    /// Every completion poller, keyed by (sampling session, clone id): the housekeeper sends
    /// their leftover acknowledgements.
    pub fn completion_pollers_mut(
        &mut self,
    ) -> impl Iterator<Item = (&(String, u64), &mut CompletionPoller)> {
        self.completion_pollers.iter_mut()
    }

    /// Whether every budget and gate is back to capacity and no turn is open: what a quiet
    /// session must look like (the simulator checks it after every run).
    pub fn is_quiescent(&self) -> bool {
        self.fwdbwd_budget.outstanding() == 0
            && self.inflight_budget.outstanding() == 0
            && self.fwdbwd_budget.balance() == self.fwdbwd_budget.capacity() as i64
            && self.inflight_budget.balance() == self.inflight_budget.capacity() as i64
            && self.sampling.in_flight() == 0
            && self.sampling.bytes_balance() == self.sampling.config().bytes as i64
            && self.turns.open_turns() == 0
            && self.detached.is_empty()
            && self
                .completion_pollers
                .values()
                .all(CompletionPoller::is_idle)
    }
}

fn sampling_config(config: &ClientConfig) -> SamplingDispatchConfig {
    SamplingDispatchConfig {
        bytes: config.sample_dispatch_bytes_semaphore_size,
        ..SamplingDispatchConfig::default()
    }
}
