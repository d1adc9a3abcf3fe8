//! forward and forward_backward: target logprobs, the loss, and gradients into the LoRA factors.

use std::collections::BTreeMap;

use nalgebra::{DMatrix, DVector};
use tinker_core::types::{Datum, TensorData};

use super::error::ModelError;
use super::inputs::{positions, targets, Position, Targets};
use super::losses::{BuiltinLoss, LossConfig, LossFunction};
use super::{log_sum_exp, ToyModel};

/// The result of one forward or forward_backward request (the server encodes it as a
/// `ForwardBackwardOutput`, protocol.md 10.4).
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardOutput {
    /// `loss_fn_output_type`, e.g. `"CrossEntropyLossReturn"`.
    pub loss_fn_output_type: String,
    /// One map per datum, in datum order: `logprobs` (float32, shaped like `target_tokens`, for
    /// every position whatever its weight) and `elementwise_loss` (same shape, summing to the
    /// datum's loss).
    pub loss_fn_outputs: Vec<BTreeMap<String, TensorData>>,
    /// `loss:sum` = Σ over datums and positions. The server adds `clock_cycle:unique` itself.
    pub metrics: BTreeMap<String, f64>,
}

/// One datum, read and checked.
struct Prepared {
    /// Context index per input position.
    contexts: Vec<usize>,
    targets: Targets,
}

/// The logits of one context, with its log-normaliser.
struct Row {
    logits: DVector<f64>,
    lse: f64,
}

impl ToyModel {
    /// Evaluates a built-in loss without computing or accumulating gradients (`forward_only`).
    pub fn forward(
        &self,
        data: &[Datum],
        loss_fn: &str,
        config: &LossConfig,
    ) -> Result<ForwardOutput, ModelError> {
        let loss = BuiltinLoss::from_request(loss_fn, config)?;
        self.forward_with(data, &loss)
    }

    /// Evaluates a built-in loss and adds its gradient to the accumulated gradients. Nothing is
    /// accumulated when the request is rejected.
    pub fn forward_backward(
        &mut self,
        data: &[Datum],
        loss_fn: &str,
        config: &LossConfig,
    ) -> Result<ForwardOutput, ModelError> {
        let loss = BuiltinLoss::from_request(loss_fn, config)?;
        self.forward_backward_with(data, &loss)
    }

    /// [`ToyModel::forward`] with any [`LossFunction`].
    pub fn forward_with(
        &self,
        data: &[Datum],
        loss: &dyn LossFunction,
    ) -> Result<ForwardOutput, ModelError> {
        Ok(self.run(data, loss, false)?.0)
    }

    /// [`ToyModel::forward_backward`] with any [`LossFunction`].
    pub fn forward_backward_with(
        &mut self,
        data: &[Datum],
        loss: &dyn LossFunction,
    ) -> Result<ForwardOutput, ModelError> {
        let (out, grads) = self.run(data, loss, true)?;
        if let Some((ga, gb)) = grads {
            self.grad_a += ga;
            self.grad_b += gb;
        }
        self.pending_backwards += 1;
        Ok(out)
    }

