//! Decoding the protobuf results of forward_backward and sample futures (protocol.md 10.4, 10.5).
//!
//! prost parses the message structure; since every byte field is a [`Bytes`], that parse slices
//! the body instead of copying it. The numeric arrays are then copied once, in bulk, into one
//! vector per datum field (or per sequence). Anything malformed is an [`Error::Decode`] naming
//! the field; nothing here panics on server input.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message as _;

use super::le::{read_bf16_as_f32, read_i32_as_i64, read_vec};
use super::wire;
use crate::error::{Error, Result};
use crate::types::{
    CsrIndices, ForwardBackwardOutput, PromptAltTokens, SampleResponse, SampledSequence,
    StopReason, TensorData, TensorValues, TopkLogprobs,
};

const FBO: &str = "ForwardBackwardOutput";
const SAMPLE: &str = "SampleResponse";

/// A record with no fields (a server may strip them all) still declares its datum count; past
/// this many such empty datums the body is treated as malformed rather than allocated for.
const MAX_DATUMS_WITHOUT_FIELDS: usize = 1 << 24;

/// Decodes a `ForwardBackwardOutput` result body (protocol.md 10.4).
///
/// Datums are concatenated across the body's records; each field of each datum becomes a
/// [`TensorData`] of shape `[n / Π trailing_shape, *trailing_shape]`. INT32 is widened to int64
/// and BFLOAT16 to float32. `loss_fn_output_type` is the part after the last `:` of the wire
/// name (`"ArrayRecord"` when the body has no records and no name).
///
/// ```
/// use bytes::Bytes;
/// use tinker_core::proto::decode_forward_backward_output;
/// // protocol.md 10.4: two datums of logprobs and `loss:sum` 1.75.
/// let hex = "0a1643726f7373456e74726f70794c6f737352657475726e12520a1643726f7373456e74726f70794c6f737352657475726e12360a086c6f6770726f6273122a0a0c000000bf000080bf000080be1218000000000000000008000000000000000c00000000000000180118021a130a086c6f73733a73756d11000000000000fc3f";
/// let body: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
/// let out = decode_forward_backward_output(Bytes::from(body)).unwrap();
/// assert_eq!(out.loss_fn_outputs.len(), 2);
/// assert_eq!(out.logprobs(1).unwrap().as_f32(), Some(&[-0.25f32][..]));
/// assert_eq!(out.metrics["loss:sum"], 1.75);
/// ```
pub fn decode_forward_backward_output(body: Bytes) -> Result<ForwardBackwardOutput> {
    let proto =
        wire::ForwardBackwardOutput::decode(body).map_err(|e| Error::decode(FBO, e.to_string()))?;
    let metrics = proto.metrics;
    if proto.loss_fn_outputs.is_empty() {
        let name = if proto.loss_fn_output_type.is_empty() {
            "ArrayRecord".to_owned()
        } else {
            unqualified(&proto.loss_fn_output_type).to_owned()
        };
        return Ok(ForwardBackwardOutput {
            loss_fn_output_type: name,
            loss_fn_outputs: Vec::new(),
            metrics,
        });
    }

    let mut declared: i64 = 0;
    for (r, record) in proto.loss_fn_outputs.iter().enumerate() {
        if record.num_datums < 0 {
            return Err(Error::decode(
                FBO,
                format!(
                    "loss_fn_outputs[{r}].num_datums is negative ({})",
                    record.num_datums
                ),
            ));
        }
        declared = declared.saturating_add(record.num_datums);
    }
    // Count every field's slices before allocating anything, so a body cannot make us reserve
    // memory its bytes do not back.
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    let mut first_field = None;
    for (r, record) in proto.loss_fn_outputs.iter().enumerate() {
        for (name, bt) in &record.fields {
            if !bt.offsets.len().is_multiple_of(8) {
                return Err(Error::decode(
                    FBO,
                    format!(
                        "loss_fn_outputs[{r}].fields.{name}.offsets is {} bytes, not a whole number of int64",
                        bt.offsets.len()
                    ),
                ));
            }
            let slices = (bt.offsets.len() / 8).saturating_sub(1);
            first_field.get_or_insert(name.as_str());
            *counts.entry(name.as_str()).or_insert(0) += slices;
        }
    }
    let num_datums = if declared > 0 {
        usize::try_from(declared)
            .map_err(|_| Error::decode(FBO, "loss_fn_outputs[].num_datums overflows"))?
    } else {
        // Old writers leave num_datums at 0: count the first field's slices (over all records).
        first_field.map_or(0, |name| counts[name])
    };
    if let Some((name, n)) = counts.iter().find(|(_, &n)| n != num_datums) {
        return Err(Error::decode(
            FBO,
            format!("field {name} has {n} datums but the records declare {num_datums}"),
        ));
    }
    if counts.is_empty() && num_datums > MAX_DATUMS_WITHOUT_FIELDS {
        return Err(Error::decode(
            FBO,
            format!("loss_fn_outputs[].num_datums {num_datums} exceeds {MAX_DATUMS_WITHOUT_FIELDS} with no fields to back it"),
        ));
    }

    let mut outputs: Vec<BTreeMap<String, TensorData>> = Vec::with_capacity(num_datums);
    outputs.resize_with(num_datums, BTreeMap::new);
    let mut filled: BTreeMap<&str, usize> = BTreeMap::new();
    for (r, record) in proto.loss_fn_outputs.iter().enumerate() {
        for (name, bt) in &record.fields {
            let field = format!("loss_fn_outputs[{r}].fields.{name}");
            let next = filled.entry(name.as_str()).or_insert(0);
            decode_batched_tensor(bt, &field, |tensor| {
                let slot = outputs.get_mut(*next).ok_or_else(|| {
                    Error::decode(
                        FBO,
                        format!("{field} has more datums than num_datums ({num_datums})"),
                    )
                })?;
                slot.insert(name.clone(), tensor);
                *next += 1;
                Ok(())
            })?;
        }
    }

    Ok(ForwardBackwardOutput {
        loss_fn_output_type: unqualified(&proto.loss_fn_output_type).to_owned(),
        loss_fn_outputs: outputs,
        metrics,
    })
}

