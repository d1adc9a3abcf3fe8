//! Direct JSON responses and future replies: classification and decoding never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tinker_core::endpoints::decode_json;
use tinker_core::types::*;

fuzz_target!(|data: &[u8]| {
    let _ = FutureReply::classify(Some("application/json"), data);
    let _ = FutureReply::classify(Some("application/x-protobuf"), data);
    let _ = decode_json::<ClientConfig>(data);
    let _ = decode_json::<GetInfoResponse>(data);
    let _ = decode_json::<TrainingRunsResponse>(data);
    let _ = decode_json::<CheckpointsListResponse>(data);
    let _ = decode_json::<UntypedFuture>(data);
    let _ = decode_json::<RetrieveFuturesResponse>(data);
    let _ = decode_json::<ForwardBackwardOutput>(data);
    let _ = decode_json::<TensorData>(data);
    let _ = decode_json::<ModelInput>(data);
});
