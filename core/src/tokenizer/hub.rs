//! Where tokenizer files come from: the Hugging Face Hub's file URLs and its settings.
//!
//! Only the request is built here; the client sends it (see [`crate::client`]'s
//! `get_tokenizer`). The base URL is configurable exactly as `huggingface_hub` does it
//! (`HF_ENDPOINT`), so tests point it at the local server's Hub stand-in.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::settings::Secret;

/// The public Hub.
pub const DEFAULT_HUB_ENDPOINT: &str = "https://huggingface.co";

/// How to reach the Hugging Face Hub: its base URL and an optional access token.
///
/// ```
/// use tinker_core::tokenizer::HubSettings;
///
/// let env = |k: &str| match k {
///     "HF_ENDPOINT" => Some("http://127.0.0.1:8080/_hub/".to_owned()),
///     "HF_TOKEN" => Some("hf_secret".to_owned()),
///     _ => None,
/// };
/// let hub = HubSettings::from_env_with(env);
/// assert_eq!(hub.endpoint, "http://127.0.0.1:8080/_hub");
/// assert_eq!(
///     hub.file_url("Qwen/Qwen3-8B", "main", "tokenizer.json"),
///     "http://127.0.0.1:8080/_hub/Qwen/Qwen3-8B/resolve/main/tokenizer.json"
/// );
/// assert!(!format!("{hub:?}").contains("hf_secret"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HubSettings {
    /// Base URL without a trailing `/` (`HF_ENDPOINT`, default [`DEFAULT_HUB_ENDPOINT`]).
    pub endpoint: String,
    /// Bearer token sent with every Hub request (`HF_TOKEN`, then `HUGGING_FACE_HUB_TOKEN`).
    pub token: Option<Secret>,
}

impl Default for HubSettings {
    fn default() -> HubSettings {
        HubSettings {
            endpoint: DEFAULT_HUB_ENDPOINT.to_owned(),
            token: None,
        }
    }
}

impl HubSettings {
    /// Reads `HF_ENDPOINT`, `HF_TOKEN` and `HUGGING_FACE_HUB_TOKEN` from the process environment.
    /// (Token files are read by the runtime crates, which may do I/O.)
    pub fn from_env() -> HubSettings {
        HubSettings::from_env_with(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `env` (a lookup returning `None` for unset variables). Blank
    /// values count as unset; the first non-blank token wins.
    pub fn from_env_with(env: impl Fn(&str) -> Option<String>) -> HubSettings {
        let var = |k: &str| {
            env(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let mut hub = HubSettings::default();
        if let Some(endpoint) = var("HF_ENDPOINT") {
            hub = hub.with_endpoint(&endpoint);
        }
        hub.token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .map(Secret::new);
        hub
    }

    /// Sets the base URL (a trailing `/` is removed).
    pub fn with_endpoint(mut self, endpoint: &str) -> HubSettings {
        self.endpoint = endpoint.trim_end_matches('/').to_owned();
        self
    }

    /// Sets the access token.
    pub fn with_token(mut self, token: impl Into<String>) -> HubSettings {
        self.token = Some(Secret::new(token));
        self
    }

    /// The download URL of one file of a model repository,
    /// `<endpoint>/<repo>/resolve/<revision>/<filename>` (the revision percent-encoded, so
    /// `refs/pr/1` stays one path segment).
    pub fn file_url(&self, repo_id: &str, revision: &str, filename: &str) -> String {
        format!(
            "{}/{}/resolve/{}/{}",
            self.endpoint,
            repo_id,
            encode_segment(revision),
            filename
        )
    }

    /// A `GET` of one repository file, carrying the token when there is one.
    pub fn file_request(
        &self,
        repo_id: &str,
        revision: &str,
        filename: &str,
    ) -> Result<http::Request<Bytes>> {
        let url = self.file_url(repo_id, revision, filename);
        let mut request = http::Request::get(&url).header(http::header::USER_AGENT, user_agent());
        if let Some(token) = &self.token {
            request = request.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", token.expose()),
            );
        }
        request.body(Bytes::new()).map_err(|e| {
            Error::Config(format!(
                "invalid Hugging Face Hub URL {url:?} (check HF_ENDPOINT): {e}"
            ))
        })
    }
}

/// The `User-Agent` of Hub requests.
pub fn user_agent() -> String {
    format!("tinker-rs/{}", env!("CARGO_PKG_VERSION"))
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for one path segment.
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_to_the_public_hub_without_a_token() {
        let hub = HubSettings::from_env_with(|_| None);
        assert_eq!(hub, HubSettings::default());
        assert_eq!(hub.endpoint, "https://huggingface.co");
        let request = hub
            .file_request("Qwen/Qwen3-8B", "refs/pr/1", "tokenizer.json")
            .unwrap();
        assert_eq!(
            request.uri(),
            "https://huggingface.co/Qwen/Qwen3-8B/resolve/refs%2Fpr%2F1/tokenizer.json"
        );
        assert!(request.headers().get("authorization").is_none());
    }

    #[test]
    fn the_first_non_blank_token_is_sent_as_a_bearer_token() {
        let env = |k: &str| match k {
            "HF_TOKEN" => Some("  ".to_owned()),
            "HUGGING_FACE_HUB_TOKEN" => Some("hf_legacy".to_owned()),
            "HF_ENDPOINT" => Some(String::new()),
            _ => None,
        };
        let hub = HubSettings::from_env_with(env);
        assert_eq!(
            hub.endpoint, DEFAULT_HUB_ENDPOINT,
            "a blank endpoint is unset"
        );
        let request = hub.file_request("a/b", "main", "tokenizer.json").unwrap();
        assert_eq!(request.headers()["authorization"], "Bearer hf_legacy");
    }

    #[test]
    fn a_malformed_endpoint_is_a_configuration_error() {
        let hub = HubSettings::default().with_endpoint("not a url");
        let err = hub
            .file_request("a/b", "main", "tokenizer.json")
            .unwrap_err();
        assert!(err.to_string().contains("HF_ENDPOINT"), "{err}");
    }
}
