//! A one-off timing of the workload the brief sizes the model for (not an assertion; run with
//! `cargo test -p tinker-testkit --release -- --ignored --nocapture forward_backward_timing`).

use std::time::Instant;

use tinker_core::types::Datum;

use super::super::{LossConfig, ModelSpec, SplitMix64, ToyModel};
use super::sft;

#[test]
#[ignore = "timing printout, run on demand"]
fn forward_backward_timing_128_by_512() {
    let mut rng = SplitMix64::new(1);
    let data: Vec<Datum> = (0..128)
        .map(|_| {
            let tokens: Vec<i32> = (0..512).map(|_| (rng.next_u64() % 512) as i32).collect();
            let targets: Vec<i64> = (0..512).map(|_| (rng.next_u64() % 512) as i64).collect();
            sft(&tokens, &targets, &[1.0; 512])
        })
        .collect();
    for rank in [0usize, 32, 64] {
        let mut model = ToyModel::new(ModelSpec::new("Qwen/Qwen3-8B", rank)).unwrap();
        let start = Instant::now();
        let out = model
            .forward_backward(&data, "cross_entropy", &LossConfig::default())
            .unwrap();
        println!(
            "rank {rank}: forward_backward of 128 × 512 tokens took {:?} (loss:sum {:.1})",
            start.elapsed(),
            out.metrics["loss:sum"]
        );
    }
}
