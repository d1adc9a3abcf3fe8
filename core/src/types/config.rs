//! Client configuration the server hands out (`client/config`, `client/dynamic_config`) and the
//! model catalogue (`get_server_capabilities`), protocol.md 6.1.

use serde::{Deserialize, Serialize};

/// Body of `POST /api/v1/client/config` and `POST /api/v1/client/dynamic_config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfigRequest {
    /// The SDK version the client speaks, e.g. `"0.38.0"`.
    pub sdk_version: String,
}

fn yes() -> bool {
    true
}

macro_rules! default_fn {
    ($name:ident, $ty:ty, $value:expr) => {
        fn $name() -> $ty {
            $value
        }
    };
}

default_fn!(default_credential_source, String, "api_key".to_owned());
default_fn!(default_sample_dispatch_bytes, u64, 10 * 1024 * 1024);
default_fn!(default_inflight_response_bytes, u64, 50 * 1024 * 1024);
default_fn!(default_fwdbwd_max_chunk_len, u64, 1024);
default_fn!(default_fwdbwd_max_chunk_bytes, u64, 5_000_000);
default_fn!(default_fwdbwd_dispatch_bytes, u64, 50_000_000);
default_fn!(default_billing_pause, u64, 3600);
default_fn!(default_sample_max_concurrent, u64, 2000);
default_fn!(default_refresh_interval, u64, 300);
default_fn!(default_cancel_batch, u64, 64);

/// Reply of `POST /api/v1/client/config`: every field optional with a default, so `{}` is valid.
///
/// ```
/// use tinker_core::types::ClientConfig;
/// let cfg: ClientConfig = serde_json::from_str(r#"{"pjwt_auth_enabled": true}"#).unwrap();
/// assert!(cfg.pjwt_auth_enabled);
/// assert_eq!(cfg.fwdbwd_max_chunk_len, 1024);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientConfig {
    /// Exchange the credential for a JWT at `auth/token` (2.2).
    #[serde(default)]
    pub pjwt_auth_enabled: bool,
    /// `"api_key"`, or `"credential_cmd"` to use `TINKER_CREDENTIAL_CMD` for the exchange.
    #[serde(default = "default_credential_source")]
    pub credential_default_source: String,
    /// Sampling dispatch byte budget (8.5).
    #[serde(default = "default_sample_dispatch_bytes")]
    pub sample_dispatch_bytes_semaphore_size: u64,
    /// Budget for payloads announced by metadata-only replies (7.4).
    #[serde(default = "default_inflight_response_bytes")]
    pub inflight_response_bytes_semaphore_size: u64,
    /// Submit the chunks of one forward_backward concurrently (11.2).
    #[serde(default = "yes")]
    pub parallel_fwdbwd_chunks: bool,
    /// zstd-compress the forward_backward body (1.3).
    #[serde(default)]
    pub proto_compress_fwdbwd: bool,
    /// Most datums per forward_backward request.
    #[serde(default = "default_fwdbwd_max_chunk_len")]
    pub fwdbwd_max_chunk_len: u64,
    /// Most estimated bytes per forward_backward request.
    #[serde(default = "default_fwdbwd_max_chunk_bytes")]
    pub fwdbwd_max_chunk_bytes_count: u64,
    /// forward_backward dispatch byte budget.
    #[serde(default = "default_fwdbwd_dispatch_bytes")]
    pub fwdbwd_dispatch_bytes_semaphore_size: u64,
    /// How long HTTP 402 replies are waited out, in seconds (8.8).
    #[serde(default = "default_billing_pause")]
    pub billing_exception_max_pause_duration_sec: u64,
    /// Skip the sampling retry handler for `sample()`.
    #[serde(default)]
    pub sample_no_retries: bool,
    /// Sampling retry handler stuck detection on/off.
    #[serde(default = "yes")]
    pub sample_enable_stuck_detection: bool,
    /// Sampling retry handler concurrency per sampling session.
    #[serde(default = "default_sample_max_concurrent")]
    pub sample_max_concurrent_requests: u64,
    /// Python-transport kill switch; carried for completeness, meaningless to tinker-rs.
    #[serde(default = "yes")]
    pub use_pyqwest_transport: bool,
    /// [0.25] Create training clients from a checkpoint with one `load_weights` call.
    #[serde(default)]
    pub create_model_via_load_weights: bool,
    /// [0.38] Use the `retrieve_futures` session poller for samples (7.7).
    #[serde(default)]
    pub sample_use_retrieve_futures: bool,
    /// [0.38] Upload custom losses to the server (11.4).
    #[serde(default)]
    pub custom_loss_server_side: bool,
    /// [0.38] Clones ask `join_sampling_session` for their clone id (3.3).
    #[serde(default)]
    pub sample_join_sampling_session: bool,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("every field has a default"))
    }
}

/// Reply of `POST /api/v1/client/dynamic_config`; every field optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicConfig {
    /// Seconds between refreshes (the client floors it at 10).
    #[serde(default = "default_refresh_interval")]
    pub refresh_interval_sec: u64,
    /// [0.38] Send `cancel_future` for abandoned samples.
    #[serde(default)]
    pub sample_cancel_enabled: bool,
    /// [0.38] Cancels dispatched in parallel per drain.
    #[serde(default = "default_cancel_batch")]
    pub sample_cancel_max_batch_size: u64,
}

