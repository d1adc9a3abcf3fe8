//! The monitor and executor of recovery (Tinkex F127, F128) as one sans-IO machine.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use super::policy::{CheckpointStrategy, RecoveryPolicy};
use crate::error::{Error, Result};
use crate::types::TrainingRun;

/// A stage of a run's recovery, reported to the user as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoveryEvent {
    /// A poll found the run `corrupted: true`; its recovery is queued.
    Detected {
        /// The corrupted run.
        run_id: String,
        /// Its latest checkpoint at that moment, if any.
        checkpoint: Option<String>,
    },
    /// Fetching a watched run failed; it stays watched.
    PollFailed {
        /// The run.
        run_id: String,
        /// What went wrong.
        error: String,
    },
    /// An attempt starts (the first is attempt 1).
    Started {
        /// The corrupted run.
        run_id: String,
        /// This attempt's number.
        attempt: u32,
    },
    /// The checkpoint this attempt restores is chosen.
    CheckpointSelected {
        /// The corrupted run.
        run_id: String,
        /// This attempt's number.
        attempt: u32,
        /// The `tinker://` path.
        checkpoint: String,
    },
    /// A new training run was created from the checkpoint.
    ClientCreated {
        /// The corrupted run.
        run_id: String,
        /// This attempt's number.
        attempt: u32,
        /// The new run's id.
        new_run_id: String,
    },
    /// The run is recovered; it is no longer watched (watch the new run to keep guarding it).
    Completed {
        /// The corrupted run.
        run_id: String,
        /// The attempt that succeeded.
        attempt: u32,
        /// The new run's id.
        new_run_id: String,
        /// The checkpoint it was created from.
        checkpoint: String,
    },
    /// An attempt failed.
    Failed {
        /// The corrupted run.
        run_id: String,
        /// This attempt's number.
        attempt: u32,
        /// What went wrong.
        error: String,
        /// When the next attempt starts, if one is left.
        retry_in: Option<Duration>,
    },
    /// Every attempt failed; the run is given up and no longer watched.
    Exhausted {
        /// The corrupted run.
        run_id: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        error: String,
    },
}

impl RecoveryEvent {
    /// The corrupted (or watched) run the event is about.
    pub fn run_id(&self) -> &str {
        match self {
            RecoveryEvent::Detected { run_id, .. }
            | RecoveryEvent::PollFailed { run_id, .. }
            | RecoveryEvent::Started { run_id, .. }
            | RecoveryEvent::CheckpointSelected { run_id, .. }
            | RecoveryEvent::ClientCreated { run_id, .. }
            | RecoveryEvent::Completed { run_id, .. }
            | RecoveryEvent::Failed { run_id, .. }
            | RecoveryEvent::Exhausted { run_id, .. } => run_id,
        }
    }

    /// The stage's name (`detected`, `poll_failed`, `started`, `checkpoint_selected`,
    /// `client_created`, `completed`, `failed`, `exhausted`), as logs and telemetry name it.
    pub fn stage(&self) -> &'static str {
        match self {
            RecoveryEvent::Detected { .. } => "detected",
            RecoveryEvent::PollFailed { .. } => "poll_failed",
            RecoveryEvent::Started { .. } => "started",
            RecoveryEvent::CheckpointSelected { .. } => "checkpoint_selected",
            RecoveryEvent::ClientCreated { .. } => "client_created",
            RecoveryEvent::Completed { .. } => "completed",
            RecoveryEvent::Failed { .. } => "failed",
            RecoveryEvent::Exhausted { .. } => "exhausted",
        }
    }
}

/// What the machine wants next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum RecoveryOutput {
    /// Tell the user; then poll again.
    Event(RecoveryEvent),
    /// Fetch this training run (`GET training_runs/{id}`) and feed the answer to
    /// [`RecoveryMachine::on_run`].
    FetchRun {
        /// The run to fetch.
        run_id: String,
    },
    /// Create a training client from `checkpoint` and feed the outcome to
    /// [`RecoveryMachine::on_restored`].
    Restore {
        /// The corrupted run.
        run_id: String,
        /// The attempt (pass it back).
        attempt: u32,
        /// The `tinker://` checkpoint path.
        checkpoint: String,
        /// With optimizer state (`create_training_client_from_state_with_optimizer`).
        with_optimizer: bool,
    },
    /// Nothing to do until `until` (a poll or a retry is due), an input arrives, or (with
    /// `None`) only an input.
    Wait {
        /// The next timer, if any.
        until: Option<Instant>,
    },
    /// [`RecoveryMachine::stop`] was called: drop outstanding work and end.
    Stopped,
}

