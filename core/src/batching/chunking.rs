//! Splitting a forward_backward call's datums into requests (protocol.md 11.1).

use std::ops::Range;

use crate::error::{Error, Result};
use crate::types::Datum;

/// The server's limits on one forward_backward request (from `/client/config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLimits {
    /// Most datums per request (`fwdbwd_max_chunk_len`, default 1024).
    pub max_datums: usize,
    /// Most estimated bytes per request (`fwdbwd_max_chunk_bytes_count`, default 5,000,000),
    /// measured with [`Datum::estimated_bytes`]. A datum larger than this travels alone.
    pub max_bytes: usize,
}

impl Default for ChunkLimits {
    fn default() -> ChunkLimits {
        ChunkLimits {
            max_datums: 1024,
            max_bytes: 5_000_000,
        }
    }
}

/// One request's share of a call: a range of the call's datums and their estimated size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatumChunk {
    /// Indices into the call's datums.
    pub range: Range<usize>,
    /// Σ [`Datum::estimated_bytes`] over the range (what the dispatch byte budget counts).
    pub estimated_bytes: usize,
}

/// Splits `data` into consecutive chunks within `limits`, in order, as the official SDK does.
///
/// A chunk is closed before a datum that would take it past `max_bytes` (unless the chunk is
/// empty: an oversized datum goes alone) or when it already holds `max_datums`.
/// Empty `data` is [`Error::InvalidInput`] ("No data provided"). A `max_datums` of 0 is
/// treated as 1.
///
/// ```
/// use tinker_core::batching::{plan_chunks, ChunkLimits};
/// use tinker_core::types::{Datum, ModelInput};
/// let data: Vec<Datum> = (0..5).map(|_| Datum::new(ModelInput::from_tokens(vec![1; 10]))).collect();
/// // 40 estimated bytes each; at most 100 bytes per chunk -> 2 + 2 + 1.
/// let chunks = plan_chunks(&data, ChunkLimits { max_datums: 1024, max_bytes: 100 }).unwrap();
/// let ranges: Vec<_> = chunks.iter().map(|c| c.range.clone()).collect();
/// assert_eq!(ranges, vec![0..2, 2..4, 4..5]);
/// assert_eq!(chunks[0].estimated_bytes, 80);
/// ```
pub fn plan_chunks(data: &[Datum], limits: ChunkLimits) -> Result<Vec<DatumChunk>> {
    if data.is_empty() {
        return Err(Error::invalid("data", "No data provided"));
    }
    let max_datums = limits.max_datums.max(1);
    let mut chunks = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (i, datum) in data.iter().enumerate() {
        let b = datum.estimated_bytes();
        let len = i - start;
        if len > 0 && (bytes.saturating_add(b) > limits.max_bytes || len == max_datums) {
            chunks.push(DatumChunk {
                range: start..i,
                estimated_bytes: bytes,
            });
            start = i;
            bytes = 0;
        }
        bytes = bytes.saturating_add(b);
    }
    chunks.push(DatumChunk {
        range: start..data.len(),
        estimated_bytes: bytes,
    });
    Ok(chunks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{ModelInput, TensorData};

    /// A datum of `n` tokens and an int64 target per token: 12 estimated bytes per token.
    fn datum(n: usize) -> Datum {
        Datum::new(ModelInput::from_tokens(vec![1; n]))
            .with_input("target_tokens", TensorData::from_i64(vec![2; n]))
    }

    fn ranges(data: &[Datum], max_datums: usize, max_bytes: usize) -> Vec<Range<usize>> {
        plan_chunks(
            data,
            ChunkLimits {
                max_datums,
                max_bytes,
            },
        )
        .unwrap()
        .into_iter()
        .map(|c| c.range)
        .collect()
    }

    #[test]
    fn the_default_limits_are_the_sdk_defaults() {
        assert_eq!(
            ChunkLimits::default(),
            ChunkLimits {
                max_datums: 1024,
                max_bytes: 5_000_000
            }
        );
    }

    #[test]
    fn chunks_close_on_the_datum_count() {
        let data: Vec<Datum> = (0..2500).map(|_| datum(1)).collect();
        assert_eq!(
            ranges(&data, 1024, 5_000_000),
            vec![0..1024, 1024..2048, 2048..2500]
        );
    }

    #[test]
    fn chunks_close_before_exceeding_the_byte_limit_and_exactly_full_is_allowed() {
        // 120 bytes each: 120 + 120 = 240 fits a 240 limit exactly; a third would not.
        let data: Vec<Datum> = (0..5).map(|_| datum(10)).collect();
        assert_eq!(ranges(&data, 1024, 240), vec![0..2, 2..4, 4..5]);
        assert_eq!(ranges(&data, 1024, 239), vec![0..1, 1..2, 2..3, 3..4, 4..5]);
    }

    #[test]
    fn an_oversized_datum_travels_alone_between_its_neighbours() {
        let data = vec![datum(1), datum(1), datum(1000), datum(1)];
        let chunks = plan_chunks(
            &data,
            ChunkLimits {
                max_datums: 1024,
                max_bytes: 100,
            },
        )
        .unwrap();
        let got: Vec<_> = chunks
            .iter()
            .map(|c| (c.range.clone(), c.estimated_bytes))
            .collect();
        assert_eq!(got, vec![(0..2, 24), (2..3, 12_000), (3..4, 12)]);
    }

    #[test]
    fn empty_data_is_rejected_before_anything_is_sent() {
        let err = plan_chunks(&[], ChunkLimits::default()).unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("No data provided"), "{err}");
    }

    #[test]
    fn the_python_workload_splits_like_the_sdk() {
        // python-anchors.md: RL 2048x450 went out in 4 chunks, SFT 2048x450 in 3.
        let rl = |n: usize| {
            datum(n)
                .with_input("logprobs", TensorData::from_f32(vec![0.0; n]))
                .with_input("advantages", TensorData::from_f32(vec![0.0; n]))
        };
        let sft = |n: usize| datum(n).with_input("weights", TensorData::from_f32(vec![0.0; n]));
        let rl_data: Vec<Datum> = (0..2048).map(|_| rl(450)).collect();
        let sft_data: Vec<Datum> = (0..2048).map(|_| sft(450)).collect();
        assert_eq!(
            plan_chunks(&rl_data, ChunkLimits::default()).unwrap().len(),
            4
        );
        assert_eq!(
            plan_chunks(&sft_data, ChunkLimits::default())
                .unwrap()
                .len(),
            3
        );
    }
}
