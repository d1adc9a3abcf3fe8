//! Protobuf bodies of the Tinker API (package `tinker_public`, protocol.md 10).
//!
//! Two directions, both hand-written for speed on top of the same wire format:
//!
//! * **Requests** — [`encode_forward_backward`] writes a `ForwardBackwardRequest` straight from
//!   [`crate::types::Datum`]s into a byte buffer; [`compress_body`] applies the optional zstd
//!   `Content-Encoding`.
//! * **Results** — [`decode_forward_backward_output`] and [`decode_sample_response`] turn a
//!   future's `application/x-protobuf` body into the public result types.
//!
//! [`wire`] holds the prost message structs, for the peer side (the local test server) and as a
//! reference in tests.
//!
//! Large calls: a forward_backward call is split into chunks ([`crate::batching`]), and each chunk
//! is its own body. The core compresses on the caller's thread and never spawns, so an adapter
//! that wants parallel compression runs [`compress_body`] for several chunk bodies on its own
//! workers.

mod compress;
mod decode;
mod encode;
mod le;
pub mod wire;

pub use compress::{compress_body, ZSTD_LEVEL};
pub use decode::{decode_forward_backward_output, decode_sample_response};
pub use encode::{encode_forward_backward, ForwardBackwardRequestRef};
