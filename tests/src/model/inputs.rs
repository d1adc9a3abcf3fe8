//! Reading a request's model inputs and `loss_fn_inputs` into plain vectors, with the checks the
//! real service makes (a user-category error naming the datum and key).

use tinker_core::types::{Chunk, DType, Datum, ModelInput, TensorData, TensorValues, TokenId};

use super::error::ModelError;

/// What the model reads at one position of a [`ModelInput`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Position {
    /// A text token id.
    Token(TokenId),
    /// One position of an image or audio chunk: every such position reads as the same fixed
    /// "media" context, because the toy model does not look at pixels or audio.
    Media,
}

/// The positions of a model input, in order. Image chunks occupy `expected_tokens` media positions
/// (required), dmel chunks the first dimension of their tensor container.
pub fn positions(input: &ModelInput) -> Result<Vec<Position>, ModelError> {
    let mut out = Vec::new();
    for (i, chunk) in input.chunks.iter().enumerate() {
        match chunk {
            Chunk::EncodedText { tokens } => out.extend(tokens.iter().map(|&t| Position::Token(t))),
            other => {
                let n = other
                    .length()
                    .map_err(|e| ModelError::user(format!("chunks[{i}]: {e}")))?;
                out.extend(std::iter::repeat_n(Position::Media, n));
            }
        }
    }
    Ok(out)
}

/// The `target_tokens` of one datum: `n` rows of `k` token ids (`k = 1` for a 1-D tensor).
#[derive(Debug, Clone)]
pub(crate) struct Targets {
    /// The tensor's shape as given: `[n]` or `[n, k]`.
    pub shape: Vec<usize>,
    /// Row-major token ids, already checked against the vocabulary.
    pub ids: Vec<usize>,
}

impl Targets {
    pub fn per_row(&self) -> usize {
        self.shape.get(1).copied().unwrap_or(1)
    }
}

/// Reads and checks `target_tokens`: present, int64, 1-D `(n)` (or 2-D `(n, k)` when allowed),
/// `n` = the input length, ids in `0..vocab`. CSR cells not stored are token 0 (protocol.md 9.2).
pub(crate) fn targets(
    datum: &Datum,
    at: &str,
    n: usize,
    vocab: usize,
    allow_2d: bool,
) -> Result<Targets, ModelError> {
    let key = "target_tokens";
    let where_ = format!("{at}.loss_fn_inputs.{key}");
    let t = datum
        .loss_fn_inputs
        .get(key)
        .ok_or_else(|| ModelError::user(format!("{where_}: required input is missing")))?;
    if t.dtype() != DType::Int64 {
        return Err(ModelError::user(format!(
            "{where_}: must be int64 but is {}",
            t.dtype().name()
        )));
    }
    let shape = t.shape();
    check_shape(&where_, &shape, n, allow_2d)?;
    let raw = dense_i64(t);
    let mut ids = Vec::with_capacity(raw.len());
    for (j, &id) in raw.iter().enumerate() {
        if id < 0 || id as u64 >= vocab as u64 {
            return Err(ModelError::user(format!(
                "{where_}[{j}]: token id {id} is outside the vocabulary 0..{vocab} of the toy model"
            )));
        }
        ids.push(id as usize);
    }
    Ok(Targets { shape, ids })
}

fn check_shape(where_: &str, shape: &[usize], n: usize, allow_2d: bool) -> Result<(), ModelError> {
    let ok_rank = shape.len() == 1 || (allow_2d && shape.len() == 2);
    if !ok_rank {
        let want = if allow_2d { "(N,) or (N, K)" } else { "(N,)" };
        return Err(ModelError::user(format!(
            "{where_}: shape {shape:?} is not {want} for this loss"
        )));
    }
    if shape[0] != n {
        return Err(ModelError::user(format!(
            "{where_}: has {} positions but the model input has {n}; every loss input needs one row per input position",
            shape[0]
        )));
    }
    Ok(())
}

/// Reads an optional float32 input that must have exactly `shape` (the targets' shape).
pub(crate) fn float_input(
    datum: &Datum,
    at: &str,
    key: &str,
    shape: &[usize],
) -> Result<Option<Vec<f64>>, ModelError> {
    let Some(t) = datum.loss_fn_inputs.get(key) else {
        return Ok(None);
    };
    let where_ = format!("{at}.loss_fn_inputs.{key}");
    if t.dtype() != DType::Float32 {
        return Err(ModelError::user(format!(
            "{where_}: must be float32 but is {}",
            t.dtype().name()
        )));
    }
    if t.shape() != shape {
        return Err(ModelError::user(format!(
            "{where_}: shape {:?} does not match target_tokens' shape {shape:?}",
            t.shape()
        )));
    }
    let values = t.to_dense_f64(0.0);
    if let Some(j) = values.iter().position(|x| !x.is_finite()) {
        return Err(ModelError::user(format!(
            "{where_}[{j}]: value is not finite"
        )));
    }
    Ok(Some(values))
}

/// All cells of an int64 tensor, row-major, unlisted CSR cells 0. Exact (no trip through f64).
fn dense_i64(t: &TensorData) -> Vec<i64> {
    let TensorValues::Int64(values) = t.values() else {
        return Vec::new();
    };
    match t.sparse() {
        None => values.clone(),
        Some(csr) => {
            let shape = t.shape();
            let cols = shape[1];
            let mut out = vec![0; shape[0] * cols];
            for r in 0..shape[0] {
                let (a, b) = (
                    csr.crow_indices[r] as usize,
                    csr.crow_indices[r + 1] as usize,
                );
                for k in a..b {
                    out[r * cols + csr.col_indices[k] as usize] = values[k];
                }
            }
            out
        }
    }
}
