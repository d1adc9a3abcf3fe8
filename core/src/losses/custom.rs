//! The custom-loss interface and the pure wire steps around it (protocol.md 11.3).
//!
//! A client runs `forward_backward_custom(data, loss)` as:
//!
//! 1. [`forward_pass_data`] → send as a `forward` (`cross_entropy`, forward only);
//! 2. [`extract_logprobs`] from its output → a [`LogprobBatch`] ([`LogprobBatch::with_data`]);
//! 3. [`evaluate_custom_loss`] → the loss value, `∂loss/∂logprobs` and user metrics;
//! 4. [`backward_pass_data`] (weights `= −∂loss/∂logprobs`) → send as a `forward_backward`;
//! 5. [`merge_custom_metrics`] on the backward output's metrics (the SDK 0.38 `loss:sum` rule).

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::types::{Datum, ForwardBackwardOutput, TensorData};

/// The logprobs a custom loss reads: one row per datum, each aligned element-for-element with that
/// datum's `target_tokens` (row-major when the targets are 2-D), optionally with the datums
/// themselves for extra inputs (`weights`, reference logprobs, ...).
///
/// ```
/// use tinker_core::losses::LogprobBatch;
/// let rows = vec![vec![-0.5, -1.0], vec![-2.0]];
/// let batch = LogprobBatch::new(&rows).unwrap();
/// assert_eq!(batch.len(), 2);
/// assert_eq!(batch.row(1), &[-2.0]);
/// assert!(LogprobBatch::new(&[]).is_err());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct LogprobBatch<'a> {
    logprobs: &'a [Vec<f64>],
    data: Option<&'a [Datum]>,
}

impl<'a> LogprobBatch<'a> {
    /// A batch of logprob rows without datums. Errors if there is no row or a value is not finite.
    pub fn new(logprobs: &'a [Vec<f64>]) -> Result<LogprobBatch<'a>> {
        if logprobs.is_empty() {
            return Err(Error::invalid("logprobs", "the batch has no datum"));
        }
        check_finite_rows("logprobs", logprobs)?;
        Ok(LogprobBatch {
            logprobs,
            data: None,
        })
    }

    /// A batch of logprob rows with their datums: one row per datum, each as long as the datum's
    /// `target_tokens` has elements.
    pub fn with_data(data: &'a [Datum], logprobs: &'a [Vec<f64>]) -> Result<LogprobBatch<'a>> {
        let batch = LogprobBatch::new(logprobs)?;
        if data.len() != logprobs.len() {
            return Err(Error::invalid(
                "logprobs",
                format!(
                    "{} logprob rows for {} datums; give one row per datum",
                    logprobs.len(),
                    data.len()
                ),
            ));
        }
        for (i, (datum, row)) in data.iter().zip(logprobs).enumerate() {
            let targets = target_tokens(datum, i)?;
            let n = element_count(targets);
            if row.len() != n {
                return Err(Error::invalid(
                    format!("logprobs[{i}]"),
                    format!(
                        "has {} values but data[{i}].loss_fn_inputs.target_tokens has {n}",
                        row.len()
                    ),
                ));
            }
        }
        Ok(LogprobBatch {
            data: Some(data),
            ..batch
        })
    }

    /// Number of datums (rows).
    pub fn len(&self) -> usize {
        self.logprobs.len()
    }

    /// Always false: a batch has at least one row.
    pub fn is_empty(&self) -> bool {
        self.logprobs.is_empty()
    }

