//! `tinker auth whoami|status`.

use clap::Subcommand;
use serde_json::json;

use super::output::{Output, Table};
use super::{no_credentials, CliError, CliResult, Context};

#[derive(Debug, Subcommand)]
pub(crate) enum AuthCommand {
    /// Show the user and organization of the active credential.
    Whoami,
    /// Check that a credential is configured and that Tinker accepts it.
    Status,
}

pub(crate) fn execute(ctx: &Context, command: AuthCommand) -> CliResult {
    match command {
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
