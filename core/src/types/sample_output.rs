//! The result of sampling: generated sequences, prompt logprobs and top-k tables
//! (protocol.md 9.5, decoded from protobuf as in 10.5).
//!
//! Top-k tables are kept as the server sends them, one flat `length × k` array of ids and one of
//! logprobs, with accessors that apply the sentinel rules. Decoding 2048 sequences therefore
//! costs a couple of bulk copies per sequence, not a vector per position.

use serde::ser::SerializeSeq;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model_input::TokenId;
use super::tensor::TensorData;
use crate::error::{Error, Result};

/// Why a sequence stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StopReason {
    /// A stop string, stop token or EOS was produced (`"stop"`).
    Stop,
    /// `max_tokens` was reached (`"length"`).
    Length,
}

/// A `length × k` table of alternative tokens and their logprobs, one row per position.
///
/// Cells holding the sentinel (token 0, logprob −99999.0) are padding: a row whose first cell is
/// the sentinel has no entries ([`TopkLogprobs::row`] gives `None`), and trailing sentinel cells
/// of a row are not part of it.
///
/// JSON form (as the Python SDK): a list with one entry per position, `null` or
/// `[[token_id, logprob], ...]`.
///
/// ```
/// use tinker_core::types::TopkLogprobs;
/// let s = TopkLogprobs::SENTINEL_LOGPROB;
/// let table = TopkLogprobs::new(2, vec![5, 9, 0, 0, 7, 0], vec![-0.1, -2.0, s, s, -0.3, s]).unwrap();
/// assert_eq!(table.len(), 3);
/// assert_eq!(table.row(0).unwrap().iter().collect::<Vec<_>>(), vec![(5, -0.1), (9, -2.0)]);
/// assert!(table.row(1).is_none()); // sentinel row
/// assert_eq!(table.row(2).unwrap().token_ids(), &[7]); // trailing sentinel dropped
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct TopkLogprobs {
    k: usize,
    token_ids: Vec<TokenId>,
    logprobs: Vec<f32>,
}

/// One row of a [`TopkLogprobs`] table, without its trailing sentinel cells.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TopkRow<'a> {
    token_ids: &'a [TokenId],
    logprobs: &'a [f32],
}

impl<'a> TopkRow<'a> {
    /// The alternative token ids, best first.
    pub fn token_ids(&self) -> &'a [TokenId] {
        self.token_ids
    }

    /// Their logprobs.
    pub fn logprobs(&self) -> &'a [f32] {
        self.logprobs
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.token_ids.len()
    }

    /// Whether the row has no entries.
    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }

    /// `(token_id, logprob)` pairs.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (TokenId, f32)> + 'a {
        self.token_ids
            .iter()
            .copied()
            .zip(self.logprobs.iter().copied())
    }
}

impl TopkLogprobs {
    /// The padding logprob of a sentinel cell (its token id is 0).
    pub const SENTINEL_LOGPROB: f32 = -99999.0;

    /// A table from flat row-major arrays. `k` must be positive and both arrays a whole number of
    /// rows of the same length.
    pub fn new(k: usize, token_ids: Vec<TokenId>, logprobs: Vec<f32>) -> Result<TopkLogprobs> {
        if k == 0 || token_ids.len() != logprobs.len() || !token_ids.len().is_multiple_of(k) {
            return Err(Error::invalid(
                "topk_logprobs",
                format!(
                    "need k > 0 and two arrays of whole rows of k cells; got k = {k}, {} ids, {} logprobs",
                    token_ids.len(),
                    logprobs.len()
                ),
            ));
        }
        Ok(TopkLogprobs {
            k,
            token_ids,
            logprobs,
        })
    }

    /// Builds a table from rows (`None` = no entries), padding short rows with sentinels.
    pub fn from_rows(rows: &[Option<Vec<(TokenId, f32)>>]) -> TopkLogprobs {
        let k = rows
            .iter()
            .map(|r| r.as_ref().map_or(0, Vec::len))
            .max()
            .unwrap_or(0)
            .max(1);
        let mut token_ids = Vec::with_capacity(rows.len() * k);
        let mut logprobs = Vec::with_capacity(rows.len() * k);
        for row in rows {
            let cells = row.as_deref().unwrap_or(&[]);
            token_ids.extend(cells.iter().map(|c| c.0));
            logprobs.extend(cells.iter().map(|c| c.1));
            let pad = k - cells.len();
            token_ids.extend(std::iter::repeat_n(0, pad));
            logprobs.extend(std::iter::repeat_n(Self::SENTINEL_LOGPROB, pad));
        }
        TopkLogprobs {
            k,
            token_ids,
            logprobs,
        }
    }

