//! `Datum`: one training example of a forward/backward pass (protocol.md 9.3).
//!
//! A datum is a model input plus named per-position tensors (`target_tokens`, `weights`,
//! `advantages`, ...). Every tensor's first dimension equals the input's length, because position
//! *i* of the input predicts token *i + 1* of the full sequence. Datums only travel inside the
//! protobuf forward_backward request.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model_input::ModelInput;
use super::tensor::{DType, TensorData};
use crate::error::{Error, Result};

/// Where a stretch of a datum's positions came from: a sampled sequence's prompt or its sampled
/// tokens (SDK 0.38 provenance, used by `stable_reinforce`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProvenanceSpan {
    /// Positions `[offset, offset + length)` of the named sequence's prompt.
    PromptTokens {
        /// The sequence id returned by sampling.
        sequence_id: String,
        /// First position within the prompt.
        #[serde(default)]
        offset: u64,
        /// Number of positions.
        length: u64,
    },
    /// Positions `[offset, offset + length)` of the named sequence's sampled tokens.
    SampledTokens {
        /// The sequence id returned by sampling.
        sequence_id: String,
        /// First position within the sampled tokens.
        #[serde(default)]
        offset: u64,
        /// Number of positions.
        length: u64,
    },
}

impl ProvenanceSpan {
    /// Number of positions the span covers.
    pub fn length(&self) -> u64 {
        match self {
            ProvenanceSpan::PromptTokens { length, .. }
            | ProvenanceSpan::SampledTokens { length, .. } => *length,
        }
    }
}

/// Keys whose dtype the official SDK fixes when the user passes plain lists (protocol.md 9.2).
pub fn expected_dtype(key: &str) -> Option<DType> {
    match key {
        "target_tokens" => Some(DType::Int64),
        "weights"
        | "advantages"
        | "logprobs"
        | "clip_low_threshold"
        | "clip_high_threshold"
        | "sequence_ratio_mask" => Some(DType::Float32),
        _ => None,
    }
}

/// One training example.
///
/// ```
/// use tinker_core::types::{Datum, ModelInput, TensorData};
/// // "1 2 3 4": the model reads 1 2 3 and predicts 2 3 4; the first target is masked out.
/// let datum = Datum::new(ModelInput::from_tokens(vec![1, 2, 3]))
///     .with_input("target_tokens", TensorData::from_i64(vec![2, 3, 4]))
///     .with_input("weights", TensorData::from_f32(vec![0.0, 1.0, 1.0]));
/// datum.validate(0).unwrap();
/// assert_eq!(datum.estimated_bytes(), 3 * 4 + 3 * 8 + 3 * 4);
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Datum {
    /// What the model reads.
    pub model_input: ModelInput,
    /// Named per-position tensors the loss function consumes.
    pub loss_fn_inputs: BTreeMap<String, TensorData>,
    /// Provenance of the model input's positions (must tile its length when given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub model_input_spans: Vec<ProvenanceSpan>,
    /// Provenance of the targets' positions (must tile `target_tokens` when given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub loss_fn_input_spans: Vec<ProvenanceSpan>,
}

impl Datum {
    /// A datum with no loss inputs yet.
    pub fn new(model_input: ModelInput) -> Datum {
        Datum {
            model_input,
            ..Datum::default()
        }
    }

    /// Adds (or replaces) a loss input.
    pub fn with_input(mut self, name: impl Into<String>, tensor: TensorData) -> Datum {
        self.loss_fn_inputs.insert(name.into(), tensor);
        self
    }

    /// Bytes this datum adds to the forward_backward size estimate (protocol.md 10.2), used for
    /// chunking and for the dispatch byte budget.
    pub fn estimated_bytes(&self) -> usize {
        self.model_input.estimated_proto_bytes()
            + self
                .loss_fn_inputs
                .values()
                .map(TensorData::estimated_bytes)
                .sum::<usize>()
    }

