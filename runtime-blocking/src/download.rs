//! Checkpoint download: the SDK 0.38 export route, the SDK 0.25 archive route, a resumable
//! streamed GET, and a tar extraction that never writes outside its target folder.
//!
//! [`download_checkpoint_from`] picks the route ([`DownloadRoute`]): with the default
//! [`DownloadRoute::Auto`] a client speaking SDK 0.38 (the default) uses the export route and one
//! speaking 0.25 the archive route; either can be forced.
//!
//! The export route (protocol.md 14, SDK 0.38):
//! * an `external_weights/…` checkpoint is already an export: `GET …/external_weights_urls`, then
//!   one plain GET per file (URLs asked for again when less than five minutes are left);
//! * a `weights/…` (training state) checkpoint is exported first through a temporary session:
//!   `create_session`, `load_weights` of the state (run metadata
//!   `{"created_by": "tinker checkpoint download"}`), `get_info`, `save_weights_external` (TTL
//!   3600 s), `external_weights_urls` and `PUT …/ttl` 3600, the downloads, `DELETE` of the
//!   temporary export, `sessions/{id}/finish` — the clean-up runs after a failed download too;
//! * `sampler_weights/…` checkpoints cannot be downloaded ([`DownloadError::NotDownloadable`]).
//!
//! The archive route ([`download_checkpoint`]; protocol.md 6.9, tinkex_features.md 2.13):
//! 1. ask the API for the checkpoint's archive URL; a 503 means "still being built", so the call is
//!    repeated after [`DownloadOptions::archive_retry_delay`], up to
//!    [`DownloadOptions::archive_attempts`] times;
//! 2. stream the signed URL (no credentials: the URL is the credential) into a `.part` file next to
//!    the destination, with constant memory; a dropped connection is resumed with an HTTP `Range`
//!    request from the bytes already on disk, up to [`DownloadOptions::max_resumes`] times;
//! 3. extract the tar archive with [`extract_archive_safely`] into a scratch folder, then rename
//!    it to the destination, so a failed download never leaves a half-filled destination.
//!
//! ```no_run
//! use std::path::Path;
//! use tinker_blocking::download::{download_checkpoint, DownloadOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let rest = tinker_blocking::connect_from_env()?.create_rest_client();
//! let report = download_checkpoint(
//!     &rest,
//!     "tinker://run-1:train:0/weights/step_10",
//!     Path::new("checkpoints"),
//!     &DownloadOptions::default(),
//! )?;
//! println!("{} bytes into {}", report.archive_bytes, report.destination.display());
//! # Ok(()) }
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use tinker_core::io::{BlockingHttp, Timeouts};
use tinker_core::path::{CheckpointKind, TinkerPath};
use tinker_core::types::{ExternalWeightsUrls, FinishReason, Metadata, Timestamp};

use crate::{RestClient, ServiceClient, UreqTransport};

/// The prefix every checkpoint path starts with.
const TINKER_SCHEME: &str = "tinker://";
/// Bytes copied per read while streaming: the only buffer, so memory stays flat.
const CHUNK: usize = 256 * 1024;

/// Whether to draw a progress bar on standard error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    /// Only when standard error is a terminal (nothing when piped or redirected).
    #[default]
    Auto,
    /// Always (still drawn only if the terminal can show it).
    Always,
    /// Never.
    Never,
}

/// Time to live of the temporary export of a training checkpoint, and of its renewal.
const EXPORT_TTL_SECONDS: u64 = 3600;
/// Signed URLs with less than this left are asked for again before the next file.
const RESIGN_MARGIN_SECONDS: i64 = 300;

/// Which way [`download_checkpoint_from`] fetches a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DownloadRoute {
    /// [`DownloadRoute::Archive`] when the client speaks an SDK protocol older than 0.38
    /// (`Settings::sdk_version`), else [`DownloadRoute::Export`].
    #[default]
    Auto,
    /// SDK 0.38: signed URLs of an external-weights export, exporting training state first.
    Export,
    /// SDK 0.25: the checkpoint's tar archive (servers that still serve `…/archive`).
    Archive,
}

impl DownloadRoute {
    /// The route `Auto` stands for when the client speaks `sdk_version` (e.g. `"0.38.0"`).
    pub fn resolve(self, sdk_version: &str) -> DownloadRoute {
        if self != DownloadRoute::Auto {
            return self;
        }
        let mut parts = sdk_version
            .split('.')
            .map(|p| p.parse::<u64>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) < (0, 38) {
            DownloadRoute::Archive
        } else {
            DownloadRoute::Export
        }
    }
}

