//! Test control for recovery automation: runs the server reports `corrupted`, and checkpoints
//! that fail to load.
//!
//! | route | what |
//! |---|---|
//! | `POST /_admin/corrupt_run` | `{"run_id": "...", "corrupted": true}`: `GET training_runs/{id}` reports `corrupted` as given (default true) |
//! | `POST /_admin/unloadable_checkpoint` | `{"path": "tinker://...", "unloadable": true}`: loading that checkpoint (`load_weights`, creating a run from it) fails with a user error |

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{ApiResult, JsonBody};
use super::state::{lock, AppState};
use super::ServerControl;

/// The runs marked corrupted and the checkpoints marked unloadable.
#[derive(Debug, Default)]
pub(crate) struct RecoveryFaults {
    corrupted: Mutex<HashSet<String>>,
    unloadable: Mutex<HashSet<String>>,
}

impl RecoveryFaults {
    pub(crate) fn is_corrupted(&self, run_id: &str) -> bool {
        lock(&self.corrupted).contains(run_id)
    }

    pub(crate) fn is_unloadable(&self, path: &str) -> bool {
        lock(&self.unloadable).contains(path)
    }

    fn set(set: &Mutex<HashSet<String>>, key: String, on: bool) {
        let mut s = lock(set);
        if on {
            s.insert(key);
        } else {
            s.remove(&key);
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
pub(crate) struct CorruptRun {
    run_id: String,
    #[serde(default = "yes")]
    corrupted: bool,
}

#[derive(Debug, Deserialize)]
pub(crate) struct UnloadableCheckpoint {
    path: String,
    #[serde(default = "yes")]
    unloadable: bool,
}

pub(crate) async fn corrupt_run(
    State(st): State<Arc<AppState>>,
    JsonBody(body): JsonBody<CorruptRun>,
) -> ApiResult<Json<Value>> {
    RecoveryFaults::set(&st.recovery.corrupted, body.run_id, body.corrupted);
    Ok(Json(json!({})))
}

pub(crate) async fn unloadable_checkpoint(
    State(st): State<Arc<AppState>>,
    JsonBody(body): JsonBody<UnloadableCheckpoint>,
) -> ApiResult<Json<Value>> {
    RecoveryFaults::set(&st.recovery.unloadable, body.path, body.unloadable);
    Ok(Json(json!({})))
}

impl ServerControl {
    /// From now on the server reports training run `run_id` as `corrupted: true`.
    pub fn corrupt_run(&self, run_id: &str) {
        RecoveryFaults::set(&self.state.recovery.corrupted, run_id.to_owned(), true);
    }

    /// From now on loading the checkpoint at `path` fails (as a damaged checkpoint would).
    pub fn make_checkpoint_unloadable(&self, path: &str) {
        RecoveryFaults::set(&self.state.recovery.unloadable, path.to_owned(), true);
    }
}