/// `module:Class` → `Class`.
fn unqualified(name: &str) -> &str {
    name.rsplit(':').next().unwrap_or(name)
}

/// Wire dtype → (element size, public dtype is float).
fn element_size(dtype: i32, field: &str, what: &str) -> Result<usize> {
    match wire::DType::try_from(dtype) {
        Ok(wire::DType::Float32 | wire::DType::Int32) => Ok(4),
        Ok(wire::DType::Int64) => Ok(8),
        Ok(wire::DType::Bfloat16) => Ok(2),
        _ => Err(Error::decode(
            what,
            format!("{field}.dtype {dtype} is not FLOAT32, INT64, INT32 or BFLOAT16"),
        )),
    }
}

/// Bytes of `dtype` values → public values (int32 widened to int64, bf16 to float32). `bytes`
/// must be a whole number of elements (checked by the callers).
fn values_from_le(dtype: i32, bytes: &[u8]) -> TensorValues {
    match wire::DType::try_from(dtype) {
        Ok(wire::DType::Int64) => TensorValues::Int64(read_vec::<i64>(bytes)),
        Ok(wire::DType::Int32) => TensorValues::Int64(read_i32_as_i64(bytes)),
        Ok(wire::DType::Bfloat16) => TensorValues::Float32(read_bf16_as_f32(bytes)),
        _ => TensorValues::Float32(read_vec::<f32>(bytes)),
    }
}

/// Splits one `BatchedTensor` into per-datum tensors, handing each to `sink` in order.
fn decode_batched_tensor(
    bt: &wire::BatchedTensor,
    field: &str,
    mut sink: impl FnMut(TensorData) -> Result<()>,
) -> Result<()> {
    let size = element_size(bt.dtype, field, FBO)?;
    // Whole int64s: checked by the caller before anything was allocated.
    let offsets = read_vec::<i64>(&bt.offsets[..bt.offsets.len() / 8 * 8]);
    let mut trailing = Vec::with_capacity(bt.trailing_shape.len());
    let mut per_row: usize = 1;
    for &d in &bt.trailing_shape {
        let d = usize::try_from(d).map_err(|_| {
            Error::decode(
                FBO,
                format!("{field}.trailing_shape has negative dimension {d}"),
            )
        })?;
        per_row = per_row
            .checked_mul(d)
            .ok_or_else(|| Error::decode(FBO, format!("{field}.trailing_shape overflows")))?;
        trailing.push(d);
    }
    let data_len = bt.data.len();
    for (i, w) in offsets.windows(2).enumerate() {
        let bad = |m: String| Error::decode(FBO, format!("{field}.offsets[{i}..{}] {m}", i + 2));
        let (start, end) = (w[0], w[1]);
        if start < 0 || end < start || end as u64 > data_len as u64 {
            return Err(bad(format!(
                "= [{start}, {end}) is not a range within the {data_len} data bytes"
            )));
        }
        let (start, end) = (start as usize, end as usize);
        if !start.is_multiple_of(size) || !end.is_multiple_of(size) {
            return Err(bad(format!(
                "= [{start}, {end}) is not aligned to the {size}-byte elements"
            )));
        }
        let n = (end - start) / size;
        let leading = if per_row == 0 {
            if n != 0 {
                return Err(bad(format!(
                    "holds {n} values but trailing_shape has no cells"
                )));
            }
            0
        } else if !n.is_multiple_of(per_row) {
            return Err(bad(format!(
                "holds {n} values, not a multiple of trailing_shape {trailing:?}"
            )));
        } else {
            n / per_row
        };
        let mut shape = Vec::with_capacity(1 + trailing.len());
        shape.push(leading);
        shape.extend_from_slice(&trailing);
        let values = values_from_le(bt.dtype, &bt.data[start..end]);
        sink(TensorData::from_parts(values, Some(shape), None))?;
    }
    Ok(())
}

