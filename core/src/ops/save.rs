//! Idempotent named saves (workloads.md A10, design.md "Idempotency").
//!
//! A save's submission can land on the server while its reply is lost (the connection drops
//! after the handler ran). The retry then meets the checkpoint the first attempt created and the
//! server answers 409. The official SDK retries that 409 for five minutes and then raises; this
//! SDK decides at once:
//!
//! * a 409 on the **first** attempt: the name was taken before this call → [`ErrorKind::Conflict`];
//! * a 409 on a **retried** attempt: the first attempt may have landed → list the run's
//!   checkpoints over REST; if the checkpoint is there, the save succeeded and its path is the
//!   result; if not, [`ErrorKind::Conflict`].
//!
//! [`on_save_conflict`] and [`find_checkpoint`] are the rule; [`IdempotentSave`] is the machine
//! that wraps the save's call and runs the confirmation.
//!
//! [`ErrorKind::Conflict`]: crate::ErrorKind::Conflict

use std::time::Instant;

use bytes::Bytes;
use serde::de::DeserializeOwned;

use super::{direct, TypedCall};
use crate::call::{AttemptId, CallOptions, Machine, Output};
use crate::endpoints::{status_error, ListCheckpoints};
use crate::error::{Error, Result};
use crate::io::TransportError;
use crate::ledger::Ledger;
use crate::path::TinkerPath;
use crate::types::{CheckpointsListResponse, SaveWeightsForSamplerResponse, SaveWeightsResponse};

/// What a 409 on a save's submission means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConflictAction {
    /// The name was taken before this call: fail with the 409.
    Fail,
    /// An earlier attempt of this call may have written the checkpoint: look it up.
    Confirm,
}

/// The rule for a 409 answering submit attempt number `attempt` (1-based) of a named save.
///
/// ```
/// use tinker_core::ops::{on_save_conflict, ConflictAction};
/// assert_eq!(on_save_conflict(1), ConflictAction::Fail);
/// assert_eq!(on_save_conflict(2), ConflictAction::Confirm);
/// ```
pub fn on_save_conflict(attempt: u32) -> ConflictAction {
    if attempt <= 1 {
        ConflictAction::Fail
    } else {
        ConflictAction::Confirm
    }
}

/// The `tinker://` path of `target` if the run's listing holds it.
pub fn find_checkpoint(listing: &CheckpointsListResponse, target: &TinkerPath) -> Option<String> {
    let id = target.checkpoint_id();
    let path = target.to_string();
    listing
        .checkpoints
        .iter()
        .find(|c| c.checkpoint_id == id || c.tinker_path == path)
        .map(|c| c.tinker_path.clone())
}

/// A save result rebuilt from a confirmed checkpoint path.
pub trait SavedCheckpoint: DeserializeOwned + Send {
    /// The result a successful save of `path` would have returned.
    fn confirmed(path: String) -> Self;
}

impl SavedCheckpoint for SaveWeightsResponse {
    fn confirmed(path: String) -> Self {
        SaveWeightsResponse {
            path,
            kind: Some("save_weights".to_owned()),
        }
    }
}

impl SavedCheckpoint for SaveWeightsForSamplerResponse {
    fn confirmed(path: String) -> Self {
        SaveWeightsForSamplerResponse {
            path: Some(path),
            sampling_session_id: None,
            kind: Some("save_weights_for_sampler".to_owned()),
        }
    }
}

#[derive(Debug)]
enum Stage<T> {
    /// The save's own call runs; its submit responses are watched for 409.
    Saving,
    /// A 409 arrived for the submit attempt (number given); decided at the next poll.
    Conflicted { attempt: u32, error: Error },
    /// Listing the run's checkpoints to confirm an earlier attempt landed.
    Confirming {
        listing: Box<TypedCall<CheckpointsListResponse>>,
        conflict: Error,
    },
    /// The result, handed out once.
    Done(Option<Result<T>>),
}

/// A named save whose 409s are resolved by [`on_save_conflict`] instead of being retried.
///
/// Built by the training client around the save's call ([`super::training`]); the 409 never
/// reaches the call's retry layers.
#[derive(Debug)]
pub struct IdempotentSave<T> {
    save: TypedCall<T>,
    target: TinkerPath,
    opts: CallOptions,
    /// Submit attempts sent so far, and the one in flight.
    submit_attempts: u32,
    submit_in_flight: Option<AttemptId>,
    stage: Stage<T>,
}

