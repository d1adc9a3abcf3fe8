//! CPU cost of the protobuf paths, on the workloads of /work/shared/spec/python-anchors.md
//! ("Workloads"), so the figures compare with the official Python SDK's.
//!
//! Run: `cargo bench -p tinker-core --bench proto`
//!
//! * B1 encode: chunk a batch (11.1) and encode every chunk's `ForwardBackwardRequest` into a
//!   fresh body, optionally zstd level 3 per chunk (one after another, on one thread), as the
//!   SDK's "encode to proto bytes" and "encode + zstd (inline)" stages. Throughput = uncompressed
//!   protobuf bytes.
//! * B2 decode: a `ForwardBackwardOutput` of 4096 × 4096 float32 logprobs as one body and as the
//!   54 per-chunk bodies (+ combine); a `SampleResponse` of 2048 × 256 tokens and logprobs, alone
//!   and with every token and logprob read. Throughput = logprob floats.
//!
//! Inputs are built before timing; the timed closure only encodes or decodes.

use std::collections::BTreeMap;

use bytes::Bytes;
use divan::counter::{BytesCount, ItemsCount};
use divan::{black_box, Bencher};
use prost::Message as _;
use tinker_core::batching::{combine_forward_backward_outputs, plan_chunks, ChunkLimits};
use tinker_core::proto::{
    compress_body, decode_forward_backward_output, decode_sample_response, encode_forward_backward,
    wire, ForwardBackwardRequestRef, ZSTD_LEVEL,
};
use tinker_core::types::{Datum, LossFn, ModelInput, TensorData};

fn main() {
    divan::main();
}

// ---------------------------------------------------------------- workload generators