// ---------------------------------------------------------------- SampleResponse

/// Decodes a `SampleResponse` result body of either schema version (protocol.md 10.5).
///
/// Stop reasons other than STOP/LENGTH are errors; NaN prompt logprobs become `None`; empty
/// logprob arrays become `None`; top-k tables with `length == 0` or `k == 0` become `None`.
/// `sequence_id` is left `None` (it comes from the `asample` reply, not this payload).
///
/// ```
/// use bytes::Bytes;
/// use tinker_core::proto::decode_sample_response;
/// use tinker_core::types::StopReason;
/// // protocol.md 10.5: one sequence, prompt_logprobs [NaN, -1.5, -0.5].
/// let hex = "0a1412080b0000000c0000001a08cdccccbdcdcc4cbe120c0000c07f0000c0bf000000bf";
/// let body: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
/// let r = decode_sample_response(Bytes::from(body)).unwrap();
/// assert_eq!(r.sequences[0].stop_reason, StopReason::Stop);
/// assert_eq!(r.sequences[0].tokens, [11, 12]);
/// assert_eq!(r.prompt_logprobs, Some(vec![None, Some(-1.5), Some(-0.5)]));
/// ```
pub fn decode_sample_response(body: Bytes) -> Result<SampleResponse> {
    let proto =
        wire::SampleResponse::decode(body).map_err(|e| Error::decode(SAMPLE, e.to_string()))?;
    let mut sequences = Vec::with_capacity(proto.sequences.len());
    for (i, seq) in proto.sequences.iter().enumerate() {
        let stop_reason = match wire::StopReason::try_from(seq.stop_reason) {
            Ok(wire::StopReason::Stop) => StopReason::Stop,
            Ok(wire::StopReason::Length) => StopReason::Length,
            Err(_) => {
                return Err(Error::decode(
                    SAMPLE,
                    format!(
                        "sequences[{i}].stop_reason {} is neither STOP (0) nor LENGTH (1)",
                        seq.stop_reason
                    ),
                ))
            }
        };
        // Field names are formatted only for an error: thousands of sequences per body.
        let tokens = read_array::<i32>(&seq.tokens, 4, || format!("sequences[{i}].tokens"))?;
        let logprobs = match &seq.logprobs {
            Some(b) if !b.is_empty() => Some(read_array::<f32>(b, 4, || {
                format!("sequences[{i}].logprobs")
            })?),
            _ => None,
        };
        let topk_logprobs = match &seq.topk_sampled_logprobs {
            Some(t) => decode_topk(t, &format!("sequences[{i}].topk_sampled_logprobs"))?,
            None => None,
        };
        sequences.push(SampledSequence {
            stop_reason,
            tokens,
            logprobs,
            topk_logprobs,
            sequence_id: None,
        });
    }

    let prompt_logprobs = match &proto.prompt_logprobs {
        Some(b) if !b.is_empty() => {
            check_whole(b, 4, "prompt_logprobs")?;
            Some(
                b.chunks_exact(4)
                    .map(|c| {
                        let x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                        (!x.is_nan()).then_some(x)
                    })
                    .collect(),
            )
        }
        _ => None,
    };
    let topk_prompt_logprobs = match &proto.topk_prompt_logprobs {
        Some(t) => decode_topk(t, "topk_prompt_logprobs")?,
        None => None,
    };
    let prompt_cache_hit_tokens = u32::try_from(proto.prompt_cache_hit_tokens).map_err(|_| {
        Error::decode(
            SAMPLE,
            format!(
                "prompt_cache_hit_tokens is negative ({})",
                proto.prompt_cache_hit_tokens
            ),
        )
    })?;
    let target_prompt_logprobs = match &proto.target_prompt_logprobs {
        Some(t) => Some(decode_tensor(t, "target_prompt_logprobs")?),
        None => None,
    };
    let prompt_alt_tokens = match &proto.prompt_alt_tokens {
        Some(alt) => {
            let part = |t: &Option<wire::Tensor>, name: &str| -> Result<TensorData> {
                let field = format!("prompt_alt_tokens.{name}");
                match t {
                    Some(t) => decode_tensor(t, &field),
                    None => Err(Error::decode(SAMPLE, format!("{field} is missing"))),
                }
            };
            Some(PromptAltTokens {
                tokens: part(&alt.tokens, "tokens")?,
                logprobs: part(&alt.logprobs, "logprobs")?,
            })
        }
        None => None,
    };

    Ok(SampleResponse {
        sequences,
        prompt_logprobs,
        topk_prompt_logprobs,
        prompt_cache_hit_tokens,
        target_prompt_logprobs,
        prompt_alt_tokens,
    })
}

