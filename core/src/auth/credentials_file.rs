//! The stored-credentials file of the 0.38 CLI, `~/.tinker/credentials.json` (protocol.md 14):
//! parsed and written here, read and written on disk by the adapters (the core does no I/O).
//!
//! Format: `{"version": 1, "default": "<key_id>" | null, "keys": {"<key_id>": {"type":
//! "manual" | "generated", "key": "tml-…", "name": "…", "note"?: "…", "details"?: {…}}}}`.
//! Fields this crate does not know are kept, so rewriting a file written by the official CLI
//! loses nothing.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::types::ApiKeyInfo;

/// Where the file lives, relative to the user's home folder.
pub const CREDENTIALS_FILE: &str = ".tinker/credentials.json";

/// The only format version there is.
const VERSION: u32 = 1;

/// The parsed `credentials.json`.
///
/// ```
/// use tinker_core::auth::{CredentialsFile, StoredKey};
/// use tinker_core::types::ApiKeyInfo;
///
/// let info: ApiKeyInfo = serde_json::from_str(r#"{"key_id": 7, "name": "laptop"}"#).unwrap();
/// let mut file = CredentialsFile::default();
/// file.store_default_as(info.key_id.to_string(), StoredKey::manual("tml-abc", &info));
/// let text = file.to_json();
/// let again = CredentialsFile::parse(&text).unwrap();
/// assert_eq!(again.default_key().map(|k| k.key.as_str()), Some("tml-abc"));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CredentialsFile {
    /// Format version (1).
    pub version: u32,
    /// The key id used when no other credential is configured.
    #[serde(default)]
    pub default: Option<String>,
    /// The stored keys by key id.
    #[serde(default)]
    pub keys: BTreeMap<String, StoredKey>,
}

impl Default for CredentialsFile {
    fn default() -> CredentialsFile {
        CredentialsFile {
            version: VERSION,
            default: None,
            keys: BTreeMap::new(),
        }
    }
}

/// How a stored key came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredKeyKind {
    /// Pasted by the user (`tinker auth login`); logging out only forgets it.
    Manual,
    /// Created by an older CLI's browser login; logging out also revokes it on the server.
    Generated,
}

/// One stored key. `Debug` never shows the key.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredKey {
    /// Manual or generated.
    #[serde(rename = "type")]
    pub kind: StoredKeyKind,
    /// The API key itself.
    pub key: String,
    /// The key's name on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The key's note on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// `{"org_details": {"name"}, "user_details": {"email"}}` as the server reported them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Value>,
    /// Fields of other CLI versions, kept as they were.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredKey")
            .field("kind", &self.kind)
            .field("key", &"***")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl StoredKey {
    /// A key the user typed in, described by what `GET /auth/apikey/me` said about it.
    pub fn manual(key: impl Into<String>, info: &ApiKeyInfo) -> StoredKey {
        let details = serde_json::to_value(&info.details).ok();
        StoredKey {
            kind: StoredKeyKind::Manual,
            key: key.into(),
            name: Some(info.name.clone()),
            note: Some(info.note.clone()).filter(|n| !n.is_empty()),
            details,
            extra: Map::new(),
        }
    }

    /// The owner's e-mail, when the server reported it.
    pub fn email(&self) -> Option<&str> {
        self.details.as_ref()?["user_details"]["email"].as_str()
    }

    /// The owner's organization, when the server reported it.
    pub fn organization(&self) -> Option<&str> {
        self.details.as_ref()?["org_details"]["name"].as_str()
    }
}

impl CredentialsFile {
    /// Parses the file's text.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming `credentials.json` and what is wrong (malformed JSON, a missing
    /// field, an unknown version, a default that names no stored key).
    pub fn parse(text: &str) -> Result<CredentialsFile> {
        let file: CredentialsFile = serde_json::from_str(text)
            .map_err(|e| Error::Config(format!("{CREDENTIALS_FILE}: {e}")))?;
        if file.version != VERSION {
            return Err(Error::Config(format!(
                "{CREDENTIALS_FILE}: unsupported version {} (this SDK reads version {VERSION})",
                file.version
            )));
        }
        if let Some(id) = &file.default {
            if !file.keys.contains_key(id) {
                return Err(Error::Config(format!(
                    "{CREDENTIALS_FILE}.default: {id:?} names no stored key"
                )));
            }
        }
        Ok(file)
    }