    /// The whole pass: validate every datum, evaluate the needed logits rows once per distinct
    /// context, compute the loss per datum, and (if asked) back-propagate into fresh gradient
    /// matrices the caller adds to the accumulators.
    #[allow(clippy::type_complexity)]
    fn run(
        &self,
        data: &[Datum],
        loss: &dyn LossFunction,
        backward: bool,
    ) -> Result<(ForwardOutput, Option<(DMatrix<f64>, DMatrix<f64>)>), ModelError> {
        if data.is_empty() {
            return Err(ModelError::user("data: no datums were given"));
        }
        let v = self.spec.vocab_size;
        let prepared = data
            .iter()
            .enumerate()
            .map(|(i, d)| self.prepare(i, d, loss.allows_2d_targets()))
            .collect::<Result<Vec<_>, _>>()?;

        let mut rows: Vec<Option<Row>> = (0..=v).map(|_| None).collect();
        for p in &prepared {
            for &c in &p.contexts {
                if rows[c].is_none() {
                    let logits = self.logits(c);
                    let lse = log_sum_exp(logits.as_slice());
                    rows[c] = Some(Row { logits, lse });
                }
            }
        }
        let row = |c: usize| rows[c].as_ref().expect("every used context was evaluated");

        // Per context: Σ g (times softmax, subtracted later) and the one-hot target part of ∂L/∂z.
        let mut g_total = vec![0.0; v + 1];
        let mut g_onehot: Vec<Option<DVector<f64>>> = (0..=v).map(|_| None).collect();
        let mut outputs = Vec::with_capacity(data.len());
        let mut loss_sum = 0.0;
        for (i, (datum, p)) in data.iter().zip(&prepared).enumerate() {
            let at = format!("data[{i}]");
            let k = p.targets.per_row();
            let lp: Vec<f64> = p
                .targets
                .ids
                .iter()
                .enumerate()
                .map(|(j, &t)| {
                    let r = row(p.contexts[j / k]);
                    r.logits[t] - r.lse
                })
                .collect();
            let result = loss.datum_loss(datum, &at, &lp, &p.targets.shape)?;
            if result.grad.len() != lp.len() {
                return Err(ModelError::server(format!(
                    "{at}: the loss returned {} gradient values for {} logprobs",
                    result.grad.len(),
                    lp.len()
                )));
            }
            if !result.loss.is_finite() || result.grad.iter().any(|g| !g.is_finite()) {
                return Err(ModelError::user(format!(
                    "{at}: the loss is not finite (loss {}); check logprobs and advantages",
                    result.loss
                )));
            }
            loss_sum += result.loss;
            if backward {
                for (j, &t) in p.targets.ids.iter().enumerate() {
                    let g = result.grad[j];
                    if g == 0.0 {
                        continue;
                    }
                    let c = p.contexts[j / k];
                    g_total[c] += g;
                    g_onehot[c].get_or_insert_with(|| DVector::zeros(v))[t] += g;
                }
            }
            let mut out = BTreeMap::new();
            out.insert("logprobs".to_string(), f32_tensor(&lp, &p.targets.shape)?);
            if let Some(e) = &result.elementwise {
                out.insert(
                    "elementwise_loss".to_string(),
                    f32_tensor(e, &p.targets.shape)?,
                );
            }
            outputs.push(out);
        }

        let grads = backward.then(|| {
            let r = self.spec.rank;
            let mut ga = DMatrix::zeros(r, v + 1);
            let mut gb = DMatrix::zeros(v, r);
            for c in 0..=v {
                let Some(onehot) = g_onehot[c].take() else {
                    continue;
                };
                // ∂L/∂z = Σ_t g_t (onehot(target_t) − softmax(z)).
                let Row { logits, lse } = row(c);
                let dz = onehot - logits.map(|x| (x - lse).exp()) * g_total[c];
                if r > 0 {
                    // z = W[c] + Bᵀ a_c  ⇒  ∂L/∂a_c = B dz,  ∂L/∂Bᵀ = dz a_cᵀ.
                    let a_c = self.lora_a.column(c);
                    ga.column_mut(c).gemv_tr(1.0, &self.lora_b, &dz, 1.0);
                    gb.ger(1.0, &dz, &a_c, 1.0);
                }
            }
            (ga, gb)
        });

        let mut metrics = BTreeMap::new();
        metrics.insert("loss:sum".to_string(), loss_sum);
        Ok((
            ForwardOutput {
                loss_fn_output_type: loss.output_type(),
                loss_fn_outputs: outputs,
                metrics,
            },
            grads,
        ))
    }

    /// Checks one datum (core validation, then the toy model's vocabulary and shapes).
    fn prepare(&self, i: usize, datum: &Datum, allow_2d: bool) -> Result<Prepared, ModelError> {
        datum.validate(i)?;
        let at = format!("data[{i}]");
        let positions = positions(&datum.model_input)
            .map_err(|e| ModelError::user(format!("{at}.model_input.{}", e.message)))?;
        let contexts = positions
            .iter()
            .enumerate()
            .map(|(j, p)| match *p {
                Position::Media => Ok(self.spec.vocab_size),
                Position::Token(t) => {
                    self.token_index(i64::from(t), &format!("{at}.model_input position {j}"))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let targets = targets(datum, &at, contexts.len(), self.spec.vocab_size, allow_2d)?;
        Ok(Prepared { contexts, targets })
    }
}

/// A float32 output tensor with an explicit shape.
fn f32_tensor(values: &[f64], shape: &[usize]) -> Result<TensorData, ModelError> {
    TensorData::from_f32(values.iter().map(|&x| x as f32).collect::<Vec<_>>())
        .with_shape(shape.to_vec())
        .map_err(|e| ModelError::server(format!("building an output tensor: {e}")))
}
