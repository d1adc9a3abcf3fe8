//! `tinker billing usage|checkpoint-storage`.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{json, Map, Value};
use tinker_core::types::Timestamp;

use super::output::{cell, format_size, Output, Table};
use super::{CliError, CliResult, Context, Exit};

/// The CSV columns of `billing usage --csv`, in order: the record's fields, then the fields of
/// its `event_info` (its `type` as `event_type`). Fields a server adds later follow these.
const CSV_COLUMNS: &[&str] = &[
    "bucket_start",
    "bucket_end",
    "event_type",
    "base_model",
    "session_id",
    "project_id",
    "user_id",
    "user_name",
    "token_count",
    "cached",
    "count",
    "gigabyte_hours",
    "free",
    "estimated_cost_usd",
    "effective_rate_usd_per_million_tokens",
    "effective_rate_usd_per_gigabyte_month",
];

#[derive(Debug, Subcommand)]
pub(crate) enum BillingCommand {
    /// Hourly billing usage of your organization in a window of at most 14 days.
    #[command(after_help = "\
CSV columns (--csv): bucket_start, bucket_end, event_type, base_model, session_id, project_id,
user_id, user_name, token_count, cached, count, gigabyte_hours, free, estimated_cost_usd,
effective_rate_usd_per_million_tokens, effective_rate_usd_per_gigabyte_month, then any field a
newer server adds. Empty cells are absent or null values.")]
    Usage {
        /// Window start, RFC 3339 on a whole UTC hour (e.g. 2026-07-13T00:00:00Z).
        starting_on: String,
        /// Window end (exclusive), RFC 3339 on a whole UTC hour.
        ending_before: String,
        /// Write the rows as CSV with a header line to FILE, or to standard output without FILE
        /// (instead of the table or JSON).
        #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
        csv: Option<PathBuf>,
    },
    /// Checkpoint storage currently used, per project and user, with its estimated monthly cost.
    CheckpointStorage {
        /// Only this project.
        #[arg(long)]
        project_id: Option<String>,
    },
}

pub(crate) fn execute(ctx: &Context, command: BillingCommand) -> CliResult {
    match command {
        BillingCommand::Usage {
            starting_on,
            ending_before,
            csv,
        } => usage(ctx, &starting_on, &ending_before, csv),
        BillingCommand::CheckpointStorage { project_id } => {
            checkpoint_storage(ctx, project_id.as_deref())
        }
    }
}

fn usage(ctx: &Context, starting_on: &str, ending_before: &str, csv: Option<PathBuf>) -> CliResult {
    let parse = |name: &str, v: &str| {
        Timestamp::parse(v).map_err(|e| {
            CliError::usage(format!("{name}: invalid time {v:?}")).with_hint(format!(
                "Use RFC 3339 on a whole hour, e.g. 2026-07-13T00:00:00Z ({e})"
            ))
        })
    };
    let start = parse("STARTING_ON", starting_on)?;
    let end = parse("ENDING_BEFORE", ending_before)?;
    let usage = ctx.rest()?.get_billing_usage(start, end)?;
    let doc = json!(usage);
    let rows = flat_rows(&doc);
    if let Some(target) = csv {
        return write_csv(&rows, &target);
    }
    let mut columns: Vec<String> = Vec::new();
    for row in &rows {
        for k in row.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let title = if rows.is_empty() {
        "No billing usage in this window".to_owned()
    } else {
        format!("{} hourly usage row(s)", rows.len())
    };
    let headers: Vec<&str> = columns.iter().map(String::as_str).collect();
    let mut table = Table::new(title, &headers);
    for row in &rows {
        table.row(columns.iter().map(|c| cell(row.get(c))).collect());
    }
    Ok(Output::new(doc, table))
}

/// One flat row per usage record: the `event_info` payload's fields become columns, its `type`
/// named `event_type` so it cannot be mistaken for a record field.
fn flat_rows(doc: &Value) -> Vec<Map<String, Value>> {
    doc["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|row| {
            let mut flat = Map::new();
            for (k, v) in row {
                match (k.as_str(), v) {
                    ("event_info", Value::Object(info)) => {
                        for (k, v) in info {
                            let name = if k == "type" { "event_type" } else { k };
                            flat.insert(name.to_owned(), v.clone());
                        }
                    }
                    _ => {
                        flat.insert(k.clone(), v.clone());
                    }
                }
            }
            flat
        })
        .collect()
}