impl DynamicConfig {
    /// The refresh period actually used: `max(refresh_interval_sec, 10)` seconds.
    pub fn refresh_period(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.refresh_interval_sec.max(10))
    }
}

impl Default for DynamicConfig {
    fn default() -> DynamicConfig {
        DynamicConfig {
            refresh_interval_sec: default_refresh_interval(),
            sample_cancel_enabled: false,
            sample_cancel_max_batch_size: default_cancel_batch(),
        }
    }
}

/// One model of `GET /api/v1/get_server_capabilities`; every field optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupportedModel {
    /// e.g. `"Qwen/Qwen3-8B"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Longest context in tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_context_length: Option<u64>,
    /// [0.38] Whether training clients can be created for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainable: Option<bool>,
    /// [0.38] Whether sampling clients can be created for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampleable: Option<bool>,
}

/// Reply of `GET /api/v1/get_server_capabilities` (`supported_models` required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerCapabilities {
    /// The models this deployment serves.
    pub supported_models: Vec<SupportedModel>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_client_config_means_every_documented_default() {
        let cfg: ClientConfig = serde_json::from_str("{}").unwrap();
        assert!(!cfg.pjwt_auth_enabled);
        assert_eq!(cfg.credential_default_source, "api_key");
        assert_eq!(cfg.sample_dispatch_bytes_semaphore_size, 10_485_760);
        assert_eq!(cfg.inflight_response_bytes_semaphore_size, 52_428_800);
        assert!(cfg.parallel_fwdbwd_chunks);
        assert!(!cfg.proto_compress_fwdbwd);
        assert_eq!(cfg.fwdbwd_max_chunk_len, 1024);
        assert_eq!(cfg.fwdbwd_max_chunk_bytes_count, 5_000_000);
        assert_eq!(cfg.fwdbwd_dispatch_bytes_semaphore_size, 50_000_000);
        assert_eq!(cfg.billing_exception_max_pause_duration_sec, 3600);
        assert!(!cfg.sample_no_retries);
        assert!(cfg.sample_enable_stuck_detection);
        assert_eq!(cfg.sample_max_concurrent_requests, 2000);
        assert!(cfg.use_pyqwest_transport);
        assert!(!cfg.create_model_via_load_weights);
        assert!(!cfg.sample_use_retrieve_futures);
        assert!(!cfg.custom_loss_server_side);
        assert!(!cfg.sample_join_sampling_session);
        assert_eq!(cfg, ClientConfig::default());
    }

    #[test]
    fn the_captured_config_reply_decodes_and_unknown_flags_are_ignored() {
        let cfg: ClientConfig = serde_json::from_str(
            r#"{"pjwt_auth_enabled": true, "proto_compress_fwdbwd": true, "sample_use_retrieve_futures": true,
                "sample_join_sampling_session": true, "use_pyqwest_transport": true, "brand_new_flag": 7}"#,
        )
        .unwrap();
        assert!(cfg.pjwt_auth_enabled && cfg.proto_compress_fwdbwd);
        assert!(cfg.sample_use_retrieve_futures && cfg.sample_join_sampling_session);
    }

    #[test]
    fn a_wrongly_typed_flag_is_a_decode_error_naming_it() {
        let err = serde_json::from_str::<ClientConfig>(r#"{"fwdbwd_max_chunk_len": "big"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid type"), "{err}");
    }

    #[test]
    fn dynamic_config_defaults_and_refresh_floor() {
        let d: DynamicConfig = serde_json::from_str(r#"{"refresh_interval_sec": 3}"#).unwrap();
        assert_eq!(d.refresh_period(), std::time::Duration::from_secs(10));
        assert!(!d.sample_cancel_enabled);
        assert_eq!(d.sample_cancel_max_batch_size, 64);
        let d: DynamicConfig =
            serde_json::from_str(r#"{"refresh_interval_sec": 300, "sample_cancel_enabled": true}"#)
                .unwrap();
        assert!(d.sample_cancel_enabled);
        assert_eq!(DynamicConfig::default().refresh_interval_sec, 300);
    }

    #[test]
    fn capabilities_require_the_model_list_but_not_its_fields() {
        let caps: ServerCapabilities = serde_json::from_str(
            r#"{"supported_models": [{"model_name": "Qwen/Qwen3-8B", "max_context_length": 32768, "trainable": true, "sampleable": true}, {}]}"#,
        )
        .unwrap();
        assert_eq!(caps.supported_models.len(), 2);
        assert_eq!(caps.supported_models[0].max_context_length, Some(32768));
        assert_eq!(
            caps.supported_models[1],
            SupportedModel {
                model_name: None,
                max_context_length: None,
                trainable: None,
                sampleable: None
            }
        );
        let err = serde_json::from_str::<ServerCapabilities>("{}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("supported_models"), "{err}");
    }
}