impl<T: SavedCheckpoint> IdempotentSave<T> {
    /// Wraps the save's `call` for checkpoint `target`; `opts` (deadline, method) also apply to
    /// the confirming listing.
    pub fn new(save: TypedCall<T>, target: TinkerPath, opts: CallOptions) -> IdempotentSave<T> {
        IdempotentSave {
            save,
            target,
            opts,
            submit_attempts: 0,
            submit_in_flight: None,
            stage: Stage::Saving,
        }
    }

    /// The checkpoint this save writes.
    pub fn target(&self) -> &TinkerPath {
        &self.target
    }

    fn conflict_error(&self, head: &http::response::Parts, body: &[u8]) -> Error {
        let mut error = status_error(
            self.save.call().endpoint().path,
            head.status.as_u16(),
            &head.headers,
            body,
        );
        if let Error::Status(s) = &mut error {
            s.attempts = self.submit_attempts;
        }
        error
    }
}

impl<T: SavedCheckpoint> Machine for IdempotentSave<T> {
    type Output = T;

    fn poll_output(&mut self, ledger: &mut Ledger, now: Instant) -> Output<T> {
        loop {
            match &mut self.stage {
                Stage::Saving => {
                    let out = self.save.poll_output(ledger, now);
                    if let Output::Transmit(t) = &out {
                        if self.save.call().request_id().is_none() {
                            self.submit_attempts += 1;
                            self.submit_in_flight = Some(t.attempt);
                        }
                    }
                    return out;
                }
                Stage::Conflicted { .. } => {
                    let Stage::Conflicted { attempt, error } =
                        std::mem::replace(&mut self.stage, Stage::Done(None))
                    else {
                        continue;
                    };
                    // The save's call is over either way: the server answered its POST, so
                    // its turn is finished now.
                    self.save.call_mut().submission_answered(ledger);
                    self.save.cancel(ledger, now);
                    self.stage = match on_save_conflict(attempt) {
                        ConflictAction::Fail => Stage::Done(Some(Err(error))),
                        ConflictAction::Confirm => {
                            let request = ListCheckpoints {
                                training_run_id: self.target.training_run_id().to_owned(),
                            };
                            match direct(ledger, request, self.opts.clone()) {
                                Ok(listing) => Stage::Confirming {
                                    listing: Box::new(listing),
                                    conflict: error,
                                },
                                Err(_) => Stage::Done(Some(Err(error))),
                            }
                        }
                    };
                }
                Stage::Confirming { listing, .. } => match listing.poll_output(ledger, now) {
                    Output::Done(listed) => {
                        let found = listed.ok().and_then(|l| find_checkpoint(&l, &self.target));
                        let Stage::Confirming { conflict, .. } =
                            std::mem::replace(&mut self.stage, Stage::Done(None))
                        else {
                            continue;
                        };
                        let result = match found {
                            Some(path) => Ok(T::confirmed(path)),
                            None => Err(conflict),
                        };
                        self.stage = Stage::Done(Some(result));
                    }
                    Output::Transmit(t) => return Output::Transmit(t),
                    Output::Wait(w) => return Output::Wait(w),
                    Output::Event(e) => return Output::Event(e),
                },
                Stage::Done(result) => {
                    return match result.take() {
                        Some(r) => Output::Done(r),
                        None => Output::Done(Err(Error::Closed(
                            "the save's result was already taken".into(),
                        ))),
                    }
                }
            }
        }
    }

    fn handle_response(
        &mut self,
        attempt: AttemptId,
        head: http::response::Parts,
        body: Bytes,
        now: Instant,
    ) {
        match &mut self.stage {
            Stage::Saving => {
                if self.submit_in_flight == Some(attempt) {
                    self.submit_in_flight = None;
                    if head.status.as_u16() == 409 {
                        let error = self.conflict_error(&head, &body);
                        self.stage = Stage::Conflicted {
                            attempt: self.submit_attempts,
                            error,
                        };
                        return;
                    }
                }
                self.save.handle_response(attempt, head, body, now);
            }
            Stage::Confirming { listing, .. } => listing.handle_response(attempt, head, body, now),
            Stage::Conflicted { .. } | Stage::Done(_) => {}
        }
    }

