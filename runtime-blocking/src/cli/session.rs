//! `tinker session list|info|export-trace`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Subcommand;
use serde_json::json;
use tinker_core::types::TraceExportStatus;

use super::output::{cell, format_size, Output, Table};
use super::{positive_seconds, CliError, CliResult, Context, Exit};
use crate::download::{copy_url_to, download_url, DownloadError, DownloadOptions, ProgressMode};

#[derive(Debug, Subcommand)]
pub(crate) enum SessionCommand {
    /// List your session ids, newest first.
    List {
        /// Maximum number of sessions.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Skip this many sessions first.
        #[arg(long, default_value_t = 0)]
        offset: u64,
    },
    /// Show a session's training runs and samplers.
    Info {
        /// The session id.
        session_id: String,
    },
    /// Export a session's request trace (JSON lines) to a file or standard output.
    ///
    /// Asks the server to build the export, checks again every --poll-interval seconds until it
    /// is ready, then downloads it from the signed URL the server returns.
    ExportTrace {
        /// The session id.
        session_id: String,
        /// Write the trace to this file (default: standard output).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
        /// Seconds between status checks while the export is being built.
        #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
        poll_interval: f64,
        /// Give up (exit code 1) when the export is not ready after this many seconds.
        #[arg(long, value_name = "SECONDS", default_value_t = 600.0)]
        max_wait: f64,
    },
}

pub(crate) fn execute(ctx: &Context, command: SessionCommand) -> CliResult {
    match command {
        SessionCommand::List { limit, offset } => {
            if limit == 0 {
                return Err(super::CliError::usage("--limit must be at least 1"));
            }
            let sessions = ctx.rest()?.list_sessions(limit, offset)?.sessions;
            let title = match sessions.len() {
                0 => "No sessions found".to_owned(),
                1 => "1 session".to_owned(),
                n => format!("{n} sessions"),
            };
            let mut table = Table::new(title, &["Session ID"]);
            for s in &sessions {
                table.row(vec![s.clone()]);
            }
            Ok(Output::new(json!({ "sessions": sessions }), table))
        }
        SessionCommand::Info { session_id } => {
            let session = ctx.rest()?.get_session(&session_id)?;
            let mut t = Table::properties(format!("Session: {session_id}"));
            t.prop("Session ID", &session_id);
            if let Some(name) = &session.display_name {
                t.prop("Display Name", name);
            }
            let list = |ids: &[String]| {
                if ids.is_empty() {
                    "None".to_owned()
                } else {
                    ids.join(", ")
                }
            };
            t.prop("Training Runs", list(&session.training_run_ids));
            t.prop("Samplers", list(&session.sampler_ids));
            if let Some(meta) = session.user_metadata.as_ref().filter(|m| !m.is_empty()) {
                t.prop("Metadata", "");
                for (k, v) in meta {
                    t.prop(&format!("  - {k}"), cell(Some(v)));
                }
            }
            let mut doc = json!(session);
            doc["session_id"] = json!(session_id);
            Ok(Output::new(doc, t))
        }
        SessionCommand::ExportTrace {
            session_id,
            output,
            poll_interval,
            max_wait,
        } => {
            let poll_interval = positive_seconds("--poll-interval", poll_interval)?;
            let max_wait = positive_seconds("--max-wait", max_wait)?;
            export_trace(ctx, &session_id, output, poll_interval, max_wait)
        }
    }
}

/// Polls the export until it is ready, then streams the signed URL to the file or stdout.
fn export_trace(
    ctx: &Context,
    session_id: &str,
    output: Option<PathBuf>,
    poll_interval: Duration,
    max_wait: Duration,
) -> CliResult {
    let rest = ctx.rest()?;
    let started = Instant::now();
    let url = loop {
        let reply = rest.export_session_trace(session_id)?;
        match reply.status {
            TraceExportStatus::Ready => {
                break reply.url.ok_or_else(|| {
                    CliError::new(Exit::Failed, "The trace export is ready but has no URL")
                        .with_hint("The server's reply lacked `url`; try again later.")
                })?
            }
            TraceExportStatus::Failed => {
                return Err(
                    CliError::new(Exit::Failed, "The trace export failed").with_hint(format!(
                        "Details: {}",
                        reply.error.as_deref().unwrap_or("no reason given")
                    )),
                )
            }
            TraceExportStatus::Pending => {
                if started.elapsed() + poll_interval > max_wait {
                    return Err(CliError::new(
                        Exit::Failed,
                        format!(
                            "The trace export was not ready after {} s",
                            max_wait.as_secs_f64()
                        ),
                    )
                    .with_hint("Run the command again later, or raise --max-wait."));
                }
                tracing::info!(
                    "the trace export is being built; checking again in {poll_interval:?}"
                );
                std::thread::sleep(poll_interval);
            }
        }
    };
    let failed = |e: DownloadError| {
        CliError::new(Exit::Failed, "Downloading the trace failed")
            .with_hint(format!("Details: {e}"))
    };
    match output {
        None => {
            let mut stdout = std::io::stdout().lock();
            copy_url_to(&url, &mut stdout, Default::default()).map_err(failed)?;
            Ok(Output::nothing())
        }
        Some(file) => {
            let options = DownloadOptions {
                progress: ProgressMode::Never,
                ..DownloadOptions::default()
            };
            let (bytes, _) = download_url(&url, &file, &options).map_err(failed)?;
            let shown = file.display().to_string();
            Ok(Output::new(
                json!({"session_id": session_id, "output": shown, "size_bytes": bytes}),
                Table::lines(vec![format!(
                    "Exported the trace of {session_id} to {shown} ({})",
                    format_size(Some(bytes))
                )]),
            ))
        }
    }
}
