//! Combining the per-chunk results of one forward_backward call (protocol.md 11.2, 9.7).
//!
//! Metric keys are `"<name>:<reduction>"`; the suffix after the last `:` says how chunk values
//! fold into one. `mean` and `slack` are weighted by each chunk's number of outputs (datums).
//!
//! | suffix | combined value |
//! |---|---|
//! | `sum` | Σ v |
//! | `min` / `max` | min / max |
//! | `mean` | Σ v·w / Σ w (plain mean when every chunk is empty) |
//! | `slack` | max − weighted mean |
//! | `unique` | every value kept: `key` = first chunk's, `key_1`, `key_2`, … the following ones |
//! | `hash2` | Σ int(v) mod 2⁶⁴ (SDK 0.38) |
//! | `hash_unordered` | CPython's `hash(tuple(sorted(int(v) for v in values)))` (SDK 0.25) |
//!
//! Keys are those of the first chunk; a key missing from any chunk, a key without `:` and a key
//! with an unknown suffix are dropped.
//!
//! `hash2` and `hash_unordered` combine integer hashes that travel as float64 metrics. Each value
//! is truncated toward zero to an integer, as Python's `int(x)` does. `hash2` adds them modulo
//! 2⁶⁴ (the sum as an unsigned 64-bit integer, then converted to float64). `hash_unordered`
//! reproduces 64-bit CPython ≥ 3.8 exactly — integer hashes are not randomised there, so the
//! value is the one the Python SDK computes — and is converted to float64 the same way. A
//! non-finite value (which `int()` rejects) drops the key.

use std::collections::BTreeMap;

use crate::types::ForwardBackwardOutput;

/// Combines the results of a call's chunks, given in chunk (= datum) order.
///
/// `loss_fn_outputs` are concatenated, `loss_fn_output_type` is the first chunk's, and metrics are
/// reduced by [`reduce_metrics`]. No chunks give an empty output with an empty type name.
///
/// ```
/// use std::collections::BTreeMap;
/// use tinker_core::batching::combine_forward_backward_outputs;
/// use tinker_core::types::{ForwardBackwardOutput, TensorData};
/// let chunk = |datums: usize, loss: f64| ForwardBackwardOutput {
///     loss_fn_output_type: "CrossEntropyLossReturn".into(),
///     loss_fn_outputs: vec![BTreeMap::from([("logprobs".to_string(), TensorData::from_f32(vec![-1.0]))]); datums],
///     metrics: BTreeMap::from([("loss:sum".to_string(), loss), ("loss:mean".to_string(), loss / datums as f64)]),
/// };
/// let out = combine_forward_backward_outputs(vec![chunk(3, 3.0), chunk(1, 5.0)]);
/// assert_eq!(out.loss_fn_outputs.len(), 4);
/// assert_eq!(out.metrics["loss:sum"], 8.0);
/// assert_eq!(out.metrics["loss:mean"], (1.0 * 3.0 + 5.0 * 1.0) / 4.0);
/// ```
pub fn combine_forward_backward_outputs(
    chunks: Vec<ForwardBackwardOutput>,
) -> ForwardBackwardOutput {
    let metrics = reduce_metrics(&chunks);
    let total = chunks.iter().map(|c| c.loss_fn_outputs.len()).sum();
    let mut chunks = chunks.into_iter();
    let Some(first) = chunks.next() else {
        return ForwardBackwardOutput::default();
    };
    let mut outputs = Vec::with_capacity(total);
    outputs.extend(first.loss_fn_outputs);
    for chunk in chunks {
        outputs.extend(chunk.loss_fn_outputs);
    }
    ForwardBackwardOutput {
        loss_fn_output_type: first.loss_fn_output_type,
        loss_fn_outputs: outputs,
        metrics,
    }
}

/// Reduces the metrics of a call's chunks (see the module documentation for the rules), each
/// chunk weighted by its number of `loss_fn_outputs`.
pub fn reduce_metrics(chunks: &[ForwardBackwardOutput]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Some(first) = chunks.first() else {
        return out;
    };
    let weights: Vec<f64> = chunks
        .iter()
        .map(|c| c.loss_fn_outputs.len() as f64)
        .collect();
    for key in first.metrics.keys() {
        let Some((_, suffix)) = key.rsplit_once(':') else {
            continue;
        };
        let Some(values) = chunks
            .iter()
            .map(|c| c.metrics.get(key).copied())
            .collect::<Option<Vec<f64>>>()
        else {
            continue;
        };
        let max = || values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let value = match suffix {
            "sum" => values.iter().sum(),
            "min" => values.iter().copied().fold(f64::INFINITY, f64::min),
            "max" => max(),
            "mean" => weighted_mean(&values, &weights),
            "slack" => max() - weighted_mean(&values, &weights),
            "unique" => {
                for (i, v) in values.iter().enumerate().skip(1) {
                    out.insert(format!("{key}_{i}"), *v);
                }
                values[0]
            }
            "hash2" => match hash2(&values) {
                Some(h) => h as f64,
                None => continue,
            },
            "hash_unordered" => match cpython_sorted_tuple_hash(&values) {
                Some(h) => h as f64,
                None => continue,
            },
            _ => continue,
        };
        out.insert(key.clone(), value);
    }
    out
}

