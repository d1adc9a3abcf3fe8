//! Client configuration from the environment, in one place (protocol.md 2.1, 15).
//!
//! Precedence for every setting: **explicit value > environment variable > built-in default**.
//! [`Settings::from_env_with`] produces "environment over defaults"; the `with_*` setters applied
//! afterwards are the explicit values and always win. The environment is read through a closure,
//! so tests never touch the process environment; [`Settings::from_env`] wraps `std::env::var`.
//!
//! | Variable | Setting | Default |
//! |---|---|---|
//! | `TINKER_API_KEY` | [`Settings::api_key`] (checked: `tml-…` or a JWT `eyJ…`) | none |
//! | `TINKER_BASE_URL` | [`Settings::base_url`] (empty = unset; trailing `/` stripped) | [`DEFAULT_BASE_URL`] |
//! | `TINKER_CREDENTIAL_CMD` | [`Settings::credential_cmd`] (carried, never run here) | none |
//! | `TINKER_PROJECT_ID` | [`Settings::project_id`] (empty = unset) | none |
//! | `TINKER_TAGS` | [`Settings::tags`] (split on `,`, trimmed, de-duplicated) | `[]` |
//! | `TINKER_TELEMETRY` | [`Settings::telemetry_enabled`] (`1/true/yes/on`, any case) | on |
//! | `CLOUDFLARE_ACCESS_CLIENT_ID` / `_SECRET` | sent as `CF-Access-Client-Id` / `-Secret` | none |
//! | `TINKER_FEATURE_GATES` | [`Settings::feature_gates`] (read, otherwise unused) | `["async_sampling"]` |
//!
//! The last credential source [0.38] is the default key stored by `tinker auth login` in
//! `~/.tinker/credentials.json`, applied with [`Settings::with_stored_credentials`] (the adapters
//! read the file). Precedence for the key: explicit > `TINKER_API_KEY` (or
//! `TINKER_CREDENTIAL_CMD`) > the stored default.
//!
//! Timeouts and the SDK version spoken on the wire are not environment-driven (as in the official
//! SDK); they have defaults and explicit setters.

use std::fmt;
use std::time::Duration;

use crate::auth::{decode_claims, JwtClaims};
use crate::error::{Error, Result};

/// The production API base URL.
pub const DEFAULT_BASE_URL: &str = "https://tinker.thinkingmachines.dev/services/tinker-prod";

/// The official SDK version whose wire protocol tinker-rs speaks by default.
pub const DEFAULT_SDK_VERSION: &str = "0.38.0";

/// A secret string whose `Debug` and `Display` never show it.
///
/// ```
/// use tinker_core::settings::Secret;
/// let s = Secret::new("hunter2");
/// assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The credential sent as `X-API-Key`: an API key (`tml-…`) or a JWT (`eyJ…`).
///
/// Constructing one performs the SDK's local checks; `Debug` and `Display` show only the kind of
/// credential, never the secret.
///
/// ```
/// use tinker_core::settings::ApiKey;
/// let key = ApiKey::new("tml-abcdef123456").unwrap();
/// assert_eq!(key.to_string(), "tml-***");
/// assert!(!format!("{key:?}").contains("abcdef"));
/// assert!(ApiKey::new("sk-123").is_err());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Secret);

impl ApiKey {
    /// Checks and wraps a credential: it must start with `tml-` or be a JWT (`eyJ…`) whose
    /// payload decodes. Surrounding whitespace is trimmed.
    pub fn new(value: impl Into<String>) -> Result<ApiKey> {
        let value = value.into().trim().to_owned();
        if value.is_empty() {
            return Err(Error::Config(
                "the API key is empty; set TINKER_API_KEY or pass an api key".into(),
            ));
        }
        if value.starts_with("eyJ") {
            decode_claims(&value).map_err(|e| {
                Error::Config(format!(
                    "the api_key looks like a JWT but is malformed: {e}"
                ))
            })?;
        } else if !value.starts_with("tml-") {
            return Err(Error::Config(
                "the api_key must start with the 'tml-' prefix (or be a JWT starting with 'eyJ')"
                    .into(),
            ));
        }
        Ok(ApiKey(Secret(value)))
    }

    /// Whether this credential is a JWT rather than an API key.
    pub fn is_jwt(&self) -> bool {
        self.0 .0.starts_with("eyJ")
    }

