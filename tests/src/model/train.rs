//! forward and forward_backward: target logprobs, the loss, and gradients into the LoRA factors.

use std::collections::BTreeMap;

use nalgebra::DMatrix;
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

/// Gradients of one pass, shaped like `lora_a` and `lora_b`.
type LoraGrads = (DMatrix<f64>, DMatrix<f64>);

/// One datum, read and checked.
struct Prepared {
    /// Context index per input position.
    contexts: Vec<usize>,
    targets: Targets,
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

    /// The whole pass: validate every datum, evaluate the logits once per distinct context,
    /// compute the loss per datum, and (if asked) back-propagate into fresh gradients
    /// `(∂L/∂A, ∂L/∂Bᵀ)` the caller adds to the accumulators.
    fn run(
        &self,
        data: &[Datum],
        loss: &dyn LossFunction,
        backward: bool,
    ) -> Result<(ForwardOutput, Option<LoraGrads>), ModelError> {
        if data.is_empty() {
            return Err(ModelError::user("data: no datums were given"));
        }
        let v = self.spec.vocab_size;
        let prepared = data
            .iter()
            .enumerate()
            .map(|(i, d)| self.prepare(i, d, loss.allows_2d_targets()))
            .collect::<Result<Vec<_>, _>>()?;

        // The distinct contexts of the batch, each evaluated once as a column of Z = W + Bᵀ·A
        // (one matrix product, so large batches go through an optimised gemm).
        let mut slot: Vec<Option<usize>> = vec![None; v + 1];
        let mut used = Vec::new();
        for p in &prepared {
            for &c in &p.contexts {
                if slot[c].is_none() {
                    slot[c] = Some(used.len());
                    used.push(c);
                }
            }
        }
        let column_of = |c: usize| slot[c].expect("every context of the batch has a column");
        let a_used = DMatrix::from_columns(
            &used
                .iter()
                .map(|&c| self.lora_a.column(c))
                .collect::<Vec<_>>(),
        );
        let mut z = DMatrix::from_columns(
            &used
                .iter()
                .map(|&c| self.base.column(c))
                .collect::<Vec<_>>(),
        );
        if self.spec.rank > 0 {
            z.gemm(1.0, &self.lora_b, &a_used, 1.0);
        }
        let lse: Vec<f64> = z
            .column_iter()
            .map(|col| log_sum_exp(col.as_slice()))
            .collect();

        // ∂L/∂Z, built as Σ_t g_t·onehot(target_t) minus (Σ_t g_t)·softmax per column.
        let mut dz = backward.then(|| DMatrix::<f64>::zeros(v, used.len()));
        let mut g_total = vec![0.0; used.len()];
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
                    let col = column_of(p.contexts[j / k]);
                    z[(t, col)] - lse[col]
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
            if let Some(dz) = &mut dz {
                for (j, &t) in p.targets.ids.iter().enumerate() {
                    let col = column_of(p.contexts[j / k]);
                    g_total[col] += result.grad[j];
                    dz[(t, col)] += result.grad[j];
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

        let grads = dz.map(|mut dz| {
            for (col, (mut d, zc)) in dz.column_iter_mut().zip(z.column_iter()).enumerate() {
                let (g, l) = (g_total[col], lse[col]);
                if g != 0.0 {
                    for (d, x) in d.iter_mut().zip(zc.iter()) {
                        *d -= g * (x - l).exp();
                    }
                }
            }
            let r = self.spec.rank;
            let mut ga = DMatrix::zeros(r, v + 1);
            let mut gb = DMatrix::zeros(v, r);
            if r > 0 {
                // Z = W + Bᵀ·A  ⇒  ∂L/∂A = B·∂L/∂Z (scattered to the used columns),
                // ∂L/∂Bᵀ = ∂L/∂Z·Aᵀ.
                let mut ga_used = DMatrix::zeros(r, used.len());
                ga_used.gemm(1.0, &self.lora_b.transpose(), &dz, 0.0);
                for (j, &c) in used.iter().enumerate() {
                    ga.set_column(c, &ga_used.column(j));
                }
                gb.gemm(1.0, &dz, &a_used.transpose(), 0.0);
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