    /// Columns per row (the requested k).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Number of rows (positions).
    pub fn len(&self) -> usize {
        self.token_ids.len() / self.k
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.token_ids.is_empty()
    }

    /// Row `i`, or `None` when the row is a sentinel row or `i` is out of range.
    pub fn row(&self, i: usize) -> Option<TopkRow<'_>> {
        let start = i.checked_mul(self.k)?;
        let ids = self.token_ids.get(start..start + self.k)?;
        let lps = &self.logprobs[start..start + self.k];
        let is_sentinel = |j: usize| ids[j] == 0 && lps[j] == Self::SENTINEL_LOGPROB;
        if is_sentinel(0) {
            return None;
        }
        let mut end = self.k;
        while end > 1 && is_sentinel(end - 1) {
            end -= 1;
        }
        Some(TopkRow {
            token_ids: &ids[..end],
            logprobs: &lps[..end],
        })
    }

    /// Every row in order (`None` for sentinel rows).
    pub fn rows(&self) -> impl ExactSizeIterator<Item = Option<TopkRow<'_>>> + '_ {
        (0..self.len()).map(|i| self.row(i))
    }

    /// The rows as owned lists, the Python SDK's representation.
    pub fn to_rows(&self) -> Vec<Option<Vec<(TokenId, f32)>>> {
        self.rows().map(|r| r.map(|r| r.iter().collect())).collect()
    }

    /// The raw row-major token ids, sentinels included.
    pub fn raw_token_ids(&self) -> &[TokenId] {
        &self.token_ids
    }

    /// The raw row-major logprobs, sentinels included.
    pub fn raw_logprobs(&self) -> &[f32] {
        &self.logprobs
    }
}

impl Serialize for TopkLogprobs {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for row in self.rows() {
            let row: Option<Vec<(TokenId, f32)>> = row.map(|r| r.iter().collect());
            seq.serialize_element(&row)?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for TopkLogprobs {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<TopkLogprobs, D::Error> {
        let rows = Vec::<Option<Vec<(TokenId, f32)>>>::deserialize(d)?;
        Ok(TopkLogprobs::from_rows(&rows))
    }
}

/// One generated sequence.
///
/// ```
/// use tinker_core::types::{SampledSequence, StopReason};
/// let seq = SampledSequence::new(StopReason::Length, vec![11, 12], Some(vec![-0.1, -0.2]));
/// assert_eq!(seq.tokens, [11, 12]);
/// assert_eq!(seq.logprobs.as_deref(), Some(&[-0.1f32, -0.2][..]));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampledSequence {
    /// Why generation stopped.
    pub stop_reason: StopReason,
    /// Generated token ids.
    pub tokens: Vec<TokenId>,
    /// Logprob of each generated token, when the server sent them.
    #[serde(default)]
    pub logprobs: Option<Vec<f32>>,
    /// Top-k alternatives per generated position (SDK 0.38), when requested.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk_logprobs: Option<TopkLogprobs>,
    /// The sequence's id from the `asample` reply (SDK 0.38); the result payload does not carry
    /// it, so decoding leaves it `None` and the sampling call fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequence_id: Option<String>,
}

impl SampledSequence {
    /// A sequence with no top-k table and no id.
    pub fn new(
        stop_reason: StopReason,
        tokens: Vec<TokenId>,
        logprobs: Option<Vec<f32>>,
    ) -> SampledSequence {
        SampledSequence {
            stop_reason,
            tokens,
            logprobs,
            topk_logprobs: None,
            sequence_id: None,
        }
    }
}

/// Alternative tokens and their logprobs per prompt position (SDK 0.38): `[L−1, k]` each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptAltTokens {
    /// int64 token ids.
    pub tokens: TensorData,
    /// float32 logprobs.
    pub logprobs: TensorData,
}

