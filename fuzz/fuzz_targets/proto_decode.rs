//! Server results decoded from protobuf (both schema versions share these decoders): any bytes
//! give a value or a `Decode` error, never a panic or an unbounded allocation.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = Bytes::copy_from_slice(data);
    let _ = tinker_core::proto::decode_forward_backward_output(body.clone());
    let _ = tinker_core::proto::decode_sample_response(body);
});