fn check_whole(bytes: &[u8], size: usize, field: &str) -> Result<()> {
    if bytes.len().is_multiple_of(size) {
        Ok(())
    } else {
        Err(Error::decode(
            SAMPLE,
            format!(
                "{field} is {} bytes, not a whole number of {size}-byte elements",
                bytes.len()
            ),
        ))
    }
}

fn read_array<T: super::le::LeScalar>(
    bytes: &[u8],
    size: usize,
    field: impl FnOnce() -> String,
) -> Result<Vec<T>> {
    if !bytes.len().is_multiple_of(size) {
        check_whole(bytes, size, &field())?;
    }
    Ok(read_vec::<T>(bytes))
}

fn decode_topk(t: &wire::TopkLogprobs, field: &str) -> Result<Option<TopkLogprobs>> {
    if t.length == 0 || t.k == 0 {
        return Ok(None);
    }
    let cells = u64::from(t.length) * u64::from(t.k);
    for (name, len) in [
        ("token_ids", t.token_ids.len()),
        ("logprobs", t.logprobs.len()),
    ] {
        if len as u64 != cells * 4 {
            return Err(Error::decode(
                SAMPLE,
                format!(
                    "{field}.{name} is {len} bytes but length {} × k {} needs {}",
                    t.length,
                    t.k,
                    cells * 4
                ),
            ));
        }
    }
    let table = TopkLogprobs::new(
        t.k as usize,
        read_vec::<i32>(&t.token_ids),
        read_vec::<f32>(&t.logprobs),
    )
    .map_err(|e| Error::decode(SAMPLE, format!("{field}: {e}")))?;
    Ok(Some(table))
}

/// Decodes a `Tensor` (dense or CSR, kept sparse).
fn decode_tensor(t: &wire::Tensor, field: &str) -> Result<TensorData> {
    let size = element_size(t.dtype, field, SAMPLE)?;
    let mut shape = Vec::with_capacity(t.shape.len());
    for &d in &t.shape {
        shape.push(usize::try_from(d).map_err(|_| {
            Error::decode(SAMPLE, format!("{field}.shape has negative dimension {d}"))
        })?);
    }
    let tensor = match &t.encoding {
        None => {
            return Err(Error::decode(
                SAMPLE,
                format!("{field} has neither dense nor sparse_csr"),
            ))
        }
        Some(wire::tensor::Encoding::Dense(bytes)) => {
            check_whole(bytes, size, &format!("{field}.dense"))?;
            let n = bytes.len() / size;
            let product = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
            if !shape.is_empty() && product != Some(n) {
                return Err(Error::decode(
                    SAMPLE,
                    format!("{field}.shape {shape:?} does not hold the {n} values sent"),
                ));
            }
            let shape = if shape.is_empty() { vec![n] } else { shape };
            TensorData::from_parts(values_from_le(t.dtype, bytes), Some(shape), None)
        }
        Some(wire::tensor::Encoding::SparseCsr(csr)) => {
            check_whole(&csr.values, size, &format!("{field}.sparse_csr.values"))?;
            check_whole(
                &csr.crow_indices,
                8,
                &format!("{field}.sparse_csr.crow_indices"),
            )?;
            check_whole(
                &csr.col_indices,
                8,
                &format!("{field}.sparse_csr.col_indices"),
            )?;
            let rows = csr.crow_indices.len() / 8;
            if shape.len() != 2 || rows != shape[0].saturating_add(1) {
                return Err(Error::decode(
                    SAMPLE,
                    format!("{field}: a CSR tensor needs shape [rows, cols] and rows + 1 row pointers; got shape {shape:?} and {rows} pointers"),
                ));
            }
            let indices = CsrIndices {
                crow_indices: read_vec::<i64>(&csr.crow_indices),
                col_indices: read_vec::<i64>(&csr.col_indices),
            };
            TensorData::from_parts(
                values_from_le(t.dtype, &csr.values),
                Some(shape),
                Some(indices),
            )
        }
    };
    tensor
        .validate_layout(field)
        .map_err(|e| Error::decode(SAMPLE, e.to_string()))?;
    Ok(tensor)
}
