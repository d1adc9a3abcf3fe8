//! The server's side of the protobuf bodies: decoding `ForwardBackwardRequest` (with prost, from
//! `tinker_core::proto::wire`) into model inputs, and encoding `ForwardBackwardOutput` and
//! `SampleResponse` results — plus the JSON forms of the same results for clients that do not ask
//! for protobuf, and the decoded view of a request the recording shows.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message as _;
use serde_json::{json, Value};
use tinker_core::proto::wire;
use tinker_core::types::{
    Chunk, Datum, ImageFormat, ModelInput, ProvenanceSpan, SampleResponse, SampledSequence,
    StopReason, TensorData, TensorValues, TopkLogprobs,
};

use super::error::ApiError;
use crate::model::{ForwardOutput, SampleResult, TopLogprobs};

/// Decodes a `forward_backward` body, decompressing it first when `Content-Encoding: zstd`.
pub(crate) fn decode_fb_request(
    body: &Bytes,
    zstd: bool,
) -> Result<wire::ForwardBackwardRequest, ApiError> {
    let raw = if zstd {
        Bytes::from(
            zstd::stream::decode_all(body.as_ref())
                .map_err(|e| ApiError::bad_request(format!("invalid zstd body: {e}")))?,
        )
    } else {
        body.clone()
    };
    wire::ForwardBackwardRequest::decode(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid ForwardBackwardRequest protobuf: {e}")))
}

fn le_chunks<const N: usize>(bytes: &[u8], what: &str) -> Result<Vec<[u8; N]>, ApiError> {
    if !bytes.len().is_multiple_of(N) {
        return Err(ApiError::bad_request(format!(
            "{what}: {} bytes is not a whole number of {N}-byte values",
            bytes.len()
        )));
    }
    Ok(bytes
        .chunks_exact(N)
        .map(|c| {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        })
        .collect())
}

fn read_i32(bytes: &[u8], what: &str) -> Result<Vec<i32>, ApiError> {
    Ok(le_chunks::<4>(bytes, what)?
        .into_iter()
        .map(i32::from_le_bytes)
        .collect())
}

fn read_i64(bytes: &[u8], what: &str) -> Result<Vec<i64>, ApiError> {
    Ok(le_chunks::<8>(bytes, what)?
        .into_iter()
        .map(i64::from_le_bytes)
        .collect())
}

fn read_values(bytes: &[u8], dtype: i32, what: &str) -> Result<TensorValues, ApiError> {
    match wire::DType::try_from(dtype) {
        Ok(wire::DType::Float32) => Ok(TensorValues::Float32(
            le_chunks::<4>(bytes, what)?
                .into_iter()
                .map(f32::from_le_bytes)
                .collect(),
        )),
        Ok(wire::DType::Int64) => Ok(TensorValues::Int64(read_i64(bytes, what)?)),
        Ok(wire::DType::Int32) => Ok(TensorValues::Int64(
            read_i32(bytes, what)?.into_iter().map(i64::from).collect(),
        )),
        Ok(wire::DType::Bfloat16) => Ok(TensorValues::Float32(
            le_chunks::<2>(bytes, what)?
                .into_iter()
                .map(|b| f32::from_bits(u32::from(u16::from_le_bytes(b)) << 16))
                .collect(),
        )),
        _ => Err(ApiError::bad_request(format!(
            "{what}: unsupported dtype {dtype}"
        ))),
    }
}

fn tensor_from_wire(t: &wire::Tensor, what: &str) -> Result<TensorData, ApiError> {
    let shape: Vec<usize> = t
        .shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| ApiError::bad_request(format!("{what}.shape: negative dimension")))?;
    let bad = |e: tinker_core::Error| ApiError::bad_request(format!("{what}: {e}"));
    match &t.encoding {
        Some(wire::tensor::Encoding::Dense(bytes)) => {
            let values = read_values(bytes, t.dtype, what)?;
            TensorData::dense(values, (!shape.is_empty()).then_some(shape)).map_err(bad)
        }
        Some(wire::tensor::Encoding::SparseCsr(csr)) => {
            let values = read_values(&csr.values, t.dtype, what)?;
            let [rows, cols] = <[usize; 2]>::try_from(shape.as_slice()).map_err(|_| {
                ApiError::bad_request(format!("{what}: a CSR tensor needs a 2-D shape"))
            })?;
            TensorData::csr(
                values,
                [rows, cols],
                read_i64(&csr.crow_indices, what)?,
                read_i64(&csr.col_indices, what)?,
            )
            .map_err(bad)
        }
        None => Err(ApiError::bad_request(format!("{what}: tensor has no data"))),
    }
}