    fn handle_transport_error(&mut self, attempt: AttemptId, error: TransportError, now: Instant) {
        match &mut self.stage {
            Stage::Saving => {
                if self.submit_in_flight == Some(attempt) {
                    self.submit_in_flight = None;
                }
                self.save.handle_transport_error(attempt, error, now);
            }
            Stage::Confirming { listing, .. } => {
                listing.handle_transport_error(attempt, error, now)
            }
            Stage::Conflicted { .. } | Stage::Done(_) => {}
        }
    }

    fn cancel(&mut self, ledger: &mut Ledger, now: Instant) {
        self.save.cancel(ledger, now);
        if let Stage::Confirming { listing, .. } = &mut self.stage {
            listing.cancel(ledger, now);
        }
        if !matches!(self.stage, Stage::Done(_)) {
            self.stage = Stage::Done(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::call::CallOptions;
    use crate::error::ErrorKind;
    use crate::io::TransportErrorKind;
    use crate::path::CheckpointKind;
    use crate::sim::{run_one, Reply, Scripted, Sim, VirtualClock};
    use crate::types::{SaveWeightsForSamplerRequest, SaveWeightsRequest};

    const RUN: &str = "sess-0001:train:0";

    #[allow(clippy::disallowed_methods)]
    fn clock() -> VirtualClock {
        VirtualClock::new(Instant::now())
    }

    fn target(kind: CheckpointKind, name: &str) -> TinkerPath {
        TinkerPath::new(RUN, kind, name).unwrap()
    }

    fn listing(ids: &[&str]) -> String {
        let items: Vec<String> = ids
            .iter()
            .map(|id| {
                let kind = if id.starts_with("weights/") { "training" } else { "sampler" };
                format!(
                    r#"{{"checkpoint_id":"{id}","checkpoint_type":"{kind}","time":"2026-01-01T00:00:00Z","tinker_path":"tinker://{RUN}/{id}"}}"#
                )
            })
            .collect();
        format!(r#"{{"checkpoints":[{}]}}"#, items.join(","))
    }

    fn save_state(ledger: &mut Ledger, name: &str) -> IdempotentSave<SaveWeightsResponse> {
        let n = name.to_owned();
        let call = crate::ops::training::<_, SaveWeightsResponse>(
            ledger,
            RUN,
            SaveWeightsRequest::new(RUN, 0, n),
            CallOptions::default(),
        )
        .unwrap();
        IdempotentSave::new(
            call,
            target(CheckpointKind::Weights, name),
            CallOptions::default(),
        )
    }

    fn conflict() -> Reply {
        Reply::json(409, r#"{"detail":"checkpoint already exists"}"#)
    }

    /// Which endpoints a trace hit, in order (`POST save_weights`, `GET …/checkpoints`).
    fn endpoints(trace: &[String]) -> Vec<String> {
        trace
            .iter()
            .map(|l| {
                let mut parts = l.split_whitespace().skip(1);
                let method = parts.next().unwrap_or("");
                let path = parts.next().unwrap_or("");
                format!("{method} {}", path.trim_start_matches("/api/v1/"))
            })
            .collect()
    }

    #[test]
    fn only_a_retried_attempt_is_confirmed() {
        for (attempt, expected) in [
            (1, ConflictAction::Fail),
            (2, ConflictAction::Confirm),
            (3, ConflictAction::Confirm),
            (40, ConflictAction::Confirm),
        ] {
            assert_eq!(on_save_conflict(attempt), expected, "attempt {attempt}");
        }
    }

    #[test]
    fn the_listing_confirms_only_the_same_kind_and_name() {
        let list: CheckpointsListResponse =
            serde_json::from_str(&listing(&["weights/step_000020", "sampler_weights/final"]))
                .unwrap();
        let path = |kind, name| find_checkpoint(&list, &target(kind, name));
        for (kind, name, found) in [
            (CheckpointKind::Weights, "step_000020", true),
            (CheckpointKind::SamplerWeights, "final", true),
            // Same name, other kind: not this save's checkpoint.
            (CheckpointKind::SamplerWeights, "step_000020", false),
            (CheckpointKind::Weights, "final", false),
            (CheckpointKind::Weights, "step_000021", false),
        ] {
            let expected = found.then(|| format!("tinker://{RUN}/{}/{name}", kind.segment()));
            assert_eq!(path(kind, name), expected, "{kind:?} {name}");
        }
    }

    #[test]
    fn a_409_on_the_first_attempt_fails_at_once_without_retrying_or_listing() {
        let mut ledger = Sim::ledger(1);
        let save = save_state(&mut ledger, "taken");
        let mut server = Scripted::new([conflict()]);
        let (result, trace) = run_one(save, &mut ledger, &mut server, &clock());
        let err = result.expect_err("the name was taken before this call");
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert_eq!(err.status(), Some(409));
        assert_eq!(endpoints(&trace), ["POST save_weights"]);
        assert!(ledger.is_quiescent(), "the run's turn is finished");
    }

    #[test]
    fn a_409_after_a_lost_reply_is_success_once_the_listing_shows_the_checkpoint() {
        let mut ledger = Sim::ledger(2);
        let save = save_state(&mut ledger, "step_000020");
        let mut server = Scripted::new([
            // The first attempt landed; its reply was lost.
            Reply::fail(TransportErrorKind::Io),
            conflict(),
            Reply::json(
                200,
                listing(&["weights/step_000010", "weights/step_000020"]),
            ),
        ]);
        let (result, trace) = run_one(save, &mut ledger, &mut server, &clock());
        let saved = result.expect("the save happened");
        assert_eq!(saved.path, format!("tinker://{RUN}/weights/step_000020"));
        assert_eq!(
            endpoints(&trace),
            [
                "POST save_weights",
                "POST save_weights",
                &format!("GET training_runs/{RUN}/checkpoints"),
            ]
        );
        // The retry reused the request's seq id.
        assert!(trace[0].contains(r#""seq_id":1"#) && trace[1].contains(r#""seq_id":1"#));
        assert!(ledger.is_quiescent());
    }

    #[test]
    fn a_409_after_a_lost_reply_without_the_checkpoint_listed_is_a_conflict() {
        let mut ledger = Sim::ledger(3);
        let save = save_state(&mut ledger, "step_000020");
        let mut server = Scripted::new([
            Reply::fail(TransportErrorKind::Io),
            conflict(),
            Reply::json(200, listing(&["weights/step_000010"])),
        ]);
        let (result, trace) = run_one(save, &mut ledger, &mut server, &clock());
        let err = result.expect_err("nothing confirms the save");
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        assert_eq!(trace.len(), 3, "{trace:?}");
    }

    #[test]
    fn a_named_sampler_save_is_confirmed_the_same_way() {
        let mut ledger = Sim::ledger(4);
        let call = crate::ops::training::<_, SaveWeightsForSamplerResponse>(
            &mut ledger,
            RUN,
            SaveWeightsForSamplerRequest::named(RUN, 0, "final"),
            CallOptions::default(),
        )
        .unwrap();
        let save = IdempotentSave::new(
            call,
            target(CheckpointKind::SamplerWeights, "final"),
            CallOptions::default(),
        );
        let mut server = Scripted::new([
            Reply::json(503, r#"{"detail":"unavailable"}"#),
            conflict(),
            Reply::json(200, listing(&["weights/final", "sampler_weights/final"])),
        ]);
        let (result, _) = run_one(save, &mut ledger, &mut server, &clock());
        let saved = result.expect("confirmed");
        assert_eq!(
            saved.path.as_deref(),
            Some(format!("tinker://{RUN}/sampler_weights/final").as_str())
        );
        assert_eq!(saved.sampling_session_id, None);
    }

    #[test]
    fn a_save_that_is_answered_normally_is_untouched() {
        let mut ledger = Sim::ledger(5);
        let save = save_state(&mut ledger, "ok");
        let mut server = Scripted::new([
            Reply::json(200, r#"{"request_id":"req-1"}"#),
            Reply::json(
                200,
                format!(r#"{{"path":"tinker://{RUN}/weights/ok","type":"save_weights"}}"#),
            ),
        ]);
        let (result, trace) = run_one(save, &mut ledger, &mut server, &clock());
        assert_eq!(result.unwrap().path, format!("tinker://{RUN}/weights/ok"));
        assert_eq!(
            endpoints(&trace),
            ["POST save_weights", "POST retrieve_future"]
        );
    }
}
