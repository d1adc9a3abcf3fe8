//! B8 SSE: decode the python-anchors.md B-SSE stream (100 MB of token-sized events in 16 KiB
//! chunks) with tinker-core's decoder and with the eventsource-stream crate.

use std::convert::Infallible;
use std::time::Duration;

use eventsource_stream::Eventsource as _;
use futures::StreamExt as _;
use serde_json::json;
use tinker_core::sse::SseDecoder;

use crate::measure::{emit, rss_growth, time_calls, timing_fields};
use crate::workloads::sse_stream;

const CHUNK: usize = 16_384;
const EVENTS: usize = 2_564_102;

/// Feeds the stream in 16 KiB chunks and counts the events with data that `drain` takes out of
/// the decoder after each chunk (and after `finish`).
fn decode_with(stream: &[u8], drain: fn(&mut SseDecoder) -> usize) -> usize {
    let mut decoder = SseDecoder::new();
    let mut n = 0;
    for chunk in stream.chunks(CHUNK) {
        decoder.push(chunk);
        n += drain(&mut decoder);
    }
    decoder.finish();
    n + drain(&mut decoder)
}

/// `next_event_ref`: events borrowed from the decoder (what the sample stream uses).
fn ours(stream: &[u8]) -> usize {
    decode_with(stream, |decoder| {
        let mut n = 0;
        while let Some(event) = decoder.next_event_ref() {
            n += usize::from(event.is_ok_and(|e| !e.data.is_empty()));
        }
        n
    })
}

/// `next_event`: an owned `SseEvent` (two `String`s) per event, as eventsource-stream returns.
fn ours_owned(stream: &[u8]) -> usize {
    decode_with(stream, |decoder| {
        let mut n = 0;
        while let Some(event) = decoder.next_event() {
            n += usize::from(event.is_ok_and(|e| !e.data.is_empty()));
        }
        n
    })
}

fn eventsource_stream(stream: &[u8]) -> usize {
    let chunks = futures::stream::iter(
        stream
            .chunks(CHUNK)
            .map(|c| Ok::<_, Infallible>(bytes::Bytes::copy_from_slice(c))),
    );
    futures::executor::block_on(chunks.eventsource().fold(0, |n, event| async move {
        n + usize::from(event.is_ok_and(|e| !e.data.is_empty()))
    }))
}

/// Both decoders on the same bytes; MB/s in the notes.
pub fn run() {
    let stream = sse_stream();
    for (name, decode, max_runs) in [
        ("B8 SSE decode", ours as fn(&[u8]) -> usize, 15),
        ("B8 SSE decode (owned events)", ours_owned, 15),
        (
            "B8 SSE decode (eventsource-stream crate)",
            eventsource_stream,
            5,
        ),
    ] {
        assert_eq!(decode(&stream), EVENTS, "{name} sees every event");
        let mem = rss_growth(|| decode(&stream));
        let t = time_calls(3, max_runs, Duration::from_secs(3), || decode(&stream));
        let mut fields = timing_fields(&t);
        fields["mem_mb"] = json!(mem);
        fields["mb_per_s"] = json!(stream.len() as f64 / 1e6 / t.median);
        // Wall time counts the waits for a core on a shared machine; CPU time does not.
        fields["notes"] = json!(format!(
            "{EVENTS} events in 16 KiB chunks; {:.0} MB per CPU-second ({:.0} MB/s wall)",
            stream.len() as f64 / 1e6 / t.cpu_median,
            stream.len() as f64 / 1e6 / t.median
        ));
        emit(name, "100 MB", fields);
    }
}
