//! B3: N concurrent sampling calls from one client process against the local server (a separate
//! process, so this process's CPU time is the client's alone), per runtime.
//!
//! One case per process (`tinker-bench fanout …`), so peak RSS is this case's. bench/run.sh
//! reads the server's `/_admin/in_flight` peaks around each case.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use futures_util::future::join_all;
use serde_json::json;
use tinker_core::client::{ClientOptions, SamplingClient, ServiceClient};
use tinker_core::settings::Settings;
use tinker_core::types::{ModelInput, SamplingParams};

use crate::measure::{emit, peak_rss_mb, process_cpu, reset_peak_rss, rss_mb};

/// The sampled model (a toy model on the local server).
pub const BASE_MODEL: &str = "Qwen/Qwen3-8B";

/// Threads the blocking runtime fans out over (it has no executor of its own).
const BLOCKING_THREADS: usize = 64;

/// One fan-out case.
#[derive(Debug, Clone)]
pub struct Case {
    pub runtime: String,
    pub calls: usize,
    pub samples: u32,
    pub max_tokens: u32,
    pub url: String,
}

pub fn settings(url: &str) -> Settings {
    Settings::default()
        .with_base_url(url)
        .with_api_key("tml-bench-key")
        .expect("a valid key")
}

fn prompt(i: usize) -> ModelInput {
    ModelInput::from_tokens(vec![(i % 200) as i32 + 1, (i % 7) as i32 + 2, 3])
}

fn params(max_tokens: u32) -> SamplingParams {
    SamplingParams {
        max_tokens: Some(max_tokens),
        ..SamplingParams::default()
    }
}

/// What a case observed.
struct Outcome {
    failures: usize,
    first_error: Option<String>,
}

async fn fan_out_async(sampler: &SamplingClient, case: &Case) -> Outcome {
    let results = join_all(
        (0..case.calls).map(|i| sampler.sample(prompt(i), case.samples, params(case.max_tokens))),
    )
    .await;
    let mut failures = 0;
    let mut first_error = None;
    for r in results {
        match r {
            Ok(resp) if resp.sequences.len() == case.samples as usize => {}
            Ok(resp) => {
                failures += 1;
                first_error.get_or_insert(format!("{} sequences", resp.sequences.len()));
            }
            Err(e) => {
                failures += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    Outcome {
        failures,
        first_error,
    }
}

async fn setup(service: &ServiceClient, max_tokens: u32) -> SamplingClient {
    let sampler = service
        .create_base_model_sampling_client(BASE_MODEL)
        .await
        .expect("sampling client");
    sampler
        .sample(prompt(0), 1, params(max_tokens))
        .await
        .expect("warm-up sample");
    sampler
}

/// Runs one case and prints its line.
pub fn run(case: &Case) {
    let options = ClientOptions::default();
    let measured = |body: &mut dyn FnMut() -> Outcome| {
        reset_peak_rss();
        let rss_before = rss_mb();
        let cpu = process_cpu();
        let start = Instant::now();
        let outcome = body();
        let wall = start.elapsed();
        let cpu = process_cpu() - cpu;
        (outcome, wall, cpu, rss_before, peak_rss_mb())
    };
    let (outcome, wall, cpu, rss_before, peak) = match case.runtime.as_str() {
        "tokio" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let (service, sampler) = rt.block_on(async {
                let service = tinker_tokio::connect_with(settings(&case.url), options.clone())
                    .expect("connect");
                let sampler = setup(&service, case.max_tokens).await;
                (service, sampler)
            });
            let r = measured(&mut || rt.block_on(fan_out_async(&sampler, case)));
            drop((sampler, service));
            r
        }
        "async-std" => {
            let (service, sampler) = async_std::task::block_on(async {
                let service = tinker_async_std::connect_with(settings(&case.url), options.clone())
                    .expect("connect");
                let sampler = setup(&service, case.max_tokens).await;
                (service, sampler)
            });
            let r = measured(&mut || async_std::task::block_on(fan_out_async(&sampler, case)));
            drop((sampler, service));
            r
        }
        "blocking" => {
            let service =
                tinker_blocking::connect_with(settings(&case.url), options).expect("connect");
            let sampler = service
                .create_base_model_sampling_client(BASE_MODEL)
                .expect("sampling client");
            sampler
                .sample(prompt(0), 1, params(case.max_tokens))
                .expect("warm-up sample");
            let r = measured(&mut || {
                let next = AtomicUsize::new(0);
                let failures = AtomicUsize::new(0);
                let first_error = Mutex::new(None);
                std::thread::scope(|s| {
                    for _ in 0..BLOCKING_THREADS.min(case.calls) {
                        s.spawn(|| loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= case.calls {
                                break;
                            }
                            match sampler.sample(prompt(i), case.samples, params(case.max_tokens)) {
                                Ok(resp) if resp.sequences.len() == case.samples as usize => {}
                                other => {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                    let msg = match other {
                                        Ok(r) => format!("{} sequences", r.sequences.len()),
                                        Err(e) => e.to_string(),
                                    };
                                    first_error.lock().unwrap().get_or_insert(msg);
                                }
                            }
                        });
                    }
                });
                Outcome {
                    failures: failures.into_inner(),
                    first_error: first_error.into_inner().unwrap(),
                }
            });
            drop((sampler, service));
            r
        }
        other => panic!("unknown runtime {other:?} (tokio, async-std, blocking)"),
    };
    let requests = case.calls as f64;
    emit(
        &format!("B3 sample fan-out ({})", case.runtime),
        &format!("{}x{}", case.calls, case.samples),
        json!({
            "cpu_ms_per_1k": cpu.as_secs_f64() * 1e3 / requests * 1e3,
            "wall_s": wall.as_secs_f64(),
            "peak_rss_mb": peak,
            "rss_before_mb": rss_before,
            "failures": outcome.failures,
            "first_error": outcome.first_error,
            "max_tokens": case.max_tokens,
            "notes": if case.runtime == "blocking" {
                format!("{BLOCKING_THREADS} threads")
            } else {
                String::new()
            },
        }),
    );
}
