//! Encoding a `ForwardBackwardRequest` straight from [`Datum`]s (protocol.md 10.3).
//!
//! The encoder never builds the prost structs of [`super::wire`]: it measures each message (an
//! O(fields) walk, independent of how many tokens or floats a datum holds), reserves the exact
//! body size once, then writes the bytes, copying every token and tensor array with one bulk
//! little-endian copy. Nothing is allocated per element.
//!
//! Field order is ascending field number; map entries (`loss_fn_inputs`, the config maps) are
//! written in key order (`BTreeMap`), so a request always encodes to the same bytes. A map entry
//! always carries both its key and its value. A tensor always carries its shape (the effective
//! shape when none was given), as the official SDK does for tensors built from lists.

use std::collections::BTreeMap;

use super::le::{put_slice, put_varint, varint_len, LeScalar};
use crate::error::{Error, Result};
use crate::types::{
    Chunk, Datum, LossConfigValue, LossFn, ProvenanceSpan, TensorData, TensorValues,
};

/// One forward_backward request (one chunk of a call), borrowing its datums.
///
/// ```
/// use tinker_core::proto::{encode_forward_backward, ForwardBackwardRequestRef};
/// use tinker_core::types::{Datum, LossFn, ModelInput, TensorData};
///
/// let data = vec![Datum::new(ModelInput::from_tokens(vec![1, 2, 3]))
///     .with_input("target_tokens", TensorData::from_i64(vec![2, 3, 4]))
///     .with_input("weights", TensorData::from_f32(vec![1.0, 1.0, 1.0]))];
/// let request = ForwardBackwardRequestRef::new("s:train:0", 1, &data, LossFn::CrossEntropy);
/// let mut body = Vec::new();
/// encode_forward_backward(&request, &mut body).unwrap();
/// assert_eq!(body.len(), 130); // the golden request of protocol.md 10.3
/// assert_eq!(body.len(), request.encoded_len().unwrap());
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ForwardBackwardRequestRef<'a> {
    /// The training run (`<session>:train:<n>`).
    pub model_id: &'a str,
    /// This request's sequence number (≥ 1; each chunk has its own).
    pub seq_id: i32,
    /// The datums of this chunk.
    pub data: &'a [Datum],
    /// The loss function.
    pub loss_fn: LossFn,
    /// Loss config: numbers are written to `loss_fn_config` and `loss_fn_config_v2`, strings only
    /// to `loss_fn_config_v2` (the SDK 0.38 dual-write).
    pub loss_fn_config: Option<&'a BTreeMap<String, LossConfigValue>>,
    /// `true` for `forward` (no gradient).
    pub forward_only: bool,
}

impl<'a> ForwardBackwardRequestRef<'a> {
    /// A forward_backward request with no loss config.
    pub fn new(
        model_id: &'a str,
        seq_id: i32,
        data: &'a [Datum],
        loss_fn: LossFn,
    ) -> ForwardBackwardRequestRef<'a> {
        ForwardBackwardRequestRef {
            model_id,
            seq_id,
            data,
            loss_fn,
            loss_fn_config: None,
            forward_only: false,
        }
    }

    /// The exact size of the encoded body.
    ///
    /// Errors like [`encode_forward_backward`] on datums that cannot travel in protobuf.
    pub fn encoded_len(&self) -> Result<usize> {
        check_encodable(self.data)?;
        Ok(request_len(self))
    }
}

/// Appends the protobuf body of `request` to `out` (which is not cleared, so a buffer can be
/// reused across chunks after `out.clear()`).
///
/// Errors with [`Error::InvalidInput`] before writing anything when a datum holds a chunk the
/// protobuf cannot carry (`image_asset_pointer`) or an image `expected_tokens` above `i32::MAX`.
/// Other datum checks are [`Datum::validate`]'s job, done before chunking.
///
/// To compress (when the server's `proto_compress_fwdbwd` is on), pass the body to
/// [`compress_body`](super::compress_body); chunks are independent bodies, so an adapter may compress them in parallel.
pub fn encode_forward_backward(
    request: &ForwardBackwardRequestRef<'_>,
    out: &mut Vec<u8>,
) -> Result<()> {
    check_encodable(request.data)?;
    let total = request_len(request);
    out.reserve(total);
    let start = out.len();
    write_request(request, out);
    debug_assert_eq!(out.len() - start, total);
    Ok(())
}

