//! `tinker model list`.

use clap::Subcommand;
use serde_json::json;

use super::output::{format_bool, Output, Table};
use super::{CliError, CliResult, Context, Exit};

#[derive(Debug, Subcommand)]
pub(crate) enum ModelCommand {
    /// List the models your organization can use (pass the Model column as base_model).
    List {
        /// Keep only the models whose name contains this, ignoring case.
        substring: Option<String>,
    },
}

pub(crate) fn execute(ctx: &Context, command: ModelCommand) -> CliResult {
    let ModelCommand::List { substring } = command;
    let service = ctx.service()?;
    let mut models = service.get_server_capabilities()?.supported_models;
    if let Some(needle) = &substring {
        let needle = needle.to_lowercase();
        models.retain(|m| {
            m.model_name
                .as_deref()
                .is_some_and(|n| n.to_lowercase().contains(&needle))
        });
        if models.is_empty() {
            return Err(
                CliError::new(Exit::Failed, format!("No model name contains '{needle}'"))
                    .with_hint(
                        "Run 'tinker model list' to see every model this organization can use.",
                    ),
            );
        }
    }
    let opt = |v: Option<String>| v.unwrap_or_else(|| "N/A".into());
    let mut table = Table::new(
        format!("{} model(s)", models.len()),
        &["Model", "Max Context", "Trainable", "Sampleable"],
    );
    for m in &models {
        table.row(vec![
            opt(m.model_name.clone()),
            opt(m.max_context_length.map(|n| n.to_string())),
            opt(m.trainable.map(format_bool)),
            opt(m.sampleable.map(format_bool)),
        ]);
    }
    Ok(Output::new(json!({ "models": models }), table))
}
