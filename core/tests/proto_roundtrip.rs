//! Property tests: our hand-written protobuf encoder and decoders agree with prost, the reference
//! implementation of the same schema, on random inputs.
//!
//! * Random forward_backward batches (text, image and dmel chunks; dense and CSR tensors of both
//!   dtypes; provenance spans; loss configs) are encoded by `encode_forward_backward`, decoded by
//!   prost, and compared with the message built field by field from the same datums.
//! * Random `ForwardBackwardOutput` and `SampleResponse` messages (all four wire dtypes, ragged
//!   records, trailing shapes, top-k tables, NaN prompt logprobs) are encoded by prost and
//!   decoded by our decoders, and compared with the values they were built from.

use std::collections::BTreeMap;

use bytes::Bytes;
use proptest::prelude::*;
use prost::Message as _;
use tinker_core::proto::{
    decode_forward_backward_output, decode_sample_response, encode_forward_backward, wire,
    ForwardBackwardRequestRef,
};
use tinker_core::types::{
    Chunk, Datum, ImageFormat, LossConfigValue, LossFn, ModelInput, ProvenanceSpan, StopReason,
    TensorData, TensorValues,
};

// ---------------------------------------------------------------- little-endian helpers

fn le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Bytes {
    v.iter().flat_map(|&x| f(x)).collect::<Vec<u8>>().into()
}

// ---------------------------------------------------------------- request generators

fn chunk() -> impl Strategy<Value = Chunk> {
    prop_oneof![
        prop::collection::vec(any::<i32>(), 0..20).prop_map(Chunk::tokens),
        (
            prop::collection::vec(any::<u8>(), 0..16),
            any::<bool>(),
            prop::option::of(0u32..5000)
        )
            .prop_map(|(data, png, expected_tokens)| Chunk::Image {
                data: data.into(),
                format: if png {
                    ImageFormat::Png
                } else {
                    ImageFormat::Jpeg
                },
                expected_tokens,
            }),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(|d| Chunk::Dmel { dmel: d.into() }),
    ]
}

fn values(n: usize) -> impl Strategy<Value = TensorValues> {
    prop_oneof![
        prop::collection::vec(-1e6f32..1e6, n).prop_map(TensorValues::Float32),
        prop::collection::vec(any::<i64>(), n).prop_map(TensorValues::Int64),
    ]
}

fn tensor() -> impl Strategy<Value = TensorData> {
    prop_oneof![
        // 1-D, no explicit shape.
        (0usize..12)
            .prop_flat_map(values)
            .prop_map(|v| TensorData::dense(v, None).unwrap()),
        // Dense 2-D.
        (0usize..4, 0usize..4).prop_flat_map(|(r, c)| {
            values(r * c).prop_map(move |v| TensorData::dense(v, Some(vec![r, c])).unwrap())
        }),
        // CSR: a random mask of stored cells.
        (0usize..4, 1usize..5)
            .prop_flat_map(|(r, c)| (Just((r, c)), prop::collection::vec(any::<bool>(), r * c)))
            .prop_flat_map(|((r, c), mask)| {
                let stored = mask.iter().filter(|&&m| m).count();
                values(stored).prop_map(move |v| {
                    let mut crow = vec![0i64];
                    let mut col = Vec::new();
                    for row in 0..r {
                        for j in 0..c {
                            if mask[row * c + j] {
                                col.push(j as i64);
                            }
                        }
                        crow.push(col.len() as i64);
                    }
                    TensorData::csr(v, [r, c], crow, col).unwrap()
                })
            }),
    ]
}

fn span() -> impl Strategy<Value = ProvenanceSpan> {
    ("[a-z0-9-]{0,6}", any::<bool>(), 0u64..1000, 0u64..1000).prop_map(
        |(id, prompt, offset, length)| {
            if prompt {
                ProvenanceSpan::PromptTokens {
                    sequence_id: id,
                    offset,
                    length,
                }
            } else {
                ProvenanceSpan::SampledTokens {
                    sequence_id: id,
                    offset,
                    length,
                }
            }
        },
    )
}

