//! Server results decoded from protobuf, against both schemas (SDK 0.25 and 0.38 share the wire
//! format; 0.38 adds fields the decoders must skip or read): any bytes give a value or a `Decode`
//! error, never a panic or an unbounded allocation. Where the prost reference structs
//! (`proto::wire`) also accept a `SampleResponse`, the hand-written decoder must agree with them
//! on the sequences and their tokens.
use bytes::Bytes;
use prost::Message as _;
use tinker_core::proto::{decode_forward_backward_output, decode_sample_response, wire};

/// Runs one input; panics on a finding.
pub fn check(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    let ours = decode_sample_response(body.clone());
    if let (Ok(ours), Ok(reference)) = (&ours, wire::SampleResponse::decode(body.clone())) {
        assert_eq!(ours.sequences.len(), reference.sequences.len());
        for (a, b) in ours.sequences.iter().zip(&reference.sequences) {
            let tokens: Vec<i32> = b
                .tokens
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            assert_eq!(a.tokens, tokens);
        }
    }
    // No reference comparison here: the decoder fills documented defaults (an absent
    // `loss_fn_output_type` reads as `ArrayRecord`) where prost leaves fields empty.
    let _ = decode_forward_backward_output(body.clone());
    // The request side (what the local server and the conformance tools decode).
    let _ = wire::ForwardBackwardRequest::decode(body);
}