/// How [`download_checkpoint`] and [`download_checkpoint_from`] behave.
#[derive(Debug, Clone)]
pub struct DownloadOptions {
    /// Which route [`download_checkpoint_from`] takes.
    pub route: DownloadRoute,
    /// Replace the destination folder when it already exists (otherwise an error).
    pub force: bool,
    /// Progress bar policy.
    pub progress: ProgressMode,
    /// How many times the archive URL is requested while the server answers 503 ("the archive is
    /// still being built"). The official SDK uses 6.
    pub archive_attempts: u32,
    /// Wait between those requests. The official SDK uses 30 s.
    pub archive_retry_delay: Duration,
    /// How many times a dropped download is resumed (HTTP `Range`) before giving up.
    pub max_resumes: u32,
    /// Connect and per-read timeouts of the download itself.
    pub timeouts: Timeouts,
}

impl Default for DownloadOptions {
    fn default() -> DownloadOptions {
        DownloadOptions {
            route: DownloadRoute::Auto,
            force: false,
            progress: ProgressMode::Auto,
            archive_attempts: 6,
            archive_retry_delay: Duration::from_secs(30),
            max_resumes: 5,
            timeouts: Timeouts::default(),
        }
    }
}

/// What a finished download produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadReport {
    /// The `tinker://` path that was downloaded.
    pub checkpoint_path: String,
    /// The folder holding the extracted files.
    pub destination: PathBuf,
    /// The route taken ([`DownloadRoute::Export`] or [`DownloadRoute::Archive`]).
    pub route: DownloadRoute,
    /// Bytes downloaded: the archive's size, or the export's files added up.
    pub archive_bytes: u64,
    /// How many times a dropped connection was resumed.
    pub resumes: u32,
    /// The files written, relative to `destination`, in archive (or file name) order.
    pub files: Vec<PathBuf>,
}

