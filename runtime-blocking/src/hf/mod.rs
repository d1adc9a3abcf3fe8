//! Export a checkpoint to the Hugging Face Hub as a PEFT adapter (`tinker checkpoint push-hf`).
//!
//! [`push_to_hub`] takes an *extracted* checkpoint directory (downloading and unpacking the
//! archive is the caller's job) and:
//!
//! 1. resolves the token ([`resolve_token`]: explicit, `HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`,
//!    the token file) and checks it with `whoami`;
//! 2. checks the directory holds `adapter_config.json` and `adapter_model.safetensors` (or
//!    `.bin`);
//! 3. sets `base_model_name_or_path` in the adapter config when it is not a string, and adds a
//!    model card (`README.md`) unless the directory has one or it is disabled — both in the
//!    upload only, the directory is never modified;
//! 4. picks the destination: without a repository, `tinker-<base model>-<run id>` at revision
//!    `<kind>-<checkpoint name>`; with one, revision `main` unless given;
//! 5. creates the repository (or reuses it) and the branch;
//! 6. refuses a repository whose model card names a *different* `tinker://` checkpoint;
//! 7. uploads the selected files (allow / ignore globs; `checkpoint_complete` is skipped unless
//!    allow patterns are given) in one commit, large and binary files through LFS.
//!
//! The HTTP calls are the subset of the Hub API `huggingface_hub`'s `upload_folder` makes (see
//! the table in `api.rs`). Each file is read into memory once while it is uploaded.
//!
//! ```no_run
//! use tinker_blocking::hf::{push_to_hub, HfPushOptions};
//!
//! # fn main() -> tinker_blocking::Result<()> {
//! let options = HfPushOptions::new("tinker://run-123/weights/final")
//!     .with_repo_id("my-user/my-adapter");
//! let report = push_to_hub("./run-123_weights_final".as_ref(), &options)?;
//! println!("uploaded to {} at {}", report.repo_id, report.revision);
//! # Ok(()) }
//! ```

mod api;
mod checkpoint;
mod token;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tinker_core::io::{BlockingHttp, Timeouts};
use tinker_core::path::TinkerPath;
use tinker_core::settings::Secret;
use tinker_core::tokenizer::HubSettings;
use tinker_core::types::WeightsInfoResponse;
use tinker_core::{Error, Result};

pub use checkpoint::{ADAPTER_CONFIG, ADAPTER_WEIGHTS, COMPLETE_MARKER, MODEL_CARD};
pub use token::resolve_token;

use checkpoint::Source;

/// What to upload where. Built with [`HfPushOptions::new`] and the `with_*` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HfPushOptions {
    /// The checkpoint's `tinker://` path (named in the model card, used to derive the
    /// destination and to recognise a repository that holds another checkpoint).
    pub tinker_path: String,
    /// `namespace/name` or `name` (in the token owner's namespace); derived when `None`.
    pub repo_id: Option<String>,
    /// Branch to commit to (default: `main`, or the checkpoint id for a derived repository).
    pub revision: Option<String>,
    /// Create the repository public (default: private).
    pub public: bool,
    /// Commit summary (default `Upload adapter from <tinker path>`).
    pub commit_message: Option<String>,
    /// Open a pull request instead of committing to the branch.
    pub create_pr: bool,
    /// Upload only files matching one of these globs (empty: all).
    pub allow_patterns: Vec<String>,
    /// Skip files matching these globs.
    pub ignore_patterns: Vec<String>,
    /// The Hugging Face token (redacted in `Debug`); `None` resolves it ([`resolve_token`]).
    pub token: Option<Secret>,
    /// The token file to read when no token is given or set in the environment.
    pub token_path: Option<PathBuf>,
    /// Add a model card when the directory has no `README.md` (default `true`).
    pub add_model_card: bool,
    /// Hub base URL; `None` uses `HF_ENDPOINT` or the public Hub.
    pub endpoint: Option<String>,
    /// What Tinker knows of the checkpoint (`weights_info`): base model, LoRA rank and flags.
    pub weights_info: Option<WeightsInfoResponse>,
    /// Per-request timeouts (connect 10 s, each read or write 120 s).
    pub timeouts: Timeouts,
}