/// Writes `rows` as RFC 4180 CSV (header line first) to `target`, `-` meaning standard output.
fn write_csv(rows: &[Map<String, Value>], target: &std::path::Path) -> CliResult {
    let mut columns: Vec<String> = CSV_COLUMNS.iter().map(|c| (*c).to_owned()).collect();
    for row in rows {
        for k in row.keys() {
            if !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let mut text = csv_line(columns.iter().map(String::as_str));
    for row in rows {
        let cells: Vec<String> = columns
            .iter()
            .map(|c| match row.get(c) {
                None | Some(Value::Null) => String::new(),
                Some(v) => cell(Some(v)),
            })
            .collect();
        text.push_str(&csv_line(cells.iter().map(String::as_str)));
    }
    if target == std::path::Path::new("-") {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|e| CliError::new(Exit::Failed, format!("Writing the CSV failed: {e}")))?;
        return Ok(Output::nothing());
    }
    std::fs::write(target, &text).map_err(|e| {
        CliError::new(
            Exit::Failed,
            format!("Could not write {}: {e}", target.display()),
        )
    })?;
    let shown = target.display().to_string();
    Ok(Output::new(
        json!({"csv": shown, "rows": rows.len()}),
        Table::lines(vec![format!(
            "Wrote {} usage row(s) to {shown}",
            rows.len()
        )]),
    ))
}

/// One CSV record: fields holding a comma, quote or line break are quoted, quotes doubled.
fn csv_line<'a>(fields: impl Iterator<Item = &'a str>) -> String {
    let mut line = fields
        .map(|f| {
            if f.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", f.replace('"', "\"\""))
            } else {
                f.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    line.push_str("\r\n");
    line
}

fn checkpoint_storage(ctx: &Context, project_id: Option<&str>) -> CliResult {
    let usage = ctx.rest()?.get_checkpoint_storage_usage(project_id)?;
    let money = |v: Option<f64>| v.map_or_else(|| "N/A".to_owned(), |v| format!("${v:.2}"));
    let title = match usage.data.len() {
        0 => "No checkpoint storage".to_owned(),
        1 => "Checkpoint storage (1 row)".to_owned(),
        n => format!("Checkpoint storage ({n} rows)"),
    };
    let mut table = Table::new(
        title,
        &[
            "Project",
            "Owner",
            "Checkpoints",
            "Size",
            "Est. Monthly Cost",
        ],
    );
    for row in &usage.data {
        let owner = row
            .user_email
            .as_ref()
            .or(row.user_name.as_ref())
            .or(row.org_user_urn.as_ref())
            .cloned()
            .unwrap_or_else(|| "N/A".into());
        table.row(vec![
            row.project_id.clone().unwrap_or_else(|| "N/A".into()),
            owner,
            row.checkpoint_count.to_string(),
            format_size(Some(row.size_bytes)),
            money(row.estimated_monthly_cost_usd),
        ]);
    }
    if let Some(rate) = usage.effective_rate_usd_per_gigabyte_month {
        table.footer.push(format!("Rate: ${rate:.4} per GB-month"));
    }
    Ok(Output::new(json!(usage), table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_with_separators_or_quotes_are_quoted() {
        assert_eq!(csv_line(["a", "b c", ""].into_iter()), "a,b c,\r\n");
        assert_eq!(
            csv_line(["x,y", "say \"hi\"", "two\nlines"].into_iter()),
            "\"x,y\",\"say \"\"hi\"\"\",\"two\nlines\"\r\n"
        );
    }
}
