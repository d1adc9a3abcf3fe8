//! The push-based server-sent-events decoder.

use std::time::Duration;

/// The default cap on one event (16 MiB), see [`SseDecoder::with_max_event_bytes`].
pub const DEFAULT_MAX_EVENT_BYTES: usize = 16 << 20;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `"message"` when the event had none.
    pub event: String,
    /// The `data:` lines joined with `\n` (invalid UTF-8 replaced by U+FFFD).
    pub data: String,
    /// The last event id seen on the stream so far (it persists across events; `""` if none).
    pub id: String,
    /// The reconnection time set by a `retry:` field *in this event's block*, if any.
    pub retry: Option<Duration>,
}

/// A decoding failure. The decoder reports it once and then recovers (see [`SseDecoder`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SseError {
    /// An event grew past the configured cap. It was discarded up to its terminating blank line.
    #[error("server-sent event exceeds the {limit}-byte limit; event skipped")]
    EventTooLarge {
        /// The configured cap.
        limit: usize,
    },
}

/// What to do with incoming lines after an oversized event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Discard {
    /// Normal decoding.
    No,
    /// Drop bytes up to and including the next line terminator (the oversized line's tail; even
    /// an empty tail is not a blank line), then discard the rest of the event.
    RestOfLine,
    /// Drop lines up to and including the next blank line.
    RestOfEvent,
}

/// A WHATWG-conformant server-sent-events decoder that performs no I/O.
///
/// Feed bytes with [`push`](SseDecoder::push) as they arrive, in chunks of any size, then call
/// [`next_event`](SseDecoder::next_event) until it returns `None`. At the end of the stream call
/// [`finish`](SseDecoder::finish) and drain again: complete events still buffered are returned;
/// an unterminated final event is discarded, as the specification requires, and
/// [`truncated`](SseDecoder::truncated) tells whether that happened.
///
/// Follows the WHATWG "event stream interpretation": CR, LF and CRLF line endings (a CRLF split
/// across pushes included), one UTF-8 BOM stripped at stream start, `:` comments, `event`,
/// `data` (lines joined with `\n`), `id` (ignored when it contains NUL; the last id persists),
/// `retry` (digits only), a field without colon meaning an empty value, one leading space of a
/// value removed, and events without `data` not dispatched. Bytes are split into lines before any
/// UTF-8 decoding, so multi-byte characters may be split anywhere.
///
/// **Size cap.** An event whose lines (the current partial line included) exceed
/// `max_event_bytes` yields one `Err(SseError::EventTooLarge)`; the decoder then drops the rest of
/// that event up to its blank line and **recovers**: later events decode normally. Fields of the
/// oversized event processed before the cap was hit (`id`, `retry`) keep their effect on the
/// stream state. Memory stays bounded by the cap plus one pushed chunk, provided the caller
/// drains `next_event` after every push.
///
/// ```
/// use tinker_core::sse::SseDecoder;
///
/// let mut decoder = SseDecoder::new();
/// decoder.push(b"event: token\ndata: {\"tok\"");
/// assert!(decoder.next_event().is_none()); // incomplete
/// decoder.push(b": 1}\r\n\r\n");
/// let event = decoder.next_event().unwrap().unwrap();
/// assert_eq!((event.event.as_str(), event.data.as_str()), ("token", "{\"tok\": 1}"));
/// decoder.finish();
/// assert!(decoder.next_event().is_none());
/// assert!(!decoder.truncated());
/// ```
#[derive(Debug, Clone)]
pub struct SseDecoder {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    pos: usize,
    /// Where to resume searching for a line terminator (bytes in `pos..scan` hold none).
    scan: usize,
    bom_checked: bool,
    /// The previous line ended with a CR at the very end of the input seen so far; a LF that
    /// arrives next belongs to it.
    skip_lf: bool,
    eof: bool,
    discard: Discard,
    max_event_bytes: usize,
    // The event under construction.
    data: Vec<u8>,
    has_data: bool,
    event_type: Vec<u8>,
    block_retry: Option<Duration>,
    block_bytes: usize,
    block_has_fields: bool,
    // Stream state.
    last_id: String,
    reconnection_time: Option<Duration>,
}

impl Default for SseDecoder {
    fn default() -> SseDecoder {
        SseDecoder::new()
    }
}

/// What processing one line produced.
enum LineOutcome {
    Nothing,
    Dispatch(SseEvent),
}

impl SseDecoder {
    /// A decoder with the default 16 MiB event cap.
    pub fn new() -> SseDecoder {
        SseDecoder::with_max_event_bytes(DEFAULT_MAX_EVENT_BYTES)
    }

    /// A decoder that rejects events larger than `max_event_bytes` (the sum of the lengths of the
    /// event's lines, terminators excluded).
    pub fn with_max_event_bytes(max_event_bytes: usize) -> SseDecoder {
        SseDecoder {
            buf: Vec::new(),
            pos: 0,
            scan: 0,
            bom_checked: false,
            skip_lf: false,
            eof: false,
            discard: Discard::No,
            max_event_bytes,
            data: Vec::new(),
            has_data: false,
            event_type: Vec::new(),
            block_retry: None,
            block_bytes: 0,
            block_has_fields: false,
            last_id: String::new(),
            reconnection_time: None,
        }
    }

