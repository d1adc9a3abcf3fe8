//! `tinker-bench`: the Rust half of bench/run.sh. Every result is one JSON line on stdout
//! (`{"sdk": "rust", "workload": …, "size": …, …}`); bench/report.py joins them with the Python
//! script's lines into one table.
//!
//! ```text
//! tinker-bench b1 | b2 | sse | dump DIR
//! tinker-bench fanout --runtime tokio|async-std|blocking --calls N --samples S --max-tokens T --url URL
//! tinker-bench poll --url URL
//! ```

mod codec;
mod fanout;
mod measure;
mod poll;
mod sse;
mod workloads;

use std::process::ExitCode;

const USAGE: &str =
    "usage: tinker-bench b1 | b2 | sse | dump DIR | poll --url URL | fanout --runtime R \
--calls N --samples S --max-tokens T --url URL";

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn number<T: std::str::FromStr>(args: &[String], name: &str, default: T) -> Result<T, String> {
    match flag(args, name) {
        Some(v) => v.parse().map_err(|_| format!("{name}: not a number: {v}")),
        None => Ok(default),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let url = || flag(&args, "--url").ok_or_else(|| "--url is required".to_string());
    let result = match args.first().map(String::as_str) {
        Some("b1") => {
            codec::b1();
            Ok(())
        }
        Some("b2") => {
            codec::b2();
            Ok(())
        }
        Some("dump") => match args.get(1) {
            Some(dir) => codec::dump(std::path::Path::new(dir)).map_err(|e| e.to_string()),
            None => Err("dump needs a directory".into()),
        },
        Some("sse") => {
            sse::run();
            Ok(())
        }
        Some("poll") => url().map(|u| poll::run(&u)),
        Some("fanout") => (|| {
            let case = fanout::Case {
                runtime: flag(&args, "--runtime").unwrap_or_else(|| "tokio".into()),
                calls: number(&args, "--calls", 64)?,
                samples: number(&args, "--samples", 1)?,
                max_tokens: number(&args, "--max-tokens", 16)?,
                url: url()?,
            };
            fanout::run(&case);
            Ok(())
        })(),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::from(2)
        }
    }
}
