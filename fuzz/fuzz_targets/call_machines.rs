//! libFuzzer entry point; the check itself is in fuzz/checks/call_machines.rs (shared with the
//! regression replay in core/tests/fuzz_regressions.rs).
#![no_main]

#[path = "../checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::call_machines::check(data));
