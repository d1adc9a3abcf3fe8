//! The SSE decoder must never panic and must give the same events however the bytes are split:
//! the first byte picks a split size, the rest is the stream.
use tinker_core::sse::SseDecoder;

/// Runs one input; panics on a finding.
pub fn check(data: &[u8]) {
    let Some((&split, stream)) = data.split_first() else {
        return;
    };
    let split = usize::from(split).max(1);
    let collect = |chunk: usize| {
        let mut decoder = SseDecoder::with_max_event_bytes(4096);
        let mut events = Vec::new();
        for piece in stream.chunks(chunk) {
            decoder.push(piece);
            while let Some(event) = decoder.next_event() {
                events.push(format!("{event:?}"));
            }
        }
        decoder.finish();
        while let Some(event) = decoder.next_event() {
            events.push(format!("{event:?}"));
        }
        events
    };
    assert_eq!(collect(split), collect(stream.len().max(1)));
}