    /// The JWT claims, when this credential is a JWT.
    pub fn jwt_claims(&self) -> Option<JwtClaims> {
        if self.is_jwt() {
            decode_claims(self.expose()).ok()
        } else {
            None
        }
    }

    /// [0.38] Rejects a JWT whose `exp` is at or before `now_unix_seconds` ("The api_key JWT has
    /// expired"). API keys and JWTs without `exp` pass. The caller supplies the time: the core
    /// reads no clock.
    pub fn check_not_expired(&self, now_unix_seconds: f64) -> Result<()> {
        if let Some(JwtClaims { exp: Some(exp), .. }) = self.jwt_claims() {
            let exp = exp
                .duration_since(std::time::SystemTime::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            if exp <= now_unix_seconds {
                return Err(Error::Config(
                    "the api_key JWT has expired; obtain a new token".into(),
                ));
            }
        }
        Ok(())
    }

    /// The credential itself, for the `X-API-Key` header only.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({self})")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.is_jwt() { "eyJ***" } else { "tml-***" })
    }
}

/// Connection and per-read timeouts of ordinary requests (endpoint-specific read timeouts, such
/// as 45 s polls, come from the endpoint table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutSettings {
    /// Connect timeout (5 s).
    pub connect: Duration,
    /// Default read timeout (60 s).
    pub read: Duration,
}

impl Default for TimeoutSettings {
    fn default() -> TimeoutSettings {
        TimeoutSettings {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(60),
        }
    }
}

/// Everything a client needs to know before its first request.
///
/// ```
/// use tinker_core::settings::Settings;
/// let env = |k: &str| match k {
///     "TINKER_API_KEY" => Some("tml-test-key-0001".to_string()),
///     "TINKER_BASE_URL" => Some("http://127.0.0.1:8000/".to_string()),
///     "TINKER_TAGS" => Some("a, b,a".to_string()),
///     _ => None,
/// };
/// let s = Settings::from_env_with(env).unwrap().with_project_id("explicit");
/// assert_eq!(s.base_url, "http://127.0.0.1:8000");
/// assert_eq!(s.tags, ["a", "b"]);
/// assert_eq!(s.project_id.as_deref(), Some("explicit"));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The credential, if one was found.
    pub api_key: Option<ApiKey>,
    /// API base URL, without a trailing slash.
    pub base_url: String,
    /// A shell command printing a credential; running it is the adapters' job.
    pub credential_cmd: Option<String>,
    /// Default project for new sessions and `copy_weights`.
    pub project_id: Option<String>,
    /// Session tags.
    pub tags: Vec<String>,
    /// Whether telemetry is sent.
    pub telemetry_enabled: bool,
    /// Cloudflare Access client id.
    pub cf_access_client_id: Option<String>,
    /// Cloudflare Access client secret.
    pub cf_access_client_secret: Option<Secret>,
    /// Feature gates (read for parity; unused).
    pub feature_gates: Vec<String>,
    /// Timeouts.
    pub timeouts: TimeoutSettings,
    /// The SDK version spoken on the wire (`sdk_version` bodies, `x-sdk-version`).
    pub sdk_version: String,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            api_key: None,
            base_url: DEFAULT_BASE_URL.to_owned(),
            credential_cmd: None,
            project_id: None,
            tags: Vec::new(),
            telemetry_enabled: true,
            cf_access_client_id: None,
            cf_access_client_secret: None,
            feature_gates: vec!["async_sampling".to_owned()],
            timeouts: TimeoutSettings::default(),
            sdk_version: DEFAULT_SDK_VERSION.to_owned(),
        }
    }
}

impl Settings {
    /// Reads the process environment (see the module docs for the variables).
    pub fn from_env() -> Result<Settings> {
        Settings::from_env_with(|k| std::env::var(k).ok())
    }

