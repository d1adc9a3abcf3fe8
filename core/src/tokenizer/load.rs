//! Fetching a tokenizer from the Hub through a runtime's [`AsyncHttp`], with a process-wide
//! cache: each `(endpoint, repository, revision)` is downloaded and parsed once, as the SDK's
//! `lru_cache` does.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::encoding::Tokenizer;
use super::hub::HubSettings;
use super::resolve::TokenizerRef;
use crate::error::{Error, Result, StatusError};
use crate::io::{AsyncHttp, Timeouts};

/// The largest `tokenizer.json` accepted (the biggest public ones are ~30 MB).
pub const MAX_TOKENIZER_JSON_BYTES: usize = 256 << 20;

/// The file read from the repository.
pub const TOKENIZER_FILE: &str = "tokenizer.json";

type CacheKey = (String, TokenizerRef);

static CACHE: Mutex<BTreeMap<CacheKey, Tokenizer>> = Mutex::new(BTreeMap::new());

/// The tokenizer `reference` names, downloaded from `hub` on first use and cached for the
/// process afterwards. Redirects (the Hub sends large files to a CDN) are followed by the
/// transport.
///
/// Errors: a Thinking Machines model → [`Error::Config`] (the SDK has no tokenizer for them
/// either); a non-200 answer → [`Error::Status`] naming the file URL; no answer →
/// [`Error::Transport`]; a file that is not a tokenizer → [`Error::Decode`].
pub async fn fetch_tokenizer(
    http: &dyn AsyncHttp,
    hub: &HubSettings,
    reference: &TokenizerRef,
    timeouts: Timeouts,
) -> Result<Tokenizer> {
    if reference.is_thinking_machines_model() {
        return Err(Error::Config(format!(
            "Thinking Machines models ({}) have no Hugging Face tokenizer; use their renderer package",
            reference.repo_id
        )));
    }
    let key = (hub.endpoint.clone(), reference.clone());
    if let Some(t) = lock().get(&key) {
        return Ok(t.clone());
    }
    let request = hub.file_request(&reference.repo_id, &reference.revision, TOKENIZER_FILE)?;
    let url = request.uri().to_string();
    let transport = |message: String| Error::Transport {
        endpoint: url.clone(),
        message,
        attempts: 1,
    };
    let mut response = http
        .send(request, timeouts)
        .await
        .map_err(|e| transport(e.to_string()))?;
    let mut body = Vec::new();
    while let Some(chunk) = response.body.next_chunk().await {
        let chunk = chunk.map_err(|e| transport(e.to_string()))?;
        if body.len() + chunk.len() > MAX_TOKENIZER_JSON_BYTES {
            return Err(Error::decode(
                format!("{TOKENIZER_FILE} of {}", reference.repo_id),
                format!("larger than {MAX_TOKENIZER_JSON_BYTES} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    let status = response.head.status.as_u16();
    if status != 200 {
        let mut text = String::from_utf8_lossy(&body).into_owned();
        text.truncate(500);
        return Err(Error::Status(Box::new(StatusError {
            status,
            body: text,
            endpoint: url,
            request_id: None,
            server_log_id: None,
            attempts: 1,
        })));
    }
    let tokenizer = Tokenizer::from_json_bytes(&body).map_err(|e| match e {
        Error::Decode { message, .. } => Error::decode(
            format!(
                "{TOKENIZER_FILE} of {}@{}",
                reference.repo_id, reference.revision
            ),
            message,
        ),
        other => other,
    })?;
    // A concurrent loader's tokenizer wins, so every caller shares one.
    Ok(lock().entry(key).or_insert(tokenizer).clone())
}

fn lock() -> std::sync::MutexGuard<'static, BTreeMap<CacheKey, Tokenizer>> {
    CACHE.lock().unwrap_or_else(|p| p.into_inner())
}

/// [`fetch_tokenizer`] as an owned future, for the clients' `get_tokenizer` methods.
pub(crate) fn load_for_client(
    http: std::sync::Arc<dyn AsyncHttp>,
    timeouts: crate::settings::TimeoutSettings,
    hub: HubSettings,
    reference: TokenizerRef,
) -> impl std::future::Future<Output = Result<Tokenizer>> + Send + 'static {
    let timeouts = Timeouts {
        connect: timeouts.connect,
        read: timeouts.read,
    };
    async move { fetch_tokenizer(&*http, &hub, &reference, timeouts).await }
}