fn weighted_mean(values: &[f64], weights: &[f64]) -> f64 {
    let total: f64 = weights.iter().sum();
    if total == 0.0 {
        return values.iter().sum::<f64>() / values.len() as f64;
    }
    values.iter().zip(weights).map(|(v, w)| v * w).sum::<f64>() / total
}

/// Python's `int(x)` for a float: truncation toward zero; `None` for NaN and infinities.
fn truncate(x: f64) -> Option<i128> {
    // Beyond ±2^127 the value would not fit; such "hashes" do not occur (they are 64-bit).
    (x.is_finite() && x.abs() < 1.7e38).then(|| x.trunc() as i128)
}

/// Σ int(v) mod 2^64.
fn hash2(values: &[f64]) -> Option<u64> {
    let mut acc: u64 = 0;
    for &v in values {
        // rem_euclid maps negative integers to their two's-complement residue.
        acc = acc.wrapping_add(truncate(v)?.rem_euclid(1 << 64) as u64);
    }
    Some(acc)
}

/// `hash(tuple(sorted(int(v) for v in values)))` on 64-bit CPython ≥ 3.8.
fn cpython_sorted_tuple_hash(values: &[f64]) -> Option<i64> {
    let mut ints = values
        .iter()
        .map(|&v| truncate(v))
        .collect::<Option<Vec<i128>>>()?;
    ints.sort_unstable();
    // tuplehash (xxHash-based), Objects/tupleobject.c.
    const PRIME_1: u64 = 11_400_714_785_074_694_791;
    const PRIME_2: u64 = 14_029_467_366_897_019_727;
    const PRIME_5: u64 = 2_870_177_450_012_600_261;
    let mut acc = PRIME_5;
    for &n in &ints {
        let lane = cpython_int_hash(n) as u64;
        acc = acc.wrapping_add(lane.wrapping_mul(PRIME_2));
        acc = acc.rotate_left(31);
        acc = acc.wrapping_mul(PRIME_1);
    }
    acc = acc.wrapping_add((ints.len() as u64) ^ (PRIME_5 ^ 3_527_539));
    if acc == u64::MAX {
        return Some(1_546_275_796);
    }
    Some(acc as i64)
}

