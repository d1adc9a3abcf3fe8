//! The `tinker` command-line tool: the commands of the official `tinker` CLI 0.38 on the blocking
//! clients. One file per command family; this file holds the argument tree root, the exit codes,
//! the error mapping, the client set-up and the logging set-up.
//!
//! Settings come from, in order of precedence: command-line flags (`--api-key`, `--base-url`),
//! then the environment (`TINKER_API_KEY`, `TINKER_BASE_URL`, … read by
//! [`tinker_core::settings::Settings::from_env`]), then, for the key only, the default stored by
//! `tinker auth login` in `~/.tinker/credentials.json`, then the defaults.

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tinker_core::settings::Settings;
use tinker_core::{Error, ErrorKind};

use crate::{RestClient, ServiceClient};

mod auth;
mod billing;
mod checkpoint;
mod model;
mod output;
mod run;
mod session;

use output::Output;

const AFTER_HELP: &str = "\
Environment (flags win over the environment, the environment over the stored login):
  TINKER_API_KEY         API key (or --api-key; else the key stored by `tinker auth login`
                         in ~/.tinker/credentials.json)
  TINKER_BASE_URL        API base URL (or --base-url)
  TINKER_CREDENTIAL_CMD  command printing a credential, run on every token fetch
  TINKER_LOG             log filter, e.g. `debug` or `tinker_core=trace` (-v / -vv win over it)
  CLOUDFLARE_ACCESS_CLIENT_ID, CLOUDFLARE_ACCESS_CLIENT_SECRET  Cloudflare Access headers

Exit codes:
  0  success
  1  the operation failed (API error, not found, one of several deletes failed, download failed)
  2  usage error (bad arguments, a path not of the form tinker://<run-id>/weights/<name>)
  3  credentials or configuration (no API key, key rejected, malformed base URL or
     ~/.tinker/credentials.json)
  4  the server could not be reached (connection failure, timeout; check TINKER_BASE_URL,
     bound the wait with --timeout)";

/// The Tinker command-line interface: manage training runs, checkpoints, sessions, models,
/// credentials and billing.
#[derive(Debug, Parser)]
#[command(name = "tinker", version, after_help = AFTER_HELP, propagate_version = true)]
pub(crate) struct Cli {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table, global = true)]
    format: Format,
    /// API key (default: $TINKER_API_KEY, else the key stored by `tinker auth login`).
    #[arg(long, global = true, value_name = "KEY")]
    api_key: Option<String>,
    /// API base URL (default: $TINKER_BASE_URL, else the production service).
    #[arg(long, global = true, value_name = "URL")]
    base_url: Option<String>,
    /// Give up on each API call after this many seconds, start-up configuration requests
    /// included (exit code 4). Default: no bound beyond the SDK's retry policies, which try an
    /// unreachable server for about five minutes.
    #[arg(long, global = true, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// More logging on stderr: -v info, -vv debug, -vvv trace (default: $TINKER_LOG, else warn).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    // Aligned columns for people (plain comments: doc comments would bloat every --help).
    Table,
    // One JSON document on stdout, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Manage training runs.
    #[command(subcommand)]
    Run(run::RunCommand),
    /// Manage checkpoints.
    #[command(subcommand)]
    Checkpoint(checkpoint::CheckpointCommand),
    /// List and inspect sessions, export their traces.
    #[command(subcommand)]
    Session(session::SessionCommand),
    /// List available models.
    #[command(subcommand)]
    Model(model::ModelCommand),
    /// Log in and out, check your credentials and identity.
    #[command(subcommand)]
    Auth(auth::AuthCommand),
    /// Billing usage and checkpoint storage.
    #[command(subcommand)]
    Billing(billing::BillingCommand),
    /// Show the version.
    Version,
}

/// Exit codes scripts can rely on (also listed in `tinker --help`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    Failed = 1,
    Usage = 2,
    Credentials = 3,
    Unreachable = 4,
}

/// A failure to report: a message, an optional hint saying what to do, an exit code.
#[derive(Debug)]
pub(crate) struct CliError {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> CliError {
        CliError {
            exit,
            message: message.into(),
            hint: None,
        }
    }

    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(Exit::Usage, message)
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> CliError {
        self.hint = Some(hint.into());
        self
    }
}