/// Why a download or an extraction failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DownloadError {
    /// The path is not a checkpoint path of the form `tinker://<run-id>/<kind>/<name>`.
    #[error(
        "invalid checkpoint path {path:?}: {reason} (expected tinker://<run-id>/weights/<name>)"
    )]
    InvalidPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The destination folder exists and `force` was not set.
    #[error("{} already exists; remove it or pass --force to overwrite it", .0.display())]
    DestinationExists(PathBuf),
    /// An API call of the download failed (archive URL, export, signed URLs).
    #[error("{0}")]
    Api(#[from] tinker_core::Error),
    /// This kind of checkpoint cannot be downloaded on this route.
    #[error("{path} cannot be downloaded: {reason}")]
    NotDownloadable {
        /// The path given.
        path: String,
        /// Why, and what to download instead.
        reason: String,
    },
    /// The download answered an unexpected HTTP status.
    #[error("download failed: HTTP {status} from the signed download URL")]
    Http {
        /// The status.
        status: u16,
    },
    /// The connection kept failing (after every allowed resume).
    #[error("download failed after {resumes} resume(s): {message}")]
    Transport {
        /// Resumes attempted.
        resumes: u32,
        /// The last failure.
        message: String,
    },
    /// An archive entry would land outside the target folder, or is of a refused kind.
    #[error("refusing archive entry {entry:?}: {reason}")]
    UnsafeEntry {
        /// The entry's name in the archive.
        entry: String,
        /// Why it is refused.
        reason: String,
    },
    /// A local file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

impl DownloadError {
    fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> DownloadError {
        let context = context.into();
        move |source| DownloadError::Io { context, source }
    }
}

/// The folder name a checkpoint is extracted into: the path without `tinker://`, every `/`
/// replaced by `_` (`tinker://run-1/weights/final` → `run-1_weights_final`), as the official CLI
/// names it.
///
/// # Errors
///
/// [`DownloadError::InvalidPath`] when `path` is not a `tinker://` checkpoint path.
pub fn checkpoint_dir_name(path: &str) -> Result<String, DownloadError> {
    let invalid = |reason: String| DownloadError::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if !path.starts_with(TINKER_SCHEME) {
        return Err(invalid(format!("it must start with {TINKER_SCHEME}")));
    }
    TinkerPath::parse(path).map_err(|e| invalid(e.to_string()))?;
    let name = path[TINKER_SCHEME.len()..].replace('/', "_");
    if name.is_empty() || name.starts_with('.') || name.contains('\\') {
        return Err(invalid("it does not name a checkpoint".into()));
    }
    Ok(name)
}

/// Downloads the checkpoint at `path` and extracts it into `output_dir/<checkpoint_dir_name>`.
///
/// # Errors
///
/// [`DownloadError`] naming the step that failed; nothing is left in the destination then (the
/// partial archive is removed too).
pub fn download_checkpoint(
    rest: &RestClient,
    path: &str,
    output_dir: &Path,
    options: &DownloadOptions,
) -> Result<DownloadReport, DownloadError> {
    let (name, destination) = prepare_destination(path, output_dir, options)?;
    let url = archive_url(rest, path, options)?;
    let part = output_dir.join(format!(".{name}.tar.part"));
    let scratch = output_dir.join(format!(".{name}.extracting"));
    let result = download_url(&url, &part, options).and_then(|(bytes, resumes)| {
        let files = extract_archive_safely(&part, &scratch)?;
        fs::rename(&scratch, &destination).map_err(DownloadError::io(format!(
            "moving the extracted files to {}",
            destination.display()
        )))?;
        Ok((bytes, resumes, files))
    });
    // Best effort: the archive is not needed after extraction, nor after a failure.
    let _ = fs::remove_file(&part);
    match result {
        Ok((archive_bytes, resumes, files)) => Ok(DownloadReport {
            checkpoint_path: path.to_owned(),
            destination,
            route: DownloadRoute::Archive,
            archive_bytes,
            resumes,
            files,
        }),
        Err(e) => {
            let _ = fs::remove_dir_all(&scratch);
            Err(e)
        }
    }
}

/// The destination folder's name and path; an existing one is refused, or removed with `force`.
fn prepare_destination(
    path: &str,
    output_dir: &Path,
    options: &DownloadOptions,
) -> Result<(String, PathBuf), DownloadError> {
    let name = checkpoint_dir_name(path)?;
    let destination = output_dir.join(&name);
    if destination.exists() {
        if !options.force {
            return Err(DownloadError::DestinationExists(destination));
        }
        tracing::debug!(dir = %destination.display(), "removing the existing destination (--force)");
        fs::remove_dir_all(&destination).map_err(DownloadError::io(format!(
            "removing {}",
            destination.display()
        )))?;
    }
    fs::create_dir_all(output_dir).map_err(DownloadError::io(format!(
        "creating {}",
        output_dir.display()
    )))?;
    Ok((name, destination))
}

/// Downloads the checkpoint at `path` into `output_dir/<checkpoint_dir_name>` on the route
/// `options.route` selects (see the module docs): the export's files as they are, or the
/// archive's entries.
///
/// # Errors
///
/// [`DownloadError`] naming the step that failed; nothing is left in the destination then.
/// [`DownloadError::NotDownloadable`] for sampler checkpoints on the export route.
pub fn download_checkpoint_from(
    service: &ServiceClient,
    path: &str,
    output_dir: &Path,
    options: &DownloadOptions,
) -> Result<DownloadReport, DownloadError> {
    let rest = service.create_rest_client();
    match options.route.resolve(&service.settings().sdk_version) {
        DownloadRoute::Archive => return download_checkpoint(&rest, path, output_dir, options),
        DownloadRoute::Export | DownloadRoute::Auto => {}
    }
    let parsed = TinkerPath::parse(path).map_err(|e| DownloadError::InvalidPath {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if parsed.kind() == CheckpointKind::SamplerWeights {
        return Err(DownloadError::NotDownloadable {
            path: path.to_owned(),
            reason: "sampler checkpoints cannot be downloaded; download the run's training \
                     checkpoint (tinker://<run-id>/weights/<name>) instead"
                .into(),
        });
    }
    let (name, destination) = prepare_destination(path, output_dir, options)?;
    let scratch = output_dir.join(format!(".{name}.downloading"));
    let _ = fs::remove_dir_all(&scratch);
    let fetched = match parsed.kind() {
        CheckpointKind::ExternalWeights => fetch_export(&rest, path, &scratch, options, false),
        _ => export_and_fetch(service, &rest, path, &scratch, options),
    };
    let result = fetched.and_then(|(bytes, resumes, files)| {
        fs::rename(&scratch, &destination).map_err(DownloadError::io(format!(
            "moving the downloaded files to {}",
            destination.display()
        )))?;
        Ok(DownloadReport {
            checkpoint_path: path.to_owned(),
            destination,
            route: DownloadRoute::Export,
            archive_bytes: bytes,
            resumes,
            files,
        })
    });
    if result.is_err() {
        let _ = fs::remove_dir_all(&scratch);
    }
    result
}

/// Exports a training checkpoint through a temporary session (a client of its own with the
/// settings of `service`), downloads the export, then deletes it and finishes the session (also
/// when the download failed).
fn export_and_fetch(
    service: &ServiceClient,
    rest: &RestClient,
    path: &str,
    scratch: &Path,
    options: &DownloadOptions,
) -> Result<(u64, u32, Vec<PathBuf>), DownloadError> {
    let mut metadata = Metadata::new();
    metadata.insert("created_by".into(), "tinker checkpoint download".into());
    // A session of its own, so the caller's client stays open and its session untouched.
    let session = crate::connect_with(service.settings().clone(), service.options().clone())?;
    let result = (|| {
        let training = session.create_training_client_from_state_with_metadata(path, metadata)?;
        let stamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let export = training
            .save_weights_external(
                &format!("cli-download-{stamp}"),
                Some(EXPORT_TTL_SECONDS),
                None,
            )?
            .result()?;
        let fetched = fetch_export(rest, &export.path, scratch, options, true);
        if let Err(e) = rest.delete_checkpoint(&export.path) {
            // It expires within the hour anyway.
            tracing::warn!(path = %export.path, "could not delete the temporary export: {e}");
        }
        fetched
    })();
    let reason = if result.is_ok() {
        FinishReason::Success
    } else {
        FinishReason::Errored
    };
    if let Err(e) = session.close(reason) {
        tracing::warn!("could not finish the download session: {e}");
    }
    result
}

/// Downloads every file of the export at `export_path` into `dir` (created), asking for fresh
/// URLs when less than [`RESIGN_MARGIN_SECONDS`] are left. With `renew_ttl` (a temporary export
/// of ours) its TTL is renewed to [`EXPORT_TTL_SECONDS`] with each set of URLs; a user's export
/// keeps its own expiry. Returns the bytes, the resumes and the files, in name order.
fn fetch_export(
    rest: &RestClient,
    export_path: &str,
    dir: &Path,
    options: &DownloadOptions,
    renew_ttl: bool,
) -> Result<(u64, u32, Vec<PathBuf>), DownloadError> {
    let sign = || -> Result<ExternalWeightsUrls, DownloadError> {
        let urls = rest.get_external_weights_urls(export_path)?;
        if renew_ttl {
            rest.set_checkpoint_ttl(export_path, Some(EXPORT_TTL_SECONDS))?;
        }
        Ok(urls)
    };
    let mut signed = sign()?;
    fs::create_dir_all(dir).map_err(DownloadError::io(format!("creating {}", dir.display())))?;
    let names: Vec<String> = signed.urls.keys().cloned().collect();
    let (mut bytes, mut resumes, mut files) = (0u64, 0u32, Vec::new());
    for name in names {
        let relative =
            contained_path(Path::new(&name)).map_err(|why| DownloadError::UnsafeEntry {
                entry: name.clone(),
                reason: format!("its path {why}"),
            })?;
        if relative.as_os_str().is_empty() {
            continue;
        }
        if expires_soon(&signed.expires) {
            tracing::info!("the download URLs expire soon; asking for fresh ones");
            signed = sign()?;
        }
        let Some(url) = signed.urls.get(&name) else {
            return Err(DownloadError::Transport {
                resumes,
                message: format!("the server no longer lists {name:?} in the export"),
            });
        };
        let target = dir.join(&relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(DownloadError::io(format!("creating {}", parent.display())))?;
        }
        let (n, r) = download_url(url, &target, options)?;
        bytes += n;
        resumes += r;
        files.push(relative);
    }
    Ok((bytes, resumes, files))
}

fn expires_soon(expires: &Timestamp) -> bool {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    expires.unix_seconds() - now < RESIGN_MARGIN_SECONDS
}

/// The archive URL, asked again while the server is still building the archive (503).
fn archive_url(
    rest: &RestClient,
    path: &str,
    options: &DownloadOptions,
) -> Result<String, DownloadError> {
    let attempts = options.archive_attempts.max(1);
    for attempt in 1..=attempts {
        match rest.get_checkpoint_archive_url(path) {
            Ok(reply) => return Ok(reply.url),
            Err(e) if e.status() == Some(503) && attempt < attempts => {
                tracing::info!(
                    attempt,
                    "the checkpoint archive is still being built; asking again in {:?}",
                    options.archive_retry_delay
                );
                std::thread::sleep(options.archive_retry_delay);
            }
            Err(e) => return Err(e.into()),
        }
    }
    unreachable!("the last attempt returns")
}

/// Streams `url` into `file` (created or truncated) with constant memory, resuming with HTTP
/// `Range` requests when the connection drops. Returns the size and the number of resumes.
///
/// No credentials are sent: this is for signed URLs.
///
/// # Errors
///
/// [`DownloadError::Http`] for an unexpected status, [`DownloadError::Transport`] when the
/// connection keeps failing, [`DownloadError::Io`] for local write failures.
pub fn download_url(
    url: &str,
    file: &Path,
    options: &DownloadOptions,
) -> Result<(u64, u32), DownloadError> {
    let transport = UreqTransport::new();
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(file)
        .map_err(DownloadError::io(format!("creating {}", file.display())))?;
    let bar = progress_bar(options.progress);
    let mut written: u64 = 0;
    let mut total: Option<u64> = None;
    let mut resumes: u32 = 0;
    loop {
        let failure = match fetch_from(&transport, url, written, options.timeouts) {
            Ok(Fetch::Whole { mut body, length }) => {
                if written > 0 {
                    // The server ignored the Range header: start over.
                    tracing::warn!("the server ignored the Range request; restarting from byte 0");
                    out.set_len(0)
                        .and_then(|()| out.seek(SeekFrom::Start(0)).map(|_| ()))
                        .map_err(DownloadError::io(format!("truncating {}", file.display())))?;
                    written = 0;
                }
                total = length.or(total);
                copy_body(&mut body, &mut out, &mut written, &bar, total, file)?
            }
            Ok(Fetch::Rest { mut body, total: t }) => {
                total = t.or(total);
                copy_body(&mut body, &mut out, &mut written, &bar, total, file)?
            }
            Ok(Fetch::AlreadyComplete) => None,
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(message)) => Some(message),
        };
        let complete = failure.is_none() && total.is_none_or(|t| written >= t);
        if complete {
            out.flush()
                .map_err(DownloadError::io(format!("writing {}", file.display())))?;
            bar.finish_and_clear();
            return Ok((written, resumes));
        }
        let message = failure.unwrap_or_else(|| {
            format!(
                "the connection closed after {written} of {} bytes",
                total.unwrap_or(0)
            )
        });
        if resumes >= options.max_resumes {
            bar.abandon();
            return Err(DownloadError::Transport { resumes, message });
        }
        resumes += 1;
        tracing::warn!(
            written,
            resume = resumes,
            "download interrupted ({message}); resuming"
        );
    }
}

/// Streams `url` into `out` with constant memory and returns the bytes copied: one plain GET
/// without credentials (for signed URLs) and no resume, since a writer such as standard output
/// cannot be rewound. Prefer [`download_url`] when the target is a file.
///
/// # Errors
///
/// [`DownloadError::Http`] for a status other than 200, [`DownloadError::Transport`] when the
/// connection fails, [`DownloadError::Io`] when writing fails.
pub fn copy_url_to(
    url: &str,
    out: &mut dyn Write,
    timeouts: Timeouts,
) -> Result<u64, DownloadError> {
    let transport = UreqTransport::new();
    let failed = |message: String| DownloadError::Transport {
        resumes: 0,
        message,
    };
    let body = match fetch_from(&transport, url, 0, timeouts) {
        Ok(Fetch::Whole { body, .. }) => body,
        Ok(Fetch::Rest { .. } | Fetch::AlreadyComplete) => {
            return Err(failed("the server answered a range to a plain GET".into()))
        }
        Err(Failure::Fatal(e)) => return Err(e),
        Err(Failure::Retry(message)) => return Err(failed(message)),
    };
    let mut body = body;
    let mut buf = vec![0u8; CHUNK];
    let mut copied: u64 = 0;
    loop {
        match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.write_all(&buf[..n])
                    .map_err(DownloadError::io("writing the download"))?;
                copied += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(failed(e.to_string())),
        }
    }
    out.flush()
        .map_err(DownloadError::io("writing the download"))?;
    Ok(copied)
}

enum Fetch {
    /// A 200: the whole file (the server ignored or was not sent a range).
    Whole {
        body: Box<dyn Read + Send>,
        length: Option<u64>,
    },
    /// A 206: the rest of the file from the requested offset.
    Rest {
        body: Box<dyn Read + Send>,
        total: Option<u64>,
    },
    /// A 416 for an offset at the end of the file: nothing left to fetch.
    AlreadyComplete,
}

enum Failure {
    /// Worth resuming (connection failure).
    Retry(String),
    /// Not worth resuming (an HTTP status, a malformed reply).
    Fatal(DownloadError),
}

fn fetch_from(
    transport: &UreqTransport,
    url: &str,
    offset: u64,
    timeouts: Timeouts,
) -> Result<Fetch, Failure> {
    let mut request = http::Request::get(url);
    if offset > 0 {
        request = request.header(http::header::RANGE, format!("bytes={offset}-"));
    }
    let request = request.body(Bytes::new()).map_err(|e| {
        Failure::Fatal(DownloadError::InvalidPath {
            path: url.to_owned(),
            reason: format!("the archive URL is not a valid URL: {e}"),
        })
    })?;
    let response = transport
        .send(request, timeouts)
        .map_err(|e| Failure::Retry(e.message))?;
    let header = |name: http::HeaderName| {
        response
            .head
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    match response.head.status.as_u16() {
        200 => Ok(Fetch::Whole {
            length: header(http::header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
            body: response.body,
        }),
        206 => {
            let range = header(http::header::CONTENT_RANGE).unwrap_or_default();
            let (start, total) = parse_content_range(&range).ok_or_else(|| {
                Failure::Fatal(DownloadError::Transport {
                    resumes: 0,
                    message: format!("malformed Content-Range {range:?} in a 206 reply"),
                })
            })?;
            if start != offset {
                return Err(Failure::Fatal(DownloadError::Transport {
                    resumes: 0,
                    message: format!("asked for bytes from {offset}, the server sent from {start}"),
                }));
            }
            Ok(Fetch::Rest {
                body: response.body,
                total,
            })
        }
        416 if offset > 0 => {
            let range = header(http::header::CONTENT_RANGE).unwrap_or_default();
            match range
                .strip_prefix("bytes */")
                .and_then(|t| t.parse::<u64>().ok())
            {
                Some(total) if total == offset => Ok(Fetch::AlreadyComplete),
                _ => Err(Failure::Fatal(DownloadError::Http { status: 416 })),
            }
        }
        status => Err(Failure::Fatal(DownloadError::Http { status })),
    }
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`) → (START, TOTAL).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (span, total) = rest.split_once('/')?;
    let (start, _end) = span.split_once('-')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some((start.parse().ok()?, total))
}

/// Copies `body` to the end of `out`; `Some(message)` when the connection failed midway.
fn copy_body(
    body: &mut Box<dyn Read + Send>,
    out: &mut File,
    written: &mut u64,
    bar: &indicatif::ProgressBar,
    total: Option<u64>,
    file: &Path,
) -> Result<Option<String>, DownloadError> {
    if let Some(t) = total {
        bar.set_length(t);
    }
    let mut writer = BufWriter::with_capacity(CHUNK, &mut *out);
    let mut buf = vec![0u8; CHUNK];
    let outcome = loop {
        match body.read(&mut buf) {
            Ok(0) => break None,
            Ok(n) => {
                writer
                    .write_all(&buf[..n])
                    .map_err(DownloadError::io(format!("writing {}", file.display())))?;
                *written += n as u64;
                bar.set_position(*written);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break Some(e.to_string()),
        }
    };
    writer
        .flush()
        .map_err(DownloadError::io(format!("writing {}", file.display())))?;
    Ok(outcome)
}

fn progress_bar(mode: ProgressMode) -> indicatif::ProgressBar {
    let show = match mode {
        ProgressMode::Never => false,
        ProgressMode::Always => true,
        ProgressMode::Auto => io::stderr().is_terminal(),
    };
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

/// Extracts the (uncompressed) tar `archive` into `dest`, creating it, and returns the entries
/// written, relative to `dest`.
///
/// Nothing can land outside `dest`: an entry whose name is absolute or contains `..` is refused,
/// and so is a symbolic or hard link whose target is absolute or contains `..` (a link that stays
/// below its own folder cannot lead out, even through other such links), and any device, FIFO or
/// other special entry. The first refused entry stops the extraction with
/// [`DownloadError::UnsafeEntry`]; entries before it stay on disk.
///
/// # Errors
///
/// [`DownloadError::UnsafeEntry`] as above, [`DownloadError::Io`] for unreadable archives or
/// write failures.
pub fn extract_archive_safely(archive: &Path, dest: &Path) -> Result<Vec<PathBuf>, DownloadError> {
    fs::create_dir_all(dest).map_err(DownloadError::io(format!("creating {}", dest.display())))?;
    let file =
        File::open(archive).map_err(DownloadError::io(format!("opening {}", archive.display())))?;
    let mut tar = tar::Archive::new(BufReader::with_capacity(CHUNK, file));
    tar.set_preserve_permissions(false);
    tar.set_preserve_mtime(true);
    tar.set_unpack_xattrs(false);
    tar.set_overwrite(true);
    let reading = || DownloadError::io(format!("reading the archive {}", archive.display()));
    let mut files = Vec::new();
    for entry in tar.entries().map_err(reading())? {
        let mut entry = entry.map_err(reading())?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let unsafe_entry = |reason: &str| DownloadError::UnsafeEntry {
            entry: raw.clone(),
            reason: reason.to_owned(),
        };
        let relative = contained_path(Path::new(&raw))
            .map_err(|why| unsafe_entry(&format!("its path {why}")))?;
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::Directory
            | tar::EntryType::GNUSparse => {}
            tar::EntryType::Symlink | tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                contained_path(Path::new(&target))
                    .map_err(|why| unsafe_entry(&format!("its link target {target:?} {why}")))?;
            }
            other => {
                return Err(unsafe_entry(&format!(
                    "entries of type {other:?} are not extracted"
                )))
            }
        }
        if relative.as_os_str().is_empty() {
            continue; // "./" itself
        }
        // unpack_in also checks, after resolving existing folders, that the file stays in dest.
        let unpacked = entry.unpack_in(dest).map_err(DownloadError::io(format!(
            "extracting {raw:?} into {}",
            dest.display()
        )))?;
        if !unpacked {
            return Err(unsafe_entry(
                "it would be written outside the target folder",
            ));
        }
        files.push(relative);
    }
    Ok(files)
}

/// `path` without `.` components, or why it could leave the folder it is relative to.
fn contained_path(path: &Path) -> Result<PathBuf, &'static str> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("contains `..`"),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_paths_name_their_folder_and_other_strings_are_refused() {
        assert_eq!(
            checkpoint_dir_name("tinker://run-1:train:0/weights/final").unwrap(),
            "run-1:train:0_weights_final"
        );
        let err = checkpoint_dir_name("run-1/weights/final").unwrap_err();
        assert!(err.to_string().contains("tinker://"), "{err}");
    }

    #[test]
    fn the_automatic_route_follows_the_protocol_version_spoken() {
        assert_eq!(DownloadRoute::Auto.resolve("0.38.0"), DownloadRoute::Export);
        assert_eq!(DownloadRoute::Auto.resolve("0.40.1"), DownloadRoute::Export);
        assert_eq!(DownloadRoute::Auto.resolve("1.0.0"), DownloadRoute::Export);
        assert_eq!(
            DownloadRoute::Auto.resolve("0.25.0"),
            DownloadRoute::Archive
        );
        assert_eq!(
            DownloadRoute::Archive.resolve("0.38.0"),
            DownloadRoute::Archive
        );
        assert_eq!(
            DownloadRoute::Export.resolve("0.25.0"),
            DownloadRoute::Export
        );
    }

    #[test]
    fn content_ranges_parse_with_and_without_a_known_total() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);
    }

    #[test]
    fn entry_paths_climbing_out_or_absolute_are_refused() {
        assert_eq!(
            contained_path(Path::new("./a/b.bin")).unwrap(),
            PathBuf::from("a/b.bin")
        );
        assert!(contained_path(Path::new("a/../../etc/passwd")).is_err());
        assert!(contained_path(Path::new("/etc/passwd")).is_err());
    }
}