/// CPython's `hash(int)`: the value modulo the Mersenne prime 2^61 − 1, sign kept, −1 → −2.
fn cpython_int_hash(n: i128) -> i64 {
    const MODULUS: u128 = (1 << 61) - 1;
    let h = (n.unsigned_abs() % MODULUS) as i64;
    let h = if n < 0 { -h } else { h };
    if h == -1 {
        -2
    } else {
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TensorData;

    /// A chunk result with `datums` outputs and the given metrics.
    fn chunk(datums: usize, metrics: &[(&str, f64)]) -> ForwardBackwardOutput {
        ForwardBackwardOutput {
            loss_fn_output_type: "CrossEntropyLossReturn".into(),
            loss_fn_outputs: (0..datums)
                .map(|i| {
                    BTreeMap::from([("logprobs".to_string(), TensorData::from_f32(vec![i as f32]))])
                })
                .collect(),
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
        }
    }

    #[test]
    fn each_reduction_combines_three_chunks_as_the_sdk_does() {
        // Chunks of 1, 3 and 2 datums.
        let chunks = vec![
            chunk(
                1,
                &[
                    ("l:sum", 1.0),
                    ("l:min", 4.0),
                    ("l:max", 4.0),
                    ("l:mean", 1.0),
                    ("l:slack", 1.0),
                    ("c:unique", 10.0),
                ],
            ),
            chunk(
                3,
                &[
                    ("l:sum", 2.0),
                    ("l:min", 2.0),
                    ("l:max", 9.0),
                    ("l:mean", 3.0),
                    ("l:slack", 3.0),
                    ("c:unique", 11.0),
                ],
            ),
            chunk(
                2,
                &[
                    ("l:sum", 3.5),
                    ("l:min", 7.0),
                    ("l:max", 1.0),
                    ("l:mean", 5.0),
                    ("l:slack", 5.0),
                    ("c:unique", 12.0),
                ],
            ),
        ];
        let m = reduce_metrics(&chunks);
        let weighted = (1.0 * 1.0 + 3.0 * 3.0 + 5.0 * 2.0) / 6.0;
        let expected: BTreeMap<String, f64> = [
            ("l:sum", 6.5),
            ("l:min", 2.0),
            ("l:max", 9.0),
            ("l:mean", weighted),
            ("l:slack", 5.0 - weighted),
            ("c:unique", 10.0),
            ("c:unique_1", 11.0),
            ("c:unique_2", 12.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        assert_eq!(m, expected);
    }

    #[test]
    fn keys_missing_from_a_chunk_unknown_suffixes_and_later_only_keys_are_dropped() {
        let chunks = vec![
            chunk(
                1,
                &[
                    ("loss:sum", 1.0),
                    ("partial:sum", 1.0),
                    ("x:median", 3.0),
                    ("nosuffix", 1.0),
                ],
            ),
            chunk(
                1,
                &[
                    ("loss:sum", 2.0),
                    ("x:median", 4.0),
                    ("nosuffix", 1.0),
                    ("late:sum", 9.0),
                ],
            ),
        ];
        let m = reduce_metrics(&chunks);
        assert_eq!(m, BTreeMap::from([("loss:sum".to_string(), 3.0)]));
    }

    #[test]
    fn a_single_chunk_keeps_its_metrics_and_no_chunks_give_nothing() {
        let one = vec![chunk(
            2,
            &[("loss:mean", 0.25), ("clock_cycle:unique", 7.0)],
        )];
        assert_eq!(reduce_metrics(&one), one[0].metrics);
        assert!(reduce_metrics(&[]).is_empty());
        assert_eq!(
            combine_forward_backward_outputs(vec![]),
            ForwardBackwardOutput::default()
        );
    }

    #[test]
    fn mean_of_chunks_without_outputs_falls_back_to_the_plain_mean() {
        let chunks = vec![chunk(0, &[("a:mean", 1.0)]), chunk(0, &[("a:mean", 3.0)])];
        assert_eq!(reduce_metrics(&chunks)["a:mean"], 2.0);
    }

    #[test]
    fn hash2_adds_truncated_integers_modulo_2_pow_64() {
        let chunks = vec![
            chunk(1, &[("h:hash2", 2f64.powi(63))]),
            chunk(1, &[("h:hash2", 2f64.powi(63) + 4096.0)]),
            chunk(1, &[("h:hash2", -1.9)]), // int(-1.9) == -1 == 2^64 - 1
        ];
        // 2^63 + 2^63 + 4096 - 1 = 2^64 + 4095 ≡ 4095.
        assert_eq!(reduce_metrics(&chunks)["h:hash2"], 4095.0);
        let nan = vec![chunk(1, &[("h:hash2", f64::NAN)])];
        assert!(reduce_metrics(&nan).is_empty());
    }

    #[test]
    fn hash_unordered_matches_cpython_and_ignores_chunk_order() {
        // Values printed by CPython 3.11 (64-bit): hash(()), hash((1, 2)), hash((-1,)),
        // hash((2**61,)), hash(tuple(sorted([3, -5, 10**20]))).
        assert_eq!(
            cpython_sorted_tuple_hash(&[]),
            Some(5_740_354_900_026_072_187)
        );
        assert_eq!(
            cpython_sorted_tuple_hash(&[2.0, 1.0]),
            Some(-3_550_055_125_485_641_917)
        );
        assert_eq!(
            cpython_sorted_tuple_hash(&[-1.0]),
            Some(8_078_679_518_589_016_365)
        );
        assert_eq!(
            cpython_sorted_tuple_hash(&[2f64.powi(61)]),
            Some(-6_644_214_454_873_602_895)
        );
        assert_eq!(
            cpython_sorted_tuple_hash(&[1e20, 3.0, -5.0]),
            Some(-7_055_679_491_723_352_071)
        );
        let a = reduce_metrics(&[
            chunk(1, &[("h:hash_unordered", 1.0)]),
            chunk(1, &[("h:hash_unordered", 2.0)]),
        ]);
        let b = reduce_metrics(&[
            chunk(1, &[("h:hash_unordered", 2.0)]),
            chunk(1, &[("h:hash_unordered", 1.0)]),
        ]);
        assert_eq!(a, b);
        assert_eq!(a["h:hash_unordered"], -3_550_055_125_485_641_917i64 as f64);
    }

    #[test]
    fn outputs_concatenate_in_chunk_order_and_the_first_type_wins() {
        let mut second = chunk(2, &[("loss:sum", 1.0)]);
        second.loss_fn_output_type = "Other".into();
        let out = combine_forward_backward_outputs(vec![chunk(1, &[("loss:sum", 1.0)]), second]);
        assert_eq!(out.loss_fn_output_type, "CrossEntropyLossReturn");
        let firsts: Vec<f32> = out
            .loss_fn_outputs
            .iter()
            .map(|o| o["logprobs"].as_f32().unwrap()[0])
            .collect();
        assert_eq!(firsts, vec![0.0, 0.0, 1.0]);
        assert_eq!(out.metrics["loss:sum"], 2.0);
    }
}
