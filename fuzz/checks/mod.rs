//! The fuzz checks: one module per target, each `check(data)` panicking on a finding. Used by
//! the libFuzzer targets (fuzz/fuzz_targets/) and replayed on every saved finding by
//! core/tests/fuzz_regressions.rs.
#![allow(dead_code)]

pub mod call_machines;
pub mod json_responses;
pub mod proto_decode;
pub mod response_classification;
pub mod sse_decode;
pub mod tinker_path;
