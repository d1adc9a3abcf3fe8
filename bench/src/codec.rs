//! B1 (encode a forward_backward call into wire bodies) and B2 (decode results), on the
//! python-anchors.md workloads, timed as the Python script times the official SDK.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use tinker_core::batching::combine_forward_backward_outputs;
use tinker_core::proto::{decode_forward_backward_output, decode_sample_response};

use crate::measure::{emit, rss_growth, time_calls, timing_fields};
use crate::workloads::{batch, encode_call, fbo_body, sample_body, u, Kind};

/// The B1 sizes (B × L).
pub const B1_SIZES: [(usize, usize); 4] = [(128, 512), (128, 2048), (2048, 450), (256, 16384)];

fn runs_for(elements: usize) -> (usize, usize) {
    // Large cases: fewer timed calls (the Python side does the same, by a time budget).
    if elements > 10_000_000 {
        (5, 12)
    } else {
        (5, 25)
    }
}

/// B1: every kind × size, with and without zstd.
pub fn b1() {
    for kind in [Kind::Sft, Kind::Rl] {
        for (b, l) in B1_SIZES {
            let data = batch(kind, b, l);
            let plain = encode_call(&data, kind, false);
            let proto_bytes: usize = plain.iter().map(Bytes::len).sum();
            let chunks = plain.len();
            drop(plain);
            let (min_runs, max_runs) = runs_for(b * l);
            for zstd in [false, true] {
                let wire: usize = encode_call(&data, kind, zstd).iter().map(Bytes::len).sum();
                let mem = rss_growth(|| encode_call(&data, kind, zstd));
                let t = time_calls(min_runs, max_runs, Duration::from_secs(2), || {
                    encode_call(&data, kind, zstd)
                });
                let workload = if zstd {
                    format!("B1 encode + zstd {}", kind.name())
                } else {
                    format!("B1 encode {}", kind.name())
                };
                let mut fields = timing_fields(&t);
                fields["mem_mb"] = json!(mem);
                fields["proto_bytes"] = json!(proto_bytes);
                fields["notes"] = json!(format!(
                    "{chunks} chunk(s); {:.2} MB proto, {:.2} MB on the wire; {:.0} MB/s",
                    proto_bytes as f64 / 1e6,
                    wire as f64 / 1e6,
                    proto_bytes as f64 / 1e6 / t.median
                ));
                emit(&workload, &format!("{b}x{l}"), fields);
            }
        }
    }
}

/// B2: ForwardBackwardOutput (one body; 54 per-chunk bodies + combine) and SampleResponse.
pub fn b2() {
    for (b, l) in [(2048usize, 450usize), (4096, 4096)] {
        let body = fbo_body(0, b, l);
        let check = decode_forward_backward_output(body.clone()).expect("decodes");
        assert_eq!(check.loss_fn_outputs.len(), b);
        assert_eq!(
            check.logprobs(b - 1).and_then(|t| t.as_f32()).expect("f32")[l - 1],
            -8.0 * u(2, (b * l - 1) as u64)
        );
        drop(check);
        let mem = rss_growth(|| decode_forward_backward_output(body.clone()).unwrap());
        let (min_runs, max_runs) = runs_for(b * l);
        let t = time_calls(min_runs, max_runs, Duration::from_secs(2), || {
            decode_forward_backward_output(body.clone()).unwrap()
        });
        let mut fields = timing_fields(&t);
        fields["mem_mb"] = json!(mem);
        fields["notes"] = json!(format!(
            "1 body of {:.2} MB; {:.0} M floats/s",
            body.len() as f64 / 1e6,
            (b * l) as f64 / 1e6 / t.median
        ));
        emit(
            "B2 decode ForwardBackwardOutput",
            &format!("{b}x{l}"),
            fields,
        );
    }

    // The SDK's chunking of a 4096×4096 SFT batch: 54 bodies of 76 datums.
    let (b, l, per_chunk) = (4096, 4096, 76);
    let bodies: Vec<Bytes> = (0..b)
        .step_by(per_chunk)
        .map(|first| fbo_body(first, per_chunk.min(b - first), l))
        .collect();
    assert_eq!(bodies.len(), 54);
    let decode_all = || {
        combine_forward_backward_outputs(
            bodies
                .iter()
                .map(|body| decode_forward_backward_output(body.clone()).unwrap())
                .collect(),
        )
    };
    assert_eq!(decode_all().loss_fn_outputs.len(), b);
    let mem = rss_growth(decode_all);
    let t = time_calls(5, 25, Duration::from_secs(2), decode_all);
    let mut fields = timing_fields(&t);
    fields["mem_mb"] = json!(mem);
    fields["notes"] = json!("54 bodies of 76 datums, decoded then combined");
    emit("B2 decode per-chunk + combine", "4096x4096", fields);

    let body = sample_body(2048, 256);
    let check = decode_sample_response(body.clone()).expect("decodes");
    assert_eq!(check.sequences.len(), 2048);
    assert_eq!(check.sequences[2047].tokens.len(), 256);
    drop(check);
    let decode = || decode_sample_response(body.clone()).unwrap();
    let mem = rss_growth(decode);
    let t = time_calls(5, 25, Duration::from_secs(2), decode);
    let mut fields = timing_fields(&t);
    fields["mem_mb"] = json!(mem);
    fields["notes"] = json!(format!("1 body of {:.2} MB", body.len() as f64 / 1e6));
    emit("B2 decode SampleResponse", "2048x256", fields);

    let decode_and_read = || {
        let r = decode_sample_response(body.clone()).unwrap();
        let mut token_sum = 0i64;
        let mut logprob_sum = 0f32;
        for seq in &r.sequences {
            token_sum += seq.tokens.iter().map(|&t| i64::from(t)).sum::<i64>();
            logprob_sum += seq.logprobs.as_deref().unwrap_or(&[]).iter().sum::<f32>();
        }
        (token_sum, logprob_sum, r)
    };
    let mem = rss_growth(decode_and_read);
    let t = time_calls(5, 25, Duration::from_secs(2), decode_and_read);
    let mut fields = timing_fields(&t);
    fields["mem_mb"] = json!(mem);
    fields["notes"] = json!("every token and logprob read");
    emit(
        "B2 decode SampleResponse + read tokens/logprobs",
        "2048x256",
        fields,
    );
}

/// Writes the B2 bodies for the Python script (identical inputs for both SDKs).
pub fn dump(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (b, l) in [(2048usize, 450usize), (4096, 4096)] {
        std::fs::write(dir.join(format!("fbo_{b}x{l}.pb")), fbo_body(0, b, l))?;
    }
    for (i, first) in (0..4096).step_by(76).enumerate() {
        std::fs::write(
            dir.join(format!("fbo_chunk_{i:02}.pb")),
            fbo_body(first, 76.min(4096 - first), 4096),
        )?;
    }
    std::fs::write(dir.join("sample_2048x256.pb"), sample_body(2048, 256))
}