// ---------------------------------------------------------------- checks

fn check_encodable(data: &[Datum]) -> Result<()> {
    for (i, datum) in data.iter().enumerate() {
        for (j, chunk) in datum.model_input.chunks.iter().enumerate() {
            match chunk {
                Chunk::ImageAssetPointer { .. } => {
                    return Err(Error::invalid(
                        format!("data[{i}].model_input.chunks[{j}]"),
                        "image_asset_pointer chunks cannot be sent in forward_backward; inline the image bytes",
                    ))
                }
                Chunk::Image {
                    expected_tokens: Some(n),
                    ..
                } if i32::try_from(*n).is_err() => {
                    return Err(Error::invalid(
                        format!("data[{i}].model_input.chunks[{j}].expected_tokens"),
                        format!("{n} does not fit the wire's int32"),
                    ))
                }
                _ => {}
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- wire primitives

const VARINT: u64 = 0;
const FIXED64: u64 = 1;
const LEN: u64 = 2;

/// Bytes of a one-byte key (every field number here is < 16) plus a length-delimited payload.
#[inline]
fn ld_len(payload: usize) -> usize {
    1 + varint_len(payload as u64) + payload
}

#[inline]
fn put_key(out: &mut Vec<u8>, field: u64, wire_type: u64) {
    out.push(((field << 3) | wire_type) as u8);
}

#[inline]
fn put_ld_header(out: &mut Vec<u8>, field: u64, payload: usize) {
    put_key(out, field, LEN);
    put_varint(out, payload as u64);
}

#[inline]
fn put_ld_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_ld_header(out, field, bytes.len());
    out.extend_from_slice(bytes);
}

#[inline]
fn put_ld_array<T: LeScalar>(out: &mut Vec<u8>, field: u64, values: &[T]) {
    put_ld_header(out, field, values.len() * T::SIZE);
    put_slice(out, values);
}

/// int32/int64 fields are varints of the two's-complement 64-bit value.
#[inline]
fn int_varint_len(v: i64) -> usize {
    varint_len(v as u64)
}

/// Proto3 leaves out a non-oneof bytes/string field that is empty.
#[inline]
fn opt_ld_len(payload: usize) -> usize {
    if payload == 0 {
        0
    } else {
        ld_len(payload)
    }
}

// ---------------------------------------------------------------- ForwardBackwardRequest

fn request_len(r: &ForwardBackwardRequestRef<'_>) -> usize {
    let mut n = opt_ld_len(r.model_id.len());
    if r.seq_id != 0 {
        n += 1 + int_varint_len(i64::from(r.seq_id));
    }
    n += r.data.iter().map(|d| ld_len(datum_len(d))).sum::<usize>();
    n += ld_len(r.loss_fn.as_str().len());
    if let Some(config) = r.loss_fn_config {
        for (key, value) in config {
            if let LossConfigValue::Number(_) = value {
                n += ld_len(ld_len(key.len()) + 9);
            }
            n += ld_len(ld_len(key.len()) + ld_len(config_value_len(value)));
        }
    }
    if r.forward_only {
        n += 2;
    }
    n
}

fn write_request(r: &ForwardBackwardRequestRef<'_>, out: &mut Vec<u8>) {
    if !r.model_id.is_empty() {
        put_ld_bytes(out, 1, r.model_id.as_bytes());
    }
    if r.seq_id != 0 {
        put_key(out, 2, VARINT);
        put_varint(out, i64::from(r.seq_id) as u64);
    }
    for datum in r.data {
        put_ld_header(out, 3, datum_len(datum));
        write_datum(datum, out);
    }
    put_ld_bytes(out, 4, r.loss_fn.as_str().as_bytes());
    if let Some(config) = r.loss_fn_config {
        for (key, value) in config {
            if let LossConfigValue::Number(x) = value {
                put_ld_header(out, 5, ld_len(key.len()) + 9);
                put_ld_bytes(out, 1, key.as_bytes());
                put_key(out, 2, FIXED64);
                out.extend_from_slice(&x.to_le_bytes());
            }
        }
    }
    if r.forward_only {
        put_key(out, 6, VARINT);
        out.push(1);
    }
    if let Some(config) = r.loss_fn_config {
        for (key, value) in config {
            let value_len = config_value_len(value);
            put_ld_header(out, 7, ld_len(key.len()) + ld_len(value_len));
            put_ld_bytes(out, 1, key.as_bytes());
            put_ld_header(out, 2, value_len);
            match value {
                LossConfigValue::Number(x) => {
                    put_key(out, 1, FIXED64);
                    out.extend_from_slice(&x.to_le_bytes());
                }
                LossConfigValue::Text(s) => put_ld_bytes(out, 2, s.as_bytes()),
            }
        }
    }
}

/// `LossConfigValue` is a oneof, so even `0.0` or `""` is written.
fn config_value_len(v: &LossConfigValue) -> usize {
    match v {
        LossConfigValue::Number(_) => 9,
        LossConfigValue::Text(s) => ld_len(s.len()),
    }
}

// ---------------------------------------------------------------- Datum

fn datum_len(d: &Datum) -> usize {
    let chunks: usize = d
        .model_input
        .chunks
        .iter()
        .map(|c| ld_len(chunk_len(c)))
        .sum();
    let inputs: usize = d
        .loss_fn_inputs
        .iter()
        .map(|(k, t)| ld_len(ld_len(k.len()) + ld_len(tensor_len(t))))
        .sum();
    let spans: usize = d
        .model_input_spans
        .iter()
        .chain(&d.loss_fn_input_spans)
        .map(|s| ld_len(span_len(s)))
        .sum();
    chunks + inputs + spans
}

fn write_datum(d: &Datum, out: &mut Vec<u8>) {
    for chunk in &d.model_input.chunks {
        put_ld_header(out, 1, chunk_len(chunk));
        write_chunk(chunk, out);
    }
    for (key, tensor) in &d.loss_fn_inputs {
        let tensor_len = tensor_len(tensor);
        put_ld_header(out, 2, ld_len(key.len()) + ld_len(tensor_len));
        put_ld_bytes(out, 1, key.as_bytes());
        put_ld_header(out, 2, tensor_len);
        write_tensor(tensor, out);
    }
    for span in &d.model_input_spans {
        put_ld_header(out, 3, span_len(span));
        write_span(span, out);
    }
    for span in &d.loss_fn_input_spans {
        put_ld_header(out, 4, span_len(span));
        write_span(span, out);
    }
}

// ---------------------------------------------------------------- Chunk

/// Length of the `Chunk` message (its oneof arm, always written even when empty).
fn chunk_len(c: &Chunk) -> usize {
    match c {
        Chunk::EncodedText { tokens } => ld_len(opt_ld_len(tokens.len() * 4)),
        Chunk::Image {
            data,
            format,
            expected_tokens,
        } => ld_len(image_len(data, format.name(), *expected_tokens)),
        Chunk::Dmel { dmel } => ld_len(opt_ld_len(dmel.len())),
        // Rejected by `check_encodable` before any length is computed.
        Chunk::ImageAssetPointer { .. } => 0,
    }
}

fn image_len(data: &[u8], format: &str, expected_tokens: Option<u32>) -> usize {
    opt_ld_len(data.len())
        + opt_ld_len(format.len())
        + expected_tokens.map_or(0, |n| 1 + int_varint_len(i64::from(n)))
}

fn write_chunk(c: &Chunk, out: &mut Vec<u8>) {
    match c {
        Chunk::EncodedText { tokens } => {
            put_ld_header(out, 1, opt_ld_len(tokens.len() * 4));
            if !tokens.is_empty() {
                put_ld_array(out, 1, tokens);
            }
        }
        Chunk::Image {
            data,
            format,
            expected_tokens,
        } => {
            put_ld_header(out, 2, image_len(data, format.name(), *expected_tokens));
            if !data.is_empty() {
                put_ld_bytes(out, 1, data);
            }
            put_ld_bytes(out, 2, format.name().as_bytes());
            if let Some(n) = expected_tokens {
                put_key(out, 3, VARINT);
                put_varint(out, i64::from(*n) as u64);
            }
        }
        Chunk::Dmel { dmel } => {
            put_ld_header(out, 3, opt_ld_len(dmel.len()));
            if !dmel.is_empty() {
                put_ld_bytes(out, 1, dmel);
            }
        }
        Chunk::ImageAssetPointer { .. } => {}
    }
}

// ---------------------------------------------------------------- Tensor

fn dtype_code(values: &TensorValues) -> u8 {
    match values {
        TensorValues::Float32(_) => 1,
        TensorValues::Int64(_) => 2,
    }
}

fn values_bytes(values: &TensorValues) -> usize {
    values.len() * values.dtype().size()
}

fn put_values(out: &mut Vec<u8>, field: u64, values: &TensorValues) {
    match values {
        TensorValues::Float32(v) => put_ld_array(out, field, v),
        TensorValues::Int64(v) => put_ld_array(out, field, v),
    }
}

/// The shape written on the wire: the explicit one, or `[len]`.
fn wire_shape(t: &TensorData) -> impl Iterator<Item = u64> + '_ {
    let implicit = [t.values().len() as u64];
    let explicit = t.explicit_shape();
    let n = if explicit.is_some() { 0 } else { 1 };
    explicit
        .unwrap_or(&[])
        .iter()
        .map(|&d| d as u64)
        .chain(implicit.into_iter().take(n))
}

fn csr_len(t: &TensorData) -> usize {
    match t.sparse() {
        Some(csr) => {
            opt_ld_len(values_bytes(t.values()))
                + opt_ld_len(csr.crow_indices.len() * 8)
                + opt_ld_len(csr.col_indices.len() * 8)
        }
        None => 0,
    }
}

fn tensor_len(t: &TensorData) -> usize {
    let encoding = if t.is_sparse() {
        ld_len(csr_len(t))
    } else {
        ld_len(values_bytes(t.values()))
    };
    let shape: usize = wire_shape(t).map(varint_len).sum();
    encoding + 2 + opt_ld_len(shape)
}

fn write_tensor(t: &TensorData, out: &mut Vec<u8>) {
    match t.sparse() {
        None => put_values(out, 1, t.values()),
        Some(csr) => {
            put_ld_header(out, 2, csr_len(t));
            if !t.values().is_empty() {
                put_values(out, 1, t.values());
            }
            if !csr.crow_indices.is_empty() {
                put_ld_array(out, 2, &csr.crow_indices);
            }
            if !csr.col_indices.is_empty() {
                put_ld_array(out, 3, &csr.col_indices);
            }
        }
    }
    put_key(out, 3, VARINT);
    out.push(dtype_code(t.values()));
    let shape: usize = wire_shape(t).map(varint_len).sum();
    if shape > 0 {
        put_ld_header(out, 4, shape);
        for d in wire_shape(t) {
            put_varint(out, d);
        }
    }
}

// ---------------------------------------------------------------- ProvenanceSpan

fn span_parts(s: &ProvenanceSpan) -> (u64, &str, u64, u64) {
    match s {
        ProvenanceSpan::PromptTokens {
            sequence_id,
            offset,
            length,
        } => (1, sequence_id, *offset, *length),
        ProvenanceSpan::SampledTokens {
            sequence_id,
            offset,
            length,
        } => (2, sequence_id, *offset, *length),
    }
}

fn span_inner_len(id: &str, offset: u64, length: u64) -> usize {
    let int = |v: u64| if v == 0 { 0 } else { 1 + varint_len(v) };
    opt_ld_len(id.len()) + int(offset) + int(length)
}

fn span_len(s: &ProvenanceSpan) -> usize {
    let (_, id, offset, length) = span_parts(s);
    ld_len(span_inner_len(id, offset, length))
}

fn write_span(s: &ProvenanceSpan, out: &mut Vec<u8>) {
    let (arm, id, offset, length) = span_parts(s);
    put_ld_header(out, arm, span_inner_len(id, offset, length));
    if !id.is_empty() {
        put_ld_bytes(out, 1, id.as_bytes());
    }
    if offset != 0 {
        put_key(out, 2, VARINT);
        put_varint(out, offset);
    }
    if length != 0 {
        put_key(out, 3, VARINT);
        put_varint(out, length);
    }
}
