//! `tinker checkpoint list|info|publish|unpublish|set-ttl|delete|download|push-hf`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::{json, Value};
use tinker_core::path::TinkerPath;
use tinker_core::types::{Checkpoint, CheckpointType, Timestamp};
use tinker_core::ErrorKind;

use super::output::{format_bool, format_size, format_time, Output, Table};
use super::{check_path, count_title, fetch_pages, CliError, CliResult, Context, Exit};
use crate::download::{download_checkpoint_from, DownloadError, DownloadOptions, DownloadRoute};
use crate::hf::{push_to_hub, HfPushOptions};

/// Page size of the all-runs listing (the official CLI's: that query is slow server-side).
const PAGE_SIZE: u32 = 1000;

#[derive(Debug, Subcommand)]
pub(crate) enum CheckpointCommand {
    /// List checkpoints: of one run with --run-id, else of all your runs, newest first.
    List {
        /// Only this training run's checkpoints (not paginated).
        #[arg(long)]
        run_id: Option<String>,
        /// Maximum number of checkpoints when listing all runs (0 = all).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show details of a checkpoint.
    Info {
        /// tinker://<run-id>/weights/<name>
        checkpoint_path: String,
    },
    /// Make a checkpoint publicly accessible.
    Publish {
        /// tinker://<run-id>/weights/<name>
        checkpoint_path: String,
    },
    /// Make a checkpoint private again.
    Unpublish {
        /// tinker://<run-id>/weights/<name>
        checkpoint_path: String,
    },
    /// Set (--ttl) or remove (--remove) a checkpoint's expiration.
    SetTtl {
        /// tinker://<run-id>/weights/<name>
        checkpoint_path: String,
        /// Time to live in seconds from now (1 hour to 10 years).
        #[arg(long, conflicts_with = "remove", required_unless_present = "remove")]
        ttl: Option<u64>,
        /// Remove the expiration.
        #[arg(long)]
        remove: bool,
    },
    /// Delete checkpoints permanently: the paths given, or a run's (filtered) checkpoints.
    ///
    /// Every path is attempted and reported; the exit code is 1 when any deletion failed.
    Delete {
        /// tinker:// paths to delete.
        #[arg(conflicts_with = "run_id", required_unless_present = "run_id")]
        checkpoint_paths: Vec<String>,
        /// Delete the checkpoints of this training run (with the filters below).
        #[arg(long)]
        run_id: Option<String>,
        /// Only this type: weights, sampler_weights or external_weights.
        #[arg(long = "type", requires = "run_id")]
        checkpoint_type: Option<String>,
        /// Only those created before this UTC date or time (2024-01-01, 2024-01-01T08:00:00Z).
        #[arg(long, requires = "run_id")]
        before: Option<String>,
        /// Only those created after this UTC date or time.
        #[arg(long, requires = "run_id")]
        after: Option<String>,
        /// Do not ask for confirmation (required when stdin is not a terminal).
        #[arg(short, long)]
        yes: bool,
    },
    /// Download a checkpoint's files into <output>/<run-id>_<kind>_<name>/.
    ///
    /// Training checkpoints (tinker://<run-id>/weights/<name>) are exported in Hugging Face PEFT
    /// format through a temporary session, then downloaded; exports
    /// (tinker://<run-id>/external_weights/<name>) are downloaded as they are. Sampler
    /// checkpoints cannot be downloaded. With --route archive the checkpoint's tar archive is
    /// fetched and extracted instead (servers of SDK 0.25).
    Download {
        /// tinker://<run-id>/weights/<name> or tinker://<run-id>/external_weights/<name>
        checkpoint_path: String,
        /// Parent folder of the downloaded checkpoint (default: the current folder).
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Replace the destination folder if it exists.
        #[arg(long)]
        force: bool,
        /// How to fetch it: export (SDK 0.38), archive (SDK 0.25 servers), or auto (the
        /// protocol version the client speaks, i.e. export).
        #[arg(long, value_enum, default_value_t = RouteArg::Auto)]
        route: RouteArg,
    },
    /// Upload a checkpoint to the Hugging Face Hub as a PEFT adapter (token: $HF_TOKEN; Hub:
    /// $HF_ENDPOINT, else huggingface.co).
    #[command(name = "push-hf")]
    PushHf(PushHfArgs),
}

/// `--route` of `checkpoint download`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RouteArg {
    Auto,
    Export,
    Archive,
}