impl From<Error> for CliError {
    /// The official CLI's wording per failure class, with the server's detail as the hint.
    fn from(e: Error) -> CliError {
        let detail = format!("Details: {e}");
        let (exit, message, advice) = match e.kind() {
            ErrorKind::InvalidInput => (Exit::Usage, "Invalid input", None),
            ErrorKind::Authentication => (
                Exit::Credentials,
                "Authentication failed",
                Some("Check your API key (TINKER_API_KEY or --api-key)."),
            ),
            ErrorKind::PermissionDenied => (
                Exit::Credentials,
                "Permission denied",
                Some("You don't have permission to access this resource."),
            ),
            ErrorKind::Config => (Exit::Credentials, "Configuration error", None),
            ErrorKind::Billing => (
                Exit::Failed,
                "Billing issue",
                Some("There is a billing issue with your account. Please check that billing is set up."),
            ),
            ErrorKind::NotFound => (Exit::Failed, "Resource not found", None),
            ErrorKind::BadRequest => (Exit::Failed, "Invalid request", None),
            ErrorKind::Unprocessable => (Exit::Failed, "Invalid data provided", None),
            ErrorKind::RateLimited => (
                Exit::Failed,
                "Rate limit exceeded",
                Some("Please wait a moment before trying again."),
            ),
            ErrorKind::Server => (
                Exit::Failed,
                "Internal server error",
                Some("The Tinker API encountered an internal error. Please try again later."),
            ),
            ErrorKind::Transport => (
                Exit::Unreachable,
                "Connection failed",
                Some("Could not connect to the Tinker API. Check your network and TINKER_BASE_URL."),
            ),
            ErrorKind::Timeout => (
                Exit::Unreachable,
                "Request timeout",
                Some("The Tinker API did not answer in time. Check your network and TINKER_BASE_URL (or --base-url), or raise --timeout."),
            ),
            _ => match e.status() {
                Some(status) => {
                    return CliError::new(Exit::Failed, format!("API error (status {status})"))
                        .with_hint(detail)
                }
                None => (Exit::Failed, "API error", None),
            },
        };
        let hint = match advice {
            Some(a) => format!("{a}\n{detail}"),
            None => detail,
        };
        CliError::new(exit, message).with_hint(hint)
    }
}

pub(crate) type CliResult<T = Output> = std::result::Result<T, CliError>;

/// The global options every command may need to reach the API.
pub(crate) struct Context {
    api_key: Option<String>,
    base_url: Option<String>,
    timeout: Option<std::time::Duration>,
    pub format: Format,
}

impl Context {
    /// Settings with the documented precedence: flags, then the environment, then the key
    /// stored by `tinker auth login`, then defaults.
    pub fn settings(&self) -> CliResult<Settings> {
        let settings = self.base_settings()?;
        if Context::has_credentials(&settings) {
            return Ok(settings);
        }
        let stored = crate::credentials::read_credentials_text()
            .and_then(|text| settings.with_stored_credentials(text.as_deref()))
            .map_err(|e| {
                CliError::new(Exit::Credentials, e.to_string()).with_hint(
                    "Fix or delete ~/.tinker/credentials.json, or run `tinker auth login` again.",
                )
            })?;
        Ok(stored)
    }

    /// Flags over the environment over defaults, without the stored credentials.
    pub fn base_settings(&self) -> CliResult<Settings> {
        let mut settings = Settings::from_env().map_err(|e| {
            CliError::new(Exit::Credentials, e.to_string())
                .with_hint("Fix or unset the environment variable named above.")
        })?;
        if let Some(key) = &self.api_key {
            settings = settings.with_api_key(key.clone()).map_err(|e| {
                CliError::new(Exit::Credentials, format!("--api-key: {e}"))
                    .with_hint("API keys start with `tml-`.")
            })?;
        }
        if let Some(url) = &self.base_url {
            settings = settings.with_base_url(url);
        }
        Ok(settings)
    }

    /// Whether a credential is configured (a key or a credential command).
    pub fn has_credentials(settings: &Settings) -> bool {
        settings.api_key.is_some() || settings.credential_cmd.is_some()
    }

    /// A service client, or a credentials error saying which variable to set.
    pub fn service(&self) -> CliResult<ServiceClient> {
        let settings = self.settings()?;
        if !Context::has_credentials(&settings) {
            return Err(no_credentials());
        }
        tracing::debug!(base_url = %settings.base_url, "connecting");
        let mut options = crate::ClientOptions::default();
        if let Some(timeout) = self.timeout {
            options = options.with_default_deadline(timeout);
        }
        crate::connect_with(settings, options).map_err(CliError::from)
    }

    pub fn rest(&self) -> CliResult<RestClient> {
        Ok(self.service()?.create_rest_client())
    }
}

pub(crate) fn no_credentials() -> CliError {
    CliError::new(Exit::Credentials, "No Tinker API key is configured").with_hint(
        "Run `tinker auth login`, set the TINKER_API_KEY environment variable (or TINKER_CREDENTIAL_CMD), or pass --api-key.",
    )
}

/// A duration option given in seconds: finite and above zero, else a usage error naming `flag`.
pub(crate) fn positive_seconds(flag: &str, seconds: f64) -> CliResult<std::time::Duration> {
    if seconds.is_finite() && seconds > 0.0 {
        Ok(std::time::Duration::from_secs_f64(seconds))
    } else {
        Err(CliError::usage(format!(
            "{flag} must be a positive number of seconds, not {seconds}"
        )))
    }
}

