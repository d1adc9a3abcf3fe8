//! Streaming sampling (Tinkex F76, F87): `POST /api/v1/stream_sample` answered with server-sent
//! events, one per generated token, decoded as the body arrives.
//!
//! The pure parts live here; the clients own the I/O:
//!
//! 1. [`SampleStreamStart::new`] takes the sampler's next seq id and builds the HTTP request;
//! 2. the runtime sends it and, on a 2xx head, feeds each body chunk to a
//!    [`SampleStreamDecoder`] (a non-2xx reply is read whole and becomes
//!    [`SampleStreamStart::status_error`]);
//! 3. [`SampleStreamDecoder::next_chunk`] yields [`SampleStreamChunk`]s until the `done` event.
//!
//! A stream is never retried or resent (as in Tinkex): tokens already handed to the caller cannot
//! be taken back. Dropping the body stops the request (the connection is closed).
//!
//! The endpoint is not part of the Python SDK's protocol (protocol.md section 5), so it has no
//! row in the endpoint table: the request is built exactly as an `asample` of the same
//! [`SampleRequest`] (headers, credential, idempotency key, body), then addressed to
//! `/api/v1/stream_sample` with `Accept: text/event-stream` and without the `asample`
//! back-pressure header.
//!
//! Event payloads (JSON objects in `data:`): a token
//! `{"token": "…", "token_id": 17, "index": 0, "logprob": -0.3}`, the end
//! `{"finish_reason": "stop" | "length", "total_tokens": 12}`, or a failure `{"error": "…"}`.
//! Events without data or whose data is not a JSON object are skipped (Tinkex drops them too).

use bytes::Bytes;
use http::header::{HeaderValue, ACCEPT};
use serde_json::Value;

use crate::call::CallOptions;
use crate::endpoints::{idempotency_key, status_error, AttemptHeaders};
use crate::error::{Error, Result};
use crate::io::Timeouts;
use crate::ledger::{Ledger, SamplerHandle};
use crate::sse::SseDecoder;
use crate::types::{SampleRequest, TokenId};

/// The streaming endpoint's path.
pub const STREAM_SAMPLE_PATH: &str = "/api/v1/stream_sample";
/// The `Accept` header of a stream request.
pub const EVENT_STREAM: &str = "text/event-stream";

/// What one event of a sample stream says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleStreamChunkKind {
    /// A generated token.
    Token,
    /// The end of the stream (`finish_reason` set).
    Done,
    /// The server failed mid-stream (`error` set).
    Error,
}

/// One decoded event of a sample stream (Tinkex's `SampleStreamChunk`).
///
/// ```
/// use tinker_core::ops::{SampleStreamChunk, SampleStreamChunkKind};
/// let chunk = SampleStreamChunk::from_json(&serde_json::json!({"token": "a", "token_id": 97, "index": 0})).unwrap();
/// assert_eq!((chunk.kind, chunk.token_id), (SampleStreamChunkKind::Token, Some(97)));
/// let done = SampleStreamChunk::from_json(&serde_json::json!({"finish_reason": "length", "total_tokens": 1})).unwrap();
/// assert!(done.is_done());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SampleStreamChunk {
    /// Token, end or failure.
    pub kind: SampleStreamChunkKind,
    /// The token's text, when the server sends it.
    pub token: Option<String>,
    /// The token id.
    pub token_id: Option<TokenId>,
    /// The token's position in the completion (0-based).
    pub index: Option<u32>,
    /// The token's log-probability.
    pub logprob: Option<f32>,
    /// Why generation stopped (`stop`, `length`), on the `done` event.
    pub finish_reason: Option<String>,
    /// Tokens generated, on the `done` event.
    pub total_tokens: Option<u32>,
    /// The server's message, on an `error` event.
    pub error: Option<String>,
}