impl From<RouteArg> for DownloadRoute {
    fn from(r: RouteArg) -> DownloadRoute {
        match r {
            RouteArg::Auto => DownloadRoute::Auto,
            RouteArg::Export => DownloadRoute::Export,
            RouteArg::Archive => DownloadRoute::Archive,
        }
    }
}

/// Options of `checkpoint push-hf` (the official CLI's, so scripts parse the same).
#[derive(Debug, clap::Args)]
pub(crate) struct PushHfArgs {
    /// tinker://<run-id>/weights/<name>
    pub checkpoint_path: String,
    /// Hugging Face repo id (e.g. username/my-lora-adapter).
    #[arg(long)]
    pub repo: Option<String>,
    /// Create or upload to a public repo (default: private).
    #[arg(long)]
    pub public: bool,
    /// Target branch or revision.
    #[arg(long)]
    pub revision: Option<String>,
    /// Commit message.
    #[arg(long)]
    pub commit_message: Option<String>,
    /// Open a pull request instead of pushing to the main branch.
    #[arg(long)]
    pub create_pr: bool,
    /// Only upload files matching this pattern (repeatable).
    #[arg(long)]
    pub allow_pattern: Vec<String>,
    /// Skip files matching this pattern (repeatable).
    #[arg(long)]
    pub ignore_pattern: Vec<String>,
    /// Do not create a README.md model card if one is missing.
    #[arg(long)]
    pub no_model_card: bool,
}

pub(crate) fn execute(ctx: &Context, command: CheckpointCommand) -> CliResult {
    match command {
        CheckpointCommand::List { run_id, limit } => list(ctx, run_id.as_deref(), limit),
        CheckpointCommand::Info { checkpoint_path } => info(ctx, &checkpoint_path),
        CheckpointCommand::Publish { checkpoint_path } => publish(ctx, &checkpoint_path, true),
        CheckpointCommand::Unpublish { checkpoint_path } => publish(ctx, &checkpoint_path, false),
        CheckpointCommand::SetTtl {
            checkpoint_path,
            ttl,
            remove,
        } => set_ttl(ctx, &checkpoint_path, if remove { None } else { ttl }),
        CheckpointCommand::Delete {
            checkpoint_paths,
            run_id,
            checkpoint_type,
            before,
            after,
            yes,
        } => {
            let filters = Filters::parse(checkpoint_type, before, after)?;
            delete(ctx, checkpoint_paths, run_id, &filters, yes)
        }
        CheckpointCommand::Download {
            checkpoint_path,
            output,
            force,
            route,
        } => download(ctx, &checkpoint_path, output, force, route),
        CheckpointCommand::PushHf(args) => push_hf(ctx, &args),
    }
}

fn type_name(t: CheckpointType) -> &'static str {
    match t {
        CheckpointType::Training => "training",
        CheckpointType::Sampler => "sampler",
        CheckpointType::External => "external",
    }
}

fn checkpoint_table(title: String, checkpoints: &[Checkpoint]) -> Table {
    let mut table = Table::new(
        title,
        &[
            "Checkpoint ID",
            "Type",
            "Size",
            "Public",
            "Created",
            "Expires",
            "Path",
        ],
    );
    for c in checkpoints {
        table.row(vec![
            c.checkpoint_id.clone(),
            type_name(c.checkpoint_type).into(),
            format_size(c.size_bytes),
            format_bool(c.public),
            format_time(Some(&c.time)),
            c.expires_at
                .as_ref()
                .map_or("Never".into(), |t| format_time(Some(t))),
            c.tinker_path.clone(),
        ]);
    }
    table
}

fn list(ctx: &Context, run_id: Option<&str>, limit: u32) -> CliResult {
    let rest = ctx.rest()?;
    if let Some(run_id) = run_id {
        let checkpoints = rest.list_checkpoints(run_id)?.checkpoints;
        let title = if checkpoints.is_empty() {
            format!("No checkpoints found for run {run_id}")
        } else {
            let n = checkpoints.len() as u64;
            count_title(
                checkpoints.len(),
                n,
                &format!("checkpoint for run {run_id}"),
                &format!("checkpoints for run {run_id}"),
            )
        };
        let table = checkpoint_table(title, &checkpoints);
        return Ok(Output::new(
            json!({"run_id": run_id, "checkpoints": checkpoints}),
            table,
        ));
    }
    let (checkpoints, total) = fetch_pages(limit, PAGE_SIZE, |limit, offset| {
        rest.list_user_checkpoints(limit, offset).map(|page| {
            let total = page.cursor.map(|c| c.total_count);
            (page.checkpoints, total)
        })
    })?;
    let title = if checkpoints.is_empty() {
        "No checkpoints found".to_owned()
    } else {
        count_title(checkpoints.len(), total, "checkpoint", "checkpoints")
    };
    let table = checkpoint_table(title, &checkpoints);
    Ok(Output::new(json!({ "checkpoints": checkpoints }), table))
}