impl HfPushOptions {
    /// Options for the checkpoint at `tinker_path`, everything else default.
    pub fn new(tinker_path: impl Into<String>) -> HfPushOptions {
        HfPushOptions {
            tinker_path: tinker_path.into(),
            repo_id: None,
            revision: None,
            public: false,
            commit_message: None,
            create_pr: false,
            allow_patterns: Vec::new(),
            ignore_patterns: Vec::new(),
            token: None,
            token_path: None,
            add_model_card: true,
            endpoint: None,
            weights_info: None,
            timeouts: Timeouts {
                connect: Duration::from_secs(10),
                read: Duration::from_secs(120),
            },
        }
    }

    /// Sets the destination repository.
    pub fn with_repo_id(mut self, repo_id: impl Into<String>) -> HfPushOptions {
        self.repo_id = Some(repo_id.into());
        self
    }

    /// Sets the branch.
    pub fn with_revision(mut self, revision: impl Into<String>) -> HfPushOptions {
        self.revision = Some(revision.into());
        self
    }

    /// Sets the token.
    pub fn with_token(mut self, token: impl Into<String>) -> HfPushOptions {
        self.token = Some(Secret::new(token));
        self
    }

    /// Sets the Hub base URL.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> HfPushOptions {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Sets what Tinker reported about the checkpoint.
    pub fn with_weights_info(mut self, info: WeightsInfoResponse) -> HfPushOptions {
        self.weights_info = Some(info);
        self
    }

    /// Makes a new repository public.
    pub fn with_public(mut self, public: bool) -> HfPushOptions {
        self.public = public;
        self
    }
}

/// What was uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HfPushReport {
    /// The repository, `namespace/name`.
    pub repo_id: String,
    /// The branch committed to.
    pub revision: String,
    /// Whether a new repository was created public.
    pub public: bool,
    /// Paths uploaded, sorted.
    pub files: Vec<String>,
    /// Paths that went through LFS.
    pub lfs_files: Vec<String>,
    /// The commit's URL, when the Hub returned one.
    pub commit_url: Option<String>,
    /// The pull request's URL, when one was opened.
    pub pull_request_url: Option<String>,
}

/// Uploads the checkpoint in `dir` with the blocking transport of this crate (see the module
/// documentation for the steps).
pub fn push_to_hub(dir: &Path, options: &HfPushOptions) -> Result<HfPushReport> {
    push_to_hub_with(&crate::UreqTransport::new(), dir, options)
}