/// Where one run is.
#[derive(Debug, Clone)]
enum RunState {
    /// Polled every interval; `polling` while a fetch is out.
    Watching { polling: bool },
    /// Waiting for a free slot. `attempts` made so far; `hint` is the latest checkpoint known.
    Queued { attempts: u32, hint: Option<String> },
    /// Attempt `attempt` fetches the run to learn its latest checkpoint.
    Selecting { attempt: u32 },
    /// Attempt `attempt` creates a client from `checkpoint`.
    Restoring { attempt: u32, checkpoint: String },
    /// Waiting out the back-off after `attempts` failures.
    Backoff {
        attempts: u32,
        until: Instant,
        hint: Option<String>,
    },
}

impl RunState {
    /// Whether the run holds one of the `max_concurrent` slots.
    fn running(&self) -> bool {
        matches!(
            self,
            RunState::Selecting { .. } | RunState::Restoring { .. }
        )
    }
}

/// Watches training runs for corruption and recreates corrupted ones from a checkpoint, with
/// bounded concurrency, back-off and a bounded number of attempts.
///
/// Sans-IO: feed it commands ([`watch`](Self::watch), [`recover`](Self::recover),
/// [`unwatch`](Self::unwatch), [`stop`](Self::stop)) and answers
/// ([`on_run`](Self::on_run), [`on_restored`](Self::on_restored)), then drain
/// [`poll_output`](Self::poll_output) until it says [`RecoveryOutput::Wait`]. Time comes in as
/// `now`.
///
/// ```
/// use std::time::{Duration, Instant};
/// use tinker_core::recovery::{RecoveryMachine, RecoveryOutput, RecoveryPolicy};
///
/// # #[allow(clippy::disallowed_methods)]
/// let t0 = Instant::now();
/// let policy = RecoveryPolicy::enabled().with_poll_interval(Duration::from_secs(1));
/// let mut m = RecoveryMachine::new(policy).unwrap();
/// m.watch("run-1", t0).unwrap();
/// assert_eq!(m.poll_output(t0), RecoveryOutput::Wait { until: Some(t0 + Duration::from_secs(1)) });
/// let t1 = t0 + Duration::from_secs(1);
/// assert_eq!(m.poll_output(t1), RecoveryOutput::FetchRun { run_id: "run-1".into() });
/// ```
#[derive(Debug)]
pub struct RecoveryMachine {
    policy: RecoveryPolicy,
    runs: BTreeMap<String, RunState>,
    /// Runs waiting for a slot, first come first served.
    queue: VecDeque<String>,
    next_poll: Option<Instant>,
    out: VecDeque<RecoveryOutput>,
    stopped: bool,
}

