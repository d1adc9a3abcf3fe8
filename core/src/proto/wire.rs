//! The protobuf messages of package `tinker_public` (protocol.md 10.1), as prost structs.
//!
//! Written by hand from the schema the official SDK embeds (no `protoc` at build time). The
//! structs cover SDK 0.38's schema, which is a superset of 0.25's: 0.25's `TopkPromptLogprobs`
//! (field 4 `prompt_length`) is wire-identical to [`TopkLogprobs`] (field 4 `length`), so one set
//! of structs decodes both. Byte fields are [`Bytes`], so decoding from a `Bytes` body slices it
//! instead of copying.
//!
//! The SDK itself encodes requests with [`crate::proto::encode_forward_backward`] and decodes
//! results with [`crate::proto::decode_forward_backward_output`] /
//! [`crate::proto::decode_sample_response`], which are faster than going through these structs.
//! These structs are for the other side: the local test server decodes requests and encodes
//! results with them, and tests use them as an independent reference.
//!
//! ```
//! use prost::Message as _;
//! use tinker_core::proto::wire;
//! let seq = wire::SampledSequence { stop_reason: wire::StopReason::Length as i32, ..Default::default() };
//! let body = wire::SampleResponse { sequences: vec![seq], ..Default::default() }.encode_to_vec();
//! let back = wire::SampleResponse::decode(body.as_slice()).unwrap();
//! assert_eq!(back.sequences[0].stop_reason(), wire::StopReason::Length);
//! ```

use std::collections::BTreeMap;

use bytes::Bytes;

/// Why a sampled sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum StopReason {
    /// A stop string or stop token (or EOS) was produced.
    Stop = 0,
    /// `max_tokens` was reached.
    Length = 1,
}

/// Element type of a [`Tensor`] or [`BatchedTensor`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DType {
    /// Not set (invalid in practice).
    Unspecified = 0,
    /// Little-endian IEEE float32.
    Float32 = 1,
    /// Little-endian int64.
    Int64 = 2,
    /// Little-endian int32 (widened to int64 when decoded).
    Int32 = 3,
    /// bfloat16, the upper 16 bits of a float32 (widened to float32 when decoded).
    Bfloat16 = 4,
}

// ---------------------------------------------------------------- forward_backward request

/// Body of `POST /api/v1/forward_backward`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ForwardBackwardRequest {
    /// The training run (`<session>:train:<n>`).
    #[prost(string, tag = "1")]
    pub model_id: String,
    /// The request's sequence number (≥ 1).
    #[prost(int32, tag = "2")]
    pub seq_id: i32,
    /// The datums of this chunk.
    #[prost(message, repeated, tag = "3")]
    pub data: Vec<Datum>,
    /// The loss function name.
    #[prost(string, tag = "4")]
    pub loss_fn: String,
    /// Numeric config values (legacy, floats only).
    #[prost(btree_map = "string, double", tag = "5")]
    pub loss_fn_config: BTreeMap<String, f64>,
    /// `true` for `forward` (no gradient).
    #[prost(bool, tag = "6")]
    pub forward_only: bool,
    /// Config values, numbers or strings (SDK 0.38); servers prefer it when present.
    #[prost(btree_map = "string, message", tag = "7")]
    pub loss_fn_config_v2: BTreeMap<String, LossConfigValue>,
}

/// One `loss_fn_config_v2` value (SDK 0.38).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LossConfigValue {
    /// The value.
    #[prost(oneof = "loss_config_value::Value", tags = "1, 2")]
    pub value: Option<loss_config_value::Value>,
}

/// The oneof of [`LossConfigValue`].
pub mod loss_config_value {
    /// A number or a string.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        /// A number.
        #[prost(double, tag = "1")]
        Number(f64),
        /// A string.
        #[prost(string, tag = "2")]
        Text(String),
    }
}

/// One training example.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Datum {
    /// The model input's chunks.
    #[prost(message, repeated, tag = "1")]
    pub model_input: Vec<Chunk>,
    /// Named loss inputs.
    #[prost(btree_map = "string, message", tag = "2")]
    pub loss_fn_inputs: BTreeMap<String, Tensor>,
    /// Provenance of the model input's positions (SDK 0.38).
    #[prost(message, repeated, tag = "3")]
    pub model_input_spans: Vec<ProvenanceSpan>,
    /// Provenance of the targets' positions (SDK 0.38).
    #[prost(message, repeated, tag = "4")]
    pub loss_fn_input_spans: Vec<ProvenanceSpan>,
}

/// Where a stretch of positions came from (SDK 0.38).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProvenanceSpan {
    /// The span.
    #[prost(oneof = "provenance_span::Span", tags = "1, 2")]
    pub span: Option<provenance_span::Span>,
}

/// The oneof of [`ProvenanceSpan`].
pub mod provenance_span {
    /// A prompt span or a sampled span.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Span {
        /// Positions of a sampled sequence's prompt.
        #[prost(message, tag = "1")]
        PromptTokens(super::SequenceSpan),
        /// Positions of a sampled sequence's generated tokens.
        #[prost(message, tag = "2")]
        SampledTokens(super::SequenceSpan),
    }
}