/// [`push_to_hub`] over any blocking HTTP stack.
pub fn push_to_hub_with(
    http: &dyn BlockingHttp,
    dir: &Path,
    options: &HfPushOptions,
) -> Result<HfPushReport> {
    let path = TinkerPath::parse(&options.tinker_path)?;
    let token = resolve_token(
        options.token.as_ref().map(Secret::expose),
        options.token_path.as_deref(),
        |k| std::env::var(k).ok(),
    )?;
    let endpoint = match &options.endpoint {
        Some(e) => e.trim_end_matches('/').to_owned(),
        None => HubSettings::from_env().endpoint,
    };
    let hub = api::Hub {
        http,
        endpoint,
        token,
        timeouts: options.timeouts,
    };
    let user = hub.whoami()?;
    checkpoint::validate(dir)?;

    let info = options.weights_info.as_ref();
    let base_model = info.map_or("unknown", |i| i.base_model.as_str());
    let (repo_id, revision) = match (&options.repo_id, &options.revision) {
        (None, rev) => {
            let (repo, derived) = checkpoint::derived_destination(&path, base_model);
            (repo, rev.clone().unwrap_or(derived))
        }
        (Some(repo), rev) => (repo.clone(), rev.clone().unwrap_or_else(|| "main".into())),
    };

    // The upload set: the directory's files, with the patched config and the card.
    let mut sources: Vec<(String, Source)> = checkpoint::list_files(dir)?
        .into_iter()
        .map(|(rel, p)| (rel, Source::Disk(p)))
        .collect();
    let config_path = dir.join(ADAPTER_CONFIG);
    let config = std::fs::read(&config_path).map_err(|e| checkpoint::io_error(&config_path, e))?;
    if let Some(patched) = checkpoint::patched_adapter_config(&config, base_model) {
        for (rel, source) in &mut sources {
            if rel == ADAPTER_CONFIG {
                *source = Source::Made(patched.clone());
            }
        }
    }
    let repo_id = hub.create_repo(&repo_id, !options.public, &user)?;
    if options.add_model_card && !sources.iter().any(|(rel, _)| rel == MODEL_CARD) {
        let card = checkpoint::model_card(&repo_id, &options.tinker_path, base_model, info);
        sources.push((MODEL_CARD.into(), Source::Made(card.into_bytes())));
        sources.sort_by(|a, b| a.0.cmp(&b.0));
    }

    if let Some(card) = hub.read_file(&repo_id, &revision, MODEL_CARD)? {
        let card = String::from_utf8_lossy(&card);
        if let Some(found) = checkpoint::tinker_path_in(&card) {
            if found != options.tinker_path {
                return Err(Error::invalid(
                    "repo_id",
                    format!(
                        "repository {repo_id} appears to contain a different Tinker checkpoint: \
                         found {found}, expected {}",
                        options.tinker_path
                    ),
                ));
            }
        }
    }
    hub.ensure_branch(&repo_id, &revision)?;

    let mut ignore = options.ignore_patterns.clone();
    if options.allow_patterns.is_empty() {
        ignore.push(COMPLETE_MARKER.into());
    }
    sources.retain(|(rel, _)| checkpoint::selected(rel, &options.allow_patterns, &ignore));
    if sources.is_empty() {
        return Err(Error::invalid(
            "allow_patterns",
            "No files matched the selected upload patterns",
        ));
    }
    let files: Vec<(String, Bytes)> = sources
        .into_iter()
        .map(|(rel, source)| {
            let bytes = match source {
                Source::Made(b) => b,
                Source::Disk(p) => std::fs::read(&p).map_err(|e| checkpoint::io_error(&p, e))?,
            };
            Ok((rel, Bytes::from(bytes)))
        })
        .collect::<Result<_>>()?;

    let samples: Vec<(String, Vec<u8>, u64)> = files
        .iter()
        .map(|(rel, b)| (rel.clone(), b[..b.len().min(512)].to_vec(), b.len() as u64))
        .collect();
    let lfs = hub.preupload(&repo_id, &revision, options.create_pr, &samples)?;
    let mut operations: Vec<Value> = Vec::new();
    let mut lfs_files = Vec::new();
    for ((rel, content), is_lfs) in files.iter().zip(lfs) {
        if is_lfs {
            let oid = hex(&Sha256::digest(content));
            hub.upload_lfs(&repo_id, &revision, &oid, content)?;
            operations.push(json!({"key": "lfsFile", "value": {
                "path": rel, "algo": "sha256", "oid": oid, "size": content.len()}}));
            lfs_files.push(rel.clone());
        } else {
            use base64::Engine as _;
            operations.push(json!({"key": "file", "value": {
                "content": base64::engine::general_purpose::STANDARD.encode(content),
                "path": rel, "encoding": "base64"}}));
        }
    }
    let summary = options
        .commit_message
        .clone()
        .unwrap_or_else(|| format!("Upload adapter from {}", options.tinker_path));
    let reply = hub.commit(
        &repo_id,
        &revision,
        options.create_pr,
        &summary,
        &operations,
    )?;
    Ok(HfPushReport {
        repo_id,
        revision,
        public: options.public,
        files: files.into_iter().map(|(rel, _)| rel).collect(),
        lfs_files,
        commit_url: reply["commitUrl"].as_str().map(str::to_owned),
        pull_request_url: reply["pullRequestUrl"].as_str().map(str::to_owned),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
