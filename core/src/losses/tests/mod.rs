//! Tests of the custom-loss math: gradients against finite differences, known values, errors,
//! the documented differences from Tinkex, and the wire helpers.

mod errors;
mod gradients;
mod tinkex_differences;
mod wire;

use proptest::prelude::*;

use crate::error::Result;
use crate::losses::{CustomLossOutput, LogprobBatch};
use crate::types::{Datum, ModelInput, TensorData};

/// Central-difference step. With f64 and losses of magnitude |f| the rounding error of a
/// difference quotient is about ε·|f|/h ≈ 2e-11·|f| and the truncation error h²·|f'''|/6 ≈
/// 2e-11·|f'''|; both far below the tolerance below.
const STEP: f64 = 1e-5;
/// Relative tolerance between the analytic and the numeric derivative.
const RELATIVE: f64 = 1e-4;
/// Absolute floor: a derivative near zero has no meaningful relative error (its numeric estimate
/// is dominated by the ~2e-11·(1 + |f|) noise above), so differences below 1e-8·(1 + |f|) —
/// about 500 times that noise and still 1e4 times smaller than the relative bound on a
/// derivative of size 1 — are accepted.
const ABSOLUTE_PER_UNIT_LOSS: f64 = 1e-8;

/// A datum with `n` targets and, optionally, per-token weights.
pub(super) fn datum(n: usize, weights: Option<Vec<f32>>) -> Datum {
    let tokens: Vec<i32> = (1..=n as i32).collect();
    let targets: Vec<i64> = (2..=n as i64 + 1).collect();
    let d = Datum::new(ModelInput::from_tokens(tokens))
        .with_input("target_tokens", TensorData::from_i64(targets));
    match weights {
        Some(w) => d.with_input("weights", TensorData::from_f32(w)),
        None => d,
    }
}

/// Compares every analytic partial derivative of `f` at `x` with a central difference.
pub(super) fn check_gradient(
    f: impl Fn(&[Vec<f64>]) -> Result<CustomLossOutput>,
    x: &[Vec<f64>],
) -> std::result::Result<(), TestCaseError> {
    let at = f(x).map_err(|e| TestCaseError::fail(format!("evaluation failed: {e}")))?;
    prop_assert_eq!(at.gradients.len(), x.len());
    let floor = ABSOLUTE_PER_UNIT_LOSS * (1.0 + at.loss.abs());
    for (i, row) in x.iter().enumerate() {
        prop_assert_eq!(at.gradients[i].len(), row.len());
        for j in 0..row.len() {
            let shifted = |delta: f64| {
                let mut y = x.to_vec();
                y[i][j] += delta;
                f(&y).map(|o| o.loss)
            };
            let (plus, minus) = (shifted(STEP), shifted(-STEP));
            let (plus, minus) = (
                plus.map_err(|e| TestCaseError::fail(e.to_string()))?,
                minus.map_err(|e| TestCaseError::fail(e.to_string()))?,
            );
            let numeric = (plus - minus) / (2.0 * STEP);
            let analytic = at.gradients[i][j];
            let tolerance = RELATIVE * analytic.abs().max(numeric.abs()) + floor;
            prop_assert!(
                (analytic - numeric).abs() <= tolerance,
                "∂/∂x[{}][{}]: analytic {} vs numeric {} (tolerance {}) at x = {:?}",
                i,
                j,
                analytic,
                numeric,
                tolerance,
                x
            );
        }
    }
    Ok(())
}

/// Evaluates a regularizer-like function on plain rows.
pub(super) fn on_rows<'a, L: crate::losses::CustomLoss + ?Sized>(
    loss: &'a L,
) -> impl Fn(&[Vec<f64>]) -> Result<CustomLossOutput> + 'a {
    move |rows| crate::losses::evaluate_custom_loss(loss, &LogprobBatch::new(rows)?)
}

/// Asserts an `InvalidInput` error whose location contains `location`.
pub(super) fn assert_invalid<T: std::fmt::Debug>(result: Result<T>, location: &str) {
    match result {
        Err(crate::Error::InvalidInput {
            location: at,
            message,
        }) => assert!(
            at.contains(location),
            "error at {at:?} ({message}) does not name {location:?}"
        ),
        other => panic!("expected an invalid-input error naming {location:?}, got {other:?}"),
    }
}

/// Rows of logprob-like values: `rows` rows of `len` entries in `range`.
pub(super) fn rows_in(
    rows: std::ops::RangeInclusive<usize>,
    len: std::ops::RangeInclusive<usize>,
    range: std::ops::Range<f64>,
) -> impl Strategy<Value = Vec<Vec<f64>>> {
    prop::collection::vec(prop::collection::vec(range, len), rows)
}

/// Rows shaped like `shape`, values in `range`.
pub(super) fn rows_like(
    shape: &[Vec<f64>],
    range: std::ops::Range<f64>,
) -> impl Strategy<Value = Vec<Vec<f64>>> {
    shape
        .iter()
        .map(|r| prop::collection::vec(range.clone(), r.len()))
        .collect::<Vec<_>>()
}