/// The checkpoint a path names, from its run's listing.
fn find_checkpoint(rest: &crate::RestClient, path: &str) -> CliResult<Checkpoint> {
    let parsed = TinkerPath::parse(path).map_err(CliError::from)?;
    rest.list_checkpoints(parsed.training_run_id())?
        .checkpoints
        .into_iter()
        .find(|c| c.tinker_path == path)
        .ok_or_else(|| {
            CliError::new(Exit::Failed, format!("Checkpoint not found: {path}")).with_hint(format!(
                "Run `tinker checkpoint list --run-id {}` to see its checkpoints.",
                parsed.training_run_id()
            ))
        })
}

fn info(ctx: &Context, path: &str) -> CliResult {
    check_path(path)?;
    let rest = ctx.rest()?;
    let checkpoint = find_checkpoint(&rest, path)?;
    let run = rest.get_training_run_by_tinker_path(path)?;
    let mut t = Table::properties(format!("Checkpoint: {}", checkpoint.checkpoint_id));
    t.prop("Checkpoint ID", &checkpoint.checkpoint_id);
    t.prop("Type", type_name(checkpoint.checkpoint_type));
    t.prop("Tinker Path", &checkpoint.tinker_path);
    if checkpoint.size_bytes.is_some() {
        t.prop("Size", format_size(checkpoint.size_bytes));
    }
    t.prop("Public", format_bool(checkpoint.public));
    t.prop("Created", format_time(Some(&checkpoint.time)));
    t.prop(
        "Expires",
        checkpoint
            .expires_at
            .as_ref()
            .map_or("Never".into(), |e| format_time(Some(e))),
    );
    t.prop("Training Run ID", &run.training_run_id);
    t.prop(
        "LoRA",
        match (run.is_lora, run.lora_rank) {
            (true, Some(rank)) => format!("Yes (Rank {rank})"),
            (true, None) => "Yes".into(),
            (false, _) => "No".into(),
        },
    );
    let mut doc = json!(checkpoint);
    doc["is_lora"] = json!(run.is_lora);
    doc["lora_rank"] = json!(run.lora_rank);
    Ok(Output::new(doc, t))
}

fn publish(ctx: &Context, path: &str, public: bool) -> CliResult {
    check_path(path)?;
    let rest = ctx.rest()?;
    let (action, done) = if public {
        rest.publish_checkpoint(path)?;
        ("publish", "Published")
    } else {
        rest.unpublish_checkpoint(path)?;
        ("unpublish", "Unpublished")
    };
    Ok(Output::new(
        json!({"action": action, "tinker_path": path}),
        Table::lines(vec![format!("{done} {path}")]),
    ))
}

fn set_ttl(ctx: &Context, path: &str, ttl: Option<u64>) -> CliResult {
    check_path(path)?;
    ctx.rest()?.set_checkpoint_ttl(path, ttl)?;
    let line = match ttl {
        Some(s) => format!("Set the TTL of {path} to {s} seconds"),
        None => format!("Removed the expiration of {path}"),
    };
    Ok(Output::new(
        json!({"action": "set_ttl", "tinker_path": path, "ttl_seconds": ttl}),
        Table::lines(vec![line]),
    ))
}

/// The `--type/--before/--after` filters of `delete --run-id`.
struct Filters {
    kind: Option<CheckpointType>,
    before: Option<Timestamp>,
    after: Option<Timestamp>,
}

impl Filters {
    fn parse(
        kind: Option<String>,
        before: Option<String>,
        after: Option<String>,
    ) -> CliResult<Filters> {
        let kind = kind
            .map(|k| match k.as_str() {
                "weights" => Ok(CheckpointType::Training),
                "sampler_weights" => Ok(CheckpointType::Sampler),
                "external_weights" => Ok(CheckpointType::External),
                other => Err(CliError::usage(format!("Invalid checkpoint type: {other}"))
                    .with_hint("Valid types: weights, sampler_weights, external_weights")),
            })
            .transpose()?;
        let date = |flag: &str, v: Option<String>| -> CliResult<Option<Timestamp>> {
            v.map(|v| {
                // A bare date means midnight UTC.
                let text = if v.len() == 10 {
                    format!("{v}T00:00:00Z")
                } else {
                    v.clone()
                };
                Timestamp::parse(&text).map_err(|e| {
                    CliError::usage(format!("--{flag}: invalid date {v:?}")).with_hint(format!(
                        "Use ISO 8601, e.g. 2024-01-01 or 2024-01-01T08:00:00Z ({e})"
                    ))
                })
            })
            .transpose()
        };
        Ok(Filters {
            kind,
            before: date("before", before)?,
            after: date("after", after)?,
        })
    }

