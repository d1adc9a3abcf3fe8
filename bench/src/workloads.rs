//! The inputs of python-anchors.md ("Workloads"), rebuilt bit for bit so both SDKs encode and
//! decode identical data. The Python script (bench/python/official_sdk_bench.py) holds the same
//! generator. `core/benches/proto.rs` includes this file too, so the divan figures and the
//! side-by-side table measure the same inputs and the same call.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message as _;
use tinker_core::batching::{plan_chunks, ChunkLimits};
use tinker_core::proto::{
    compress_body, encode_forward_backward, wire, ForwardBackwardRequestRef, ZSTD_LEVEL,
};
use tinker_core::types::{Datum, LossFn, ModelInput, TensorData};

/// The standard SplitMix64 finaliser of `k + 0x9E3779B97F4A7C15`.
pub fn splitmix64(k: u64) -> u64 {
    let mut z = k.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `u(s, i) = (splitmix64(s * 2^40 + i) >> 40) / 2^24`, as float32.
pub fn u(s: u64, i: u64) -> f32 {
    ((splitmix64((s << 40) + i) >> 40) as f64 / (1u64 << 24) as f64) as f32
}

const VOCAB: u64 = 151_936;

/// SFT (cross_entropy) or RL (importance_sampling) datums.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `target_tokens` + `weights`.
    Sft,
    /// `target_tokens` + `logprobs` + `advantages`.
    Rl,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Sft => "SFT",
            Kind::Rl => "RL",
        }
    }

    pub fn loss(self) -> LossFn {
        match self {
            Kind::Sft => LossFn::CrossEntropy,
            Kind::Rl => LossFn::ImportanceSampling,
        }
    }
}

fn tokens(b: usize, l: usize) -> Vec<u64> {
    (0..=l)
        .map(|j| splitmix64((1 << 40) + (b * (l + 1) + j) as u64) % VOCAB)
        .collect()
}

/// The B1 batch of `batch` datums of length `l`.
pub fn batch(kind: Kind, batch: usize, l: usize) -> Vec<Datum> {
    let p = l / 4;
    (0..batch)
        .map(|b| {
            let t = tokens(b, l);
            let datum = Datum::new(ModelInput::from_tokens(
                t[..l].iter().map(|&x| x as i32).collect::<Vec<_>>(),
            ))
            .with_input(
                "target_tokens",
                TensorData::from_i64(t[1..].iter().map(|&x| x as i64).collect::<Vec<_>>()),
            );
            match kind {
                Kind::Sft => datum.with_input(
                    "weights",
                    TensorData::from_f32(
                        (0..l)
                            .map(|j| if j < p { 0.0 } else { 1.0 })
                            .collect::<Vec<_>>(),
                    ),
                ),
                Kind::Rl => {
                    let adv = 2.0 * u(3, b as u64) - 1.0;
                    datum
                        .with_input(
                            "logprobs",
                            TensorData::from_f32(
                                (0..l)
                                    .map(|j| {
                                        if j < p {
                                            0.0
                                        } else {
                                            -8.0 * u(2, (b * l + j) as u64)
                                        }
                                    })
                                    .collect::<Vec<_>>(),
                            ),
                        )
                        .with_input(
                            "advantages",
                            TensorData::from_f32(
                                (0..l)
                                    .map(|j| if j < p { 0.0 } else { adv })
                                    .collect::<Vec<_>>(),
                            ),
                        )
                }
            }
        })
        .collect()
}

/// What the training client does between `forward_backward(data)` and the first POST
/// (core/src/ops/forward_backward.rs): validate every datum, plan the chunks with the default
/// limits (1024 datums, 5,000,000 estimated bytes), encode each chunk into its own body (zstd
/// level 3, from one scratch buffer, when the server asks for compressed bodies).
pub fn encode_call(data: &[Datum], kind: Kind, zstd: bool) -> Vec<Bytes> {
    for (i, datum) in data.iter().enumerate() {
        datum.validate(i).expect("the workload is valid");
    }
    let chunks = plan_chunks(data, ChunkLimits::default()).expect("chunks");
    let mut scratch = Vec::new();
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let request = ForwardBackwardRequestRef::new(
                "bench-session:train:0",
                i as i32 + 1,
                &data[chunk.range.clone()],
                kind.loss(),
            );
            if zstd {
                scratch.clear();
                encode_forward_backward(&request, &mut scratch).expect("encode");
                Bytes::from(compress_body(&scratch, ZSTD_LEVEL).expect("zstd"))
            } else {
                let mut body = Vec::new();
                encode_forward_backward(&request, &mut body).expect("encode");
                Bytes::from(body)
            }
        })
        .collect()
}

/// A `ForwardBackwardOutput` body: one `ArrayRecord` of `logprobs` for datums
/// `first..first + n` of an `l`-long batch.
pub fn fbo_body(first: usize, n: usize, l: usize) -> Bytes {
    let mut data = Vec::with_capacity(n * l * 4);
    for i in (first * l)..((first + n) * l) {
        data.extend_from_slice(&(-8.0 * u(2, i as u64)).to_le_bytes());
    }
    let offsets: Vec<u8> = (0..=n)
        .flat_map(|i| ((i * l * 4) as i64).to_le_bytes())
        .collect();
    let name = "CrossEntropyLossReturn".to_string();
    wire::ForwardBackwardOutput {
        loss_fn_output_type: name.clone(),
        loss_fn_outputs: vec![wire::ArrayRecord {
            type_tag: name,
            fields: BTreeMap::from([(
                "logprobs".to_string(),
                wire::BatchedTensor {
                    data: data.into(),
                    offsets: offsets.into(),
                    dtype: wire::DType::Float32 as i32,
                    trailing_shape: vec![],
                },
            )]),
            num_datums: n as i64,
        }],
        metrics: BTreeMap::from([
            ("loss:sum".to_string(), 123.0),
            ("loss:mean".to_string(), 0.5),
        ]),
    }
    .encode_to_vec()
    .into()
}

/// A `SampleResponse` body of `sequences` sequences of `l` tokens with logprobs.
pub fn sample_body(sequences: usize, l: usize) -> Bytes {
    wire::SampleResponse {
        sequences: (0..sequences)
            .map(|s| {
                let range = (s * l)..((s + 1) * l);
                wire::SampledSequence {
                    stop_reason: if s % 4 == 0 {
                        wire::StopReason::Length
                    } else {
                        wire::StopReason::Stop
                    } as i32,
                    tokens: range
                        .clone()
                        .flat_map(|i| {
                            ((splitmix64((1 << 40) + i as u64) % VOCAB) as i32).to_le_bytes()
                        })
                        .collect::<Vec<u8>>()
                        .into(),
                    logprobs: Some(
                        range
                            .flat_map(|i| (-8.0 * u(2, i as u64)).to_le_bytes())
                            .collect::<Vec<u8>>()
                            .into(),
                    ),
                    topk_sampled_logprobs: None,
                }
            })
            .collect(),
        ..Default::default()
    }
    .encode_to_vec()
    .into()
}

/// The B-SSE stream: `data: {"token": 123, "logprob": -0.5}\n\n` × 2,564,102 (99,999,978 bytes).
pub fn sse_stream() -> Vec<u8> {
    let event: &[u8] = b"data: {\"token\": 123, \"logprob\": -0.5}\n\n";
    assert_eq!(event.len(), 39);
    event.repeat(2_564_102)
}