    /// Appends received bytes. Bytes pushed after [`finish`](SseDecoder::finish) are ignored.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.eof || bytes.is_empty() {
            return;
        }
        if self.pos > 0 {
            // Only the unconsumed tail (a partial line) moves, so this stays cheap.
            self.buf.drain(..self.pos);
            self.scan -= self.pos;
            self.pos = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Marks the end of the stream. Complete events already pushed can still be drained.
    pub fn finish(&mut self) {
        self.eof = true;
    }

    /// Whether [`finish`](SseDecoder::finish) was called.
    pub fn is_finished(&self) -> bool {
        self.eof
    }

    /// The last event id of the stream (to send as `Last-Event-ID` when reconnecting).
    pub fn last_event_id(&self) -> &str {
        &self.last_id
    }

    /// The latest reconnection time the server set with `retry:`.
    pub fn reconnection_time(&self) -> Option<Duration> {
        self.reconnection_time
    }

    /// After `finish` and a full drain: whether the stream ended inside an event (a partial line,
    /// or fields not followed by a blank line), which was therefore discarded.
    pub fn truncated(&self) -> bool {
        self.buf.len() > self.pos || self.block_has_fields || self.discard != Discard::No
    }

    /// The next complete event, an error, or `None` when more input (or the end) is needed.
    pub fn next_event(&mut self) -> Option<Result<SseEvent, SseError>> {
        loop {
            if self.skip_lf && self.pos < self.buf.len() {
                self.skip_lf = false;
                if self.buf[self.pos] == b'\n' {
                    self.pos += 1;
                    self.scan = self.scan.max(self.pos);
                }
            }
            if !self.bom_checked {
                let pending = &self.buf[self.pos..];
                if pending.len() < BOM.len() && BOM.starts_with(pending) && !self.eof {
                    return None; // Could still become a BOM.
                }
                if pending.starts_with(BOM) {
                    self.pos += BOM.len();
                    self.scan = self.scan.max(self.pos);
                }
                self.bom_checked = true;
            }
            let Some(offset) = memchr::memchr2(b'\n', b'\r', &self.buf[self.scan..]) else {
                self.scan = self.buf.len();
                return self.on_partial_line();
            };
            let end = self.scan + offset;
            let next = end + 1;
            let mut after = next;
            if self.buf[end] == b'\r' {
                if next < self.buf.len() {
                    if self.buf[next] == b'\n' {
                        after += 1;
                    }
                } else {
                    self.skip_lf = true;
                }
            }
            let start = self.pos;
            self.pos = after;
            self.scan = after;
            match self.discard {
                Discard::RestOfLine => {
                    self.discard = Discard::RestOfEvent;
                    continue;
                }
                Discard::RestOfEvent => {
                    if start == end {
                        self.discard = Discard::No;
                    }
                    continue;
                }
                Discard::No => {}
            }
            let len = end - start;
            // Comments are not stored, so they do not count towards the cap.
            if len > 0 && self.buf[start] != b':' {
                self.block_bytes += len;
                if self.block_bytes > self.max_event_bytes {
                    self.reset_block();
                    self.discard = Discard::RestOfEvent;
                    return Some(Err(self.too_large()));
                }
            }
            if let LineOutcome::Dispatch(event) = self.process_line(start, end) {
                return Some(Ok(event));
            }
        }
    }

    /// No terminator in the buffer: enforce the cap on the pending partial line, and discard the
    /// incomplete tail at the end of the stream.
    fn on_partial_line(&mut self) -> Option<Result<SseEvent, SseError>> {
        let partial = self.buf.len() - self.pos;
        if self.eof {
            return None;
        }
        match self.discard {
            Discard::No => {
                let is_comment = self.buf.get(self.pos) == Some(&b':');
                if !is_comment && self.block_bytes + partial > self.max_event_bytes {
                    self.pos = self.buf.len();
                    self.scan = self.pos;
                    self.reset_block();
                    self.discard = Discard::RestOfLine;
                    return Some(Err(self.too_large()));
                }
            }
            Discard::RestOfLine => {
                // Drop the oversized line's bytes as they arrive.
                self.pos = self.buf.len();
                self.scan = self.pos;
            }
            Discard::RestOfEvent => {}
        }
        None
    }

    fn too_large(&self) -> SseError {
        SseError::EventTooLarge {
            limit: self.max_event_bytes,
        }
    }

    fn reset_block(&mut self) {
        self.data.clear();
        self.has_data = false;
        self.event_type.clear();
        self.block_retry = None;
        self.block_bytes = 0;
        self.block_has_fields = false;
    }

    fn process_line(&mut self, start: usize, end: usize) -> LineOutcome {
        let line = &self.buf[start..end];
        if line.is_empty() {
            return self.dispatch();
        }
        if line[0] == b':' {
            return LineOutcome::Nothing;
        }
        self.block_has_fields = true;
        let (field, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &line[line.len()..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                self.event_type.clear();
                self.event_type.extend_from_slice(value);
            }
            // An id containing NUL is ignored (WHATWG).
            b"id" if memchr::memchr(0, value).is_none() => {
                self.last_id = String::from_utf8_lossy(value).into_owned();
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // Saturate rather than overflow on absurd values.
                let ms = value.iter().fold(0u64, |acc, d| {
                    acc.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                let retry = Duration::from_millis(ms);
                self.reconnection_time = Some(retry);
                self.block_retry = Some(retry);
            }
            _ => {}
        }
        LineOutcome::Nothing
    }

    fn dispatch(&mut self) -> LineOutcome {
        let has_data = self.has_data;
        let data = std::mem::take(&mut self.data);
        let event_type = std::mem::take(&mut self.event_type);
        let retry = self.block_retry;
        self.reset_block();
        if !has_data {
            return LineOutcome::Nothing;
        }
        let event = if event_type.is_empty() {
            "message".to_owned()
        } else {
            utf8_lossy(event_type)
        };
        LineOutcome::Dispatch(SseEvent {
            event,
            data: utf8_lossy(data),
            id: self.last_id.clone(),
            retry,
        })
    }
}

/// Takes ownership without copying when the bytes are valid UTF-8 (the common case).
fn utf8_lossy(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}
