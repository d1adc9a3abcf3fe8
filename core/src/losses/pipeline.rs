//! A base loss plus weighted regularizers as one loss, with per-regularizer metrics and gradient
//! norms (tinkex_features.md 2.20.1-2.20.4).
//!
//! The core spawns nothing, so "parallel evaluation" is split in two: [`RegularizerPipeline::jobs`]
//! hands out one independent, pure job per regularizer, an [`Executor`] runs them (the core's
//! [`Sequential`] in order; a runtime adapter may run them on threads, e.g. inside
//! `std::thread::scope`), and the pipeline assembles the results in input order. Results do not
//! depend on the executor.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::custom::{
    check_output, evaluate_custom_loss, CustomLoss, CustomLossOutput, LogprobBatch,
};
use super::regularizers::Regularizer;
use crate::error::{Error, Result};

/// One regularizer's evaluation, ready to run anywhere (it borrows the batch for `'a`).
pub type RegularizerJob<'a> = Box<dyn FnOnce() -> Result<CustomLossOutput> + Send + 'a>;

/// Runs a pipeline's regularizer jobs and returns their results in the same order.
///
/// Closures `Fn(Vec<RegularizerJob>) -> Vec<Result<CustomLossOutput>>` are executors.
pub trait Executor {
    /// Runs every job; the i-th result is the i-th job's.
    fn run_all<'a>(&self, jobs: Vec<RegularizerJob<'a>>) -> Vec<Result<CustomLossOutput>>;
}

impl<F> Executor for F
where
    F: for<'a> Fn(Vec<RegularizerJob<'a>>) -> Vec<Result<CustomLossOutput>>,
{
    fn run_all<'a>(&self, jobs: Vec<RegularizerJob<'a>>) -> Vec<Result<CustomLossOutput>> {
        self(jobs)
    }
}

/// Runs jobs one after another on the caller's thread (the core's executor).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sequential;

impl Executor for Sequential {
    fn run_all<'a>(&self, jobs: Vec<RegularizerJob<'a>>) -> Vec<Result<CustomLossOutput>> {
        jobs.into_iter().map(|job| job()).collect()
    }
}

/// The Euclidean norm of a gradient over all its rows (Tinkex's `GradientTracker.compute_grad_norm`).
pub fn gradient_norm(gradients: &[Vec<f64>]) -> f64 {
    super::regularizers::flat_norm(gradients)
}

/// One regularizer's share of a pipeline evaluation (Tinkex's `RegularizerOutput`).
#[derive(Debug, Clone, PartialEq)]
pub struct RegularizerOutput {
    /// Its name in the pipeline.
    pub name: String,
    /// The raw value (before the weight).
    pub value: f64,
    /// Its weight.
    pub weight: f64,
    /// `weight · value`, its share of the total loss.
    pub contribution: f64,
    /// `‖∂value/∂logprobs‖₂`.
    pub grad_norm: f64,
    /// `weight · grad_norm`: the norm of its share of the total gradient.
    pub grad_norm_weighted: f64,
    /// The regularizer's own metrics.
    pub metrics: BTreeMap<String, f64>,
}

/// The result of a pipeline evaluation (Tinkex's `CustomLossOutput`).
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineOutput {
    /// `base + Σᵢ weightᵢ · valueᵢ`.
    pub loss_total: f64,
    /// `∂loss_total/∂logprobs`, one row per datum.
    pub gradients: Vec<Vec<f64>>,
    /// The base loss's value.
    pub base_loss: f64,
    /// `‖∂base/∂logprobs‖₂`.
    pub base_grad_norm: f64,
    /// The base loss's metrics.
    pub base_metrics: BTreeMap<String, f64>,
    /// Each regularizer's share, in the order they were added.
    pub regularizers: Vec<RegularizerOutput>,
    /// `Σᵢ weightᵢ · valueᵢ`.
    pub regularizer_total: f64,
    /// `‖∂loss_total/∂logprobs‖₂`.
    pub total_grad_norm: f64,
}