    /// All rows.
    pub fn logprobs(&self) -> &'a [Vec<f64>] {
        self.logprobs
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &'a [f64] {
        &self.logprobs[i]
    }

    /// The datums, when the batch was built with them.
    pub fn data(&self) -> Option<&'a [Datum]> {
        self.data
    }

    /// Total number of logprob values.
    pub fn element_count(&self) -> usize {
        self.logprobs.iter().map(Vec::len).sum()
    }

    /// Datum `i`'s loss input `key` as dense `f64` values, aligned with row `i`. `Ok(None)` when
    /// the batch has no datums or the datum has no such input; an error when the input's length
    /// differs from the row's.
    pub fn input(&self, i: usize, key: &str) -> Result<Option<Vec<f64>>> {
        let Some(tensor) = self.data.and_then(|d| d[i].loss_fn_inputs.get(key)) else {
            return Ok(None);
        };
        let values = tensor.to_dense_f64(0.0);
        if values.len() != self.logprobs[i].len() {
            return Err(Error::invalid(
                format!("data[{i}].loss_fn_inputs.{key}"),
                format!(
                    "has {} values but the datum has {} logprobs",
                    values.len(),
                    self.logprobs[i].len()
                ),
            ));
        }
        Ok(Some(values))
    }

    /// Per-token weights of row `i`: the datum's `weights` input, or all ones when absent.
    pub fn weights(&self, i: usize) -> Result<Vec<f64>> {
        Ok(self
            .input(i, "weights")?
            .unwrap_or_else(|| vec![1.0; self.logprobs[i].len()]))
    }

    /// Zeros shaped like the rows (a gradient to accumulate into).
    pub fn zeros(&self) -> Vec<Vec<f64>> {
        self.logprobs.iter().map(|r| vec![0.0; r.len()]).collect()
    }
}

/// What a custom loss (or a regularizer) returns: its value, its gradient with respect to each
/// logprob (same shapes as the batch's rows), and metrics to merge into the call's result.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CustomLossOutput {
    /// The scalar loss.
    pub loss: f64,
    /// `∂loss/∂logprobs[i][j]`, one row per datum.
    pub gradients: Vec<Vec<f64>>,
    /// Named numbers to report (merged into the call's metrics).
    pub metrics: BTreeMap<String, f64>,
}

/// A loss computed on the client from the forward pass's logprobs, with its exact gradient.
///
/// Closures `Fn(&LogprobBatch) -> Result<CustomLossOutput>` are custom losses.
///
/// ```
/// use tinker_core::losses::{evaluate_custom_loss, CustomLossOutput, LogprobBatch};
/// // Negative mean logprob over all tokens: the gradient is −1/N for every token.
/// let mean_nll = |batch: &LogprobBatch<'_>| {
///     let n = batch.element_count() as f64;
///     let sum: f64 = batch.logprobs().iter().flatten().sum();
///     let gradients = batch.logprobs().iter().map(|r| vec![-1.0 / n; r.len()]).collect();
///     Ok(CustomLossOutput { loss: -sum / n, gradients, ..Default::default() })
/// };
/// let rows = vec![vec![-1.0, -3.0]];
/// let out = evaluate_custom_loss(&mean_nll, &LogprobBatch::new(&rows).unwrap()).unwrap();
/// assert_eq!(out.loss, 2.0);
/// assert_eq!(out.gradients, vec![vec![-0.5, -0.5]]);
/// ```
pub trait CustomLoss {
    /// Computes the loss and its gradient on one batch.
    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput>;
}

impl<F> CustomLoss for F
where
    F: Fn(&LogprobBatch<'_>) -> Result<CustomLossOutput>,
{
    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput> {
        self(batch)
    }
}

/// Runs `loss` on `batch` and checks what it returned: one gradient row per datum of the row's
/// length, a finite loss and finite gradients.
pub fn evaluate_custom_loss(
    loss: &(impl CustomLoss + ?Sized),
    batch: &LogprobBatch<'_>,
) -> Result<CustomLossOutput> {
    let out = loss.compute(batch)?;
    check_output("custom_loss", &out, batch)?;
    Ok(out)
}

/// Checks a loss output against the batch it was computed on; `what` prefixes error locations.
pub(crate) fn check_output(
    what: &str,
    out: &CustomLossOutput,
    batch: &LogprobBatch<'_>,
) -> Result<()> {
    if !out.loss.is_finite() {
        return Err(Error::invalid(
            format!("{what}.loss"),
            format!("the loss is {}; it must be finite", out.loss),
        ));
    }
    if out.gradients.len() != batch.len() {
        return Err(Error::invalid(
            format!("{what}.gradients"),
            format!(
                "{} gradient rows for {} datums; return one row per datum",
                out.gradients.len(),
                batch.len()
            ),
        ));
    }
    for (i, (g, lp)) in out.gradients.iter().zip(batch.logprobs()).enumerate() {
        if g.len() != lp.len() {
            return Err(Error::invalid(
                format!("{what}.gradients[{i}]"),
                format!(
                    "has {} values but datum {i} has {} logprobs",
                    g.len(),
                    lp.len()
                ),
            ));
        }
    }
    check_finite_rows(&format!("{what}.gradients"), &out.gradients)
}

fn check_finite_rows(what: &str, rows: &[Vec<f64>]) -> Result<()> {
    for (i, row) in rows.iter().enumerate() {
        if let Some(j) = row.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                format!("{what}[{i}][{j}]"),
                format!("value {} is not finite", row[j]),
            ));
        }
    }
    Ok(())
}

