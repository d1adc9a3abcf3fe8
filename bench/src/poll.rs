//! B4: what polling one future costs: a sample whose `retrieve_future` answers `try_again` k
//! times, then one during a 30 s burst of 503s (the server's fault injection).
//!
//! The client installs each fault after its setup, so only the measured future meets it;
//! bench/report.py counts the polls per future and the peak poll rate from the server's
//! recording.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::Instant;

use serde_json::{json, Value};

use crate::fanout::{settings, BASE_MODEL};
use crate::measure::{emit, process_cpu};
use tinker_core::client::ClientOptions;
use tinker_core::types::{ModelInput, SamplingParams};

/// Length of the 503 burst.
pub const BURST_MS: u64 = 30_000;

/// `POST {url}/_admin/faults` with `rule` (plain HTTP/1.1 on loopback: the admin API is not
/// part of the SDK).
pub fn add_fault(url: &str, rule: &Value) {
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let body = rule.to_string();
    let mut stream = TcpStream::connect(addr).expect("the local server accepts");
    write!(
        stream,
        "POST /_admin/faults HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request written");
    let mut reply = String::new();
    stream.read_to_string(&mut reply).expect("reply read");
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "fault not installed: {reply}"
    );
}

/// The cases in order (the report matches them to the recording's `asample` requests in the
/// same order, after the warm-up).
pub fn cases() -> Vec<(String, Option<Value>)> {
    let mut cases = vec![];
    for k in [0u64, 5, 50] {
        let rule = (k > 0).then(
            || json!({"endpoint": "retrieve_future", "count": k, "fault": {"kind": "try_again"}}),
        );
        cases.push((format!("try_again x{k}"), rule));
    }
    cases.push((
        "30 s 503 burst".into(),
        Some(
            json!({"endpoint": "retrieve_future", "duration_ms": BURST_MS,
                    "fault": {"kind": "status", "status": 503}}),
        ),
    ));
    cases
}

/// Runs every case on tokio and prints one line per case.
pub fn run(url: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let service =
            tinker_tokio::connect_with(settings(url), ClientOptions::default()).expect("connect");
        let sampler = service
            .create_base_model_sampling_client(BASE_MODEL)
            .await
            .expect("sampling client");
        let params = SamplingParams {
            max_tokens: Some(4),
            ..SamplingParams::default()
        };
        let prompt = ModelInput::from_tokens(vec![1, 2, 3]);
        sampler
            .sample(prompt.clone(), 1, params.clone())
            .await
            .expect("warm-up");
        for (name, rule) in cases() {
            if let Some(rule) = &rule {
                add_fault(url, rule);
            }
            let cpu = process_cpu();
            let start = Instant::now();
            let result = sampler.sample(prompt.clone(), 1, params.clone()).await;
            emit(
                "B4 poll one future",
                &name,
                json!({
                    "wall_s": start.elapsed().as_secs_f64(),
                    "cpu_s": (process_cpu() - cpu).as_secs_f64(),
                    "failures": usize::from(result.is_err()),
                    "first_error": result.err().map(|e| e.to_string()),
                }),
            );
        }
    });
}