impl PipelineOutput {
    /// Flat metrics: the base loss's own, `loss_total`, `base_loss`, `regularizer_total`,
    /// `base_grad_norm`, `total_grad_norm`, and per regularizer `<name>/value`, `<name>/weight`,
    /// `<name>/contribution`, `<name>/grad_norm`, `<name>/grad_norm_weighted` and
    /// `<name>/<metric>` for its own metrics.
    pub fn metrics(&self) -> BTreeMap<String, f64> {
        let mut m = self.base_metrics.clone();
        m.insert("loss_total".to_owned(), self.loss_total);
        m.insert("base_loss".to_owned(), self.base_loss);
        m.insert("regularizer_total".to_owned(), self.regularizer_total);
        m.insert("base_grad_norm".to_owned(), self.base_grad_norm);
        m.insert("total_grad_norm".to_owned(), self.total_grad_norm);
        for r in &self.regularizers {
            let n = &r.name;
            m.insert(format!("{n}/value"), r.value);
            m.insert(format!("{n}/weight"), r.weight);
            m.insert(format!("{n}/contribution"), r.contribution);
            m.insert(format!("{n}/grad_norm"), r.grad_norm);
            m.insert(format!("{n}/grad_norm_weighted"), r.grad_norm_weighted);
            for (k, v) in &r.metrics {
                m.insert(format!("{n}/{k}"), *v);
            }
        }
        m
    }

    /// The total as a custom-loss result (value, gradient, flat [`PipelineOutput::metrics`]).
    pub fn into_custom_loss_output(self) -> CustomLossOutput {
        CustomLossOutput {
            loss: self.loss_total,
            metrics: self.metrics(),
            gradients: self.gradients,
        }
    }
}

struct Entry {
    name: String,
    weight: f64,
    regularizer: Arc<dyn Regularizer>,
}

/// A base loss plus weighted regularizers: `loss_total = base + Σᵢ weightᵢ · valueᵢ`, with its
/// exact gradient, per-regularizer metrics and gradient norms. It is itself a [`CustomLoss`]
/// (evaluated sequentially), so it can be handed to `forward_backward_custom` as is.
///
/// Unlike Tinkex there is no `track_grad_norms` switch: every part already comes with its
/// gradient, so the norms cost one pass over the numbers and are always reported.
///
/// ```
/// use tinker_core::losses::{CustomLossOutput, LogprobBatch, RegularizerPipeline};
/// use tinker_core::losses::regularizers::{Entropy, L2};
/// let nll = |b: &LogprobBatch<'_>| {
///     let g = b.logprobs().iter().map(|r| vec![-1.0; r.len()]).collect();
///     Ok(CustomLossOutput { loss: -b.logprobs().iter().flatten().sum::<f64>(), gradients: g, ..Default::default() })
/// };
/// let pipeline = RegularizerPipeline::new(nll)
///     .add(0.01, L2::default()).unwrap()
///     .add(0.1, Entropy::default()).unwrap();
/// let rows = vec![vec![-1.0, -2.0]];
/// let out = pipeline.evaluate(&LogprobBatch::new(&rows).unwrap()).unwrap();
/// assert_eq!(out.base_loss, 3.0);
/// assert_eq!(out.regularizers[0].value, 5.0);
/// assert_eq!(out.loss_total, out.base_loss + out.regularizer_total);
/// assert!(out.metrics().contains_key("entropy/contribution"));
/// ```
pub struct RegularizerPipeline {
    base: Box<dyn CustomLoss + Send + Sync>,
    entries: Vec<Entry>,
}

impl fmt::Debug for RegularizerPipeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<(&str, f64)> = self
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.weight))
            .collect();
        f.debug_struct("RegularizerPipeline")
            .field("regularizers", &names)
            .finish_non_exhaustive()
    }
}

impl RegularizerPipeline {
    /// A pipeline with `base` as its base loss and no regularizer yet.
    pub fn new(base: impl CustomLoss + Send + Sync + 'static) -> RegularizerPipeline {
        RegularizerPipeline {
            base: Box::new(base),
            entries: Vec::new(),
        }
    }

    /// Adds `regularizer` under its own name with `weight` (finite, `>= 0`).
    pub fn add(
        self,
        weight: f64,
        regularizer: impl Regularizer + 'static,
    ) -> Result<RegularizerPipeline> {
        let name = regularizer.name().to_owned();
        self.add_named(name, weight, regularizer)
    }