fn span_from_wire(s: &wire::ProvenanceSpan) -> Option<ProvenanceSpan> {
    let to_u64 = |v: i64| u64::try_from(v).unwrap_or(0);
    match &s.span {
        Some(wire::provenance_span::Span::PromptTokens(p)) => Some(ProvenanceSpan::PromptTokens {
            sequence_id: p.sequence_id.clone(),
            offset: to_u64(p.offset),
            length: to_u64(p.length),
        }),
        Some(wire::provenance_span::Span::SampledTokens(p)) => {
            Some(ProvenanceSpan::SampledTokens {
                sequence_id: p.sequence_id.clone(),
                offset: to_u64(p.offset),
                length: to_u64(p.length),
            })
        }
        None => None,
    }
}

/// The datums of a request, as the toy model reads them.
pub(crate) fn datums_from_wire(req: &wire::ForwardBackwardRequest) -> Result<Vec<Datum>, ApiError> {
    req.data
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut chunks = Vec::with_capacity(d.model_input.len());
            for (j, c) in d.model_input.iter().enumerate() {
                let what = format!("data[{i}].model_input[{j}]");
                chunks.push(match &c.chunk {
                    Some(wire::chunk::Kind::EncodedText(t)) => Chunk::EncodedText {
                        tokens: read_i32(&t.tokens, &what)?,
                    },
                    Some(wire::chunk::Kind::Image(img)) => Chunk::Image {
                        data: img.data.clone(),
                        format: ImageFormat::from_name(&img.format).ok_or_else(|| {
                            ApiError::bad_request(format!(
                                "{what}.format: unknown image format {:?}",
                                img.format
                            ))
                        })?,
                        expected_tokens: img.expected_tokens.map(|n| n.max(0) as u32),
                    },
                    Some(wire::chunk::Kind::Dmel(m)) => Chunk::Dmel {
                        dmel: m.dmel.clone(),
                    },
                    None => return Err(ApiError::bad_request(format!("{what}: empty chunk"))),
                });
            }
            let mut loss_fn_inputs = BTreeMap::new();
            for (k, t) in &d.loss_fn_inputs {
                let what = format!("data[{i}].loss_fn_inputs.{k}");
                loss_fn_inputs.insert(k.clone(), tensor_from_wire(t, &what)?);
            }
            Ok(Datum {
                model_input: ModelInput { chunks },
                loss_fn_inputs,
                model_input_spans: d
                    .model_input_spans
                    .iter()
                    .filter_map(span_from_wire)
                    .collect(),
                loss_fn_input_spans: d
                    .loss_fn_input_spans
                    .iter()
                    .filter_map(span_from_wire)
                    .collect(),
            })
        })
        .collect()
}

