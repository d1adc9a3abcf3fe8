//! `tinker run list|info`.

use clap::Subcommand;
use serde_json::json;
use tinker_core::types::TrainingRun;

use super::output::{format_time, Output, Table};
use super::{count_title, fetch_pages, CliError, CliResult, Context};

/// Page size of `run list` (the official CLI's).
const PAGE_SIZE: u32 = 100;

#[derive(Debug, Subcommand)]
pub(crate) enum RunCommand {
    /// List training runs, newest first.
    List {
        /// Maximum number of runs to fetch (0 = all).
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Columns to show, comma-separated: id, model, owner, lora, updated, status,
        /// checkpoint, checkpoint_time.
        #[arg(short, long, default_value = "id,model,lora,updated,status")]
        columns: String,
    },
    /// Show details of a training run.
    Info {
        /// The training run id.
        run_id: String,
    },
}

pub(crate) fn execute(ctx: &Context, command: RunCommand) -> CliResult {
    match command {
        RunCommand::List { limit, columns } => list(ctx, limit, &columns),
        RunCommand::Info { run_id } => info(ctx, &run_id),
    }
}

type Getter = fn(&TrainingRun) -> String;

const COLUMNS: [(&str, &str, Getter); 8] = [
    ("id", "Run ID", |r| r.training_run_id.clone()),
    ("model", "Base Model", |r| r.base_model.clone()),
    ("owner", "Owner", |r| r.model_owner.clone()),
    ("lora", "LoRA", lora),
    ("updated", "Last Update", |r| {
        format_time(Some(&r.last_request_time))
    }),
    ("status", "Status", |r| {
        if r.corrupted { "Failed" } else { "OK" }.into()
    }),
    ("checkpoint", "Last Checkpoint", |r| {
        r.last_checkpoint
            .as_ref()
            .map_or("None".into(), |c| c.checkpoint_id.clone())
    }),
    ("checkpoint_time", "Checkpoint Time", |r| {
        r.last_checkpoint
            .as_ref()
            .map_or("N/A".into(), |c| format_time(Some(&c.time)))
    }),
];

fn lora(r: &TrainingRun) -> String {
    match (r.is_lora, r.lora_rank) {
        (true, Some(rank)) => format!("Rank {rank}"),
        (true, None) => "Yes".into(),
        (false, _) => "No".into(),
    }
}

fn list(ctx: &Context, limit: u32, columns: &str) -> CliResult {
    let mut chosen = Vec::new();
    for name in columns.split(',').map(str::trim) {
        let column = COLUMNS.iter().find(|(n, _, _)| *n == name).ok_or_else(|| {
            let known: Vec<&str> = COLUMNS.iter().map(|(n, _, _)| *n).collect();
            CliError::usage(format!("Unknown column: {name}"))
                .with_hint(format!("Available columns: {}", known.join(", ")))
        })?;
        chosen.push(column);
    }
    let rest = ctx.rest()?;
    let (runs, total) = fetch_pages(limit, PAGE_SIZE, |limit, offset| {
        rest.list_training_runs(limit, offset)
            .map(|page| (page.training_runs, Some(page.cursor.total_count)))
    })?;
    let title = if runs.is_empty() {
        "No training runs found".to_owned()
    } else {
        count_title(runs.len(), total, "training run", "training runs")
    };
    let headers: Vec<&str> = chosen.iter().map(|(_, h, _)| *h).collect();
    let mut table = Table::new(title, &headers);
    for run in &runs {
        table.row(chosen.iter().map(|(_, _, get)| get(run)).collect());
    }
    Ok(Output::new(json!({ "runs": runs }), table))
}

fn info(ctx: &Context, run_id: &str) -> CliResult {
    let run = ctx.rest()?.get_training_run(run_id)?;
    let mut t = Table::properties(format!("Training Run: {}", run.training_run_id));
    t.prop("Run ID", &run.training_run_id);
    t.prop("Base Model", &run.base_model);
    t.prop("Owner", &run.model_owner);
    t.prop(
        "LoRA",
        match (run.is_lora, run.lora_rank) {
            (true, Some(rank)) => format!("Yes (Rank {rank})"),
            (true, None) => "Yes".into(),
            (false, _) => "No".into(),
        },
    );
    t.prop("Last Update", format_time(Some(&run.last_request_time)));
    t.prop("Status", if run.corrupted { "Failed" } else { "OK" });
    for (label, checkpoint) in [
        ("Last Training Checkpoint", &run.last_checkpoint),
        ("Last Sampler Checkpoint", &run.last_sampler_checkpoint),
    ] {
        if let Some(c) = checkpoint {
            t.prop(label, &c.checkpoint_id);
            t.prop("  - Time", format_time(Some(&c.time)));
            t.prop("  - Path", &c.tinker_path);
        }
    }
    if let Some(meta) = run.user_metadata.as_ref().filter(|m| !m.is_empty()) {
        t.prop("Metadata", "");
        for (k, v) in meta {
            t.prop(&format!("  - {k}"), super::output::cell(Some(v)));
        }
    }
    Ok(Output::new(json!(run), t))
}