    /// Adds `regularizer` under `name` (non-empty, unique in the pipeline) with `weight`.
    pub fn add_named(
        mut self,
        name: impl Into<String>,
        weight: f64,
        regularizer: impl Regularizer + 'static,
    ) -> Result<RegularizerPipeline> {
        let name = name.into();
        let at = format!("regularizers[{}]", self.entries.len());
        if name.is_empty() {
            return Err(Error::invalid(format!("{at}.name"), "the name is empty"));
        }
        if self.entries.iter().any(|e| e.name == name) {
            return Err(Error::invalid(
                format!("{at}.name"),
                format!("Duplicate regularizer name {name:?}; give each one a distinct name with add_named"),
            ));
        }
        if !(weight.is_finite() && weight >= 0.0) {
            return Err(Error::invalid(
                format!("{at}.weight"),
                format!("{weight} is not allowed for {name:?}; weights are finite and >= 0"),
            ));
        }
        regularizer.validate()?;
        self.entries.push(Entry {
            name,
            weight,
            regularizer: Arc::new(regularizer),
        });
        Ok(self)
    }

    /// Number of regularizers.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no regularizer (the total is then the base loss).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// One independent job per regularizer, in the order they were added; each computes its
    /// regularizer on `batch` and checks the output's shapes. Run them with any [`Executor`] and
    /// give the results to [`RegularizerPipeline::assemble`].
    pub fn jobs<'a>(&'a self, batch: LogprobBatch<'a>) -> Vec<RegularizerJob<'a>> {
        self.entries
            .iter()
            .map(|e| -> RegularizerJob<'a> {
                Box::new(move || {
                    let out = e.regularizer.compute(&batch)?;
                    check_output(&format!("regularizers.{}", e.name), &out, &batch)?;
                    Ok(out)
                })
            })
            .collect()
    }

    /// Evaluates the base loss and combines it with the regularizers' results (in job order).
    /// The first failed regularizer, in order, is the error.
    pub fn assemble(
        &self,
        batch: &LogprobBatch<'_>,
        results: Vec<Result<CustomLossOutput>>,
    ) -> Result<PipelineOutput> {
        if results.len() != self.entries.len() {
            return Err(Error::invalid(
                "regularizers",
                format!(
                    "the executor returned {} results for {} jobs",
                    results.len(),
                    self.entries.len()
                ),
            ));
        }
        let base = evaluate_custom_loss(self.base.as_ref(), batch)?;
        let mut gradients = base.gradients.clone();
        let mut regularizers = Vec::with_capacity(results.len());
        let mut regularizer_total = 0.0;
        for (entry, result) in self.entries.iter().zip(results) {
            let out = result?;
            for (total, g) in gradients.iter_mut().zip(&out.gradients) {
                for (t, v) in total.iter_mut().zip(g) {
                    *t += entry.weight * v;
                }
            }
            let contribution = entry.weight * out.loss;
            regularizer_total += contribution;
            let grad_norm = gradient_norm(&out.gradients);
            regularizers.push(RegularizerOutput {
                name: entry.name.clone(),
                value: out.loss,
                weight: entry.weight,
                contribution,
                grad_norm,
                grad_norm_weighted: entry.weight * grad_norm,
                metrics: out.metrics,
            });
        }
        Ok(PipelineOutput {
            loss_total: base.loss + regularizer_total,
            total_grad_norm: gradient_norm(&gradients),
            gradients,
            base_loss: base.loss,
            base_grad_norm: gradient_norm(&base.gradients),
            base_metrics: base.metrics,
            regularizers,
            regularizer_total,
        })
    }

    /// Evaluates everything on the caller's thread.
    pub fn evaluate(&self, batch: &LogprobBatch<'_>) -> Result<PipelineOutput> {
        self.evaluate_with(batch, &Sequential)
    }

    /// Evaluates the regularizers with `executor` (e.g. a runtime's thread pool), then the base
    /// loss, and combines them.
    pub fn evaluate_with(
        &self,
        batch: &LogprobBatch<'_>,
        executor: &dyn Executor,
    ) -> Result<PipelineOutput> {
        let results = executor.run_all(self.jobs(*batch));
        self.assemble(batch, results)
    }
}

impl CustomLoss for RegularizerPipeline {
    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput> {
        Ok(self.evaluate(batch)?.into_custom_loss_output())
    }
}
