//! CPU cost of the protobuf paths, on the workloads of /work/shared/spec/python-anchors.md
//! ("Workloads"), so the figures compare with the official Python SDK's.
//!
//! Run: `cargo bench -p tinker-core --bench proto` (the side-by-side table with the Python SDK
//! is `bench/run.sh`; both use the generator and call encoder of `bench/src/workloads.rs`).
//!
//! * B1 encode: what one forward_backward call does before the first byte goes out: validate,
//!   chunk (11.1), encode every chunk into its own body, optionally zstd level 3 per chunk.
//!   Throughput = uncompressed protobuf bytes.
//! * B2 decode: a `ForwardBackwardOutput` of 4096 × 4096 float32 logprobs as one body and as the
//!   54 per-chunk bodies (+ combine); a `SampleResponse` of 2048 × 256 tokens and logprobs, alone
//!   and with every token and logprob read. Throughput = logprob floats.
//!
//! Inputs are built before timing; the timed closure only encodes or decodes.

use bytes::Bytes;
use divan::counter::{BytesCount, ItemsCount};
use divan::{black_box, Bencher};
use tinker_core::batching::{combine_forward_backward_outputs, plan_chunks, ChunkLimits};
use tinker_core::proto::{
    compress_body, decode_forward_backward_output, decode_sample_response, encode_forward_backward,
    ForwardBackwardRequestRef, ZSTD_LEVEL,
};
use tinker_core::types::{Datum, LossFn};

#[allow(dead_code)] // the SSE stream generator is for the bench crate
#[path = "../../bench/src/workloads.rs"]
mod workloads;

use workloads::{batch, encode_call, fbo_body, sample_body, u, Kind};

fn main() {
    divan::main();
}

fn proto_bytes(data: &[Datum], kind: Kind) -> u64 {
    encode_call(data, kind, false)
        .iter()
        .map(|b| b.len() as u64)
        .sum()
}

fn bench_encode(bencher: Bencher<'_, '_>, kind: Kind, (b, l): (usize, usize), zstd: bool) {
    let data = batch(kind, b, l);
    let bytes = proto_bytes(&data, kind);
    let chunks = plan_chunks(&data, ChunkLimits::default()).unwrap().len();
    let wire: u64 = encode_call(&data, kind, zstd)
        .iter()
        .map(|b| b.len() as u64)
        .sum();
    eprintln!("  [{chunks} chunk(s), {bytes} proto bytes, {wire} bytes on the wire]");
    bencher
        .counter(BytesCount::new(bytes))
        .bench(|| encode_call(black_box(&data), kind, zstd));
}

// ---------------------------------------------------------------- B1 encode

#[divan::bench(sample_count = 30)]
fn b1_encode_sft_128x2048(bencher: Bencher<'_, '_>) {
    bench_encode(bencher, Kind::Sft, (128, 2048), false);
}

#[divan::bench(sample_count = 30)]
fn b1_encode_zstd_sft_128x2048(bencher: Bencher<'_, '_>) {
    bench_encode(bencher, Kind::Sft, (128, 2048), true);
}

#[divan::bench(sample_count = 30)]
fn b1_encode_rl_2048x450(bencher: Bencher<'_, '_>) {
    bench_encode(bencher, Kind::Rl, (2048, 450), false);
}

#[divan::bench(sample_count = 20)]
fn b1_encode_zstd_rl_2048x450(bencher: Bencher<'_, '_>) {
    bench_encode(bencher, Kind::Rl, (2048, 450), true);
}

/// The encoder alone: every chunk into one reused buffer, so no fresh memory is faulted in.
/// (A real call keeps one body per chunk alive; that memory is what `b1_encode_*` also pays.)
#[divan::bench(sample_count = 30)]
fn b1_encode_reused_buffer_rl_2048x450(bencher: Bencher<'_, '_>) {
    let data = batch(Kind::Rl, 2048, 450);
    let chunks = plan_chunks(&data, ChunkLimits::default()).unwrap();
    let bytes = proto_bytes(&data, Kind::Rl);
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
    let body = encode_call(&batch(Kind::Sft, 128, 2048), Kind::Sft, false).remove(0);
    bencher
        .counter(BytesCount::new(body.len()))
        .bench(|| compress_body(black_box(&body), ZSTD_LEVEL).unwrap());
}

// ---------------------------------------------------------------- B2 decode

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
