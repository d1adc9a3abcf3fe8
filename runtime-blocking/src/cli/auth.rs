//! `tinker auth login|logout|whoami|status`.
//!
//! `login` checks a key with `GET /auth/apikey/me` (a bare request carrying only that key) and
//! stores it as the default in `~/.tinker/credentials.json`; every client then uses it when
//! neither `--api-key`, `TINKER_API_KEY` nor `TINKER_CREDENTIAL_CMD` names a credential.

use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};

use clap::Subcommand;
use serde_json::json;
use tinker_core::auth::{StoredKey, StoredKeyKind};
use tinker_core::endpoints::{
    decode_response, ApiRequest, AttemptHeaders, GetApiKey, RequestContext, RevokeApiKey,
};
use tinker_core::io::{BlockingHttp as _, Timeouts};
use tinker_core::settings::ApiKey;
use tinker_core::Error;

use super::output::{Output, Table};
use super::{no_credentials, CliError, CliResult, Context, Exit};
use crate::{credentials, UreqTransport};

/// The official CLI's bound on the key endpoints.
const KEY_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

#[derive(Debug, Subcommand)]
pub(crate) enum AuthCommand {
    /// Store an API key as your default credential (~/.tinker/credentials.json).
    ///
    /// The key is asked for on the terminal (not echoed), read from standard input when that is
    /// not a terminal, or given with --key. It is checked with the server before it is stored.
    Login {
        /// The API key (scripts; prefer the prompt or standard input, which stay out of the
        /// shell history).
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// Forget the stored default key (and revoke it on the server if the CLI generated it).
    Logout,
    /// Show the user and organization of the active credential.
    Whoami,
    /// Check that a credential is configured and that Tinker accepts it.
    Status,
}

pub(crate) fn execute(ctx: &Context, command: AuthCommand) -> CliResult {
    match command {
        AuthCommand::Login { key } => login(ctx, key),
        AuthCommand::Logout => logout(ctx),
        AuthCommand::Whoami => {
            let me = ctx.rest()?.whoami()?;
            let mut t = Table::properties("Identity");
            t.prop("Email", me.email.clone().unwrap_or_else(|| "N/A".into()));
            t.prop("User", &me.user_urn);
            t.prop(
                "Organization",
                me.org_urn.clone().unwrap_or_else(|| "N/A".into()),
            );
            Ok(Output::new(json!(me), t))
        }
        AuthCommand::Status => {
            let settings = ctx.settings()?;
            if !Context::has_credentials(&settings) {
                eprintln!("Credentials available: no");
                return Err(no_credentials());
            }
            let base_url = settings.base_url.clone();
            let service = ctx.service()?;
            match service.get_server_capabilities() {
                Ok(_) => Ok(Output::new(
                    json!({"credentials_available": true, "accessible": true, "base_url": base_url}),
                    Table::lines(vec![
                        "Credentials available: yes".into(),
                        "Tinker accessible: yes".into(),
                        format!("Base URL: {base_url}"),
                    ]),
                )),
                Err(e) => {
                    eprintln!("Credentials available: yes");
                    eprintln!("Tinker accessible: no");
                    Err(CliError::from(e))
                }
            }
        }
    }
}

fn login(ctx: &Context, key: Option<String>) -> CliResult {
    let key = match key {
        Some(k) => k,
        None => read_key()?,
    };
    let key = key.trim().to_owned();
    if key.is_empty() {
        return Err(CliError::usage("No API key was given")
            .with_hint("Type or pipe the key, or pass --key."));
    }
    let checked = ApiKey::new(key.clone()).map_err(|e| {
        CliError::new(Exit::Credentials, format!("Not an API key: {e}"))
            .with_hint("API keys start with `tml-`; copy one from the Tinker console.")
    })?;
    let base_url = ctx.base_settings()?.base_url;
    let info = key_call(&base_url, checked, GetApiKey)?;
    let mut file = credentials::load()
        .map_err(stored_error)?
        .unwrap_or_default();
    let key_id = info.key_id.to_string();
    let stored = StoredKey::manual(key, &info);
    let (email, org) = (
        stored.email().unwrap_or("N/A").to_owned(),
        stored.organization().unwrap_or("N/A").to_owned(),
    );
    file.store_default_as(key_id.clone(), stored);
    let path = credentials::save(&file).map_err(stored_error)?;
    let shown = path.display().to_string();
    Ok(Output::new(
        json!({"key_id": key_id, "name": info.name, "email": email, "organization": org, "credentials_file": shown}),
        Table::lines(vec![
            format!(
                "Logged in as {email} ({org}) with the key \"{}\".",
                info.name
            ),
            format!("Stored as the default credential in {shown}."),
        ]),
    ))
}

fn logout(ctx: &Context) -> CliResult {
    let Some(mut file) = credentials::load().map_err(stored_error)? else {
        return Ok(not_logged_in());
    };
    let Some((id, stored)) = file
        .default_entry()
        .map(|(id, k)| (id.to_owned(), k.clone()))
    else {
        return Ok(not_logged_in());
    };
    let revoked = stored.kind == StoredKeyKind::Generated;
    if revoked {
        let key = ApiKey::new(stored.key.clone()).map_err(stored_error)?;
        let base_url = ctx.base_settings()?.base_url;
        key_call(&base_url, key, RevokeApiKey)?;
    }
    file.remove(&id);
    let path = credentials::save(&file).map_err(stored_error)?;
    let name = stored.name.clone().unwrap_or_else(|| id.clone());
    let mut lines = vec![format!(
        "Logged out: removed the key \"{name}\" from {}.",
        path.display()
    )];
    if revoked {
        lines.push("The key was generated by the CLI and has been revoked.".into());
    }
    Ok(Output::new(
        json!({"key_id": id, "name": name, "revoked": revoked, "credentials_file": path.display().to_string()}),
        Table::lines(lines),
    ))
}

fn not_logged_in() -> Output {
    Output::new(
        json!({"key_id": null, "revoked": false}),
        Table::lines(vec!["Not logged in: no stored default key.".into()]),
    )
}

/// The key from the terminal (not echoed) or, when stdin is not a terminal, its first line.
fn read_key() -> CliResult<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        let mut text = String::new();
        stdin
            .lock()
            .take(64 * 1024)
            .read_to_string(&mut text)
            .map_err(|e| CliError::usage(format!("Could not read the key from stdin: {e}")))?;
        return Ok(text.lines().next().unwrap_or("").to_owned());
    }
    eprint!("Tinker API key: ");
    let _ = std::io::stderr().flush();
    // Best effort: without `stty` the key is echoed, which is still correct.
    let hidden = set_echo(false);
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if hidden {
        set_echo(true);
        eprintln!();
    }
    read.map_err(|e| CliError::usage(format!("Could not read the key: {e}")))?;
    Ok(line)
}