/// `PromptProvenanceSpan` and `SampledProvenanceSpan` (identical fields).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SequenceSpan {
    /// The sequence id returned by sampling.
    #[prost(string, tag = "1")]
    pub sequence_id: String,
    /// First position.
    #[prost(int64, tag = "2")]
    pub offset: i64,
    /// Number of positions.
    #[prost(int64, tag = "3")]
    pub length: i64,
}

/// One chunk of a model input.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Chunk {
    /// The chunk.
    #[prost(oneof = "chunk::Kind", tags = "1, 2, 3")]
    pub chunk: Option<chunk::Kind>,
}

/// The oneof of [`Chunk`].
pub mod chunk {
    /// Text, image or audio.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// Token ids.
        #[prost(message, tag = "1")]
        EncodedText(super::EncodedTextChunk),
        /// An inline image.
        #[prost(message, tag = "2")]
        Image(super::ImageChunk),
        /// DMel audio.
        #[prost(message, tag = "3")]
        Dmel(super::DmelChunk),
    }
}

/// Token ids, packed as little-endian int32.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncodedTextChunk {
    /// `int32` little-endian array.
    #[prost(bytes = "bytes", tag = "1")]
    pub tokens: Bytes,
}

/// An image sent inline.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageChunk {
    /// Raw image bytes.
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
    /// `"png"` or `"jpeg"`.
    #[prost(string, tag = "2")]
    pub format: String,
    /// The image's token count, when the caller gave it.
    #[prost(int32, optional, tag = "3")]
    pub expected_tokens: Option<i32>,
    /// Never set by the SDK (SDK 0.38).
    #[prost(message, optional, tag = "4")]
    pub override_dimensions: Option<ImageDimensions>,
}

/// Image size override (SDK 0.38).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ImageDimensions {
    /// Width in pixels.
    #[prost(uint32, tag = "1")]
    pub width: u32,
    /// Height in pixels.
    #[prost(uint32, tag = "2")]
    pub height: u32,
}

/// DMel audio tokens.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DmelChunk {
    /// The serialized TensorContainer, verbatim.
    #[prost(bytes = "bytes", tag = "1")]
    pub dmel: Bytes,
}

/// A dense or CSR tensor.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Tensor {
    /// The values.
    #[prost(oneof = "tensor::Encoding", tags = "1, 2")]
    pub encoding: Option<tensor::Encoding>,
    /// Element type ([`DType`]).
    #[prost(enumeration = "DType", tag = "3")]
    pub dtype: i32,
    /// Dense shape (empty ⇒ 1-D).
    #[prost(int64, repeated, tag = "4")]
    pub shape: Vec<i64>,
}

/// The oneof of [`Tensor`].
pub mod tensor {
    /// Dense or CSR.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Encoding {
        /// Row-major values in the dtype, little-endian.
        #[prost(bytes = "bytes", tag = "1")]
        Dense(bytes::Bytes),
        /// CSR values and indices.
        #[prost(message, tag = "2")]
        SparseCsr(super::SparseCsr),
    }
}

/// A 2-D CSR tensor's arrays.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SparseCsr {
    /// Stored values in the tensor's dtype.
    #[prost(bytes = "bytes", tag = "1")]
    pub values: Bytes,
    /// Row pointers, int64.
    #[prost(bytes = "bytes", tag = "2")]
    pub crow_indices: Bytes,
    /// Column indices, int64.
    #[prost(bytes = "bytes", tag = "3")]
    pub col_indices: Bytes,
}

// ---------------------------------------------------------------- forward_backward result

/// Result of a forward or forward_backward future.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ForwardBackwardOutput {
    /// Output record class, possibly qualified (`module:Class`).
    #[prost(string, tag = "1")]
    pub loss_fn_output_type: String,
    /// Per-datum outputs, possibly split over several records.
    #[prost(message, repeated, tag = "2")]
    pub loss_fn_outputs: Vec<ArrayRecord>,
    /// Metrics keyed `"<name>:<reduction>"`.
    #[prost(btree_map = "string, double", tag = "3")]
    pub metrics: BTreeMap<String, f64>,
}

/// A run of datums' outputs, one [`BatchedTensor`] per field.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ArrayRecord {
    /// Record class name.
    #[prost(string, tag = "1")]
    pub type_tag: String,
    /// Output fields.
    #[prost(btree_map = "string, message", tag = "2")]
    pub fields: BTreeMap<String, BatchedTensor>,
    /// Number of datums in this record (0 from old writers).
    #[prost(int64, tag = "3")]
    pub num_datums: i64,
}