/// The decoded view of a `forward_backward` body for the recording (arrays decoded, the
/// `_decoded_*` keys the captures use).
pub(crate) fn fb_request_json(req: &wire::ForwardBackwardRequest) -> Value {
    let tensor = |t: &wire::Tensor| -> Value {
        let dtype = match wire::DType::try_from(t.dtype) {
            Ok(wire::DType::Float32) => "DTYPE_FLOAT32",
            Ok(wire::DType::Int64) => "DTYPE_INT64",
            Ok(wire::DType::Int32) => "DTYPE_INT32",
            Ok(wire::DType::Bfloat16) => "DTYPE_BFLOAT16",
            _ => "DTYPE_UNSPECIFIED",
        };
        let values = |bytes: &[u8]| -> Value {
            match read_values(bytes, t.dtype, "") {
                Ok(TensorValues::Float32(v)) => json!(v),
                Ok(TensorValues::Int64(v)) => json!(v),
                Err(_) => Value::Null,
            }
        };
        match &t.encoding {
            Some(wire::tensor::Encoding::Dense(b)) => {
                json!({"dtype": dtype, "shape": t.shape, "_decoded_dense": values(b)})
            }
            Some(wire::tensor::Encoding::SparseCsr(c)) => json!({
                "dtype": dtype, "shape": t.shape,
                "sparse_csr": {"_decoded_values": values(&c.values),
                               "_decoded_crow_indices": read_i64(&c.crow_indices, "").ok(),
                               "_decoded_col_indices": read_i64(&c.col_indices, "").ok()}}),
            None => json!({"dtype": dtype, "shape": t.shape}),
        }
    };
    let data: Vec<Value> = req
        .data
        .iter()
        .map(|d| {
            let chunks: Vec<Value> = d
                .model_input
                .iter()
                .map(|c| match &c.chunk {
                    Some(wire::chunk::Kind::EncodedText(t)) => {
                        json!({"encoded_text": {"_decoded_int32": read_i32(&t.tokens, "").ok()}})
                    }
                    Some(wire::chunk::Kind::Image(i)) => json!({"image": {
                        "data_len": i.data.len(), "format": i.format, "expected_tokens": i.expected_tokens}}),
                    Some(wire::chunk::Kind::Dmel(m)) => json!({"dmel": {"dmel_len": m.dmel.len()}}),
                    None => Value::Null,
                })
                .collect();
            let inputs: serde_json::Map<String, Value> = d
                .loss_fn_inputs
                .iter()
                .map(|(k, t)| (k.clone(), tensor(t)))
                .collect();
            json!({"model_input": chunks, "loss_fn_inputs": inputs})
        })
        .collect();
    let mut out = json!({"model_id": req.model_id, "seq_id": req.seq_id, "data": data, "loss_fn": req.loss_fn});
    if req.forward_only {
        out["forward_only"] = json!(true);
    }
    if !req.loss_fn_config.is_empty() {
        out["loss_fn_config"] = json!(req.loss_fn_config);
    }
    if !req.loss_fn_config_v2.is_empty() {
        let v2: serde_json::Map<String, Value> = req
            .loss_fn_config_v2
            .iter()
            .map(|(k, v)| {
                let v = match &v.value {
                    Some(wire::loss_config_value::Value::Number(n)) => json!({"number": n}),
                    Some(wire::loss_config_value::Value::Text(t)) => json!({"text": t}),
                    None => json!({}),
                };
                (k.clone(), v)
            })
            .collect();
        out["loss_fn_config_v2"] = Value::Object(v2);
    }
    out
}

fn f32_bytes(values: impl IntoIterator<Item = f32>) -> Vec<u8> {
    values.into_iter().flat_map(f32::to_le_bytes).collect()
}

fn i32_bytes(values: impl IntoIterator<Item = i32>) -> Vec<u8> {
    values.into_iter().flat_map(i32::to_le_bytes).collect()
}

