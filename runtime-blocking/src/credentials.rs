//! The stored credentials of `tinker auth login` on disk, `~/.tinker/credentials.json`
//! (format and precedence: [`tinker_core::auth::CredentialsFile`],
//! [`Settings::with_stored_credentials`]). The folder is created `0700` and the file written
//! `0600` (through a temporary file and a rename, so a crash never leaves half a file).
//!
//! ```no_run
//! // Environment first, the stored default key when neither TINKER_API_KEY nor
//! // TINKER_CREDENTIAL_CMD is set.
//! let settings = tinker_blocking::credentials::settings_from_env()?;
//! # Ok::<(), tinker_blocking::Error>(())
//! ```

use std::fs;
use std::io::{self, Write as _};
use std::path::PathBuf;

use tinker_core::auth::CredentialsFile;
use tinker_core::settings::Settings;
use tinker_core::{Error, Result};

/// `$HOME/.tinker/credentials.json`, or `None` when `HOME` is not set.
pub fn credentials_path() -> Option<PathBuf> {
    Settings::stored_login_path()
}

/// The file's text, `None` when there is no file (or no home folder).
///
/// # Errors
///
/// [`Error::Config`] naming the file when it exists but cannot be read.
pub fn read_credentials_text() -> Result<Option<String>> {
    let Some(path) = credentials_path() else {
        return Ok(None);
    };
    match fs::read_to_string(&path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Config(format!("reading {}: {e}", path.display()))),
    }
}

/// The parsed file, `None` when there is none.
///
/// # Errors
///
/// [`Error::Config`] when it cannot be read or parsed.
pub fn load() -> Result<Option<CredentialsFile>> {
    read_credentials_text()?
        .map(|text| CredentialsFile::parse(&text))
        .transpose()
}

/// Writes `file` (folder `0700`, file `0600`) and returns its path.
///
/// # Errors
///
/// [`Error::Config`] without a home folder or when writing fails, naming the path.
pub fn save(file: &CredentialsFile) -> Result<PathBuf> {
    let path = credentials_path()
        .ok_or_else(|| Error::Config("HOME is not set: nowhere to store credentials".into()))?;
    let failed =
        |what: &str, e: io::Error| Error::Config(format!("{what} {}: {e}", path.display()));
    let dir = path.parent().unwrap_or(&path).to_path_buf();
    fs::create_dir_all(&dir).map_err(|e| failed("creating the folder of", e))?;
    let tmp = dir.join(".credentials.json.tmp");
    let write = || -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
            let _ = fs::remove_file(&tmp);
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            out.write_all(file.to_json().as_bytes())?;
            out.sync_all()?;
        }
        #[cfg(not(unix))]
        fs::write(&tmp, file.to_json())?;
        fs::rename(&tmp, &path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&tmp);
        failed("writing", e)
    })?;
    Ok(path)
}

/// Settings from the environment, then the stored default key as the last credential source
/// ([`Settings::from_env_and_stored_login`]).
///
/// # Errors
///
/// [`Error::Config`] for a malformed variable or credentials file.
pub fn settings_from_env() -> Result<Settings> {
    Settings::from_env_and_stored_login(|path| fs::read_to_string(path))
}