impl RecoveryMachine {
    /// A machine for `policy` (checked with [`RecoveryPolicy::validate`]).
    pub fn new(policy: RecoveryPolicy) -> Result<RecoveryMachine> {
        policy.validate()?;
        Ok(RecoveryMachine {
            policy,
            runs: BTreeMap::new(),
            queue: VecDeque::new(),
            next_poll: None,
            out: VecDeque::new(),
            stopped: false,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &RecoveryPolicy {
        &self.policy
    }

    fn check_enabled(&self) -> Result<()> {
        if !self.policy.enabled {
            return Err(Error::invalid(
                "policy.enabled",
                "recovery is disabled; use RecoveryPolicy::enabled()",
            ));
        }
        if self.stopped {
            return Err(Error::Closed("the recovery monitor was stopped".into()));
        }
        Ok(())
    }

    /// Starts polling `run_id` every `poll_interval` (the first poll one interval from `now`).
    /// Watching a run that is already watched or recovering changes nothing.
    pub fn watch(&mut self, run_id: &str, now: Instant) -> Result<()> {
        self.check_enabled()?;
        if run_id.trim().is_empty() {
            return Err(Error::invalid("run_id", "must not be empty"));
        }
        if !self.runs.contains_key(run_id) {
            self.runs
                .insert(run_id.to_owned(), RunState::Watching { polling: false });
            self.next_poll
                .get_or_insert(now + self.policy.poll_interval);
        }
        Ok(())
    }

    /// Recovers `run_id` now, without waiting for a poll to find it corrupted; `checkpoint` is
    /// its latest checkpoint if the caller knows it. Fails if its recovery is already pending.
    pub fn recover(&mut self, run_id: &str, checkpoint: Option<String>) -> Result<()> {
        self.check_enabled()?;
        match self.runs.get(run_id) {
            None | Some(RunState::Watching { .. }) => {
                self.enqueue(run_id, checkpoint);
                Ok(())
            }
            Some(_) => Err(Error::invalid(
                "run_id",
                format!("the recovery of {run_id} is already pending"),
            )),
        }
    }

    /// Stops watching `run_id` and abandons its recovery if one is pending (a late answer is
    /// ignored).
    pub fn unwatch(&mut self, run_id: &str) {
        self.runs.remove(run_id);
        self.queue.retain(|r| r != run_id);
    }

    /// Ends everything: the next output is [`RecoveryOutput::Stopped`].
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Runs watched or recovering.
    pub fn runs(&self) -> impl Iterator<Item = &str> {
        self.runs.keys().map(String::as_str)
    }

    fn enqueue(&mut self, run_id: &str, hint: Option<String>) {
        self.runs
            .insert(run_id.to_owned(), RunState::Queued { attempts: 0, hint });
        self.queue.push_back(run_id.to_owned());
    }

    fn emit(&mut self, event: RecoveryEvent) {
        self.out.push_back(RecoveryOutput::Event(event));
    }

    /// The answer to [`RecoveryOutput::FetchRun`] for `run_id`: the run, or why it could not be
    /// fetched.
    pub fn on_run(
        &mut self,
        run_id: &str,
        run: std::result::Result<&TrainingRun, String>,
        now: Instant,
    ) {
        match (self.runs.get(run_id).cloned(), run) {
            (Some(RunState::Watching { .. }), Ok(r)) if r.corrupted => {
                let checkpoint = r.last_checkpoint.as_ref().map(|c| c.tinker_path.clone());
                self.emit(RecoveryEvent::Detected {
                    run_id: run_id.to_owned(),
                    checkpoint: checkpoint.clone(),
                });
                self.enqueue(run_id, checkpoint);
            }
            (Some(RunState::Watching { .. }), Ok(_)) => {
                self.runs
                    .insert(run_id.to_owned(), RunState::Watching { polling: false });
            }
            (Some(RunState::Watching { .. }), Err(error)) => {
                self.runs
                    .insert(run_id.to_owned(), RunState::Watching { polling: false });
                self.emit(RecoveryEvent::PollFailed {
                    run_id: run_id.to_owned(),
                    error,
                });
            }
            (Some(RunState::Selecting { attempt }), Ok(r)) => {
                match r.last_checkpoint.as_ref().map(|c| c.tinker_path.clone()) {
                    Some(checkpoint) => self.restore(run_id, attempt, checkpoint),
                    None => self.attempt_failed(
                        run_id,
                        attempt,
                        None,
                        "the run has no checkpoint to recover from".into(),
                        now,
                    ),
                }
            }
            (Some(RunState::Selecting { attempt }), Err(error)) => self.attempt_failed(
                run_id,
                attempt,
                None,
                format!("could not read the run to select its checkpoint: {error}"),
                now,
            ),
            // Unwatched meanwhile, or an answer nobody asked for.
            _ => {}
        }
    }

    /// The answer to [`RecoveryOutput::Restore`]: the new run's id, or why it failed.
    pub fn on_restored(
        &mut self,
        run_id: &str,
        attempt: u32,
        result: std::result::Result<String, String>,
        now: Instant,
    ) {
        let Some(RunState::Restoring {
            attempt: current,
            checkpoint,
        }) = self.runs.get(run_id).cloned()
        else {
            return;
        };
        if current != attempt {
            return;
        }
        match result {
            Ok(new_run_id) => {
                self.runs.remove(run_id);
                self.emit(RecoveryEvent::ClientCreated {
                    run_id: run_id.to_owned(),
                    attempt,
                    new_run_id: new_run_id.clone(),
                });
                self.emit(RecoveryEvent::Completed {
                    run_id: run_id.to_owned(),
                    attempt,
                    new_run_id,
                    checkpoint,
                });
            }
            Err(error) => {
                let hint = match self.policy.checkpoint {
                    CheckpointStrategy::Latest => Some(checkpoint),
                    CheckpointStrategy::Path(_) => None,
                };
                self.attempt_failed(run_id, attempt, hint, error, now);
            }
        }
    }

    fn restore(&mut self, run_id: &str, attempt: u32, checkpoint: String) {
        self.runs.insert(
            run_id.to_owned(),
            RunState::Restoring {
                attempt,
                checkpoint: checkpoint.clone(),
            },
        );
        self.emit(RecoveryEvent::CheckpointSelected {
            run_id: run_id.to_owned(),
            attempt,
            checkpoint: checkpoint.clone(),
        });
        self.out.push_back(RecoveryOutput::Restore {
            run_id: run_id.to_owned(),
            attempt,
            checkpoint,
            with_optimizer: self.policy.restore_optimizer,
        });
    }

    fn attempt_failed(
        &mut self,
        run_id: &str,
        attempt: u32,
        hint: Option<String>,
        error: String,
        now: Instant,
    ) {
        let retry_in =
            (attempt < self.policy.max_attempts).then(|| self.policy.backoff_after(attempt));
        self.emit(RecoveryEvent::Failed {
            run_id: run_id.to_owned(),
            attempt,
            error: error.clone(),
            retry_in,
        });
        match retry_in {
            Some(delay) => {
                self.runs.insert(
                    run_id.to_owned(),
                    RunState::Backoff {
                        attempts: attempt,
                        until: now + delay,
                        hint,
                    },
                );
            }
            None => {
                self.runs.remove(run_id);
                self.emit(RecoveryEvent::Exhausted {
                    run_id: run_id.to_owned(),
                    attempts: attempt,
                    error,
                });
            }
        }
    }

    /// Starts the next attempt of the run at the head of the queue.
    fn start_next(&mut self) -> bool {
        let Some(run_id) = self.queue.pop_front() else {
            return false;
        };
        let Some(RunState::Queued { attempts, hint }) = self.runs.get(&run_id).cloned() else {
            return true;
        };
        let attempt = attempts + 1;
        self.emit(RecoveryEvent::Started {
            run_id: run_id.clone(),
            attempt,
        });
        let checkpoint = match &self.policy.checkpoint {
            CheckpointStrategy::Path(p) => Some(p.clone()),
            CheckpointStrategy::Latest => hint,
        };
        match checkpoint {
            Some(c) => self.restore(&run_id, attempt, c),
            None => {
                self.runs
                    .insert(run_id.clone(), RunState::Selecting { attempt });
                self.out.push_back(RecoveryOutput::FetchRun { run_id });
            }
        }
        true
    }

    /// The next thing to do at `now`.
    pub fn poll_output(&mut self, now: Instant) -> RecoveryOutput {
        if self.stopped {
            return RecoveryOutput::Stopped;
        }
        loop {
            if let Some(o) = self.out.pop_front() {
                return o;
            }
            // Back-offs that ended go to the back of the queue.
            let due: Vec<String> = self
                .runs
                .iter()
                .filter(|(_, s)| matches!(s, RunState::Backoff { until, .. } if *until <= now))
                .map(|(r, _)| r.clone())
                .collect();
            for run_id in due {
                if let Some(RunState::Backoff { attempts, hint, .. }) = self.runs.remove(&run_id) {
                    self.runs
                        .insert(run_id.clone(), RunState::Queued { attempts, hint });
                    self.queue.push_back(run_id);
                }
            }
            if self.next_poll.is_some_and(|t| t <= now) {
                for (run_id, state) in self.runs.iter_mut() {
                    if let RunState::Watching { polling: false } = state {
                        *state = RunState::Watching { polling: true };
                        self.out.push_back(RecoveryOutput::FetchRun {
                            run_id: run_id.clone(),
                        });
                    }
                }
                self.next_poll = Some(now + self.policy.poll_interval);
            }
            let running = self.runs.values().filter(|s| s.running()).count();
            if running < self.policy.max_concurrent && self.start_next() {
                continue;
            }
            if !self.out.is_empty() {
                continue;
            }
            let watching = self
                .runs
                .values()
                .any(|s| matches!(s, RunState::Watching { .. }));
            if !watching {
                self.next_poll = None;
            }
            let retry = self
                .runs
                .values()
                .filter_map(|s| match s {
                    RunState::Backoff { until, .. } => Some(*until),
                    _ => None,
                })
                .min();
            let until = match (self.next_poll, retry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            return RecoveryOutput::Wait { until };
        }
    }
}
