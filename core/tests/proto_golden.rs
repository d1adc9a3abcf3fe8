//! The golden protobuf vectors of protocol.md 10.3-10.5, and malformed bodies that must be
//! rejected with a decode error naming the field (never a panic).

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message as _;
use tinker_core::proto::{
    compress_body, decode_forward_backward_output, decode_sample_response, encode_forward_backward,
    wire, ForwardBackwardRequestRef, ZSTD_LEVEL,
};
use tinker_core::types::{
    Chunk, Datum, LossConfigValue, LossFn, ModelInput, StopReason, TensorData,
};
use tinker_core::{Error, ErrorKind};

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

const GOLDEN_REQUEST: &str = "0a09733a747261696e3a3010011a640a100a0e0a0c010000000200000003000000121e0a077765696768747312130a0c0000803f0000803f0000803f180122010312300a0d7461726765745f746f6b656e73121f0a180200000000000000030000000000000004000000000000001802220103220d63726f73735f656e74726f7079";
const WEIGHTS_ENTRY: &str = "121e0a077765696768747312130a0c0000803f0000803f0000803f1801220103";
const TARGETS_ENTRY: &str = "12300a0d7461726765745f746f6b656e73121f0a180200000000000000030000000000000004000000000000001802220103";

const GOLDEN_OUTPUT: &str = "0a1643726f7373456e74726f70794c6f737352657475726e12520a1643726f7373456e74726f70794c6f737352657475726e12360a086c6f6770726f6273122a0a0c000000bf000080bf000080be1218000000000000000008000000000000000c00000000000000180118021a130a086c6f73733a73756d11000000000000fc3f";

const GOLDEN_SAMPLE: &str =
    "0a1412080b0000000c0000001a08cdccccbdcdcc4cbe120c0000c07f0000c0bf000000bf";

fn golden_datum() -> Datum {
    Datum::new(ModelInput::from_tokens(vec![1, 2, 3]))
        .with_input("target_tokens", TensorData::from_i64(vec![2, 3, 4]))
        .with_input("weights", TensorData::from_f32(vec![1.0, 1.0, 1.0]))
}

fn encode(request: &ForwardBackwardRequestRef<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    encode_forward_backward(request, &mut out).unwrap();
    out
}

fn assert_decode_error(err: Error, needle: &str) {
    assert_eq!(err.kind(), ErrorKind::Decode, "{err}");
    assert!(err.to_string().contains(needle), "{needle:?} not in: {err}");
}

#[test]
fn golden_request_encodes_to_the_sdk_bytes_with_map_entries_in_key_order() {
    let data = [golden_datum()];
    let ours = encode(&ForwardBackwardRequestRef::new(
        "s:train:0",
        1,
        &data,
        LossFn::CrossEntropy,
    ));
    // The SDK wrote `weights` before `target_tokens` (dict order); we write key order. Same
    // bytes otherwise.
    let targets = TARGETS_ENTRY;
    let sdk_order = format!("{WEIGHTS_ENTRY}{targets}");
    assert!(GOLDEN_REQUEST.contains(&sdk_order));
    let key_order = GOLDEN_REQUEST.replace(&sdk_order, &format!("{targets}{WEIGHTS_ENTRY}"));
    assert_eq!(ours.len(), 130);
    assert_eq!(ours, unhex(&key_order));
    // And both decode to the same message.
    let sdk = wire::ForwardBackwardRequest::decode(unhex(GOLDEN_REQUEST).as_slice()).unwrap();
    let mine = wire::ForwardBackwardRequest::decode(ours.as_slice()).unwrap();
    assert_eq!(mine, sdk);
    assert_eq!(sdk.data[0].loss_fn_inputs["weights"].shape, vec![3]);
}