fn target_tokens(datum: &Datum, i: usize) -> Result<&TensorData> {
    datum.loss_fn_inputs.get("target_tokens").ok_or_else(|| {
        Error::invalid(
            format!("data[{i}].loss_fn_inputs.target_tokens"),
            "target_tokens missing from loss_fn_inputs; a custom loss needs the targets its logprobs are aligned with",
        )
    })
}

fn element_count(t: &TensorData) -> usize {
    t.shape().iter().product()
}

fn with_target_shape(values: Vec<f32>, targets: &TensorData) -> Result<TensorData> {
    let t = TensorData::from_f32(values);
    match targets.explicit_shape() {
        Some(shape) => t.with_shape(shape.to_vec()),
        None => Ok(t),
    }
}

/// The forward pass's datums (SDK 0.38): each datum keeps its model input (and provenance spans)
/// with only `target_tokens` and `weights` as loss inputs (the user's weights, else zeros shaped
/// like the targets). Other inputs stay on the client, where the loss reads them from the
/// original datums. Errors: empty `data`, a datum without `target_tokens`.
pub fn forward_pass_data(data: &[Datum]) -> Result<Vec<Datum>> {
    if data.is_empty() {
        return Err(Error::invalid("data", "No data provided"));
    }
    data.iter()
        .enumerate()
        .map(|(i, d)| {
            let targets = target_tokens(d, i)?;
            let weights = match d.loss_fn_inputs.get("weights") {
                Some(w) => w.clone(),
                None => with_target_shape(vec![0.0; element_count(targets)], targets)?,
            };
            let mut out = d.clone();
            out.loss_fn_inputs = BTreeMap::from([
                ("target_tokens".to_owned(), targets.clone()),
                ("weights".to_owned(), weights),
            ]);
            Ok(out)
        })
        .collect()
}

/// The per-datum logprobs of the forward pass's output (`loss_fn_outputs[i].logprobs`, flattened
/// row-major), checked against the datums' targets. A malformed output is an [`Error::Decode`].
pub fn extract_logprobs(data: &[Datum], output: &ForwardBackwardOutput) -> Result<Vec<Vec<f64>>> {
    const WHAT: &str = "ForwardBackwardOutput of the custom loss's forward pass";
    if output.loss_fn_outputs.len() != data.len() {
        return Err(Error::decode(
            WHAT,
            format!(
                "loss_fn_outputs has {} entries for {} datums",
                output.loss_fn_outputs.len(),
                data.len()
            ),
        ));
    }
    data.iter()
        .enumerate()
        .map(|(i, d)| {
            let lp = output.logprobs(i).ok_or_else(|| {
                Error::decode(WHAT, format!("loss_fn_outputs[{i}].logprobs is missing"))
            })?;
            let row = lp.to_dense_f64(0.0);
            let want = element_count(target_tokens(d, i)?);
            if row.len() != want {
                return Err(Error::decode(
                    WHAT,
                    format!(
                        "loss_fn_outputs[{i}].logprobs has {} values but the datum has {want} targets",
                        row.len()
                    ),
                ));
            }
            if let Some(j) = row.iter().position(|v| !v.is_finite()) {
                return Err(Error::decode(
                    WHAT,
                    format!("loss_fn_outputs[{i}].logprobs[{j}] is {}", row[j]),
                ));
            }
            Ok(row)
        })
        .collect()
}

