//! How a local server behaves: flags it hands to clients, timings, faults, recording.
//!
//! Every field has a default, so `LocalServerConfig::default()` is a working server and a JSON
//! config file (`tinker-local-server --config flags.json`) only names what it changes:
//!
//! ```json
//! {"client_config": {"pjwt_auth_enabled": true, "proto_compress_fwdbwd": true,
//!                    "sample_use_retrieve_futures": true, "sample_join_sampling_session": true},
//!  "long_poll_hold_ms": 200,
//!  "faults": [{"endpoint": "asample", "count": 2, "fault": {"kind": "status", "status": 503}}]}
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tinker_core::types::{ClientConfig, DynamicConfig, SupportedModel};

use super::faults::FaultRule;

/// Configuration of a [`LocalServer`](super::LocalServer). Unknown keys in a config file are an
/// error, so a typo does not silently fall back to a default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalServerConfig {
    /// TCP port on 127.0.0.1; 0 picks a free one.
    pub port: u16,
    /// Seed of everything random the server decides (sampling seeds when the request has none,
    /// LoRA init when `lora_config.seed` is absent, probabilistic faults).
    pub seed: u64,
    /// API keys the server accepts. Empty (the default): any key starting with `tml-`.
    pub api_keys: Vec<String>,
    /// The reply of `POST /client/config` (JWT auth, zstd bodies, retrieve_futures, …). Changeable
    /// at run time with `POST /_admin/config`.
    pub client_config: ClientConfig,
    /// The reply of `POST /client/dynamic_config`.
    pub dynamic_config: DynamicConfig,
    /// Lifetime of the JWTs `POST /auth/token` issues, in seconds.
    pub jwt_lifetime_secs: u64,
    /// A session whose last heartbeat (or creation) is older than this is expired: its requests
    /// fail with 410 and a `detail` saying so. `null` = sessions never expire.
    pub session_timeout_secs: Option<f64>,
    /// How long `retrieve_future` holds a poll whose result is not ready before answering
    /// `try_again` (the real service long-polls; the SDK re-polls at once).
    pub long_poll_hold_ms: u64,
    /// How long a `retrieve_futures` long poll waits for a completion.
    pub retrieve_futures_hold_ms: u64,
    /// Answer `try_again` to the first N polls of every future even when the result is ready
    /// (deterministic long-poll tests; the captures were made with N = 1).
    pub try_again_polls: u32,
    /// `queue_state` of try-again replies.
    pub queue_state: String,
    /// With `allow_metadata_only: true`, results larger than this many bytes are first answered
    /// `{"status": "complete_metadata", ...}`. `null` = never.
    pub metadata_only_threshold: Option<usize>,
    /// Finished futures are forgotten this long after they finish (sooner when a
    /// `retrieve_futures` poll acknowledges them); polling them later answers 404.
    pub future_ttl_secs: u64,
    /// A training run's request with seq n waits for n−1; after this long without the missing
    /// request, the run skips the gap. `null` = wait forever.
    pub seq_gap_timeout_ms: Option<u64>,
    /// The 0.25 archive URL answers 503 ("still building") for this long after its first request.
    pub archive_build_ms: u64,
    /// The archive URL answers 302 + `Location` (true) or 200 JSON `{url, expires}` (false).
    pub archive_redirect: bool,
    /// Size of a `padding.bin` member added to every checkpoint archive (0 = none), so downloads
    /// of any size (e.g. 200 MB) can be tested; the archive is streamed, never held in memory.
    pub archive_padding_bytes: u64,
    /// Vocabulary size of the toy models.
    pub vocab_size: usize,
    /// The models `get_server_capabilities` lists; `create_model` needs a `trainable` one,
    /// sampling a `sampleable` one.
    pub models: Vec<SupportedModel>,
    /// Fault rules active from the start (more through `POST /_admin/faults`).
    pub faults: Vec<FaultRule>,
    /// Also append every recorded exchange to this JSONL file.
    pub record_path: Option<PathBuf>,
    /// Keep at most this many exchanges in memory (oldest dropped first).
    pub record_limit: usize,
    /// Model computations run at once (0 = the machine's parallelism).
    pub model_workers: usize,
    /// The user every credential belongs to (`sub` claim, `model_owner`).
    pub user_urn: String,
    /// `org_id` claim.
    pub org_id: String,
    /// `email` claim.
    pub email: String,
}

impl Default for LocalServerConfig {
    fn default() -> LocalServerConfig {
        LocalServerConfig {
            port: 0,
            seed: 0,
            api_keys: Vec::new(),
            client_config: ClientConfig::default(),
            dynamic_config: DynamicConfig::default(),
            jwt_lifetime_secs: 3600,
            session_timeout_secs: Some(120.0),
            long_poll_hold_ms: 1000,
            retrieve_futures_hold_ms: 1000,
            try_again_polls: 0,
            queue_state: "active".into(),
            metadata_only_threshold: Some(1 << 20),
            future_ttl_secs: 3600,
            seq_gap_timeout_ms: Some(30_000),
            archive_build_ms: 0,
            archive_redirect: true,
            archive_padding_bytes: 0,
            vocab_size: crate::model::DEFAULT_VOCAB_SIZE,
            models: default_models(),
            faults: Vec::new(),
            record_path: None,
            record_limit: 100_000,
            model_workers: 0,
            user_urn: "tml:org_user:local-user".into(),
            org_id: "org-local".into(),
            email: "dev@localhost".into(),
        }
    }
}

fn default_models() -> Vec<SupportedModel> {
    let model = |name: &str, ctx: u64, trainable: bool| SupportedModel {
        model_name: Some(name.into()),
        max_context_length: Some(ctx),
        trainable: Some(trainable),
        sampleable: Some(true),
    };
    vec![
        model("Qwen/Qwen3-8B", 32_768, true),
        model("meta-llama/Llama-3.2-1B", 131_072, true),
        model("Qwen/Qwen3-235B-A22B-Instruct-2507", 32_768, false),
    ]
}

impl LocalServerConfig {
    /// The config with every flag the 0.38 SDK knows turned on: JWT auth, zstd forward_backward
    /// bodies, the retrieve_futures poller and join_sampling_session.
    pub fn all_flags() -> LocalServerConfig {
        let mut cfg = LocalServerConfig::default();
        cfg.client_config.pjwt_auth_enabled = true;
        cfg.client_config.proto_compress_fwdbwd = true;
        cfg.client_config.sample_use_retrieve_futures = true;
        cfg.client_config.sample_join_sampling_session = true;
        cfg
    }

    /// Reads a JSON config file.
    pub fn from_json(text: &str) -> Result<LocalServerConfig, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub(crate) fn long_poll_hold(&self) -> Duration {
        Duration::from_millis(self.long_poll_hold_ms)
    }

    pub(crate) fn session_timeout(&self) -> Option<Duration> {
        self.session_timeout_secs
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
    }

    pub(crate) fn model(&self, name: &str) -> Option<&SupportedModel> {
        self.models
            .iter()
            .find(|m| m.model_name.as_deref() == Some(name))
    }
}