fn splitmix64(k: u64) -> u64 {
    let mut z = k.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `u(s, i) = (splitmix64(s * 2^40 + i) >> 40) / 2^24`, as float32.
fn u(s: u64, i: u64) -> f32 {
    ((splitmix64((s << 40) + i) >> 40) as f64 / (1u64 << 24) as f64) as f32
}

const VOCAB: u64 = 151_936;

fn tokens(b: usize, l: usize) -> Vec<u64> {
    (0..=l)
        .map(|j| splitmix64((1 << 40) + (b * (l + 1) + j) as u64) % VOCAB)
        .collect()
}

fn sft_batch(batch: usize, l: usize) -> Vec<Datum> {
    let p = l / 4;
    (0..batch)
        .map(|b| {
            let t = tokens(b, l);
            Datum::new(ModelInput::from_tokens(
                t[..l].iter().map(|&x| x as i32).collect::<Vec<_>>(),
            ))
            .with_input(
                "target_tokens",
                TensorData::from_i64(t[1..].iter().map(|&x| x as i64).collect::<Vec<_>>()),
            )
            .with_input(
                "weights",
                TensorData::from_f32(
                    (0..l)
                        .map(|j| if j < p { 0.0 } else { 1.0 })
                        .collect::<Vec<_>>(),
                ),
            )
        })
        .collect()
}

fn rl_batch(batch: usize, l: usize) -> Vec<Datum> {
    let p = l / 4;
    (0..batch)
        .map(|b| {
            let t = tokens(b, l);
            let adv = 2.0 * u(3, b as u64) - 1.0;
            Datum::new(ModelInput::from_tokens(
                t[..l].iter().map(|&x| x as i32).collect::<Vec<_>>(),
            ))
            .with_input(
                "target_tokens",
                TensorData::from_i64(t[1..].iter().map(|&x| x as i64).collect::<Vec<_>>()),
            )
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
        })
        .collect()
}

/// What one forward_backward call does before the first byte goes out: chunk, then encode each
/// chunk into its own body (and compress it, when asked).
fn encode_call(data: &[Datum], loss: LossFn, zstd: bool) -> Vec<Vec<u8>> {
    let chunks = plan_chunks(data, ChunkLimits::default()).unwrap();
    chunks
        .iter()
        .enumerate()
        .map(|(i, chunk)| {
            let request = ForwardBackwardRequestRef::new(
                "bench-session:train:0",
                i as i32 + 1,
                &data[chunk.range.clone()],
                loss,
            );
            let mut body = Vec::new();
            encode_forward_backward(&request, &mut body).unwrap();
            if zstd {
                compress_body(&body, ZSTD_LEVEL).unwrap()
            } else {
                body
            }
        })
        .collect()
}

fn proto_bytes(data: &[Datum], loss: LossFn) -> u64 {
    encode_call(data, loss, false)
        .iter()
        .map(|b| b.len() as u64)
        .sum()
}

fn bench_encode(bencher: Bencher<'_, '_>, data: Vec<Datum>, loss: LossFn, zstd: bool) {
    let bytes = proto_bytes(&data, loss);
    let chunks = plan_chunks(&data, ChunkLimits::default()).unwrap().len();
    let wire: u64 = encode_call(&data, loss, zstd)
        .iter()
        .map(|b| b.len() as u64)
        .sum();
    eprintln!("  [{chunks} chunk(s), {bytes} proto bytes, {wire} bytes on the wire]");
    bencher
        .counter(BytesCount::new(bytes))
        .bench(|| encode_call(black_box(&data), loss, zstd));
}

// ---------------------------------------------------------------- B1 encode

#[divan::bench(sample_count = 30)]
fn b1_encode_sft_128x2048(bencher: Bencher<'_, '_>) {
    bench_encode(bencher, sft_batch(128, 2048), LossFn::CrossEntropy, false);
}

#[divan::bench(sample_count = 30)]
fn b1_encode_zstd_sft_128x2048(bencher: Bencher<'_, '_>) {
    bench_encode(bencher, sft_batch(128, 2048), LossFn::CrossEntropy, true);
}

#[divan::bench(sample_count = 30)]
fn b1_encode_rl_2048x450(bencher: Bencher<'_, '_>) {
    bench_encode(
        bencher,
        rl_batch(2048, 450),
        LossFn::ImportanceSampling,
        false,
    );
}

#[divan::bench(sample_count = 20)]
fn b1_encode_zstd_rl_2048x450(bencher: Bencher<'_, '_>) {
    bench_encode(
        bencher,
        rl_batch(2048, 450),
        LossFn::ImportanceSampling,
        true,
    );
}

/// The encoder alone: every chunk into one reused buffer, so no fresh memory is faulted in.
/// (A real call keeps one body per chunk alive; that memory is what `b1_encode_*` also pays.)
#[divan::bench(sample_count = 30)]
fn b1_encode_reused_buffer_rl_2048x450(bencher: Bencher<'_, '_>) {
    let data = rl_batch(2048, 450);
    let chunks = plan_chunks(&data, ChunkLimits::default()).unwrap();
    let bytes = proto_bytes(&data, LossFn::ImportanceSampling);
    let mut body = Vec::new();
    bencher.counter(BytesCount::new(bytes)).bench_local(|| {
        for (i, chunk) in chunks.iter().enumerate() {
            body.clear();
            let request = ForwardBackwardRequestRef::new(
                "bench-session:train:0",
                i as i32 + 1,
                &data[chunk.range.clone()],
                LossFn::ImportanceSampling,
            );
            encode_forward_backward(&request, &mut body).unwrap();
        }
        body.len()
    });
}

/// zstd level 3 alone on the SFT 128x2048 body: the floor of `b1_encode_zstd_sft_128x2048`,
/// the same libzstd work the Python SDK does.
#[divan::bench(sample_count = 30)]
fn b1_zstd_only_sft_128x2048(bencher: Bencher<'_, '_>) {
    let body = encode_call(&sft_batch(128, 2048), LossFn::CrossEntropy, false).remove(0);
    bencher
        .counter(BytesCount::new(body.len()))
        .bench(|| compress_body(black_box(&body), ZSTD_LEVEL).unwrap());
}

// ---------------------------------------------------------------- B2 decode

/// One `ArrayRecord` of `logprobs` for datums `first..first + n` of a `batch × l` output.
fn fbo_body(first: usize, n: usize, l: usize) -> Bytes {
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

#[divan::bench(sample_count = 30)]
fn b2_decode_fbo_4096x4096(bencher: Bencher<'_, '_>) {
    let (batch, l) = (4096, 4096);
    let body = fbo_body(0, batch, l);
    let check = decode_forward_backward_output(body.clone()).unwrap();
    assert_eq!(check.loss_fn_outputs.len(), batch);
    assert_eq!(
        check.logprobs(batch - 1).unwrap().as_f32().unwrap()[l - 1],
        -8.0 * u(2, (batch * l - 1) as u64)
    );
    bencher
        .counter(ItemsCount::new(batch * l))
        .bench(|| decode_forward_backward_output(black_box(body.clone())).unwrap());
}

#[divan::bench(sample_count = 30)]
fn b2_decode_fbo_54_chunks_and_combine_4096x4096(bencher: Bencher<'_, '_>) {
    let (batch, l, per_chunk) = (4096, 4096, 76); // the SDK's chunking of a 4096x4096 SFT batch
    let bodies: Vec<Bytes> = (0..batch)
        .step_by(per_chunk)
        .map(|first| fbo_body(first, per_chunk.min(batch - first), l))
        .collect();
    assert_eq!(bodies.len(), 54);
    bencher.counter(ItemsCount::new(batch * l)).bench(|| {
        let chunks = black_box(&bodies)
            .iter()
            .map(|b| decode_forward_backward_output(b.clone()).unwrap())
            .collect();
        combine_forward_backward_outputs(chunks)
    });
}

fn sample_body(sequences: usize, l: usize) -> Bytes {
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

#[divan::bench(sample_count = 50)]
fn b2_decode_sample_2048x256(bencher: Bencher<'_, '_>) {
    let body = sample_body(2048, 256);
    let check = decode_sample_response(body.clone()).unwrap();
    assert_eq!(check.sequences.len(), 2048);
    assert_eq!(check.sequences[2047].tokens.len(), 256);
    bencher
        .counter(ItemsCount::new(2048usize * 256))
        .bench(|| decode_sample_response(black_box(body.clone())).unwrap());
}

#[divan::bench(sample_count = 50)]
fn b2_decode_sample_and_read_tokens_logprobs_2048x256(bencher: Bencher<'_, '_>) {
    let body = sample_body(2048, 256);
    bencher.counter(ItemsCount::new(2048usize * 256)).bench(|| {
        let r = decode_sample_response(black_box(body.clone())).unwrap();
        let mut token_sum = 0i64;
        let mut logprob_sum = 0f32;
        for seq in &r.sequences {
            token_sum += seq.tokens.iter().map(|&t| i64::from(t)).sum::<i64>();
            logprob_sum += seq.logprobs.as_deref().unwrap_or(&[]).iter().sum::<f32>();
        }
        (token_sum, logprob_sum, r)
    });
}