#[test]
fn loss_config_numbers_are_dual_written_and_strings_go_to_v2_only() {
    let data = [golden_datum()];
    let config = BTreeMap::from([
        (
            "clip_low_threshold".to_string(),
            LossConfigValue::Number(0.8),
        ),
        (
            "loss_id".to_string(),
            LossConfigValue::Text("loss-123".into()),
        ),
        ("zero".to_string(), LossConfigValue::Number(0.0)),
    ]);
    let request = ForwardBackwardRequestRef {
        loss_fn_config: Some(&config),
        forward_only: true,
        ..ForwardBackwardRequestRef::new("m", 7, &data, LossFn::Custom)
    };
    let body = encode(&request);
    assert_eq!(body.len(), request.encoded_len().unwrap());
    let decoded = wire::ForwardBackwardRequest::decode(body.as_slice()).unwrap();
    assert_eq!(
        decoded.loss_fn_config,
        BTreeMap::from([
            ("clip_low_threshold".to_string(), 0.8),
            ("zero".to_string(), 0.0)
        ])
    );
    use wire::loss_config_value::Value;
    let v2: BTreeMap<_, _> = decoded
        .loss_fn_config_v2
        .into_iter()
        .map(|(k, v)| (k, v.value))
        .collect();
    assert_eq!(
        v2,
        BTreeMap::from([
            ("clip_low_threshold".to_string(), Some(Value::Number(0.8))),
            ("loss_id".to_string(), Some(Value::Text("loss-123".into()))),
            ("zero".to_string(), Some(Value::Number(0.0))),
        ])
    );
    assert!(decoded.forward_only);
    assert_eq!(decoded.seq_id, 7);
    assert_eq!(decoded.loss_fn, "custom");
}

#[test]
fn an_image_asset_pointer_cannot_be_encoded_and_nothing_is_written() {
    let datum = Datum::new(ModelInput::from_chunks(vec![
        Chunk::tokens(vec![1]),
        Chunk::ImageAssetPointer {
            format: tinker_core::types::ImageFormat::Png,
            location: "gs://b/i.png".into(),
            expected_tokens: Some(4),
        },
    ]));
    let data = [golden_datum(), datum];
    let mut out = Vec::new();
    let err = encode_forward_backward(
        &ForwardBackwardRequestRef::new("m", 1, &data, LossFn::CrossEntropy),
        &mut out,
    )
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput);
    assert!(
        err.to_string().contains("data[1].model_input.chunks[1]"),
        "{err}"
    );
    assert!(out.is_empty());
}

#[test]
fn zstd_bodies_are_single_frames_recording_the_content_size() {
    let data = [golden_datum()];
    let body = encode(&ForwardBackwardRequestRef::new(
        "s:train:0",
        1,
        &data,
        LossFn::CrossEntropy,
    ));
    let frame = compress_body(&body, ZSTD_LEVEL).unwrap();
    assert_eq!(&frame[..4], &[0x28, 0xb5, 0x2f, 0xfd]);
    assert_eq!(
        zstd::zstd_safe::get_frame_content_size(&frame).ok(),
        Some(Some(body.len() as u64))
    );
    assert_eq!(zstd::decode_all(frame.as_slice()).unwrap(), body);
}

#[test]
fn golden_output_decodes_to_two_datums_and_the_loss() {
    let out = decode_forward_backward_output(Bytes::from(unhex(GOLDEN_OUTPUT))).unwrap();
    assert_eq!(out.loss_fn_output_type, "CrossEntropyLossReturn");
    let expected = vec![
        BTreeMap::from([(
            "logprobs".to_string(),
            TensorData::from_f32(vec![-0.5, -1.0])
                .with_shape(vec![2])
                .unwrap(),
        )]),
        BTreeMap::from([(
            "logprobs".to_string(),
            TensorData::from_f32(vec![-0.25])
                .with_shape(vec![1])
                .unwrap(),
        )]),
    ];
    assert_eq!(out.loss_fn_outputs, expected);
    assert_eq!(
        out.metrics,
        BTreeMap::from([("loss:sum".to_string(), 1.75)])
    );
}

fn one_field_output(bt: wire::BatchedTensor, num_datums: i64) -> wire::ForwardBackwardOutput {
    wire::ForwardBackwardOutput {
        loss_fn_output_type: "tinker.losses:CrossEntropyLossReturn".into(),
        loss_fn_outputs: vec![wire::ArrayRecord {
            type_tag: "x".into(),
            fields: BTreeMap::from([("logprobs".to_string(), bt)]),
            num_datums,
        }],
        metrics: BTreeMap::new(),
    }
}