/// `ForwardBackwardOutput` protobuf: one `ArrayRecord` holding every datum, each field a
/// `BatchedTensor` with **byte** offsets (protocol.md 10.4).
pub(crate) fn encode_forward_output(out: &ForwardOutput) -> Bytes {
    let mut names: Vec<&String> = out.loss_fn_outputs.iter().flat_map(|m| m.keys()).collect();
    names.sort();
    names.dedup();
    let mut fields = BTreeMap::new();
    for name in names {
        let mut data = Vec::new();
        let mut offsets = vec![0i64];
        let mut dtype = wire::DType::Float32;
        let mut trailing: Vec<i64> = Vec::new();
        for datum in &out.loss_fn_outputs {
            if let Some(t) = datum.get(name) {
                match t.values() {
                    TensorValues::Float32(v) => {
                        dtype = wire::DType::Float32;
                        data.extend(f32_bytes(v.iter().copied()));
                    }
                    TensorValues::Int64(v) => {
                        dtype = wire::DType::Int64;
                        data.extend(v.iter().flat_map(|x| x.to_le_bytes()));
                    }
                }
                trailing = t.shape().iter().skip(1).map(|&d| d as i64).collect();
            }
            offsets.push(data.len() as i64);
        }
        fields.insert(
            name.clone(),
            wire::BatchedTensor {
                data: Bytes::from(data),
                offsets: Bytes::from(
                    offsets
                        .iter()
                        .flat_map(|o| o.to_le_bytes())
                        .collect::<Vec<_>>(),
                ),
                dtype: dtype as i32,
                trailing_shape: trailing,
            },
        );
    }
    let record = wire::ArrayRecord {
        type_tag: out.loss_fn_output_type.clone(),
        fields,
        num_datums: out.loss_fn_outputs.len() as i64,
    };
    wire::ForwardBackwardOutput {
        loss_fn_output_type: out.loss_fn_output_type.clone(),
        loss_fn_outputs: vec![record],
        metrics: out.metrics.clone(),
    }
    .encode_to_vec()
    .into()
}

/// The JSON form of a forward/backward result (for clients that did not ask for protobuf).
pub(crate) fn forward_output_json(out: &ForwardOutput) -> Value {
    let wire = tinker_core::types::ForwardBackwardOutput {
        loss_fn_output_type: out.loss_fn_output_type.clone(),
        loss_fn_outputs: out.loss_fn_outputs.clone(),
        metrics: out.metrics.clone(),
    };
    serde_json::to_value(wire).unwrap_or(Value::Null)
}

/// A sample result with the 0.38 extras the request asked for.
#[derive(Debug, Clone)]
pub(crate) struct SampleOutcome {
    pub result: SampleResult,
    /// `target_prompt_logprobs`: the requested layout with logprob values.
    pub target_prompt_logprobs: Option<TensorData>,
    /// `prompt_alt_tokens`: `(tokens int64 [L−1,k], logprobs float32 [L−1,k])`.
    pub prompt_alt_tokens: Option<(TensorData, TensorData)>,
}

fn topk_wire(rows: &[Option<TopLogprobs>]) -> Option<wire::TopkLogprobs> {
    let k = rows.iter().flatten().map(Vec::len).max().unwrap_or(0);
    if k == 0 || rows.is_empty() {
        return None;
    }
    let mut ids = Vec::with_capacity(rows.len() * k);
    let mut lps = Vec::with_capacity(rows.len() * k);
    for row in rows {
        let cells = row.as_deref().unwrap_or(&[]);
        for j in 0..k {
            match cells.get(j) {
                Some(&(t, lp)) => {
                    ids.push(t);
                    lps.push(lp as f32);
                }
                None => {
                    ids.push(0);
                    lps.push(TopkLogprobs::SENTINEL_LOGPROB);
                }
            }
        }
    }
    Some(wire::TopkLogprobs {
        token_ids: i32_bytes(ids).into(),
        logprobs: f32_bytes(lps).into(),
        k: k as u32,
        length: rows.len() as u32,
    })
}

fn tensor_wire(t: &TensorData) -> wire::Tensor {
    let (dtype, bytes) = match t.values() {
        TensorValues::Float32(v) => (wire::DType::Float32, f32_bytes(v.iter().copied())),
        TensorValues::Int64(v) => (
            wire::DType::Int64,
            v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ),
    };
    let encoding = match t.sparse() {
        Some(csr) => wire::tensor::Encoding::SparseCsr(wire::SparseCsr {
            values: bytes.into(),
            crow_indices: csr
                .crow_indices
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<_>>()
                .into(),
            col_indices: csr
                .col_indices
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect::<Vec<_>>()
                .into(),
        }),
        None => wire::tensor::Encoding::Dense(bytes.into()),
    };
    wire::Tensor {
        encoding: Some(encoding),
        dtype: dtype as i32,
        shape: t.shape().iter().map(|&d| d as i64).collect(),
    }
}