    /// Reads settings through `env` (a lookup returning `None` for unset variables). Values are
    /// trimmed; empty values count as unset. A malformed `TINKER_API_KEY` is an error.
    pub fn from_env_with(env: impl Fn(&str) -> Option<String>) -> Result<Settings> {
        let get = |k: &str| {
            env(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut s = Settings::default();
        if let Some(key) = get("TINKER_API_KEY") {
            s.api_key = Some(ApiKey::new(key).map_err(|e| match e {
                Error::Config(m) => Error::Config(format!("TINKER_API_KEY: {m}")),
                other => other,
            })?);
        }
        if let Some(url) = get("TINKER_BASE_URL") {
            s.base_url = normalize_base_url(&url);
        }
        s.credential_cmd = get("TINKER_CREDENTIAL_CMD");
        s.project_id = get("TINKER_PROJECT_ID");
        if let Some(tags) = get("TINKER_TAGS") {
            s.tags = split_list(&tags);
        }
        if let Some(t) = get("TINKER_TELEMETRY") {
            s.telemetry_enabled = is_truthy(&t);
        }
        s.cf_access_client_id = get("CLOUDFLARE_ACCESS_CLIENT_ID");
        s.cf_access_client_secret = get("CLOUDFLARE_ACCESS_CLIENT_SECRET").map(Secret::new);
        if let Some(g) = get("TINKER_FEATURE_GATES") {
            s.feature_gates = split_list(&g);
        }
        Ok(s)
    }

    /// Where `tinker auth login` keeps its keys: `$HOME/.tinker/credentials.json`, or `None`
    /// when `HOME` is not set.
    pub fn stored_login_path() -> Option<std::path::PathBuf> {
        let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
        Some(std::path::PathBuf::from(home).join(crate::auth::CREDENTIALS_FILE))
    }

    /// [`Settings::from_env`], then the stored login of `tinker auth login` as the last
    /// credential source ([`Settings::with_stored_credentials`]). The core does no I/O: the
    /// runtime passes `read_file` (e.g. `std::fs::read_to_string`), called only when neither
    /// `TINKER_API_KEY` nor `TINKER_CREDENTIAL_CMD` is set. A missing file is no error.
    ///
    /// ```no_run
    /// use tinker_core::settings::Settings;
    /// let settings = Settings::from_env_and_stored_login(|path| std::fs::read_to_string(path))?;
    /// # Ok::<(), tinker_core::Error>(())
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed variable, or a credentials file that exists but cannot
    /// be read or parsed (naming the file).
    pub fn from_env_and_stored_login(
        read_file: impl FnOnce(&std::path::Path) -> std::io::Result<String>,
    ) -> Result<Settings> {
        let settings = Settings::from_env()?;
        if settings.api_key.is_some() || settings.credential_cmd.is_some() {
            return Ok(settings);
        }
        let Some(path) = Settings::stored_login_path() else {
            return Ok(settings);
        };
        match read_file(&path) {
            Ok(text) => settings.with_stored_credentials(Some(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(settings),
            Err(e) => Err(Error::Config(format!("reading {}: {e}", path.display()))),
        }
    }

    /// Explicit API key (wins over `TINKER_API_KEY`).
    pub fn with_api_key(mut self, key: impl Into<String>) -> Result<Settings> {
        self.api_key = Some(ApiKey::new(key)?);
        Ok(self)
    }

    /// The lowest-precedence credential source [0.38]: the default key of
    /// `~/.tinker/credentials.json` ([`crate::auth::CredentialsFile`]), whose text the adapter
    /// read (`None` when there is no file). It is used only when neither an explicit key,
    /// `TINKER_API_KEY` nor `TINKER_CREDENTIAL_CMD` configured a credential, and the file is not
    /// even parsed then. Precedence: explicit > environment > stored file.
    ///
    /// ```
    /// use tinker_core::settings::Settings;
    /// let file = r#"{"version": 1, "default": "7", "keys": {"7": {"type": "manual", "key": "tml-stored"}}}"#;
    /// let stored = Settings::default().with_stored_credentials(Some(file)).unwrap();
    /// assert_eq!(stored.api_key.unwrap().expose(), "tml-stored");
    /// let explicit = Settings::default().with_api_key("tml-flag").unwrap();
    /// let kept = explicit.with_stored_credentials(Some(file)).unwrap();
    /// assert_eq!(kept.api_key.unwrap().expose(), "tml-flag");
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed file or a stored key that is not a valid key.
    pub fn with_stored_credentials(mut self, credentials_json: Option<&str>) -> Result<Settings> {
        let Some(text) = credentials_json else {
            return Ok(self);
        };
        if self.api_key.is_some() || self.credential_cmd.is_some() {
            return Ok(self);
        }
        let file = crate::auth::CredentialsFile::parse(text)?;
        if let Some((id, stored)) = file.default_entry() {
            self.api_key = Some(ApiKey::new(stored.key.clone()).map_err(|e| match e {
                Error::Config(m) => Error::Config(format!(
                    "{}: stored key {id:?}: {m}",
                    crate::auth::CREDENTIALS_FILE
                )),
                other => other,
            })?);
        }
        Ok(self)
    }

    /// Explicit base URL (wins over `TINKER_BASE_URL`); a trailing `/` is stripped.
    pub fn with_base_url(mut self, url: &str) -> Settings {
        self.base_url = normalize_base_url(url);
        self
    }

    /// Explicit project (wins over `TINKER_PROJECT_ID`).
    pub fn with_project_id(mut self, project_id: impl Into<String>) -> Settings {
        self.project_id = Some(project_id.into());
        self
    }

    /// Explicit tags (win over `TINKER_TAGS`), de-duplicated.
    pub fn with_tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Settings {
        let mut out: Vec<String> = Vec::new();
        for t in tags {
            let t = t.into();
            if !out.contains(&t) {
                out.push(t);
            }
        }
        self.tags = out;
        self
    }

    /// Explicit telemetry switch.
    pub fn with_telemetry(mut self, enabled: bool) -> Settings {
        self.telemetry_enabled = enabled;
        self
    }

    /// Explicit timeouts.
    pub fn with_timeouts(mut self, timeouts: TimeoutSettings) -> Settings {
        self.timeouts = timeouts;
        self
    }

    /// The SDK version to speak (default `"0.38.0"`).
    pub fn with_sdk_version(mut self, version: impl Into<String>) -> Settings {
        self.sdk_version = version.into();
        self
    }

    /// The credential, or the SDK's "api_key must be set" error.
    pub fn require_api_key(&self) -> Result<&ApiKey> {
        self.api_key.as_ref().ok_or_else(|| {
            Error::Config(
                "the api_key client option must be set either by passing an api key or by setting the TINKER_API_KEY environment variable".into(),
            )
        })
    }

    /// The Cloudflare Access headers to send on every request, when configured.
    pub fn cf_access_headers(&self) -> Vec<(&'static str, String)> {
        let mut h = Vec::new();
        if let Some(id) = &self.cf_access_client_id {
            h.push(("CF-Access-Client-Id", id.clone()));
        }
        if let Some(secret) = &self.cf_access_client_secret {
            h.push(("CF-Access-Client-Secret", secret.expose().to_owned()));
        }
        h
    }
}

/// Strips trailing slashes; an empty value means the default.
fn normalize_base_url(url: &str) -> String {
    let trimmed = url.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        DEFAULT_BASE_URL.to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Splits a comma-separated list, trimming items, dropping empty ones, keeping first occurrences.
fn split_list(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if !out.iter().any(|o| o == item) {
            out.push(item.to_owned());
        }
    }
    out
}

/// `1`, `true`, `yes`, `on` (any case) enable; anything else disables.
fn is_truthy(s: &str) -> bool {
    matches!(s.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn jwt(payload: &str) -> String {
        use base64::Engine as _;
        format!(
            "eyJhbGciOiJub25lIn0.{}.sig",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn an_empty_environment_gives_the_documented_defaults() {
        let s = Settings::from_env_with(env(&[])).unwrap();
        assert_eq!(s, Settings::default());
        assert_eq!(s.base_url, DEFAULT_BASE_URL);
        assert!(s.telemetry_enabled);
        assert!(s.tags.is_empty());
        assert_eq!(s.sdk_version, "0.38.0");
        assert_eq!(s.timeouts.read, Duration::from_secs(60));
        assert!(s
            .require_api_key()
            .unwrap_err()
            .to_string()
            .contains("TINKER_API_KEY"));
    }

    #[test]
    fn every_variable_is_read_and_normalised() {
        let s = Settings::from_env_with(env(&[
            ("TINKER_API_KEY", " tml-test-key-0001 "),
            ("TINKER_BASE_URL", "http://127.0.0.1:18038/prefix//"),
            ("TINKER_CREDENTIAL_CMD", "pass show tinker"),
            ("TINKER_PROJECT_ID", "proj-1"),
            ("TINKER_TAGS", "nightly, exp ,nightly,,"),
            ("TINKER_TELEMETRY", "OFF"),
            ("CLOUDFLARE_ACCESS_CLIENT_ID", "cf-id"),
            ("CLOUDFLARE_ACCESS_CLIENT_SECRET", "cf-secret"),
            ("TINKER_FEATURE_GATES", "a,b"),
        ]))
        .unwrap();
        assert_eq!(s.require_api_key().unwrap().expose(), "tml-test-key-0001");
        assert_eq!(s.base_url, "http://127.0.0.1:18038/prefix");
        assert_eq!(s.credential_cmd.as_deref(), Some("pass show tinker"));
        assert_eq!(s.project_id.as_deref(), Some("proj-1"));
        assert_eq!(s.tags, ["nightly", "exp"]);
        assert!(!s.telemetry_enabled);
        assert_eq!(
            s.cf_access_headers(),
            vec![
                ("CF-Access-Client-Id", "cf-id".to_string()),
                ("CF-Access-Client-Secret", "cf-secret".to_string())
            ]
        );
        assert_eq!(s.feature_gates, ["a", "b"]);
    }

    #[test]
    fn empty_values_count_as_unset() {
        let s = Settings::from_env_with(env(&[
            ("TINKER_BASE_URL", ""),
            ("TINKER_PROJECT_ID", "  "),
            ("TINKER_API_KEY", ""),
        ]))
        .unwrap();
        assert_eq!(s.base_url, DEFAULT_BASE_URL);
        assert_eq!(s.project_id, None);
        assert_eq!(s.api_key, None);
    }

    #[test]
    fn telemetry_truthy_values() {
        for (v, on) in [
            ("1", true),
            ("true", true),
            ("YES", true),
            ("On", true),
            ("0", false),
            ("no", false),
            ("2", false),
        ] {
            let s = Settings::from_env_with(env(&[("TINKER_TELEMETRY", v)])).unwrap();
            assert_eq!(s.telemetry_enabled, on, "{v}");
        }
    }

    #[test]
    fn explicit_values_win_over_the_environment() {
        let s = Settings::from_env_with(env(&[
            ("TINKER_API_KEY", "tml-from-env"),
            ("TINKER_BASE_URL", "http://env"),
            ("TINKER_TAGS", "env"),
        ]))
        .unwrap()
        .with_api_key("tml-explicit")
        .unwrap()
        .with_base_url("http://explicit/")
        .with_tags(["x", "x", "y"])
        .with_telemetry(false)
        .with_sdk_version("0.25.0");
        assert_eq!(s.api_key.unwrap().expose(), "tml-explicit");
        assert_eq!(s.base_url, "http://explicit");
        assert_eq!(s.tags, ["x", "y"]);
        assert!(!s.telemetry_enabled);
        assert_eq!(s.sdk_version, "0.25.0");
    }

    #[test]
    fn keys_must_be_api_keys_or_decodable_jwts() {
        let err = Settings::from_env_with(env(&[("TINKER_API_KEY", "sk-openai")])).unwrap_err();
        assert!(
            err.to_string().contains("TINKER_API_KEY") && err.to_string().contains("tml-"),
            "{err}"
        );
        assert!(ApiKey::new("eyJnot-a-jwt").is_err());
        let token = jwt(r#"{"sub": "u", "exp": 2000}"#);
        let key = ApiKey::new(token).unwrap();
        assert!(key.is_jwt());
        assert!(key.check_not_expired(1999.0).is_ok());
        let err = key.check_not_expired(2000.0).unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        assert!(ApiKey::new("tml-x")
            .unwrap()
            .check_not_expired(f64::MAX)
            .is_ok());
        assert!(ApiKey::new(jwt(r#"{"sub": "u"}"#))
            .unwrap()
            .check_not_expired(1e12)
            .is_ok());
    }

    #[test]
    fn secrets_never_appear_in_debug_or_display() {
        let s = Settings::from_env_with(env(&[
            ("TINKER_API_KEY", "tml-supersecretvalue"),
            ("CLOUDFLARE_ACCESS_CLIENT_SECRET", "cfsecretvalue"),
        ]))
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("supersecretvalue"), "{debug}");
        assert!(!debug.contains("cfsecretvalue"), "{debug}");
        let key = s.api_key.unwrap();
        assert_eq!(format!("{key}"), "tml-***");
        assert_eq!(format!("{key:?}"), "ApiKey(tml-***)");
        let jwt_key = ApiKey::new(jwt(r#"{"sub": "secret-subject"}"#)).unwrap();
        assert!(!format!("{jwt_key:?}{jwt_key}").contains("secret"));
    }
}
