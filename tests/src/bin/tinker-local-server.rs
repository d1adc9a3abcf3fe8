//! `tinker-local-server`: the local Tinker server as a process.
//!
//! ```text
//! tinker-local-server [--port N] [--seed N] [--config flags.json] [--record traffic.jsonl]
//! ```
//!
//! Binds 127.0.0.1 only and prints its base URL (`http://127.0.0.1:<port>`) as the first stdout
//! line once it is listening, so a script can start it with `--port 0` and read the URL. Any
//! `tml-…` API key is accepted unless the config lists `api_keys`. Runs until killed (or stdin
//! closes when `--exit-on-stdin-eof` is given).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use tinker_testkit::server::{LocalServer, LocalServerConfig};

const USAGE: &str = "usage: tinker-local-server [--port N] [--seed N] [--config flags.json] \
[--record traffic.jsonl] [--exit-on-stdin-eof]";

fn parse_args() -> Result<(LocalServerConfig, bool), String> {
    let mut args = std::env::args().skip(1);
    let mut port = None;
    let mut seed = None;
    let mut config = None;
    let mut record = None;
    let mut stdin_eof = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--port" => {
                port = Some(
                    value("--port")?
                        .parse::<u16>()
                        .map_err(|e| format!("--port: {e}"))?,
                )
            }
            "--seed" => {
                seed = Some(
                    value("--seed")?
                        .parse::<u64>()
                        .map_err(|e| format!("--seed: {e}"))?,
                )
            }
            "--config" => config = Some(PathBuf::from(value("--config")?)),
            "--record" => record = Some(PathBuf::from(value("--record")?)),
            "--exit-on-stdin-eof" => stdin_eof = true,
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let mut cfg = match config {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            LocalServerConfig::from_json(&text)
                .map_err(|e| format!("invalid config {}: {e}", path.display()))?
        }
        None => LocalServerConfig::default(),
    };
    if let Some(p) = port {
        cfg.port = p;
    }
    if let Some(s) = seed {
        cfg.seed = s;
    }
    if record.is_some() {
        cfg.record_path = record;
    }
    Ok((cfg, stdin_eof))
}

fn main() -> ExitCode {
    let (cfg, stdin_eof) = match parse_args() {
        Ok(c) => c,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let server = match LocalServer::start(cfg).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot start the server: {e}");
                return ExitCode::FAILURE;
            }
        };
        // Printed only after binding: the URL is usable as soon as it is read.
        println!("{}", server.url());
        let _ = std::io::stdout().flush();
        if stdin_eof {
            let _ = tokio::task::spawn_blocking(|| {
                std::io::copy(&mut std::io::stdin(), &mut std::io::sink())
            })
            .await;
        } else {
            let _ = tokio::signal::ctrl_c().await;
        }
        server.shutdown().await;
        ExitCode::SUCCESS
    })
}