    /// Checks the datum before anything is sent. `index` is its position in the batch, used in
    /// error locations (`data[3].loss_fn_inputs.weights`).
    pub fn validate(&self, index: usize) -> Result<()> {
        let here = format!("data[{index}]");
        let n = self.model_input.length().map_err(|e| match e {
            Error::InvalidInput { location, message } => {
                Error::invalid(format!("{here}.model_input ({location})"), message)
            }
            other => other,
        })?;
        if n == 0 {
            return Err(Error::invalid(
                format!("{here}.model_input"),
                "the model input is empty",
            ));
        }
        for (i, chunk) in self.model_input.chunks.iter().enumerate() {
            if matches!(chunk, super::model_input::Chunk::ImageAssetPointer { .. }) {
                return Err(Error::invalid(
                    format!("{here}.model_input.chunks[{i}]"),
                    "image_asset_pointer chunks cannot be sent in forward_backward; inline the image bytes",
                ));
            }
        }
        for (key, tensor) in &self.loss_fn_inputs {
            let location = format!("{here}.loss_fn_inputs.{key}");
            tensor.validate(&location)?;
            if tensor.first_dim() != n {
                return Err(Error::invalid(
                    location,
                    format!(
                        "has {} positions but the model input has {n}; every loss input needs one row per input position",
                        tensor.first_dim()
                    ),
                ));
            }
            if let Some(want) = expected_dtype(key) {
                if tensor.dtype() != want {
                    return Err(Error::invalid(
                        location,
                        format!("must be {} but is {}", want.name(), tensor.dtype().name()),
                    ));
                }
            }
        }
        if self.model_input_spans.is_empty() != self.loss_fn_input_spans.is_empty() {
            return Err(Error::invalid(
                format!("{here}.model_input_spans"),
                "model_input_spans and loss_fn_input_spans must be given together",
            ));
        }
        if !self.model_input_spans.is_empty() {
            let covered: u64 = self
                .model_input_spans
                .iter()
                .map(ProvenanceSpan::length)
                .sum();
            if covered != n as u64 {
                return Err(Error::invalid(
                    format!("{here}.model_input_spans"),
                    format!("spans cover {covered} positions but the model input has {n}"),
                ));
            }
            let targets = self
                .loss_fn_inputs
                .get("target_tokens")
                .map(TensorData::first_dim)
                .unwrap_or(0);
            let covered: u64 = self
                .loss_fn_input_spans
                .iter()
                .map(ProvenanceSpan::length)
                .sum();
            if covered != targets as u64 {
                return Err(Error::invalid(
                    format!("{here}.loss_fn_input_spans"),
                    format!("spans cover {covered} positions but target_tokens has {targets}"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sft(tokens: Vec<i32>, targets: Vec<i64>, weights: Vec<f32>) -> Datum {
        Datum::new(ModelInput::from_tokens(tokens))
            .with_input("target_tokens", TensorData::from_i64(targets))
            .with_input("weights", TensorData::from_f32(weights))
    }

    #[test]
    fn a_length_mismatch_is_rejected_naming_the_datum_and_key() {
        let err = sft(vec![1, 2, 3], vec![2, 3], vec![1.0, 1.0, 1.0])
            .validate(7)
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("data[7].loss_fn_inputs.target_tokens"),
            "{text}"
        );
        assert!(
            text.contains("has 2 positions but the model input has 3"),
            "{text}"
        );
    }

    #[test]
    fn a_wrongly_typed_known_key_is_rejected() {
        let d = Datum::new(ModelInput::from_tokens(vec![1, 2]))
            .with_input("target_tokens", TensorData::from_f32(vec![2.0, 3.0]));
        assert!(d
            .validate(0)
            .unwrap_err()
            .to_string()
            .contains("must be int64"));
    }

    #[test]
    fn spans_must_tile_the_input_and_targets() {
        let mut d = sft(vec![1, 2, 3], vec![2, 3, 4], vec![1.0; 3]);
        d.model_input_spans = vec![ProvenanceSpan::PromptTokens {
            sequence_id: "s".into(),
            offset: 0,
            length: 2,
        }];
        d.loss_fn_input_spans = vec![ProvenanceSpan::SampledTokens {
            sequence_id: "s".into(),
            offset: 0,
            length: 3,
        }];
        assert!(d
            .validate(0)
            .unwrap_err()
            .to_string()
            .contains("cover 2 positions"));
        d.model_input_spans.push(ProvenanceSpan::SampledTokens {
            sequence_id: "s".into(),
            offset: 0,
            length: 1,
        });
        d.validate(0).unwrap();
    }
}