/// The backward pass's `weights` for one datum: `−gradient` as `float32`, shaped like
/// `target_tokens`. Errors if a value does not fit in `float32`.
pub fn negated_gradient_weights(
    gradient: &[f64],
    target_tokens: &TensorData,
) -> Result<TensorData> {
    let n = element_count(target_tokens);
    if gradient.len() != n {
        return Err(Error::invalid(
            "custom_loss.gradients",
            format!(
                "{} values for {n} target tokens; a gradient row must match its targets",
                gradient.len()
            ),
        ));
    }
    let weights: Vec<f32> = gradient.iter().map(|g| -*g as f32).collect();
    if let Some(j) = weights.iter().position(|w| !w.is_finite()) {
        return Err(Error::invalid(
            format!("custom_loss.gradients[{j}]"),
            format!("{} does not fit in float32", gradient[j]),
        ));
    }
    with_target_shape(weights, target_tokens)
}

/// The backward pass's datums: the same model inputs and `target_tokens`, with
/// `weights = −∂loss/∂logprobs` (the server's `cross_entropy` is `Σ −logprob·weight`, so its
/// gradient is the custom loss's).
pub fn backward_pass_data(data: &[Datum], loss: &CustomLossOutput) -> Result<Vec<Datum>> {
    if loss.gradients.len() != data.len() {
        return Err(Error::invalid(
            "custom_loss.gradients",
            format!(
                "{} gradient rows for {} datums",
                loss.gradients.len(),
                data.len()
            ),
        ));
    }
    data.iter()
        .zip(&loss.gradients)
        .enumerate()
        .map(|(i, (d, g))| {
            let targets = target_tokens(d, i)?;
            let weights = negated_gradient_weights(g, targets).map_err(|e| match e {
                Error::InvalidInput { location, message } => Error::invalid(
                    location.replacen(
                        "custom_loss.gradients",
                        &format!("custom_loss.gradients[{i}]"),
                        1,
                    ),
                    message,
                ),
                other => other,
            })?;
            let mut out = d.clone();
            out.loss_fn_inputs = BTreeMap::from([
                ("target_tokens".to_owned(), targets.clone()),
                ("weights".to_owned(), weights),
            ]);
            Ok(out)
        })
        .collect()
}

/// The metrics of a `forward_backward_custom` result (SDK 0.38): the backward pass's metrics with
/// the surrogate's `loss:sum` moved to `surrogate_loss:sum`, `loss:sum` set to the custom loss's
/// value, then the loss's own metrics merged in (they win on a name clash, as in the SDK).
///
/// ```
/// use std::collections::BTreeMap;
/// use tinker_core::losses::{merge_custom_metrics, CustomLossOutput};
/// let server = BTreeMap::from([("loss:sum".to_string(), -0.57)]);
/// let loss = CustomLossOutput {
///     loss: 0.69,
///     metrics: BTreeMap::from([("accuracy".to_string(), 0.5)]),
///     ..Default::default()
/// };
/// let merged = merge_custom_metrics(server, &loss);
/// assert_eq!(merged["loss:sum"], 0.69);
/// assert_eq!(merged["surrogate_loss:sum"], -0.57);
/// assert_eq!(merged["accuracy"], 0.5);
/// ```
pub fn merge_custom_metrics(
    mut server_metrics: BTreeMap<String, f64>,
    loss: &CustomLossOutput,
) -> BTreeMap<String, f64> {
    if let Some(surrogate) = server_metrics.remove("loss:sum") {
        server_metrics.insert("surrogate_loss:sum".to_owned(), surrogate);
    }
    server_metrics.insert("loss:sum".to_owned(), loss.loss);
    server_metrics.extend(loss.metrics.iter().map(|(k, v)| (k.clone(), *v)));
    server_metrics
}