impl SampleStreamChunk {
    /// Reads an event's JSON object (F87: `done` when `finish_reason` is present, else `error`
    /// when an `error` key is present, else a token). `None` for anything but an object.
    pub fn from_json(value: &Value) -> Option<SampleStreamChunk> {
        let object = value.as_object()?;
        let text = |k: &str| object.get(k).and_then(Value::as_str).map(str::to_owned);
        let int = |k: &str| object.get(k).and_then(Value::as_u64);
        let finish_reason = text("finish_reason");
        let error = object.get("error").map(|e| match e {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        let kind = if finish_reason.is_some() {
            SampleStreamChunkKind::Done
        } else if error.is_some() {
            SampleStreamChunkKind::Error
        } else {
            SampleStreamChunkKind::Token
        };
        Some(SampleStreamChunk {
            kind,
            token: text("token"),
            token_id: object
                .get("token_id")
                .and_then(Value::as_i64)
                .and_then(|t| TokenId::try_from(t).ok()),
            index: int("index").and_then(|i| u32::try_from(i).ok()),
            logprob: object
                .get("logprob")
                .and_then(Value::as_f64)
                .map(|v| v as f32),
            finish_reason,
            total_tokens: int("total_tokens").and_then(|i| u32::try_from(i).ok()),
            error,
        })
    }

    /// Whether this is the end of the stream.
    pub fn is_done(&self) -> bool {
        self.kind == SampleStreamChunkKind::Done
    }
}

/// A prepared stream request: send [`SampleStreamStart::request`] with
/// [`SampleStreamStart::timeouts`], then decode the body with a [`SampleStreamDecoder`].
///
/// ```
/// use tinker_core::endpoints::RequestContext;
/// use tinker_core::ledger::Ledger;
/// use tinker_core::ops::SampleStreamStart;
/// use tinker_core::settings::ApiKey;
/// use tinker_core::types::{ModelInput, SampleRequest, SamplingParams};
///
/// let ctx = RequestContext::new("http://127.0.0.1:8000", ApiKey::new("tml-test-key-0001").unwrap()).unwrap();
/// let mut ledger = Ledger::new(ctx, 7);
/// let sampler = ledger.register_sampler(0);
/// let request = SampleRequest::new("s:sample:0", 0, ModelInput::from_tokens(vec![1, 2]), SamplingParams::default());
/// let start = SampleStreamStart::new(&mut ledger, sampler, request, &Default::default()).unwrap();
/// assert_eq!(start.request.uri().path(), "/api/v1/stream_sample");
/// assert_eq!(start.request.headers()["accept"], "text/event-stream");
/// assert_eq!(start.seq_id, 0);
/// ```
#[derive(Debug)]
pub struct SampleStreamStart {
    /// The HTTP request.
    pub request: http::Request<Bytes>,
    /// Connect and per-read timeouts (a silent stream fails after the read timeout).
    pub timeouts: Timeouts,
    /// The seq id the sample took from its sampler.
    pub seq_id: u64,
}

impl SampleStreamStart {
    /// Validates `request`, gives it the sampler's next seq id and builds the HTTP request.
    pub fn new(
        ledger: &mut Ledger,
        sampler: SamplerHandle,
        mut request: SampleRequest,
        opts: &CallOptions,
    ) -> Result<SampleStreamStart> {
        request.validate()?;
        let seq_id = ledger.next_sample_seq_id(sampler);
        request.seq_id = Some(seq_id);
        let random = {
            let rng = ledger.rng();
            (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64())
        };
        let mut attempt = AttemptHeaders::new(idempotency_key(random));
        if let Some(method) = &opts.sdk_method {
            attempt = attempt.with_sdk_method(method.clone());
        }
        let mut http = ledger.context().build(&request, &attempt)?;
        let uri = format!("{}{STREAM_SAMPLE_PATH}", ledger.context().base_url())
            .parse::<http::Uri>()
            .map_err(|e| Error::invalid("base_url", format!("cannot address the stream: {e}")))?;
        *http.uri_mut() = uri;
        let headers = http.headers_mut();
        headers.insert(ACCEPT, HeaderValue::from_static(EVENT_STREAM));
        headers.remove("x-tinker-sampling-backpressure");
        let mut timeouts = Timeouts::default();
        if let Some(connect) = opts.connect_timeout {
            timeouts.connect = connect;
        }
        Ok(SampleStreamStart {
            request: http,
            timeouts,
            seq_id,
        })
    }

    /// The error of a non-2xx reply (`body` read whole).
    pub fn status_error(head: &http::response::Parts, body: &[u8]) -> Error {
        status_error(
            STREAM_SAMPLE_PATH,
            head.status.as_u16(),
            &head.headers,
            body,
        )
    }
}

/// Decodes a sample stream's body, pushed in chunks of any size as it arrives.
///
/// ```
/// use tinker_core::ops::SampleStreamDecoder;
/// let mut d = SampleStreamDecoder::new();
/// d.push(b"data: {\"token_id\": 5, \"index\": 0}\n\ndata: {\"finish_re");
/// assert_eq!(d.next_chunk().unwrap().unwrap().token_id, Some(5));
/// assert!(d.next_chunk().is_none()); // the end event is incomplete
/// d.push(b"ason\": \"length\", \"total_tokens\": 1}\n\n");
/// assert!(d.next_chunk().unwrap().unwrap().is_done());
/// assert!(d.is_done());
/// ```
#[derive(Debug, Default)]
pub struct SampleStreamDecoder {
    sse: SseDecoder,
    done: bool,
    ended: bool,
    reported_truncation: bool,
}

impl SampleStreamDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> SampleStreamDecoder {
        SampleStreamDecoder::default()
    }

    /// Appends body bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.done {
            self.sse.push(bytes);
        }
    }

    /// The body ended.
    pub fn finish(&mut self) {
        self.sse.finish();
        self.ended = true;
    }

    /// Whether the stream's last event (`done`, or an `error` event) was seen: nothing follows.
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The next decoded chunk; `None` when more bytes are needed, or once the stream is over.
    /// A body that ends before the `done` event yields one [`Error::Decode`].
    pub fn next_chunk(&mut self) -> Option<Result<SampleStreamChunk>> {
        while !self.done {
            match self.sse.next_event_ref() {
                Some(Ok(event)) => {
                    if event.data.is_empty() {
                        continue;
                    }
                    let Ok(value) = serde_json::from_str::<Value>(&event.data) else {
                        continue;
                    };
                    let Some(chunk) = SampleStreamChunk::from_json(&value) else {
                        continue;
                    };
                    // An error event ends the stream as `done` does.
                    self.done = chunk.kind != SampleStreamChunkKind::Token;
                    return Some(Ok(chunk));
                }
                Some(Err(e)) => return Some(Err(Error::decode("sample stream", e.to_string()))),
                None if self.ended && !self.reported_truncation => {
                    self.reported_truncation = true;
                    return Some(Err(Error::decode(
                        "sample stream",
                        "the stream ended before its `done` event",
                    )));
                }
                None => return None,
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b": a comment\n\n\
        data: {\"token\": \"a\", \"token_id\": 97, \"index\": 0, \"logprob\": -0.5}\n\n\
        data: [DONE-LIKE NOISE]\n\n\
        event: ping\ndata:\n\n\
        data: {\"token_id\": 98, \"index\": 1}\r\n\r\n\
        data: {\"finish_reason\": \"length\", \"total_tokens\": 2}\n\n\
        data: {\"token_id\": 99, \"index\": 2}\n\n";

    fn decode_in_pieces(body: &[u8], piece: usize) -> Vec<Result<SampleStreamChunk>> {
        let mut d = SampleStreamDecoder::new();
        let mut out = Vec::new();
        for part in body.chunks(piece) {
            d.push(part);
            out.extend(std::iter::from_fn(|| d.next_chunk()));
        }
        d.finish();
        out.extend(std::iter::from_fn(|| d.next_chunk()));
        out
    }

    #[test]
    fn tokens_then_done_whatever_the_chunking_and_nothing_after_done() {
        for piece in [1, 2, 3, 7, 64, BODY.len()] {
            let chunks: Vec<SampleStreamChunk> = decode_in_pieces(BODY, piece)
                .into_iter()
                .map(|c| c.expect("no error"))
                .collect();
            let kinds: Vec<_> = chunks.iter().map(|c| (c.kind, c.token_id)).collect();
            assert_eq!(
                kinds,
                [
                    (SampleStreamChunkKind::Token, Some(97)),
                    (SampleStreamChunkKind::Token, Some(98)),
                    (SampleStreamChunkKind::Done, None),
                ],
                "pieces of {piece} bytes"
            );
            assert_eq!(chunks[0].token.as_deref(), Some("a"));
            assert_eq!(chunks[0].logprob, Some(-0.5));
            assert_eq!(chunks[2].finish_reason.as_deref(), Some("length"));
            assert_eq!(chunks[2].total_tokens, Some(2));
        }
    }

    #[test]
    fn a_body_cut_before_done_ends_with_one_decode_error() {
        let cut = b"data: {\"token_id\": 5, \"index\": 0}\n\ndata: {\"token_id\"";
        let out = decode_in_pieces(cut, 4);
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].as_ref().unwrap().token_id, Some(5));
        let err = out[1].as_ref().unwrap_err();
        assert!(err.to_string().contains("before its `done` event"), "{err}");
    }

    #[test]
    fn an_error_event_is_a_chunk_naming_the_failure() {
        let out = decode_in_pieces(b"data: {\"error\": \"model crashed\"}\n\n", 5);
        assert_eq!(out.len(), 1, "an error event ends the stream: {out:?}");
        let chunk = out[0].as_ref().unwrap();
        assert_eq!(chunk.kind, SampleStreamChunkKind::Error);
        assert_eq!(chunk.error.as_deref(), Some("model crashed"));
    }
}
