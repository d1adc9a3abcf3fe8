//! Server-side custom losses (protocol.md 11.4): `create_custom_loss` checks and stores a graph
//! per session, and a `forward_backward` with `loss_fn = "custom"` runs it on the toy model.
//!
//! The graph is evaluated per datum by `tinker_core`'s interpreter
//! ([`ServerLoss::evaluate_datum`]) over the model's per-token target logprobs; its gradient
//! `∂loss/∂logprobs` enters the model's back-propagation exactly where a built-in loss's does
//! (for `cross_entropy` that gradient is `−weights`). The response's `loss:sum` is the sum of the
//! per-datum losses, plus the graph's `custom/<name>:sum` (summed over datums) and
//! `custom/<name>:mean` (averaged) metrics.

use std::cell::RefCell;
use std::sync::Arc;

use tinker_core::losses::server_side::{combine_metrics, ServerLoss};
use tinker_core::types::{CreateCustomLossRequest, Datum};

use super::error::ApiError;
use super::futures::Outcome;
use super::state::AppState;
use crate::model::{DatumLoss, LossConfig, LossFunction, ModelError, ToyModel};

/// A loss created in a session.
#[derive(Debug, Clone)]
pub(crate) struct StoredLoss {
    pub session_id: String,
    pub loss: Arc<ServerLoss>,
}

/// Checks an uploaded definition: the SDK's rules and that every node is an operation the
/// interpreter runs. A violation is a 400 naming the input or node.
pub(crate) fn accept(request: &CreateCustomLossRequest) -> Result<StoredLoss, ApiError> {
    let loss = ServerLoss::from_request(request)
        .map_err(|e| ApiError::bad_request(format!("create_custom_loss: {e}")))?;
    Ok(StoredLoss {
        session_id: request.session_id.clone(),
        loss: Arc::new(loss),
    })
}

/// The loss a `custom` request names (`loss_fn_config_v2.loss_id`), if it exists in the run's
/// session; otherwise the user error the request's future fails with.
pub(crate) fn resolve(
    st: &AppState,
    session_id: &str,
    config: &LossConfig,
) -> Result<Arc<ServerLoss>, ModelError> {
    let id = config.texts.get("loss_id").ok_or_else(|| {
        ModelError::user(
            "loss_fn_config.loss_id: loss_fn `custom` needs the id create_custom_loss returned",
        )
    })?;
    if let Some(key) = config
        .numbers
        .keys()
        .chain(config.texts.keys())
        .find(|k| *k != "loss_id")
    {
        return Err(ModelError::user(format!(
            "loss_fn_config.{key}: loss `custom` takes only loss_id"
        )));
    }
    match st.custom_losses.get(id) {
        Some(stored) if stored.session_id == session_id => Ok(stored.loss.clone()),
        Some(_) => Err(ModelError::user(format!(
            "loss_fn_config.loss_id: custom loss {id} belongs to another session"
        ))),
        None => Err(ModelError::user(format!(
            "loss_fn_config.loss_id: no custom loss {id}"
        ))),
    }
}

/// Runs a `custom` forward or forward_backward on the model.
pub(crate) fn run(
    model: &mut ToyModel,
    loss: Result<Arc<ServerLoss>, ModelError>,
    data: &[Datum],
    forward_only: bool,
) -> Outcome {
    let graph = match loss {
        Ok(loss) => GraphLoss {
            loss,
            metrics: RefCell::new(Vec::new()),
        },
        Err(e) => return Outcome::from(e),
    };
    let out = if forward_only {
        model.forward_with(data, &graph)
    } else {
        model.forward_backward_with(data, &graph)
    };
    match out {
        Ok(mut out) => {
            let per_datum = graph.metrics.into_inner();
            out.metrics
                .extend(combine_metrics(per_datum.iter().map(Vec::as_slice)));
            Outcome::ForwardBackward(out)
        }
        Err(e) => Outcome::from(e),
    }
}

/// A stored graph as a toy-model loss; collects each datum's metrics as it goes.
struct GraphLoss {
    loss: Arc<ServerLoss>,
    metrics: RefCell<Vec<Vec<(String, f64)>>>,
}

impl LossFunction for GraphLoss {
    fn output_type(&self) -> String {
        "CustomLossReturn".into()
    }

    fn allows_2d_targets(&self) -> bool {
        self.loss.inputs()[0].rank == 2
    }

    fn datum_loss(
        &self,
        datum: &Datum,
        at: &str,
        lp: &[f64],
        shape: &[usize],
    ) -> Result<DatumLoss, ModelError> {
        let e = self
            .loss
            .evaluate_datum(datum, at, lp, shape)
            .map_err(|e| ModelError::user(format!("custom loss `{}`: {e}", self.loss.name())))?;
        self.metrics.borrow_mut().push(e.metrics);
        Ok(DatumLoss {
            loss: e.loss,
            elementwise: None,
            grad: e.grad_logprobs,
        })
    }
}
