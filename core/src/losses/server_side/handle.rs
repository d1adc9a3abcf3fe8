//! The client's reference to an uploaded loss, and the checks made before using it.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::types::{CustomLossInput, Datum, LossConfigValue};

/// A loss created with `ServiceClient::create_custom_loss`: its server id, bound to the session
/// that created it. Pass it to `TrainingClient::forward_backward_server_loss`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomLossHandle {
    loss_id: String,
    session_id: String,
    name: String,
    inputs: Vec<CustomLossInput>,
}

impl CustomLossHandle {
    /// A handle for `loss_id`, created in `session_id` for a loss with these inputs.
    pub fn new(
        loss_id: String,
        session_id: String,
        name: String,
        inputs: Vec<CustomLossInput>,
    ) -> CustomLossHandle {
        CustomLossHandle {
            loss_id,
            session_id,
            name,
            inputs,
        }
    }

    /// The server's id of the loss.
    pub fn loss_id(&self) -> &str {
        &self.loss_id
    }

    /// The session the loss belongs to.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The loss's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its parameters, `logprobs` first.
    pub fn inputs(&self) -> &[CustomLossInput] {
        &self.inputs
    }

    /// `loss_fn_config = {"loss_id": …}` (a string, so sent only in `loss_fn_config_v2`).
    pub fn loss_fn_config(&self) -> BTreeMap<String, LossConfigValue> {
        BTreeMap::from([(
            "loss_id".to_owned(),
            LossConfigValue::Text(self.loss_id.clone()),
        )])
    }

    /// Fails unless the handle belongs to `session_id` (handles do not travel between sessions).
    pub fn check_session(&self, session_id: Option<&str>) -> Result<()> {
        if session_id == Some(self.session_id.as_str()) {
            return Ok(());
        }
        Err(Error::invalid(
            "loss",
            format!(
                "custom loss `{}` ({}) was created in session {}, not in this client's session{}",
                self.name,
                self.loss_id,
                self.session_id,
                session_id.map(|s| format!(" {s}")).unwrap_or_default()
            ),
        ))
    }

    /// Checks every datum has each declared input at its declared rank (`logprobs` is checked
    /// through `target_tokens`, which it is shaped like).
    pub fn check_data(&self, data: &[Datum]) -> Result<()> {
        if data.is_empty() {
            return Err(Error::invalid("data", "No data provided"));
        }
        for (i, datum) in data.iter().enumerate() {
            for input in &self.inputs {
                let key = if input.name == "logprobs" {
                    "target_tokens"
                } else {
                    input.name.as_str()
                };
                let loc = format!("data[{i}].loss_fn_inputs.{key}");
                let tensor = datum.loss_fn_inputs.get(key).ok_or_else(|| {
                    Error::invalid(
                        &loc,
                        format!("missing; custom loss `{}` reads it", self.name),
                    )
                })?;
                let rank = tensor.shape().len();
                if rank != usize::from(input.rank) {
                    return Err(Error::invalid(
                        &loc,
                        format!(
                            "has rank {rank} (shape {:?}) but custom loss `{}` declares `{}` with rank {}",
                            tensor.shape(),
                            self.name,
                            input.name,
                            input.rank
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
