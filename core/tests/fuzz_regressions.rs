//! Replays the committed fuzz inputs through the same check as their libFuzzer target, so a fixed
//! crash stays fixed under plain `cargo test` (no fuzzer, no nightly toolchain):
//!
//! * `fuzz/seeds/<target>/` — the seed corpus (captured JSON replies, protobuf results of both
//!   schemas, SSE streams, reply sequences; written by `fuzz/seeds/make_seeds.py`);
//! * `fuzz/regressions/<target>/` — every input a fuzz run found failing, copied there from
//!   `fuzz/artifacts/<target>/` once fixed.
//!
//! The checks are the modules of `fuzz/checks/`, shared with the fuzz targets. The call-machine
//! check drives the simulator, hence the feature:
//!
//! ```text
//! cargo test -p tinker-core --features sim --test fuzz_regressions
//! ```
#![cfg(feature = "sim")]
#![allow(missing_docs)]

#[path = "../../fuzz/checks/mod.rs"]
mod checks;

use std::path::PathBuf;

/// The files of `fuzz/<kind>/<target>/`, sorted by name.
fn inputs(kind: &str, target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<(String, Vec<u8>)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_file())
        .map(|e| {
            let name = format!("fuzz/{kind}/{target}/{}", e.file_name().to_string_lossy());
            (name, std::fs::read(e.path()).expect("a readable input"))
        })
        .collect();
    files.sort();
    files
}

/// Runs every seed and saved finding of `target` through its check.
fn replay(target: &str, check: fn(&[u8])) {
    let seeds = inputs("seeds", target);
    assert!(
        !seeds.is_empty(),
        "no seeds for {target}: run fuzz/seeds/make_seeds.py"
    );
    for (name, data) in seeds.into_iter().chain(inputs("regressions", target)) {
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{name} fails its check");
    }
}

#[test]
fn sse_decode_seeds_and_findings_pass_their_check() {
    replay("sse_decode", checks::sse_decode::check);
}

#[test]
fn proto_decode_seeds_and_findings_pass_their_check() {
    replay("proto_decode", checks::proto_decode::check);
}

#[test]
fn json_responses_seeds_and_findings_pass_their_check() {
    replay("json_responses", checks::json_responses::check);
}

#[test]
fn tinker_path_seeds_and_findings_pass_their_check() {
    replay("tinker_path", checks::tinker_path::check);
}

#[test]
fn response_classification_seeds_and_findings_pass_their_check() {
    replay(
        "response_classification",
        checks::response_classification::check,
    );
}

#[test]
fn call_machines_seeds_and_findings_pass_their_check() {
    replay("call_machines", checks::call_machines::check);
}