/// Checks a `tinker://` checkpoint path before anything is sent.
pub(crate) fn check_path(path: &str) -> CliResult<()> {
    crate::download::checkpoint_dir_name(path)
        .map(|_| ())
        .map_err(|e| {
            CliError::usage(format!("Invalid checkpoint path: {path}")).with_hint(format!(
                "Checkpoint paths look like tinker://<run-id>/weights/<name> ({e})."
            ))
        })
}

/// Runs the `tinker` command line with the process arguments and returns its exit code.
///
/// This is the whole `tinker` binary; it is a library function so other front ends can embed it.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help/version to stdout (exit 0) and usage errors to stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { Exit::Usage as u8 } else { 0 });
        }
    };
    init_logging(cli.verbose);
    let timeout = match cli
        .timeout
        .map(|s| positive_seconds("--timeout", s))
        .transpose()
    {
        Ok(t) => t,
        Err(e) => return report(&e),
    };
    let ctx = Context {
        api_key: cli.api_key,
        base_url: cli.base_url,
        timeout,
        format: cli.format,
    };
    let result = match cli.command {
        Command::Run(c) => run::execute(&ctx, c),
        Command::Checkpoint(c) => checkpoint::execute(&ctx, c),
        Command::Session(c) => session::execute(&ctx, c),
        Command::Model(c) => model::execute(&ctx, c),
        Command::Auth(c) => auth::execute(&ctx, c),
        Command::Billing(c) => billing::execute(&ctx, c),
        Command::Version => Ok(version()),
    };
    match result {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(out.render(ctx.format).as_bytes());
            let _ = stdout.flush();
            ExitCode::SUCCESS
        }
        Err(e) => report(&e),
    }
}

/// Prints an error as `Error: …` plus its hint on stderr and returns its exit code.
pub(crate) fn report(e: &CliError) -> ExitCode {
    eprintln!("Error: {}", e.message);
    if let Some(hint) = &e.hint {
        eprintln!("{hint}");
    }
    ExitCode::from(e.exit as u8)
}

fn version() -> Output {
    let version = env!("CARGO_PKG_VERSION");
    let sdk = Settings::default().sdk_version;
    Output::new(
        serde_json::json!({"version": version, "sdk_version": sdk}),
        output::Table::lines(vec![format!(
            "tinker {version} (tinker-rs, speaks the Tinker SDK {sdk} protocol)"
        )]),
    )
}

/// Logging on stderr: `-v` flags win over `TINKER_LOG`, which wins over the default (`warn`).
fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match verbose {
        0 => std::env::var("TINKER_LOG")
            .ok()
            .and_then(|f| EnvFilter::try_new(f).ok())
            .unwrap_or_else(|| EnvFilter::new("warn")),
        1 => EnvFilter::new("info"),
        2 => EnvFilter::new("debug"),
        _ => EnvFilter::new("trace"),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

/// Fetches up to `limit` items (0 = all) in pages of at most `page_size`, as the official CLI
/// does: the first page tells the total, later pages continue at increasing offsets until the
/// target is reached or a short page shows the end. Returns the items and the server's total.
pub(crate) fn fetch_pages<T>(
    limit: u32,
    page_size: u32,
    mut page: impl FnMut(u32, u64) -> tinker_core::Result<(Vec<T>, Option<u64>)>,
) -> CliResult<(Vec<T>, u64)> {
    let first = if limit == 0 {
        page_size
    } else {
        limit.min(page_size)
    };
    let (mut items, total) = page(first, 0)?;
    let total = total.unwrap_or(items.len() as u64);
    let target = if limit == 0 {
        total
    } else {
        u64::from(limit).min(total)
    };
    let mut last_len = items.len() as u64;
    let mut asked = u64::from(first);
    while (items.len() as u64) < target && last_len == asked {
        let remaining = target - items.len() as u64;
        let size = remaining.min(u64::from(page_size)) as u32;
        let (more, _) = page(size, items.len() as u64)?;
        last_len = more.len() as u64;
        asked = u64::from(size);
        items.extend(more);
    }
    Ok((items, total))
}

/// "N things (M more not shown, use --limit to see more)".
pub(crate) fn count_title(count: usize, total: u64, one: &str, many: &str) -> String {
    let mut title = if count == 1 {
        format!("1 {one}")
    } else {
        format!("{count} {many}")
    };
    let more = total.saturating_sub(count as u64);
    if more == 1 {
        title.push_str(" (1 more not shown, use --limit to see more)");
    } else if more > 1 {
        title.push_str(&format!(
            " ({more} more not shown, use --limit to see more)"
        ));
    }
    title
}