fn i64_bytes(v: &[i64]) -> Bytes {
    v.iter()
        .flat_map(|x| x.to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

fn decode_fbo(
    m: &wire::ForwardBackwardOutput,
) -> tinker_core::Result<tinker_core::types::ForwardBackwardOutput> {
    decode_forward_backward_output(Bytes::from(m.encode_to_vec()))
}

#[test]
fn narrow_wire_dtypes_widen_and_trailing_shapes_shape_each_datum() {
    // bf16 1.5, -2.0 | int32 [[1,2],[3,4]] as trailing shape [2].
    let bf16 = wire::BatchedTensor {
        data: Bytes::from_static(&[0xc0, 0x3f, 0x00, 0xc0]),
        offsets: i64_bytes(&[0, 2, 4]),
        dtype: wire::DType::Bfloat16 as i32,
        trailing_shape: vec![],
    };
    let out = decode_fbo(&one_field_output(bf16, 2)).unwrap();
    assert_eq!(out.loss_fn_output_type, "CrossEntropyLossReturn");
    assert_eq!(
        out.loss_fn_outputs[0]["logprobs"].as_f32(),
        Some(&[1.5f32][..])
    );
    assert_eq!(
        out.loss_fn_outputs[1]["logprobs"].as_f32(),
        Some(&[-2.0f32][..])
    );

    let int32 = wire::BatchedTensor {
        data: [1i32, 2, 3, 4, -5, -6]
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect::<Vec<u8>>()
            .into(),
        offsets: i64_bytes(&[0, 16, 24]),
        dtype: wire::DType::Int32 as i32,
        trailing_shape: vec![2],
    };
    // num_datums 0: an old writer; the count comes from the offsets.
    let out = decode_fbo(&one_field_output(int32, 0)).unwrap();
    let first = &out.loss_fn_outputs[0]["logprobs"];
    assert_eq!(first.as_i64(), Some(&[1i64, 2, 3, 4][..]));
    assert_eq!(first.shape(), vec![2, 2]);
    assert_eq!(out.loss_fn_outputs[1]["logprobs"].shape(), vec![1, 2]);
    assert_eq!(
        out.loss_fn_outputs[1]["logprobs"].as_i64(),
        Some(&[-5i64, -6][..])
    );
}

#[test]
fn a_body_without_records_has_the_default_type_and_no_outputs() {
    let empty = wire::ForwardBackwardOutput {
        metrics: BTreeMap::from([("loss:sum".to_string(), 0.0)]),
        ..Default::default()
    };
    let out = decode_fbo(&empty).unwrap();
    assert_eq!(out.loss_fn_output_type, "ArrayRecord");
    assert!(out.loss_fn_outputs.is_empty());
    assert_eq!(out.metrics["loss:sum"], 0.0);
}

#[test]
fn records_stripped_of_fields_still_give_one_empty_output_per_datum() {
    let stripped = wire::ForwardBackwardOutput {
        loss_fn_output_type: "X".into(),
        loss_fn_outputs: vec![wire::ArrayRecord {
            num_datums: 3,
            ..Default::default()
        }],
        metrics: BTreeMap::new(),
    };
    let out = decode_fbo(&stripped).unwrap();
    assert_eq!(out.loss_fn_outputs, vec![BTreeMap::new(); 3]);
}

#[test]
fn malformed_outputs_are_decode_errors_naming_the_field() {
    let good = || wire::BatchedTensor {
        data: Bytes::from(vec![0u8; 12]),
        offsets: i64_bytes(&[0, 8, 12]),
        dtype: wire::DType::Float32 as i32,
        trailing_shape: vec![],
    };
    decode_fbo(&one_field_output(good(), 2)).unwrap();
    let cases: Vec<(&str, wire::BatchedTensor, i64, &str)> = vec![
        (
            "offset past the data",
            wire::BatchedTensor {
                offsets: i64_bytes(&[0, 8, 16]),
                ..good()
            },
            2,
            "not a range within the 12 data bytes",
        ),
        (
            "negative offset",
            wire::BatchedTensor {
                offsets: i64_bytes(&[-4, 8, 12]),
                ..good()
            },
            2,
            "offsets[0..2]",
        ),
        (
            "offsets go backwards",
            wire::BatchedTensor {
                offsets: i64_bytes(&[0, 8, 4]),
                ..good()
            },
            2,
            "offsets[1..3]",
        ),
        (
            "slice not a whole float",
            wire::BatchedTensor {
                offsets: i64_bytes(&[0, 6, 12]),
                ..good()
            },
            2,
            "not aligned to the 4-byte elements",
        ),
        (
            "offsets not whole int64s",
            wire::BatchedTensor {
                offsets: Bytes::from(vec![0u8; 20]),
                ..good()
            },
            2,
            "not a whole number of int64",
        ),
        (
            "unspecified dtype",
            wire::BatchedTensor { dtype: 0, ..good() },
            2,
            ".dtype 0",
        ),
        (
            "unknown dtype",
            wire::BatchedTensor { dtype: 9, ..good() },
            2,
            ".dtype 9",
        ),
        (
            "trailing shape does not divide",
            wire::BatchedTensor {
                trailing_shape: vec![3],
                ..good()
            },
            2,
            "not a multiple of trailing_shape",
        ),
        (
            "negative trailing dim",
            wire::BatchedTensor {
                trailing_shape: vec![-1],
                ..good()
            },
            2,
            "negative dimension",
        ),
        (
            "more datums declared than sent",
            good(),
            3,
            "field logprobs has 2 datums but the records declare 3",
        ),
        ("negative num_datums", good(), -1, "num_datums is negative"),
    ];
    for (story, bt, num_datums, needle) in cases {
        let err = decode_fbo(&one_field_output(bt, num_datums)).expect_err(story);
        assert_decode_error(err, needle);
    }
}

#[test]
fn every_truncation_of_the_golden_output_is_handled_and_cuts_inside_the_record_fail() {
    let full = unhex(GOLDEN_OUTPUT);
    // The record is bytes 24..108 (key 0x12, length 0x52).
    assert_eq!(full[24], 0x12);
    for cut in 0..full.len() {
        let result = decode_forward_backward_output(Bytes::copy_from_slice(&full[..cut]));
        if (25..108).contains(&cut) {
            assert_decode_error(
                result.expect_err("cut inside the record"),
                "ForwardBackwardOutput",
            );
        }
    }
}

#[test]
fn golden_sample_response_decodes_with_nan_prompt_logprobs_as_none() {
    let r = decode_sample_response(Bytes::from(unhex(GOLDEN_SAMPLE))).unwrap();
    assert_eq!(r.sequences.len(), 1);
    let seq = &r.sequences[0];
    assert_eq!(seq.stop_reason, StopReason::Stop);
    assert_eq!(seq.tokens, vec![11, 12]);
    assert_eq!(seq.logprobs, Some(vec![-0.1, -0.2]));
    assert_eq!(seq.topk_logprobs, None);
    assert_eq!(r.prompt_logprobs, Some(vec![None, Some(-1.5), Some(-0.5)]));
    assert_eq!(r.topk_prompt_logprobs, None);
    assert_eq!(r.prompt_cache_hit_tokens, 0);
}

fn f32_bytes(v: &[f32]) -> Bytes {
    v.iter()
        .flat_map(|x| x.to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

fn i32_bytes(v: &[i32]) -> Bytes {
    v.iter()
        .flat_map(|x| x.to_le_bytes())
        .collect::<Vec<u8>>()
        .into()
}

#[test]
fn a_0_25_topk_prompt_table_and_the_0_38_extras_decode() {
    const S: f32 = -99999.0;
    let topk = wire::TopkPromptLogprobs {
        token_ids: i32_bytes(&[0, 0, 5, 6, 7, 0]),
        logprobs: f32_bytes(&[S, S, -0.5, -0.6, -0.7, S]),
        k: 2,
        length: 3,
    };
    let alt = wire::PromptAltTokens {
        tokens: Some(wire::Tensor {
            encoding: Some(wire::tensor::Encoding::Dense(i32_bytes(&[3, 4]))),
            dtype: wire::DType::Int32 as i32,
            shape: vec![1, 2],
        }),
        logprobs: Some(wire::Tensor {
            encoding: Some(wire::tensor::Encoding::Dense(f32_bytes(&[-0.1, -0.2]))),
            dtype: wire::DType::Float32 as i32,
            shape: vec![1, 2],
        }),
    };
    let target = wire::Tensor {
        encoding: Some(wire::tensor::Encoding::SparseCsr(wire::SparseCsr {
            values: f32_bytes(&[-1.25]),
            crow_indices: i64_bytes(&[0, 0, 1]),
            col_indices: i64_bytes(&[2]),
        })),
        dtype: wire::DType::Float32 as i32,
        shape: vec![2, 3],
    };
    let body = wire::SampleResponse {
        sequences: vec![wire::SampledSequence {
            stop_reason: wire::StopReason::Length as i32,
            tokens: i32_bytes(&[9]),
            logprobs: Some(Bytes::new()),
            topk_sampled_logprobs: Some(wire::TopkLogprobs {
                token_ids: i32_bytes(&[9]),
                logprobs: f32_bytes(&[-0.01]),
                k: 1,
                length: 1,
            }),
        }],
        prompt_logprobs: None,
        topk_prompt_logprobs: Some(topk),
        prompt_cache_hit_tokens: 12,
        target_prompt_logprobs: Some(target),
        prompt_alt_tokens: Some(alt),
    };
    let r = decode_sample_response(Bytes::from(body.encode_to_vec())).unwrap();
    let seq = &r.sequences[0];
    assert_eq!(seq.stop_reason, StopReason::Length);
    assert_eq!(seq.logprobs, None, "an empty logprobs array means none");
    assert_eq!(
        seq.topk_logprobs.as_ref().unwrap().to_rows(),
        vec![Some(vec![(9, -0.01)])]
    );
    assert_eq!(
        r.topk_prompt_logprobs.unwrap().to_rows(),
        vec![
            None,
            Some(vec![(5, -0.5), (6, -0.6)]),
            Some(vec![(7, -0.7)])
        ]
    );
    assert_eq!(r.prompt_cache_hit_tokens, 12);
    let target = r.target_prompt_logprobs.unwrap();
    assert!(target.is_sparse());
    assert_eq!(
        target.to_dense_f64(0.0),
        vec![0.0, 0.0, 0.0, 0.0, 0.0, -1.25]
    );
    let alt = r.prompt_alt_tokens.unwrap();
    assert_eq!(alt.tokens.as_i64(), Some(&[3i64, 4][..]));
    assert_eq!(alt.tokens.shape(), vec![1, 2]);
    assert_eq!(alt.logprobs.as_f32(), Some(&[-0.1f32, -0.2][..]));
}

#[test]
fn malformed_sample_responses_are_decode_errors_naming_the_field() {
    let seq = || wire::SampledSequence {
        stop_reason: 0,
        tokens: i32_bytes(&[1, 2]),
        logprobs: Some(f32_bytes(&[-1.0, -2.0])),
        topk_sampled_logprobs: None,
    };
    let response = |s: wire::SampledSequence| wire::SampleResponse {
        sequences: vec![s],
        ..Default::default()
    };
    let dense = |bytes: Bytes, dtype: wire::DType, shape: Vec<i64>| wire::Tensor {
        encoding: Some(wire::tensor::Encoding::Dense(bytes)),
        dtype: dtype as i32,
        shape,
    };
    let cases: Vec<(&str, wire::SampleResponse, &str)> = vec![
        (
            "unknown stop reason",
            response(wire::SampledSequence {
                stop_reason: 2,
                ..seq()
            }),
            "sequences[0].stop_reason 2",
        ),
        (
            "tokens not whole int32s",
            response(wire::SampledSequence {
                tokens: Bytes::from(vec![0u8; 5]),
                ..seq()
            }),
            "sequences[0].tokens is 5 bytes",
        ),
        (
            "logprobs not whole floats",
            response(wire::SampledSequence {
                logprobs: Some(Bytes::from(vec![0u8; 3])),
                ..seq()
            }),
            "sequences[0].logprobs is 3 bytes",
        ),
        (
            "top-k table shorter than length x k",
            response(wire::SampledSequence {
                topk_sampled_logprobs: Some(wire::TopkLogprobs {
                    token_ids: i32_bytes(&[1]),
                    logprobs: f32_bytes(&[-1.0, -2.0]),
                    k: 2,
                    length: 1,
                }),
                ..seq()
            }),
            "sequences[0].topk_sampled_logprobs.token_ids is 4 bytes",
        ),
        (
            "negative cache hits",
            wire::SampleResponse {
                prompt_cache_hit_tokens: -3,
                ..response(seq())
            },
            "prompt_cache_hit_tokens is negative",
        ),
        (
            "prompt logprobs not whole floats",
            wire::SampleResponse {
                prompt_logprobs: Some(Bytes::from(vec![0u8; 6])),
                ..response(seq())
            },
            "prompt_logprobs is 6 bytes",
        ),
        (
            "dense shape does not hold the values",
            wire::SampleResponse {
                target_prompt_logprobs: Some(dense(
                    f32_bytes(&[1.0, 2.0]),
                    wire::DType::Float32,
                    vec![3],
                )),
                ..response(seq())
            },
            "target_prompt_logprobs.shape [3]",
        ),
        (
            "tensor without values",
            wire::SampleResponse {
                target_prompt_logprobs: Some(wire::Tensor {
                    encoding: None,
                    dtype: 1,
                    shape: vec![],
                }),
                ..response(seq())
            },
            "target_prompt_logprobs has neither dense nor sparse_csr",
        ),
        (
            "CSR column out of range",
            wire::SampleResponse {
                target_prompt_logprobs: Some(wire::Tensor {
                    encoding: Some(wire::tensor::Encoding::SparseCsr(wire::SparseCsr {
                        values: f32_bytes(&[1.0]),
                        crow_indices: i64_bytes(&[0, 1]),
                        col_indices: i64_bytes(&[5]),
                    })),
                    dtype: 1,
                    shape: vec![1, 2],
                }),
                ..response(seq())
            },
            "column index 5 is outside 0..2",
        ),
        (
            "CSR row pointers do not match the shape",
            wire::SampleResponse {
                target_prompt_logprobs: Some(wire::Tensor {
                    encoding: Some(wire::tensor::Encoding::SparseCsr(wire::SparseCsr {
                        values: f32_bytes(&[1.0]),
                        crow_indices: i64_bytes(&[0, 1]),
                        col_indices: i64_bytes(&[0]),
                    })),
                    dtype: 1,
                    shape: vec![3, 2],
                }),
                ..response(seq())
            },
            "rows + 1 row pointers",
        ),
        (
            "alt tokens missing a half",
            wire::SampleResponse {
                prompt_alt_tokens: Some(wire::PromptAltTokens {
                    tokens: Some(dense(i32_bytes(&[1]), wire::DType::Int32, vec![])),
                    logprobs: None,
                }),
                ..response(seq())
            },
            "prompt_alt_tokens.logprobs is missing",
        ),
    ];
    for (story, body, needle) in cases {
        let err = decode_sample_response(Bytes::from(body.encode_to_vec())).expect_err(story);
        assert_decode_error(err, needle);
    }
}

#[test]
fn every_truncation_of_the_golden_sample_is_handled_and_cuts_inside_the_sequence_fail() {
    let full = unhex(GOLDEN_SAMPLE);
    // The sequence is bytes 0..22 (key 0x0a, length 0x14).
    for cut in 0..full.len() {
        let result = decode_sample_response(Bytes::copy_from_slice(&full[..cut]));
        if (1..22).contains(&cut) {
            assert_decode_error(
                result.expect_err("cut inside the sequence"),
                "SampleResponse",
            );
        }
    }
}