    fn keep(&self, c: &Checkpoint) -> bool {
        self.kind.is_none_or(|k| c.checkpoint_type == k)
            && self.before.as_ref().is_none_or(|b| &c.time < b)
            && self.after.as_ref().is_none_or(|a| &c.time > a)
    }
}

fn delete(
    ctx: &Context,
    paths: Vec<String>,
    run_id: Option<String>,
    filters: &Filters,
    yes: bool,
) -> CliResult {
    for p in &paths {
        check_path(p)?;
    }
    let rest = ctx.rest()?;
    let paths: Vec<String> = match &run_id {
        Some(run_id) => rest
            .list_checkpoints(run_id)?
            .checkpoints
            .into_iter()
            .filter(|c| filters.keep(c))
            .map(|c| c.tinker_path)
            .collect(),
        None => paths,
    };
    if paths.is_empty() {
        return Ok(Output::new(
            json!({"deleted_count": 0, "deleted": [], "failed": []}),
            Table::lines(vec!["No checkpoints match; nothing deleted.".into()]),
        ));
    }
    if !yes && !confirm(&paths)? {
        return Err(CliError::new(Exit::Failed, "Deletion cancelled."));
    }
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let outcomes = rest.delete_checkpoints(&refs);
    let mut lines = Vec::new();
    let mut deleted = Vec::new();
    let mut failed = Vec::new();
    for (path, outcome) in outcomes {
        match outcome {
            Ok(()) => {
                lines.push(format!("Deleted {path}"));
                deleted.push(path);
            }
            Err(e) => {
                lines.push(format!("Failed  {path}: {e}"));
                failed.push(json!({"tinker_path": path, "error": e.to_string()}));
            }
        }
    }
    lines.push(format!(
        "Deleted {} checkpoint(s), {} failed",
        deleted.len(),
        failed.len()
    ));
    let out = Output::new(
        json!({"deleted_count": deleted.len(), "deleted": deleted, "failed": failed}),
        Table::lines(lines),
    );
    if failed.is_empty() {
        Ok(out)
    } else {
        // Partial failure: print the full report, then exit 1.
        print!("{}", out.render(ctx.format));
        let _ = std::io::stdout().flush();
        Err(CliError::new(
            Exit::Failed,
            format!("{} of {} deletion(s) failed", failed.len(), paths.len()),
        ))
    }
}

/// Asks on the terminal; without one, refuses (scripts must pass --yes).
fn confirm(paths: &[String]) -> CliResult<bool> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(CliError::usage(
            "Refusing to delete without confirmation: stdin is not a terminal",
        )
        .with_hint("Pass --yes to delete without asking."));
    }
    eprintln!("Will delete {} checkpoint(s):", paths.len());
    for p in paths {
        eprintln!("  - {p}");
    }
    eprintln!("WARNING: This action is permanent and cannot be undone.");
    eprint!(
        "Are you sure you want to delete {} checkpoint(s)? [y/N]: ",
        paths.len()
    );
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin
        .lock()
        .read_line(&mut answer)
        .map_err(|e| CliError::new(Exit::Failed, format!("reading the answer: {e}")))?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}

fn download(
    ctx: &Context,
    path: &str,
    output: Option<PathBuf>,
    force: bool,
    route: RouteArg,
) -> CliResult {
    check_path(path)?;
    let service = ctx.service()?;
    let output_dir = output.unwrap_or_else(|| PathBuf::from("."));
    let options = DownloadOptions {
        force,
        route: route.into(),
        ..DownloadOptions::default()
    };
    let report =
        download_checkpoint_from(&service, path, &output_dir, &options).map_err(download_error)?;
    let destination = report.destination.display().to_string();
    let mut t = Table::properties(format!("Checkpoint Download: {path}"));
    t.prop("Checkpoint Path", path);
    t.prop("Total Size", format_size(Some(report.archive_bytes)));
    t.prop("Downloaded to", &destination);
    if report.resumes > 0 {
        t.prop("Resumed", format!("{} time(s)", report.resumes));
    }
    let files: Vec<Value> = report
        .files
        .iter()
        .map(|f| json!(f.display().to_string()))
        .collect();
    Ok(Output::new(
        json!({
            "checkpoint_path": path,
            "destination": destination,
            "route": match report.route {
                DownloadRoute::Archive => "archive",
                _ => "export",
            },
            "file_size_bytes": report.archive_bytes,
            "resumes": report.resumes,
            "files": files,
        }),
        t,
    ))
}

