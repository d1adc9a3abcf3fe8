//! Orthogonality of the batch's rows (tinkex_features.md 2.20.6, F124).

use std::collections::BTreeMap;

use nalgebra::DMatrix;

use super::Regularizer;
use crate::error::{Error, Result};
use crate::losses::custom::{CustomLossOutput, LogprobBatch};

/// The penalty on the Gram matrix `G = M·Mᵀ` (n×n).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrthogonalityMode {
    /// `Σ_{i≠j} G²ᵢⱼ`.
    Soft,
    /// `Σ_{i,j} (Gᵢⱼ − δᵢⱼ)²`.
    Hard,
    /// `(trace(G) − n)² + Σ_{i≠j} G²ᵢⱼ`.
    Spectral,
}

/// Which vectors are asked to be orthogonal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrthogonalityAxis {
    /// One vector per datum: its logprobs, zero-padded to the longest row (so two datums are
    /// compared on the positions they share). Tinkex's `rows` on a `[datums, positions]` tensor.
    Datums,
    /// One vector per position, holding that position's logprob in each datum (0 where a datum
    /// is shorter). Tinkex's `sequence` on a `[datums, positions]` tensor.
    Positions,
}

/// Penalises overlap between vectors of the batch. Name `orthogonality`; metric `orthogonality`
/// (the value).
///
/// `M` has one row per vector (see [`OrthogonalityAxis`]); with `normalize` each row is divided by
/// `max(‖row‖₂, 1e−8)`; `G = M·Mᵀ`; the value is the [`OrthogonalityMode`]'s. Gradient:
/// `∂/∂M̃ = 2·D·M̃` with `D = ∂value/∂G` (soft `2G∘(1−I)`, hard `2(G − I)`, spectral
/// `2G∘(1−I) + 2(trace G − n)I`), then through the normalisation
/// `∂/∂Mᵢ = (gᵢ − (gᵢ·m̃ᵢ)m̃ᵢ)/‖Mᵢ‖`.
///
/// **Difference from Tinkex:** Tinkex turns a 1-D tensor (one datum's logprobs, the usual input
/// inside a custom loss) into a single row, so every mode is identically 0 and the penalty
/// silently does nothing. Here the regularizer sees the whole batch, so the datums' 1-D logprob
/// vectors form the rows of `M`; fewer than two vectors is an error explaining why, never a
/// silent zero.
#[derive(Debug, Clone, PartialEq)]
pub struct Orthogonality {
    /// Soft (default), hard or spectral.
    pub mode: OrthogonalityMode,
    /// Normalise each vector first (default true).
    pub normalize: bool,
    /// Datums (default) or positions as the vectors.
    pub axis: OrthogonalityAxis,
}

impl Default for Orthogonality {
    fn default() -> Orthogonality {
        Orthogonality {
            mode: OrthogonalityMode::Soft,
            normalize: true,
            axis: OrthogonalityAxis::Datums,
        }
    }
}

/// Norms below this are treated as this (as in Tinkex).
const NORM_EPS: f64 = 1e-8;

impl Regularizer for Orthogonality {
    fn name(&self) -> &str {
        "orthogonality"
    }

    fn compute(&self, batch: &LogprobBatch<'_>) -> Result<CustomLossOutput> {
        let rows = batch.logprobs();
        let width = rows.iter().map(Vec::len).max().unwrap_or(0);
        let padded = DMatrix::from_fn(rows.len(), width, |i, j| {
            rows[i].get(j).copied().unwrap_or(0.0)
        });
        let m = match self.axis {
            OrthogonalityAxis::Datums => padded,
            OrthogonalityAxis::Positions => padded.transpose(),
        };
        let n = m.nrows();
        if n < 2 || m.ncols() == 0 {
            return Err(Error::invalid(
                "orthogonality",
                format!(
                    "needs at least two non-empty vectors to compare, got {n} of length {}; \
                     a single 1-D logprob vector has nothing to be orthogonal to (Tinkex silently returns 0 here)",
                    m.ncols()
                ),
            ));
        }
        let norms: Vec<f64> = (0..n).map(|i| m.row(i).norm()).collect();
        let mut unit = m.clone();
        if self.normalize {
            for (i, norm) in norms.iter().enumerate() {
                unit.row_mut(i).unscale_mut(norm.max(NORM_EPS));
            }
        }
        let g = &unit * unit.transpose();
        let eye = DMatrix::<f64>::identity(n, n);
        let off = g.component_mul(&(DMatrix::from_element(n, n, 1.0) - &eye));
        let (value, d) = match self.mode {
            OrthogonalityMode::Soft => (off.norm_squared(), &off * 2.0),
            OrthogonalityMode::Hard => {
                let centred = &g - &eye;
                (centred.norm_squared(), centred * 2.0)
            }
            OrthogonalityMode::Spectral => {
                let excess = g.trace() - n as f64;
                (
                    excess * excess + off.norm_squared(),
                    &off * 2.0 + &eye * (2.0 * excess),
                )
            }
        };
        let mut grad = d * &unit * 2.0;
        if self.normalize {
            for (i, norm) in norms.iter().enumerate() {
                let gi = grad.row(i).clone_owned();
                let row = if *norm > NORM_EPS {
                    let ui = unit.row(i);
                    (&gi - ui * gi.dot(&ui)) / *norm
                } else {
                    gi / NORM_EPS
                };
                grad.set_row(i, &row);
            }
        }
        let gradients = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (0..r.len())
                    .map(|j| match self.axis {
                        OrthogonalityAxis::Datums => grad[(i, j)],
                        OrthogonalityAxis::Positions => grad[(j, i)],
                    })
                    .collect()
            })
            .collect();
        Ok(CustomLossOutput {
            loss: value,
            gradients,
            metrics: BTreeMap::from([("orthogonality".to_owned(), value)]),
        })
    }
}