fn datum() -> impl Strategy<Value = Datum> {
    (
        prop::collection::vec(chunk(), 0..4),
        prop::collection::btree_map("[a-z_]{0,12}", tensor(), 0..4),
        prop::collection::vec(span(), 0..3),
        prop::collection::vec(span(), 0..3),
    )
        .prop_map(
            |(chunks, loss_fn_inputs, model_input_spans, loss_fn_input_spans)| Datum {
                model_input: ModelInput::from_chunks(chunks),
                loss_fn_inputs,
                model_input_spans,
                loss_fn_input_spans,
            },
        )
}

fn config_value() -> impl Strategy<Value = LossConfigValue> {
    prop_oneof![
        (-1e9f64..1e9).prop_map(LossConfigValue::Number),
        "[ -~]{0,10}".prop_map(LossConfigValue::Text),
    ]
}

// ---------------------------------------------------------------- the reference message

fn wire_values(v: &TensorValues) -> (Bytes, i32) {
    match v {
        TensorValues::Float32(v) => (le(v, f32::to_le_bytes), wire::DType::Float32 as i32),
        TensorValues::Int64(v) => (le(v, i64::to_le_bytes), wire::DType::Int64 as i32),
    }
}

fn wire_tensor(t: &TensorData) -> wire::Tensor {
    let (bytes, dtype) = wire_values(t.values());
    let encoding = match t.sparse() {
        None => wire::tensor::Encoding::Dense(bytes),
        Some(csr) => wire::tensor::Encoding::SparseCsr(wire::SparseCsr {
            values: bytes,
            crow_indices: le(&csr.crow_indices, i64::to_le_bytes),
            col_indices: le(&csr.col_indices, i64::to_le_bytes),
        }),
    };
    wire::Tensor {
        encoding: Some(encoding),
        dtype,
        shape: t.shape().iter().map(|&d| d as i64).collect(),
    }
}

fn wire_span(s: &ProvenanceSpan) -> wire::ProvenanceSpan {
    use wire::provenance_span::Span;
    let span = match s {
        ProvenanceSpan::PromptTokens {
            sequence_id,
            offset,
            length,
        } => Span::PromptTokens(wire::SequenceSpan {
            sequence_id: sequence_id.clone(),
            offset: *offset as i64,
            length: *length as i64,
        }),
        ProvenanceSpan::SampledTokens {
            sequence_id,
            offset,
            length,
        } => Span::SampledTokens(wire::SequenceSpan {
            sequence_id: sequence_id.clone(),
            offset: *offset as i64,
            length: *length as i64,
        }),
    };
    wire::ProvenanceSpan { span: Some(span) }
}