/// Every datum's values of one field, concatenated.
#[derive(Clone, PartialEq, prost::Message)]
pub struct BatchedTensor {
    /// All datums' values, in the dtype, little-endian.
    #[prost(bytes = "bytes", tag = "1")]
    pub data: Bytes,
    /// int64 array of `num_datums + 1` byte offsets into `data`.
    #[prost(bytes = "bytes", tag = "2")]
    pub offsets: Bytes,
    /// Element type ([`DType`]).
    #[prost(enumeration = "DType", tag = "3")]
    pub dtype: i32,
    /// Shape of each datum after its leading dimension.
    #[prost(int64, repeated, tag = "4")]
    pub trailing_shape: Vec<i64>,
}

// ---------------------------------------------------------------- sample result

/// Result of a sample future.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SampleResponse {
    /// One entry per sample.
    #[prost(message, repeated, tag = "1")]
    pub sequences: Vec<SampledSequence>,
    /// float32 array, one per prompt token, NaN where not computed.
    #[prost(bytes = "bytes", optional, tag = "2")]
    pub prompt_logprobs: Option<Bytes>,
    /// Top-k alternatives per prompt position.
    #[prost(message, optional, tag = "3")]
    pub topk_prompt_logprobs: Option<TopkLogprobs>,
    /// Prompt tokens billed as prefix-cache hits.
    #[prost(int32, tag = "4")]
    pub prompt_cache_hit_tokens: i32,
    /// Logprobs of requested prompt targets (SDK 0.38).
    #[prost(message, optional, tag = "5")]
    pub target_prompt_logprobs: Option<Tensor>,
    /// Alternative tokens per prompt position (SDK 0.38).
    #[prost(message, optional, tag = "6")]
    pub prompt_alt_tokens: Option<PromptAltTokens>,
}

/// One generated sequence.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SampledSequence {
    /// Why generation stopped ([`StopReason`]).
    #[prost(enumeration = "StopReason", tag = "1")]
    pub stop_reason: i32,
    /// int32 array of generated token ids.
    #[prost(bytes = "bytes", tag = "2")]
    pub tokens: Bytes,
    /// float32 array, same length as `tokens`.
    #[prost(bytes = "bytes", optional, tag = "3")]
    pub logprobs: Option<Bytes>,
    /// Top-k alternatives per generated position (SDK 0.38).
    #[prost(message, optional, tag = "4")]
    pub topk_sampled_logprobs: Option<TopkLogprobs>,
}

/// `length × k` top-k table; SDK 0.25 calls it `TopkPromptLogprobs` and field 4 `prompt_length`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TopkLogprobs {
    /// int32, row-major `length × k`.
    #[prost(bytes = "bytes", tag = "1")]
    pub token_ids: Bytes,
    /// float32, row-major `length × k`.
    #[prost(bytes = "bytes", tag = "2")]
    pub logprobs: Bytes,
    /// Columns per row.
    #[prost(uint32, tag = "3")]
    pub k: u32,
    /// Rows.
    #[prost(uint32, tag = "4")]
    pub length: u32,
}

/// SDK 0.25's name for [`TopkLogprobs`] (same wire format).
pub type TopkPromptLogprobs = TopkLogprobs;

/// Alternative tokens and their logprobs per prompt position (SDK 0.38).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PromptAltTokens {
    /// int64 `[L−1, k]`.
    #[prost(message, optional, tag = "1")]
    pub tokens: Option<Tensor>,
    /// float32 `[L−1, k]`.
    #[prost(message, optional, tag = "2")]
    pub logprobs: Option<Tensor>,
}

// ---------------------------------------------------------------- unused by the SDK

/// Sampling parameters (present in the schema; sampling requests are JSON).
#[derive(Clone, PartialEq, prost::Message)]
pub struct SamplingParams {
    /// Maximum generated tokens.
    #[prost(int32, optional, tag = "1")]
    pub max_tokens: Option<i32>,
    /// Sampling seed.
    #[prost(uint64, optional, tag = "2")]
    pub seed: Option<u64>,
    /// Temperature.
    #[prost(float, optional, tag = "3")]
    pub temperature: Option<f32>,
    /// Top-k (-1 = no limit).
    #[prost(int32, optional, tag = "4")]
    pub top_k: Option<i32>,
    /// Top-p.
    #[prost(float, optional, tag = "5")]
    pub top_p: Option<f32>,
    /// Stop strings or stop tokens.
    #[prost(oneof = "sampling_params::Stop", tags = "6, 7")]
    pub stop: Option<sampling_params::Stop>,
}

/// The oneof of [`SamplingParams`].
pub mod sampling_params {
    /// Stop strings or stop token ids.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Stop {
        /// Stop strings.
        #[prost(message, tag = "6")]
        StopStrs(super::StopStrings),
        /// Stop token ids.
        #[prost(message, tag = "7")]
        StopTokens(super::StopTokens),
    }
}

/// Stop strings.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopStrings {
    /// The strings.
    #[prost(string, repeated, tag = "1")]
    pub values: Vec<String>,
}

/// Stop token ids.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StopTokens {
    /// The token ids.
    #[prost(int32, repeated, tag = "1")]
    pub values: Vec<i32>,
}