    /// The file's text (pretty JSON with a final newline).
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string_pretty(self).unwrap_or_default();
        text.push('\n');
        text
    }

    /// The default key id and its record, if a default is set.
    pub fn default_entry(&self) -> Option<(&str, &StoredKey)> {
        let id = self.default.as_deref()?;
        self.keys.get(id).map(|k| (id, k))
    }

    /// The default key's record, if a default is set.
    pub fn default_key(&self) -> Option<&StoredKey> {
        self.default_entry().map(|(_, k)| k)
    }

    /// Stores `key` under `key_id` (the server's key id) and makes it the default; a record with
    /// the same id is replaced.
    pub fn store_default_as(&mut self, key_id: impl Into<String>, key: StoredKey) {
        let id = key_id.into();
        self.keys.insert(id.clone(), key);
        self.default = Some(id);
    }

    /// Removes a stored key (and the default when it named that key).
    pub fn remove(&mut self, key_id: &str) -> Option<StoredKey> {
        if self.default.as_deref() == Some(key_id) {
            self.default = None;
        }
        self.keys.remove(key_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn info() -> ApiKeyInfo {
        serde_json::from_value(json!({"key_id": 42, "name": "laptop", "note": "",
            "details": {"org_details": {"name": "acme"}, "user_details": {"email": "a@acme.test"}}}))
        .unwrap()
    }

    #[test]
    fn a_login_record_round_trips_in_the_cli_format() {
        let mut file = CredentialsFile::default();
        file.store_default_as("42", StoredKey::manual("tml-secret", &info()));
        let text = file.to_json();
        let doc: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            doc,
            json!({"version": 1, "default": "42", "keys": {"42": {"type": "manual",
                "key": "tml-secret", "name": "laptop",
                "details": {"org_details": {"name": "acme"}, "user_details": {"email": "a@acme.test"}}}}})
        );
        let again = CredentialsFile::parse(&text).unwrap();
        let key = again.default_key().unwrap();
        assert_eq!(
            (key.email(), key.organization()),
            (Some("a@acme.test"), Some("acme"))
        );
        assert!(!format!("{key:?}").contains("tml-secret"));
    }

    #[test]
    fn unknown_fields_of_other_cli_versions_survive_a_rewrite() {
        let text = r#"{"version": 1, "default": "g", "keys": {"g": {"type": "generated",
            "key": "tml-gen", "created_at": "2026-01-01T00:00:00Z"}}, "x": 1}"#;
        let mut file = CredentialsFile::parse(text).unwrap();
        assert_eq!(file.default_key().unwrap().kind, StoredKeyKind::Generated);
        file.store_default_as("42", StoredKey::manual("tml-new", &info()));
        let again = CredentialsFile::parse(&file.to_json()).unwrap();
        assert_eq!(
            again.keys["g"].extra["created_at"],
            json!("2026-01-01T00:00:00Z")
        );
        assert_eq!(again.default.as_deref(), Some("42"));
    }

    #[test]
    fn malformed_files_are_config_errors_naming_the_problem() {
        let cases = [
            ("{", "credentials.json"),
            (r#"{"version": 2, "keys": {}}"#, "unsupported version 2"),
            (
                r#"{"version": 1, "default": "nope", "keys": {}}"#,
                "default",
            ),
            (
                r#"{"version": 1, "keys": {"a": {"type": "manual"}}}"#,
                "missing field `key`",
            ),
        ];
        for (text, needle) in cases {
            let err = CredentialsFile::parse(text).unwrap_err();
            assert!(
                matches!(&err, Error::Config(m) if m.contains(needle)),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn removing_the_default_key_leaves_no_default() {
        let mut file = CredentialsFile::default();
        file.store_default_as("42", StoredKey::manual("tml-a", &info()));
        assert!(file.remove("42").is_some());
        assert_eq!(file.default, None);
        assert!(file.default_key().is_none());
    }
}