fn wire_datum(d: &Datum) -> wire::Datum {
    use wire::chunk::Kind;
    let model_input = d
        .model_input
        .chunks
        .iter()
        .map(|c| wire::Chunk {
            chunk: Some(match c {
                Chunk::EncodedText { tokens } => Kind::EncodedText(wire::EncodedTextChunk {
                    tokens: le(tokens, i32::to_le_bytes),
                }),
                Chunk::Image {
                    data,
                    format,
                    expected_tokens,
                } => Kind::Image(wire::ImageChunk {
                    data: data.clone(),
                    format: format.name().into(),
                    expected_tokens: expected_tokens.map(|n| n as i32),
                    override_dimensions: None,
                }),
                Chunk::Dmel { dmel } => Kind::Dmel(wire::DmelChunk { dmel: dmel.clone() }),
                Chunk::ImageAssetPointer { .. } => unreachable!("not generated"),
            }),
        })
        .collect();
    wire::Datum {
        model_input,
        loss_fn_inputs: d
            .loss_fn_inputs
            .iter()
            .map(|(k, t)| (k.clone(), wire_tensor(t)))
            .collect(),
        model_input_spans: d.model_input_spans.iter().map(wire_span).collect(),
        loss_fn_input_spans: d.loss_fn_input_spans.iter().map(wire_span).collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn encoded_requests_decode_with_prost_to_the_same_batch(
        data in prop::collection::vec(datum(), 0..5),
        model_id in "[a-z:0-9]{0,16}",
        seq_id in any::<i32>(),
        loss in prop::sample::select(LossFn::ALL.to_vec()),
        config in prop::option::of(prop::collection::btree_map("[a-z_]{0,8}", config_value(), 0..4)),
        forward_only in any::<bool>(),
    ) {
        let request = ForwardBackwardRequestRef {
            model_id: &model_id,
            seq_id,
            data: &data,
            loss_fn: loss,
            loss_fn_config: config.as_ref(),
            forward_only,
        };
        let mut body = vec![0xAA]; // encoding appends; earlier bytes are left alone
        encode_forward_backward(&request, &mut body).unwrap();
        prop_assert_eq!(body[0], 0xAA);
        let body = &body[1..];
        prop_assert_eq!(body.len(), request.encoded_len().unwrap());

        let decoded = wire::ForwardBackwardRequest::decode(body).unwrap();
        let config = config.unwrap_or_default();
        let expected = wire::ForwardBackwardRequest {
            model_id: model_id.clone(),
            seq_id,
            data: data.iter().map(wire_datum).collect(),
            loss_fn: loss.as_str().into(),
            loss_fn_config: config
                .iter()
                .filter_map(|(k, v)| match v {
                    LossConfigValue::Number(x) => Some((k.clone(), *x)),
                    LossConfigValue::Text(_) => None,
                })
                .collect(),
            forward_only,
            loss_fn_config_v2: config
                .iter()
                .map(|(k, v)| {
                    let value = match v {
                        LossConfigValue::Number(x) => wire::loss_config_value::Value::Number(*x),
                        LossConfigValue::Text(s) => wire::loss_config_value::Value::Text(s.clone()),
                    };
                    (k.clone(), wire::LossConfigValue { value: Some(value) })
                })
                .collect(),
        };
        prop_assert_eq!(decoded, expected);
    }
}

// ---------------------------------------------------------------- ForwardBackwardOutput

/// One field of one record: its wire dtype and trailing shape, and each datum's leading size.
#[derive(Debug, Clone)]
struct FieldSpec {
    dtype: wire::DType,
    trailing: Vec<usize>,
    /// Per datum: raw element bits (interpreted per dtype).
    datums: Vec<Vec<u64>>,
}

fn field_spec(num_datums: usize) -> impl Strategy<Value = FieldSpec> {
    (
        prop::sample::select(vec![
            wire::DType::Float32,
            wire::DType::Int64,
            wire::DType::Int32,
            wire::DType::Bfloat16,
        ]),
        prop::sample::select(vec![vec![], vec![2], vec![2, 3], vec![0]]),
    )
        .prop_flat_map(move |(dtype, trailing)| {
            let per_row: usize = trailing.iter().product();
            let datum = (0usize..4)
                .prop_flat_map(move |rows| prop::collection::vec(any::<u64>(), rows * per_row));
            prop::collection::vec(datum, num_datums).prop_map(move |datums| FieldSpec {
                dtype,
                trailing: trailing.clone(),
                datums,
            })
        })
}

/// Keeps generated floats finite so results compare with `==`.
fn finite_f32(bits: u64) -> f32 {
    let x = f32::from_bits(bits as u32);
    if x.is_finite() {
        x
    } else {
        1.0
    }
}

fn finite_bf16(bits: u64) -> u16 {
    let b = bits as u16;
    if f32::from_bits(u32::from(b) << 16).is_finite() {
        b
    } else {
        0x3f80
    }
}

impl FieldSpec {
    fn wire(&self) -> wire::BatchedTensor {
        let mut data = Vec::new();
        let mut offsets = vec![0i64];
        for datum in &self.datums {
            for &bits in datum {
                match self.dtype {
                    wire::DType::Float32 => data.extend(finite_f32(bits).to_le_bytes()),
                    wire::DType::Int64 => data.extend((bits as i64).to_le_bytes()),
                    wire::DType::Int32 => data.extend((bits as i32).to_le_bytes()),
                    _ => data.extend(finite_bf16(bits).to_le_bytes()),
                }
            }
            offsets.push(data.len() as i64);
        }
        wire::BatchedTensor {
            data: data.into(),
            offsets: le(&offsets, i64::to_le_bytes),
            dtype: self.dtype as i32,
            trailing_shape: self.trailing.iter().map(|&d| d as i64).collect(),
        }
    }

    fn expected(&self, i: usize) -> TensorData {
        let datum = &self.datums[i];
        let per_row: usize = self.trailing.iter().product();
        // A zero-cell trailing shape holds no values: zero rows.
        let rows = datum.len().checked_div(per_row).unwrap_or(0);
        let mut shape = vec![rows];
        shape.extend(&self.trailing);
        let values = match self.dtype {
            wire::DType::Float32 => {
                TensorValues::Float32(datum.iter().map(|&b| finite_f32(b)).collect())
            }
            wire::DType::Int64 => TensorValues::Int64(datum.iter().map(|&b| b as i64).collect()),
            wire::DType::Int32 => {
                TensorValues::Int64(datum.iter().map(|&b| i64::from(b as i32)).collect())
            }
            _ => TensorValues::Float32(
                datum
                    .iter()
                    .map(|&b| f32::from_bits(u32::from(finite_bf16(b)) << 16))
                    .collect(),
            ),
        };
        TensorData::dense(values, Some(shape)).unwrap()
    }
}

/// Records of 0..4 datums each, all with the same field names (dtype and trailing shape may
/// differ per record: ragged outputs).
fn records() -> impl Strategy<Value = (Vec<String>, Vec<Vec<FieldSpec>>)> {
    (
        prop::collection::btree_set("[a-z]{1,8}", 0..3),
        prop::collection::vec(0usize..4, 1..4),
    )
        .prop_flat_map(|(names, sizes)| {
            let names: Vec<String> = names.into_iter().collect();
            let per_record: Vec<_> = sizes
                .into_iter()
                .map(|n| prop::collection::vec(field_spec(n), names.len()))
                .collect();
            (Just(names), per_record)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn prost_encoded_outputs_decode_to_the_datums_they_were_built_from(
        (names, recs) in records(),
        declare_counts in any::<bool>(),
        qualifier in prop::option::of("[a-z.]{1,10}"),
        metrics in prop::collection::btree_map("[a-z]{1,6}:(sum|mean)", -1e9f64..1e9, 0..4),
    ) {
        let class = "CrossEntropyLossReturn";
        let wire_name = match &qualifier { Some(q) => format!("{q}:{class}"), None => class.to_string() };
        let proto = wire::ForwardBackwardOutput {
            loss_fn_output_type: wire_name,
            loss_fn_outputs: recs
                .iter()
                .map(|fields| wire::ArrayRecord {
                    type_tag: class.into(),
                    fields: names.iter().cloned().zip(fields.iter().map(FieldSpec::wire)).collect(),
                    num_datums: if declare_counts { fields.first().map_or(0, |f| f.datums.len()) as i64 } else { 0 },
                })
                .collect(),
            metrics: metrics.clone(),
        };
        let out = decode_forward_backward_output(Bytes::from(proto.encode_to_vec())).unwrap();

        let mut expected: Vec<BTreeMap<String, TensorData>> = Vec::new();
        for fields in &recs {
            let n = fields.first().map_or(0, |f| f.datums.len());
            for i in 0..n {
                expected.push(names.iter().cloned().zip(fields.iter().map(|f| f.expected(i))).collect());
            }
        }
        prop_assert_eq!(&out.loss_fn_output_type, class);
        prop_assert_eq!(out.loss_fn_outputs, expected);
        prop_assert_eq!(out.metrics, metrics);
    }
}

// ---------------------------------------------------------------- SampleResponse

#[derive(Debug, Clone)]
struct TopkSpec {
    k: u32,
    length: u32,
    ids: Vec<i32>,
    lps: Vec<f32>,
}

fn topk_spec() -> impl Strategy<Value = TopkSpec> {
    (0u32..4, 0u32..5).prop_flat_map(|(k, length)| {
        let cells = (k * length) as usize;
        // Cells are often the sentinel, to exercise padding.
        let cell = prop_oneof![Just((0i32, -99999.0f32)), (any::<i32>(), -50f32..0.0)];
        prop::collection::vec(cell, cells).prop_map(move |c| TopkSpec {
            k,
            length,
            ids: c.iter().map(|x| x.0).collect(),
            lps: c.iter().map(|x| x.1).collect(),
        })
    })
}

impl TopkSpec {
    fn wire(&self) -> wire::TopkLogprobs {
        wire::TopkLogprobs {
            token_ids: le(&self.ids, i32::to_le_bytes),
            logprobs: le(&self.lps, f32::to_le_bytes),
            k: self.k,
            length: self.length,
        }
    }
}

fn check_topk(
    got: &Option<tinker_core::types::TopkLogprobs>,
    spec: &Option<TopkSpec>,
) -> Result<(), TestCaseError> {
    match (got, spec) {
        (None, None) => {}
        (None, Some(s)) => prop_assert!(s.k == 0 || s.length == 0, "table dropped: {s:?}"),
        (Some(t), Some(s)) => {
            prop_assert_eq!(t.k(), s.k as usize);
            prop_assert_eq!(t.len(), s.length as usize);
            prop_assert_eq!(t.raw_token_ids(), &s.ids[..]);
            prop_assert_eq!(t.raw_logprobs(), &s.lps[..]);
        }
        (Some(_), None) => prop_assert!(false, "table appeared from nothing"),
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct SeqSpec {
    length: bool,
    tokens: Vec<i32>,
    logprobs: Option<Vec<f32>>,
    topk: Option<TopkSpec>,
}

fn seq_spec() -> impl Strategy<Value = SeqSpec> {
    (
        any::<bool>(),
        prop::collection::vec(any::<i32>(), 0..10),
        prop::option::of(prop::collection::vec(-50f32..0.0, 0..10)),
        prop::option::of(topk_spec()),
    )
        .prop_map(|(length, tokens, logprobs, topk)| SeqSpec {
            length,
            tokens,
            logprobs,
            topk,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn prost_encoded_sample_responses_decode_to_the_sequences_they_were_built_from(
        seqs in prop::collection::vec(seq_spec(), 0..5),
        prompt in prop::option::of(prop::collection::vec(prop::option::of(-50f32..0.0), 0..8)),
        topk_prompt in prop::option::of(topk_spec()),
        cache_hits in 0i32..100_000,
    ) {
        let proto = wire::SampleResponse {
            sequences: seqs
                .iter()
                .map(|s| wire::SampledSequence {
                    stop_reason: if s.length { wire::StopReason::Length } else { wire::StopReason::Stop } as i32,
                    tokens: le(&s.tokens, i32::to_le_bytes),
                    logprobs: s.logprobs.as_ref().map(|l| le(l, f32::to_le_bytes)),
                    topk_sampled_logprobs: s.topk.as_ref().map(TopkSpec::wire),
                })
                .collect(),
            prompt_logprobs: prompt.as_ref().map(|p| {
                let raw: Vec<f32> = p.iter().map(|x| x.unwrap_or(f32::NAN)).collect();
                le(&raw, f32::to_le_bytes)
            }),
            topk_prompt_logprobs: topk_prompt.as_ref().map(TopkSpec::wire),
            prompt_cache_hit_tokens: cache_hits,
            target_prompt_logprobs: None,
            prompt_alt_tokens: None,
        };
        let r = decode_sample_response(Bytes::from(proto.encode_to_vec())).unwrap();
        prop_assert_eq!(r.sequences.len(), seqs.len());
        for (got, spec) in r.sequences.iter().zip(&seqs) {
            prop_assert_eq!(got.stop_reason, if spec.length { StopReason::Length } else { StopReason::Stop });
            prop_assert_eq!(&got.tokens, &spec.tokens);
            // An empty logprobs array is the same as none.
            prop_assert_eq!(&got.logprobs, &spec.logprobs.clone().filter(|l| !l.is_empty()));
            check_topk(&got.topk_logprobs, &spec.topk)?;
            prop_assert_eq!(&got.sequence_id, &None);
        }
        prop_assert_eq!(r.prompt_logprobs, prompt.filter(|p| !p.is_empty()));
        check_topk(&r.topk_prompt_logprobs, &topk_prompt)?;
        prop_assert_eq!(r.prompt_cache_hit_tokens, cache_hits as u32);
    }

    #[test]
    fn arbitrary_bytes_never_panic_either_decoder(body in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_forward_backward_output(Bytes::from(body.clone()));
        let _ = decode_sample_response(Bytes::from(body));
    }
}
