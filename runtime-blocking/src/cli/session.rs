//! `tinker session list|info`.

use clap::Subcommand;
use serde_json::json;

use super::output::{cell, Output, Table};
use super::{CliResult, Context};

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
    }
}
