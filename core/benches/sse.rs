//! SSE decoding throughput: `tinker_core::sse::SseDecoder` next to the `eventsource-stream`
//! crate on the same bytes, pushed in the same chunks.
//!
//! Run: `cargo bench -p tinker-core --bench sse`. divan reports bytes per second.

use std::convert::Infallible;

use divan::counter::BytesCount;
use divan::Bencher;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use tinker_core::sse::SseDecoder;

fn main() {
    divan::main();
}

/// A named input: the whole stream, the chunk size it arrives in, and the events it holds.
struct Input {
    bytes: Vec<u8>,
    chunk: usize,
    events: usize,
}

/// 64 events of 256 KiB of JSON-like data each (16 MiB), arriving in 64 KiB chunks.
fn large_payloads() -> Input {
    let payload: String = "{\"tokens\":[1,2,3],\"text\":\"abcdefghij\"}"
        .chars()
        .cycle()
        .take(256 << 10)
        .collect();
    let mut bytes = Vec::new();
    for i in 0..64 {
        bytes.extend_from_slice(format!("id: {i}\nevent: chunk\ndata: {payload}\n\n").as_bytes());
    }
    Input {
        bytes,
        chunk: 64 << 10,
        events: 64,
    }
}

/// 100 000 token-sized events (~90 bytes each), arriving in 16 KiB chunks.
fn small_events() -> Input {
    let mut bytes = Vec::new();
    for i in 0..100_000 {
        bytes.extend_from_slice(
            format!("event: token\ndata: {{\"token\":\"tok{i}\",\"token_id\":{i},\"logprob\":-0.25}}\n\n").as_bytes(),
        );
    }
    Input {
        bytes,
        chunk: 16 << 10,
        events: 100_000,
    }
}

fn ours(input: &Input) -> usize {
    let mut decoder = SseDecoder::new();
    let mut n = 0;
    for chunk in input.bytes.chunks(input.chunk) {
        decoder.push(chunk);
        while let Some(event) = decoder.next_event() {
            n += event.map(|e| e.data.len().min(1)).unwrap_or(0);
        }
    }
    decoder.finish();
    while let Some(event) = decoder.next_event() {
        n += event.map(|e| e.data.len().min(1)).unwrap_or(0);
    }
    n
}

/// The same events borrowed from the decoder (`next_event_ref`): no allocation per event.
fn ours_borrowed(input: &Input) -> usize {
    let mut decoder = SseDecoder::new();
    let mut n = 0;
    for chunk in input.bytes.chunks(input.chunk) {
        decoder.push(chunk);
        while let Some(event) = decoder.next_event_ref() {
            n += event.map(|e| e.data.len().min(1)).unwrap_or(0);
        }
    }
    decoder.finish();
    while let Some(event) = decoder.next_event_ref() {
        n += event.map(|e| e.data.len().min(1)).unwrap_or(0);
    }
    n
}

fn theirs(input: &Input) -> usize {
    let chunks = futures::stream::iter(
        input
            .bytes
            .chunks(input.chunk)
            .map(|c| Ok::<_, Infallible>(c.to_vec())),
    );
    futures::executor::block_on(chunks.eventsource().fold(0, |n, event| async move {
        n + event.map(|e| e.data.len().min(1)).unwrap_or(0)
    }))
}

fn run(bencher: Bencher<'_, '_>, make: fn() -> Input, decode: fn(&Input) -> usize) {
    let input = make();
    assert_eq!(
        decode(&input),
        input.events,
        "both decoders must see every event"
    );
    bencher
        .counter(BytesCount::new(input.bytes.len()))
        .bench(|| decode(divan::black_box(&input)));
}

#[divan::bench]
fn large_payloads_tinker_core(bencher: Bencher<'_, '_>) {
    run(bencher, large_payloads, ours);
}

#[divan::bench]
fn large_payloads_tinker_core_borrowed(bencher: Bencher<'_, '_>) {
    run(bencher, large_payloads, ours_borrowed);
}

#[divan::bench]
fn large_payloads_eventsource_stream(bencher: Bencher<'_, '_>) {
    run(bencher, large_payloads, theirs);
}

#[divan::bench]
fn small_events_tinker_core(bencher: Bencher<'_, '_>) {
    run(bencher, small_events, ours);
}

#[divan::bench]
fn small_events_tinker_core_borrowed(bencher: Bencher<'_, '_>) {
    run(bencher, small_events, ours_borrowed);
}

#[divan::bench]
fn small_events_eventsource_stream(bencher: Bencher<'_, '_>) {
    run(bencher, small_events, theirs);
}