fn set_echo(on: bool) -> bool {
    std::process::Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(std::process::Stdio::inherit())
        .status()
        .is_ok_and(|s| s.success())
}

/// One of the CLI-only key calls: a bare request carrying only `key`, 30 s bound, no retries.
/// A rejected key is a credentials failure quoting the server's `detail`.
fn key_call<R: ApiRequest>(base_url: &str, key: ApiKey, request: R) -> CliResult<R::Response> {
    let built = RequestContext::new(base_url, key)
        .and_then(|ctx| ctx.build(&request, &AttemptHeaders::get()))
        .map_err(|e| {
            CliError::new(Exit::Credentials, format!("Invalid base URL: {e}"))
                .with_hint("Check TINKER_BASE_URL or --base-url.")
        })?;
    let endpoint = built.uri().path().to_owned();
    let timeouts = Timeouts {
        connect: KEY_CALL_TIMEOUT,
        read: KEY_CALL_TIMEOUT,
    };
    let mut response = UreqTransport::new().send(built, timeouts).map_err(|e| {
        CliError::from(Error::Transport {
            endpoint: endpoint.clone(),
            message: e.message,
            attempts: 1,
        })
    })?;
    let mut body = Vec::new();
    response.body.read_to_end(&mut body).map_err(|e| {
        CliError::from(Error::Transport {
            endpoint: endpoint.clone(),
            message: e.to_string(),
            attempts: 1,
        })
    })?;
    let status = response.head.status.as_u16();
    decode_response(&request, status, &response.head.headers, &body).map_err(|e| {
        let detail = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_owned));
        match (status, detail) {
            (401 | 403, detail) => CliError::new(Exit::Credentials, "The API key was rejected")
                .with_hint(format!(
                    "Details: {}",
                    detail.unwrap_or_else(|| e.to_string())
                )),
            _ => CliError::from(e),
        }
    })
}

fn stored_error(e: Error) -> CliError {
    CliError::new(Exit::Credentials, e.to_string())
        .with_hint("Fix or delete ~/.tinker/credentials.json, then run `tinker auth login`.")
}
