//! The push-based server-sent-events decoder.

use std::borrow::Cow;
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

/// One dispatched event, borrowed from the decoder: what [`SseDecoder::next_event_ref`] returns.
///
/// The common event (one `data:` line, delivered within one pushed chunk) is not copied at all:
/// its fields point into the decoder's input buffer. Text is `Cow::Borrowed` when the bytes are
/// valid UTF-8 and an owned copy with U+FFFD replacements otherwise, as in [`SseEvent`].
/// The borrow ends at the next call on the decoder; [`SseEventRef::into_owned`] keeps an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEventRef<'a> {
    /// The `event:` field, or `"message"` when the event had none.
    pub event: Cow<'a, str>,
    /// The `data:` lines joined with `\n`.
    pub data: Cow<'a, str>,
    /// The last event id seen on the stream so far (`""` if none).
    pub id: &'a str,
    /// The reconnection time set by a `retry:` field in this event's block, if any.
    pub retry: Option<Duration>,
}

impl SseEventRef<'_> {
    /// The same event with owned fields.
    pub fn into_owned(self) -> SseEvent {
        SseEvent {
            event: self.event.into_owned(),
            data: self.data.into_owned(),
            id: self.id.to_owned(),
            retry: self.retry,
        }
    }
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
    // The event under construction. A field value is kept as a range of `buf` (no copy) until a
    // second `data:` line must be joined to it or a `push` is about to move the buffer.
    data: Vec<u8>,
    data_src: Src,
    event_type: Vec<u8>,
    event_src: Src,
    // The fields of the event last dispatched (the buffers swap, so their capacity is reused).
    out_data: Vec<u8>,
    out_event: Vec<u8>,
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

/// Where a field value of the event under construction lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    /// The field was not seen in this block.
    Absent,
    /// `buf[start..end]`: valid until the next `push`.
    Buf(usize, usize),
    /// The decoder's own buffer for the field (`data` / `event_type` while building,
    /// `out_data` / `out_event` once dispatched).
    Owned,
}

/// An event ready to be viewed: where its fields are.
#[derive(Debug, Clone, Copy)]
struct Dispatched {
    data: Src,
    event: Src,
    retry: Option<Duration>,
}

/// What processing one line produced.
enum LineOutcome {
    Nothing,
    Dispatch(Dispatched),
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
            data_src: Src::Absent,
            event_type: Vec::new(),
            event_src: Src::Absent,
            out_data: Vec::new(),
            out_event: Vec::new(),
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
            // Field values still pointing into the consumed part of `buf` are copied out first.
            if let Src::Buf(start, end) = self.data_src {
                self.data.clear();
                self.data.extend_from_slice(&self.buf[start..end]);
                self.data_src = Src::Owned;
            }
            if let Src::Buf(start, end) = self.event_src {
                self.event_type.clear();
                self.event_type.extend_from_slice(&self.buf[start..end]);
                self.event_src = Src::Owned;
            }
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
    ///
    /// Owned fields; [`next_event_ref`](SseDecoder::next_event_ref) returns the same events
    /// without allocating.
    pub fn next_event(&mut self) -> Option<Result<SseEvent, SseError>> {
        self.next_event_ref()
            .map(|event| event.map(SseEventRef::into_owned))
    }

    /// The next complete event borrowed from the decoder, an error, or `None` when more input
    /// (or the end) is needed. Same events, errors and rules as
    /// [`next_event`](SseDecoder::next_event), without a copy or an allocation per event.
    ///
    /// ```
    /// use tinker_core::sse::SseDecoder;
    ///
    /// let mut decoder = SseDecoder::new();
    /// decoder.push(b"data: {\"token\": 1}\n\ndata: {\"token\": 2}\n\n");
    /// let mut tokens = Vec::new();
    /// while let Some(event) = decoder.next_event_ref() {
    ///     tokens.push(event.unwrap().data.len());
    /// }
    /// assert_eq!(tokens, [12, 12]);
    /// ```
    pub fn next_event_ref(&mut self) -> Option<Result<SseEventRef<'_>, SseError>> {
        match self.advance()? {
            Ok(dispatched) => Some(Ok(self.view(dispatched))),
            Err(e) => Some(Err(e)),
        }
    }

    fn view(&self, dispatched: Dispatched) -> SseEventRef<'_> {
        let event = match dispatched.event {
            Src::Buf(start, end) => utf8_lossy(&self.buf[start..end]),
            Src::Owned => utf8_lossy(&self.out_event),
            Src::Absent => Cow::Borrowed("message"),
        };
        let data = match dispatched.data {
            Src::Buf(start, end) => utf8_lossy(&self.buf[start..end]),
            Src::Owned => utf8_lossy(&self.out_data),
            Src::Absent => Cow::Borrowed(""),
        };
        SseEventRef {
            event,
            data,
            id: &self.last_id,
            retry: dispatched.retry,
        }
    }

    fn advance(&mut self) -> Option<Result<Dispatched, SseError>> {
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
    fn on_partial_line(&mut self) -> Option<Result<Dispatched, SseError>> {
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
        self.data_src = Src::Absent;
        self.event_type.clear();
        self.event_src = Src::Absent;
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
        // `value` as a range of `buf`.
        let value_end = end;
        let value_start = end - value.len();
        match field {
            b"data" => match self.data_src {
                Src::Absent => self.data_src = Src::Buf(value_start, value_end),
                Src::Buf(first_start, first_end) => {
                    // A second data line: the joined value needs its own buffer.
                    self.data.clear();
                    self.data
                        .extend_from_slice(&self.buf[first_start..first_end]);
                    self.data.push(b'\n');
                    self.data.extend_from_slice(value);
                    self.data_src = Src::Owned;
                }
                Src::Owned => {
                    self.data.push(b'\n');
                    self.data.extend_from_slice(value);
                }
            },
            // An empty `event:` value means the default type, as no `event:` line does.
            b"event" if value.is_empty() => self.event_src = Src::Absent,
            b"event" => self.event_src = Src::Buf(value_start, value_end),
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
        let dispatched = Dispatched {
            data: self.data_src,
            event: self.event_src,
            retry: self.block_retry,
        };
        // Owned values move to the output buffers, which the view reads; `buf` ranges stay
        // valid until the next push.
        if dispatched.data == Src::Owned {
            std::mem::swap(&mut self.data, &mut self.out_data);
        }
        if dispatched.event == Src::Owned {
            std::mem::swap(&mut self.event_type, &mut self.out_event);
        }
        self.reset_block();
        if dispatched.data == Src::Absent {
            return LineOutcome::Nothing;
        }
        LineOutcome::Dispatch(dispatched)
    }
}

/// `String::from_utf8_lossy`, with the validation of valid text (the common case) done by the
/// faster `str::from_utf8`: the lossy scan walks character by character, which a profile of
/// 39-byte token events showed to be most of the decoder's time.
fn utf8_lossy(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}
