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

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tinker_core::types::{ModelInput, TensorData};

    use super::*;
    use crate::model::ModelSpec;

    fn nll_request(extra_node: Option<serde_json::Value>) -> CreateCustomLossRequest {
        let mut nodes = vec![
            json!({"op": "placeholder", "name": "logprobs", "target": "logprobs", "args": [], "kwargs": {}}),
            json!({"op": "placeholder", "name": "weights", "target": "weights", "args": [], "kwargs": {}}),
            json!({"op": "call_function", "name": "mul", "target": "operator.mul", "args": [{"ref": "logprobs"}, {"ref": "weights"}], "kwargs": {}}),
            json!({"op": "call_method", "name": "sum_1", "target": "sum", "args": [{"ref": "mul"}], "kwargs": {}}),
            json!({"op": "call_function", "name": "neg", "target": "operator.neg", "args": [{"ref": "sum_1"}], "kwargs": {}}),
        ];
        nodes.extend(extra_node);
        nodes.push(json!({"op": "output", "name": "output", "target": "output",
            "args": [{"tuple": [{"ref": "neg"}, {"dict": {"custom/neg_ll:sum": {"ref": "neg"}}}]}], "kwargs": {}}));
        serde_json::from_value(json!({
            "session_id": "s", "custom_loss_seq_id": 0, "name": "neg_ll",
            "inputs": [{"name": "logprobs", "rank": 1}, {"name": "weights", "rank": 1}],
            "graph": {"format": 1, "nodes": nodes}, "type": "create_custom_loss"
        }))
        .expect("a well-formed body")
    }

    fn datum(weights: Vec<f32>) -> Datum {
        Datum::new(ModelInput::from_tokens(vec![1, 2, 3]))
            .with_input("target_tokens", TensorData::from_i64(vec![2, 3, 4]))
            .with_input("weights", TensorData::from_f32(weights))
    }

    #[test]
    fn an_uploaded_nll_trains_the_toy_model_exactly_like_cross_entropy() {
        let stored = accept(&nll_request(None)).expect("the SDK's NLL graph is accepted");
        let spec = ModelSpec::new("Qwen/Qwen3-8B", 4).with_seed(3);
        let (mut custom, mut builtin) = (
            ToyModel::new(spec.clone()).unwrap(),
            ToyModel::new(spec).unwrap(),
        );
        let data = vec![datum(vec![1.0, 0.5, 0.0]), datum(vec![0.0, 2.0, 1.0])];
        let Outcome::ForwardBackward(out) = run(&mut custom, Ok(stored.loss), &data, false) else {
            panic!("the custom loss ran");
        };
        let reference = builtin
            .forward_backward(&data, "cross_entropy", &LossConfig::default())
            .unwrap();
        let loss = out.metrics["loss:sum"];
        assert!((loss - reference.metrics["loss:sum"]).abs() < 1e-12);
        assert_eq!(out.metrics["custom/neg_ll:sum"], loss);
        assert_eq!(out.loss_fn_output_type, "CustomLossReturn");
        assert_eq!(
            out.loss_fn_outputs[1]["logprobs"],
            reference.loss_fn_outputs[1]["logprobs"]
        );
        assert!(builtin.grad_norm() > 0.0);
        assert!((custom.grad_norm() - builtin.grad_norm()).abs() < 1e-12);
    }

    #[test]
    fn unsupported_graphs_are_a_400_naming_the_node_and_bad_datums_fail_as_user_errors() {
        let erf = json!({"op": "call_function", "name": "erf", "target": "torch.erf", "args": [{"ref": "neg"}], "kwargs": {}});
        let e = accept(&nll_request(Some(erf))).expect_err("torch.erf is not supported");
        assert_eq!(e.status, http::StatusCode::BAD_REQUEST);
        let detail = e.detail.as_str().expect("a string detail");
        assert!(
            detail.contains("node `erf` (call_function torch.erf)"),
            "{detail}"
        );

        let stored = accept(&nll_request(None)).unwrap();
        let mut model = ToyModel::new(ModelSpec::new("Qwen/Qwen3-8B", 4)).unwrap();
        let mut no_weights = datum(vec![1.0; 3]);
        no_weights.loss_fn_inputs.remove("weights");
        match run(&mut model, Ok(stored.loss), &[no_weights], false) {
            Outcome::Failed { error, category } => {
                assert_eq!(category, "user");
                assert!(error.contains("data[0].loss_fn_inputs.weights"), "{error}");
            }
            _ => panic!("a datum without weights fails"),
        }
        assert_eq!(model.pending_backwards(), 0, "nothing was accumulated");
    }
}