/// Download failures in the CLI's terms (shared by `download` and `push-hf`).
fn download_error(e: DownloadError) -> CliError {
    match e {
        DownloadError::Api(api) => CliError::from(api),
        DownloadError::InvalidPath { .. } | DownloadError::NotDownloadable { .. } => {
            CliError::usage(e.to_string())
        }
        DownloadError::DestinationExists(_) => CliError::new(Exit::Failed, e.to_string())
            .with_hint("Pass --force to replace it, or choose another --output folder."),
        other => CliError::new(Exit::Failed, format!("Download failed: {other}")),
    }
}

/// Hub failures in the CLI's terms: the generic mapping speaks of the Tinker API key, which would
/// mislead here, so credential problems point at the Hugging Face token instead.
fn hub_error(e: tinker_core::Error) -> CliError {
    let detail = format!("Details: {e}");
    let (exit, hint) = match e.kind() {
        ErrorKind::Authentication | ErrorKind::PermissionDenied | ErrorKind::Config => (
            Exit::Credentials,
            format!("Check your Hugging Face token (HF_TOKEN, or `hf auth login`).\n{detail}"),
        ),
        ErrorKind::InvalidInput => (Exit::Usage, detail),
        ErrorKind::Transport | ErrorKind::Timeout => (
            Exit::Unreachable,
            format!("Could not reach the Hugging Face Hub (HF_ENDPOINT).\n{detail}"),
        ),
        _ => (Exit::Failed, detail),
    };
    CliError::new(exit, "Hugging Face upload failed").with_hint(hint)
}

/// A fresh, empty scratch folder removed when dropped (also on an early error return).
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> CliResult<ScratchDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("tinker-push-hf-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| {
            CliError::new(
                Exit::Failed,
                format!("creating the scratch folder {}: {e}", dir.display()),
            )
        })?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Best effort: a leftover folder in the temp dir is not worth failing the upload over.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Downloads the checkpoint into a scratch folder, asks Tinker what it is (`weights_info`, for
/// the model card and the adapter config), and uploads it with [`crate::hf::push_to_hub`].
fn push_hf(ctx: &Context, args: &PushHfArgs) -> CliResult {
    let path = args.checkpoint_path.as_str();
    check_path(path)?;
    let service = ctx.service()?;
    let weights_info = service.create_rest_client().get_weights_info(path)?;
    let scratch = ScratchDir::new()?;
    let download =
        download_checkpoint_from(&service, path, &scratch.0, &DownloadOptions::default())
            .map_err(download_error)?;

    let mut options = HfPushOptions::new(path).with_weights_info(weights_info);
    options.repo_id = args.repo.clone();
    options.revision = args.revision.clone();
    options.public = args.public;
    options.commit_message = args.commit_message.clone();
    options.create_pr = args.create_pr;
    options.allow_patterns = args.allow_pattern.clone();
    options.ignore_patterns = args.ignore_pattern.clone();
    options.add_model_card = !args.no_model_card;
    let report = push_to_hub(&download.destination, &options).map_err(hub_error)?;
    drop(scratch);

    let mut t = Table::properties(format!("Hugging Face Upload: {path}"));
    t.prop("Checkpoint Path", path);
    t.prop("Repository", &report.repo_id);
    t.prop("Revision", &report.revision);
    t.prop("Public", format_bool(report.public));
    t.prop("Files", report.files.join(", "));
    if let Some(url) = &report.commit_url {
        t.prop("Commit", url);
    }
    if let Some(url) = &report.pull_request_url {
        t.prop("Pull Request", url);
    }
    Ok(Output::new(
        json!({
            "checkpoint_path": path,
            "repo_id": report.repo_id,
            "revision": report.revision,
            "public": report.public,
            "files": report.files,
            "lfs_files": report.lfs_files,
            "commit_url": report.commit_url,
            "pull_request_url": report.pull_request_url,
        }),
        t,
    ))
}
