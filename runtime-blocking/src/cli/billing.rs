//! `tinker billing usage`.

use clap::Subcommand;
use serde_json::{json, Map, Value};
use tinker_core::types::Timestamp;

use super::output::{cell, Output, Table};
use super::{CliError, CliResult, Context};

#[derive(Debug, Subcommand)]
pub(crate) enum BillingCommand {
    /// Hourly billing usage of your organization in a window of at most 14 days.
    Usage {
        /// Window start, RFC 3339 on a whole UTC hour (e.g. 2026-07-13T00:00:00Z).
        starting_on: String,
        /// Window end (exclusive), RFC 3339 on a whole UTC hour.
        ending_before: String,
    },
}

pub(crate) fn execute(ctx: &Context, command: BillingCommand) -> CliResult {
    let BillingCommand::Usage {
        starting_on,
        ending_before,
    } = command;
    let parse = |name: &str, v: &str| {
        Timestamp::parse(v).map_err(|e| {
            CliError::usage(format!("{name}: invalid time {v:?}")).with_hint(format!(
                "Use RFC 3339 on a whole hour, e.g. 2026-07-13T00:00:00Z ({e})"
            ))
        })
    };
    let start = parse("STARTING_ON", &starting_on)?;
    let end = parse("ENDING_BEFORE", &ending_before)?;
    let usage = ctx.rest()?.get_billing_usage(start, end)?;
    let doc = json!(usage);
    // One flat row per usage record: the event_info payload's fields become columns.
    let rows: Vec<Map<String, Value>> = doc["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .map(|row| {
            let mut flat = Map::new();
            for (k, v) in row {
                match (k.as_str(), v) {
                    ("event_info", Value::Object(info)) => {
                        flat.extend(info.iter().map(|(k, v)| (k.clone(), v.clone())));
                    }
                    _ => {
                        flat.insert(k.clone(), v.clone());
                    }
                }
            }
            flat
        })
        .collect();
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