/// The result of a sampling call.
///
/// ```
/// use tinker_core::types::{SampleResponse, SampledSequence, StopReason};
/// let response = SampleResponse {
///     sequences: vec![SampledSequence::new(StopReason::Stop, vec![11, 12], None)],
///     prompt_logprobs: Some(vec![None, Some(-1.5)]),
///     ..SampleResponse::default()
/// };
/// assert_eq!(response.sequences[0].stop_reason, StopReason::Stop);
/// assert_eq!(response.prompt_logprobs.as_ref().unwrap()[0], None); // the first token has none
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SampleResponse {
    /// One entry per sample, in the order of the reply's sequence ids.
    pub sequences: Vec<SampledSequence>,
    /// Logprob of each prompt token when requested; `None` where not computed (the first token,
    /// and positions before `prompt_logprobs_last_n`).
    #[serde(default)]
    pub prompt_logprobs: Option<Vec<Option<f32>>>,
    /// Top-k alternatives per prompt position, when requested.
    #[serde(default)]
    pub topk_prompt_logprobs: Option<TopkLogprobs>,
    /// Prompt tokens billed as prefix-cache hits (counted once, not per sample).
    #[serde(default)]
    pub prompt_cache_hit_tokens: u32,
    /// Logprobs of the requested prompt targets (SDK 0.38): float32, same layout as the request,
    /// 0.0 where the request had −1.
    #[serde(default)]
    pub target_prompt_logprobs: Option<TensorData>,
    /// Alternative tokens per prompt position (SDK 0.38).
    #[serde(default)]
    pub prompt_alt_tokens: Option<PromptAltTokens>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const S: f32 = TopkLogprobs::SENTINEL_LOGPROB;

    #[test]
    fn sentinel_rows_are_none_and_trailing_sentinels_are_dropped_but_inner_ones_kept() {
        // Row 0: full. Row 1: sentinel first -> None even though a real cell follows.
        // Row 2: a sentinel in the middle is kept; only the trailing one goes.
        let t = TopkLogprobs::new(
            3,
            vec![1, 2, 3, 0, 4, 0, 5, 0, 0],
            vec![-0.1, -0.2, -0.3, S, -0.4, S, -0.5, S, S],
        )
        .unwrap();
        assert_eq!(
            t.to_rows(),
            vec![
                Some(vec![(1, -0.1), (2, -0.2), (3, -0.3)]),
                None,
                Some(vec![(5, -0.5)]),
            ]
        );
        let t = TopkLogprobs::new(2, vec![6, 0, 7, 8], vec![-1.0, S, -1.0, S]).unwrap();
        // (8, S) is not a sentinel: the id is not 0.
        assert_eq!(t.row(1).unwrap().token_ids(), &[7, 8]);
        assert_eq!(t.row(0).unwrap().len(), 1);
        assert!(t.row(2).is_none());
    }

    #[test]
    fn tables_with_ragged_arrays_are_rejected() {
        assert!(TopkLogprobs::new(0, vec![], vec![]).is_err());
        assert!(TopkLogprobs::new(2, vec![1, 2, 3], vec![0.0; 3]).is_err());
        assert!(TopkLogprobs::new(2, vec![1, 2], vec![0.0; 4]).is_err());
    }

    #[test]
    fn sample_response_json_matches_the_python_shape_and_round_trips() {
        let mut seq =
            SampledSequence::new(StopReason::Length, vec![11, 12], Some(vec![-0.5, -1.0]));
        seq.topk_logprobs = Some(TopkLogprobs::from_rows(&[Some(vec![(11, -0.5)]), None]));
        let response = SampleResponse {
            sequences: vec![seq],
            prompt_logprobs: Some(vec![None, Some(-1.5)]),
            topk_prompt_logprobs: None,
            prompt_cache_hit_tokens: 4,
            target_prompt_logprobs: None,
            prompt_alt_tokens: None,
        };
        let v = serde_json::to_value(&response).unwrap();
        assert_eq!(
            v,
            json!({
                "sequences": [{
                    "stop_reason": "length", "tokens": [11, 12], "logprobs": [-0.5, -1.0],
                    "topk_logprobs": [[[11, -0.5]], null]
                }],
                "prompt_logprobs": [null, -1.5],
                "topk_prompt_logprobs": null,
                "prompt_cache_hit_tokens": 4,
                "target_prompt_logprobs": null,
                "prompt_alt_tokens": null
            })
        );
        let back: SampleResponse = serde_json::from_value(v).unwrap();
        assert_eq!(back, response);
    }
}
