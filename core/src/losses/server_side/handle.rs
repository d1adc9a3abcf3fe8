//! The client's reference to a created loss, and the checks made before using it.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::ServerLoss;
use crate::error::{Error, Result};
use crate::types::{CustomLossInput, Datum, LossConfigValue};

/// A loss created with `ServiceClient::create_custom_loss`, bound to the session that created
/// it. Pass it to `TrainingClient::forward_backward_custom_loss`.
///
/// When the server's client config enables `custom_loss_server_side`, the loss was uploaded and
/// has a server id ([`CustomLossHandle::loss_id`]): a step is one `forward_backward` with
/// `loss_fn = "custom"`. Otherwise (as the SDK does) nothing was uploaded and the definition
/// runs on the client through the two passes of protocol.md 11.3.
#[derive(Debug, Clone)]
pub struct CustomLossHandle {
    loss_id: Option<String>,
    session_id: String,
    loss: Arc<ServerLoss>,
}

impl CustomLossHandle {
    /// A loss the server stored as `loss_id` in `session_id`.
    pub fn uploaded(
        loss_id: String,
        session_id: String,
        loss: Arc<ServerLoss>,
    ) -> CustomLossHandle {
        CustomLossHandle {
            loss_id: Some(loss_id),
            session_id,
            loss,
        }
    }

    /// A loss kept on the client (the server does not take uploads).
    pub fn client_side(session_id: String, loss: Arc<ServerLoss>) -> CustomLossHandle {
        CustomLossHandle {
            loss_id: None,
            session_id,
            loss,
        }
    }

    /// The server's id of the loss; `None` when it runs on the client.
    pub fn loss_id(&self) -> Option<&str> {
        self.loss_id.as_deref()
    }

    /// The session the loss belongs to.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// The definition.
    pub fn loss(&self) -> &Arc<ServerLoss> {
        &self.loss
    }

    /// The loss's name.
    pub fn name(&self) -> &str {
        self.loss.name()
    }

    /// Its parameters, `logprobs` first.
    pub fn inputs(&self) -> &[CustomLossInput] {
        self.loss.inputs()
    }

    /// `loss_fn_config = {"loss_id": …}` (a string, so sent only in `loss_fn_config_v2`);
    /// `None` for a client-side loss.
    pub fn loss_fn_config(&self) -> Option<BTreeMap<String, LossConfigValue>> {
        self.loss_id
            .as_ref()
            .map(|id| BTreeMap::from([("loss_id".to_owned(), LossConfigValue::Text(id.clone()))]))
    }

    /// Fails unless the handle belongs to `session_id` (handles do not travel between sessions).
    pub fn check_session(&self, session_id: Option<&str>) -> Result<()> {
        if session_id == Some(self.session_id.as_str()) {
            return Ok(());
        }
        Err(Error::invalid(
            "loss",
            format!(
                "custom loss `{}` was created in session {}, not in this client's session{}",
                self.name(),
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
            for input in self.inputs() {
                let key = if input.name == "logprobs" {
                    "target_tokens"
                } else {
                    input.name.as_str()
                };
                let loc = format!("data[{i}].loss_fn_inputs.{key}");
                let tensor = datum.loss_fn_inputs.get(key).ok_or_else(|| {
                    Error::invalid(
                        &loc,
                        format!("missing; custom loss `{}` reads it", self.name()),
                    )
                })?;
                let rank = tensor.shape().len();
                if rank != usize::from(input.rank) {
                    return Err(Error::invalid(
                        &loc,
                        format!(
                            "has rank {rank} (shape {:?}) but custom loss `{}` declares `{}` with rank {}",
                            tensor.shape(),
                            self.name(),
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