/// `SampleResponse` protobuf (protocol.md 10.5).
pub(crate) fn encode_sample(s: &SampleOutcome) -> Bytes {
    let r = &s.result;
    let sequences = r
        .sequences
        .iter()
        .map(|seq| wire::SampledSequence {
            stop_reason: match seq.stop_reason {
                crate::model::StopReason::Stop => wire::StopReason::Stop as i32,
                crate::model::StopReason::Length => wire::StopReason::Length as i32,
            },
            tokens: i32_bytes(seq.tokens.iter().copied()).into(),
            logprobs: Some(f32_bytes(seq.logprobs.iter().map(|&x| x as f32)).into()),
            topk_sampled_logprobs: seq.topk_logprobs.as_ref().and_then(|rows| {
                let rows: Vec<Option<TopLogprobs>> = rows.iter().cloned().map(Some).collect();
                topk_wire(&rows)
            }),
        })
        .collect();
    wire::SampleResponse {
        sequences,
        prompt_logprobs: r
            .prompt_logprobs
            .as_ref()
            .map(|lps| f32_bytes(lps.iter().map(|x| x.map_or(f32::NAN, |v| v as f32))).into()),
        topk_prompt_logprobs: r.topk_prompt_logprobs.as_deref().and_then(topk_wire),
        prompt_cache_hit_tokens: 0,
        target_prompt_logprobs: s.target_prompt_logprobs.as_ref().map(tensor_wire),
        prompt_alt_tokens: s.prompt_alt_tokens.as_ref().map(|(tokens, logprobs)| {
            wire::PromptAltTokens {
                tokens: Some(tensor_wire(tokens)),
                logprobs: Some(tensor_wire(logprobs)),
            }
        }),
    }
    .encode_to_vec()
    .into()
}

/// The JSON form of a sample result (the client type `SampleResponse`).
pub(crate) fn sample_json(s: &SampleOutcome) -> Value {
    let topk = |rows: &[Option<TopLogprobs>]| {
        let rows: Vec<Option<Vec<(i32, f32)>>> = rows
            .iter()
            .map(|r| {
                r.as_ref()
                    .map(|r| r.iter().map(|&(t, l)| (t, l as f32)).collect())
            })
            .collect();
        TopkLogprobs::from_rows(&rows)
    };
    let r = &s.result;
    let resp = SampleResponse {
        sequences: r
            .sequences
            .iter()
            .map(|seq| SampledSequence {
                stop_reason: match seq.stop_reason {
                    crate::model::StopReason::Stop => StopReason::Stop,
                    crate::model::StopReason::Length => StopReason::Length,
                },
                tokens: seq.tokens.clone(),
                logprobs: Some(seq.logprobs.iter().map(|&x| x as f32).collect()),
                topk_logprobs: seq.topk_logprobs.as_ref().map(|rows| {
                    let rows: Vec<Option<TopLogprobs>> = rows.iter().cloned().map(Some).collect();
                    topk(&rows)
                }),
                sequence_id: None,
            })
            .collect(),
        prompt_logprobs: r
            .prompt_logprobs
            .as_ref()
            .map(|v| v.iter().map(|x| x.map(|v| v as f32)).collect()),
        topk_prompt_logprobs: r.topk_prompt_logprobs.as_deref().map(topk),
        prompt_cache_hit_tokens: 0,
        target_prompt_logprobs: s.target_prompt_logprobs.clone(),
        prompt_alt_tokens: s
            .prompt_alt_tokens
            .clone()
            .map(|(tokens, logprobs)| tinker_core::types::PromptAltTokens { tokens, logprobs }),
    };
    serde_json::to_value(resp).unwrap_or(Value::Null)
}
