//! Training-run bodies: LoRA and optimizer configuration, `create_model`, `get_info`, `optim_step`,
//! `unload_model` (protocol.md 6.3.1-6.3.4, 6.3.11, 9.8).

use serde::{Deserialize, Serialize};

use super::common::{check_finite, check_non_empty, type_tag, Metadata};
use crate::error::{Error, Result};

fn yes() -> bool {
    true
}

/// LoRA adapter settings of a new training run.
///
/// ```
/// use tinker_core::types::LoraConfig;
/// let lora = LoraConfig::new(8).with_seed(7);
/// assert_eq!(
///     serde_json::to_string(&lora).unwrap(),
///     r#"{"rank":8,"seed":7,"train_unembed":true,"train_mlp":true,"train_attn":true}"#
/// );
/// assert!(LoraConfig::new(0).validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoraConfig {
    /// Adapter rank (> 0). The SDK's default is 32.
    pub rank: u32,
    /// Initialisation seed; omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Train the unembedding.
    #[serde(default = "yes")]
    pub train_unembed: bool,
    /// Train MLP blocks.
    #[serde(default = "yes")]
    pub train_mlp: bool,
    /// Train attention blocks.
    #[serde(default = "yes")]
    pub train_attn: bool,
}

impl Default for LoraConfig {
    fn default() -> LoraConfig {
        LoraConfig::new(LoraConfig::DEFAULT_RANK)
    }
}

impl LoraConfig {
    /// The SDK's default rank.
    pub const DEFAULT_RANK: u32 = 32;

    /// A config of the given rank training everything, with no seed.
    pub fn new(rank: u32) -> LoraConfig {
        LoraConfig {
            rank,
            seed: None,
            train_unembed: true,
            train_mlp: true,
            train_attn: true,
        }
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: i64) -> LoraConfig {
        self.seed = Some(seed);
        self
    }

    /// Checks rank > 0 and that at least one part is trained.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::invalid(
                "lora_config.rank",
                "the LoRA rank must be positive",
            ));
        }
        if !(self.train_unembed || self.train_mlp || self.train_attn) {
            return Err(Error::invalid(
                "lora_config",
                "at least one of train_unembed, train_mlp, train_attn must be true",
            ));
        }
        Ok(())
    }
}

/// [0.38] The optimizer family of a training run, chosen at creation (`optimizer_config`).
///
/// Tagged by `type`; unknown families are passed through unchanged (forward compatibility).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum OptimizerConfig {
    /// `{"type": "adamw"}` — the default.
    #[default]
    AdamW,
    /// `{"type": "dimuon", "version": n}`.
    Dimuon {
        /// Algorithm version (1 today).
        version: u32,
    },
    /// Any other `{"type": ..., ...}` object, kept verbatim.
    Other(serde_json::Map<String, serde_json::Value>),
}

impl OptimizerConfig {
    /// The `type` name.
    pub fn type_name(&self) -> &str {
        match self {
            OptimizerConfig::AdamW => "adamw",
            OptimizerConfig::Dimuon { .. } => "dimuon",
            OptimizerConfig::Other(m) => m.get("type").and_then(|t| t.as_str()).unwrap_or(""),
        }
    }
}

impl Serialize for OptimizerConfig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            OptimizerConfig::AdamW => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("type", "adamw")?;
                m.end()
            }
            OptimizerConfig::Dimuon { version } => {
                let mut m = s.serialize_map(Some(2))?;
                m.serialize_entry("type", "dimuon")?;
                m.serialize_entry("version", version)?;
                m.end()
            }
            OptimizerConfig::Other(map) => map.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for OptimizerConfig {
    fn deserialize<D: serde::Deserializer<'de>>(
        d: D,
    ) -> std::result::Result<OptimizerConfig, D::Error> {
        use serde::de::Error as _;
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(d)?;
        let kind = map
            .get("type")
            .ok_or_else(|| D::Error::missing_field("type"))?
            .as_str()
            .ok_or_else(|| D::Error::custom("optimizer_config.type must be a string"))?;
        match kind {
            "adamw" => Ok(OptimizerConfig::AdamW),
            "dimuon" => {
                let version = match map.get("version") {
                    None => 1,
                    Some(v) => v
                        .as_u64()
                        .and_then(|v| u32::try_from(v).ok())
                        .ok_or_else(|| {
                            D::Error::custom(
                                "optimizer_config.version must be a small non-negative integer",
                            )
                        })?,
                };
                Ok(OptimizerConfig::Dimuon { version })
            }
            _ => Ok(OptimizerConfig::Other(map)),
        }
    }
}

/// Adam(W) step parameters (`adam_params`); every field is always sent.
///
/// ```
/// use tinker_core::types::AdamParams;
/// let p = AdamParams::default();
/// assert_eq!(
///     serde_json::to_string(&p).unwrap(),
///     r#"{"learning_rate":0.0001,"beta1":0.9,"beta2":0.95,"eps":1e-12,"weight_decay":0.0,"grad_clip_norm":0.0}"#
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamParams {
    /// Step size (default 1e-4).
    #[serde(default = "AdamParams::default_lr")]
    pub learning_rate: f64,
    /// First-moment decay (default 0.9).
    #[serde(default = "AdamParams::default_beta1")]
    pub beta1: f64,
    /// Second-moment decay (default 0.95).
    #[serde(default = "AdamParams::default_beta2")]
    pub beta2: f64,
    /// Numerical epsilon (default 1e-12).
    #[serde(default = "AdamParams::default_eps")]
    pub eps: f64,
    /// Decoupled weight decay (default 0).
    #[serde(default)]
    pub weight_decay: f64,
    /// Gradient clipping norm, 0 = none (default 0).
    #[serde(default)]
    pub grad_clip_norm: f64,
}

impl AdamParams {
    fn default_lr() -> f64 {
        1e-4
    }
    fn default_beta1() -> f64 {
        0.9
    }
    fn default_beta2() -> f64 {
        0.95
    }
    fn default_eps() -> f64 {
        1e-12
    }

    /// Defaults with the given learning rate.
    pub fn with_learning_rate(learning_rate: f64) -> AdamParams {
        AdamParams {
            learning_rate,
            ..AdamParams::default()
        }
    }

    /// Checks every value is finite, the learning rate is non-negative and the betas are in [0, 1).
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("adam_params.learning_rate", self.learning_rate),
            ("adam_params.beta1", self.beta1),
            ("adam_params.beta2", self.beta2),
            ("adam_params.eps", self.eps),
            ("adam_params.weight_decay", self.weight_decay),
            ("adam_params.grad_clip_norm", self.grad_clip_norm),
        ];
        for (loc, v) in fields {
            check_finite(loc, v)?;
        }
        if self.learning_rate < 0.0 {
            return Err(Error::invalid(
                "adam_params.learning_rate",
                "must not be negative",
            ));
        }
        for (loc, b) in [
            ("adam_params.beta1", self.beta1),
            ("adam_params.beta2", self.beta2),
        ] {
            if !(0.0..1.0).contains(&b) {
                return Err(Error::invalid(loc, format!("must be in [0, 1), got {b}")));
            }
        }
        Ok(())
    }
}

impl Default for AdamParams {
    fn default() -> AdamParams {
        AdamParams {
            learning_rate: AdamParams::default_lr(),
            beta1: AdamParams::default_beta1(),
            beta2: AdamParams::default_beta2(),
            eps: AdamParams::default_eps(),
            weight_decay: 0.0,
            grad_clip_norm: 0.0,
        }
    }
}

/// [0.38] Dimuon step parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DimuonParams {
    /// Step size (required, ≥ 0).
    pub learning_rate: f64,
    /// Gradient clipping norm; ≤ 0 disables (default 0).
    #[serde(default)]
    pub grad_clip_norm: f64,
    /// Momentum in [0, 1) (default 0.9).
    #[serde(default = "AdamParams::default_beta1")]
    pub beta1: f64,
}

impl DimuonParams {
    /// Defaults with the given learning rate.
    pub fn new(learning_rate: f64) -> DimuonParams {
        DimuonParams {
            learning_rate,
            grad_clip_norm: 0.0,
            beta1: 0.9,
        }
    }

    /// The SDK's client-side checks: finite values, learning rate ≥ 0, beta1 in [0, 1).
    pub fn validate(&self) -> Result<()> {
        check_finite("optimizer_params.learning_rate", self.learning_rate)?;
        check_finite("optimizer_params.grad_clip_norm", self.grad_clip_norm)?;
        check_finite("optimizer_params.beta1", self.beta1)?;
        if self.learning_rate < 0.0 {
            return Err(Error::invalid(
                "optimizer_params.learning_rate",
                "must not be negative",
            ));
        }
        if !(0.0..1.0).contains(&self.beta1) {
            return Err(Error::invalid(
                "optimizer_params.beta1",
                format!("must be in [0, 1), got {}", self.beta1),
            ));
        }
        Ok(())
    }
}

/// [0.38] Non-Adam step parameters (`optimizer_params`), tagged by `type`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OptimizerParams {
    /// `{"type": "dimuon", ...}`.
    Dimuon(DimuonParams),
}

/// The step parameters of an `optim_step`: Adam goes under `adam_params`, anything else under
/// `optimizer_params` (0.25 only knows Adam).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StepParams {
    /// Adam(W).
    Adam(AdamParams),
    /// [0.38] A non-Adam family.
    Other(OptimizerParams),
}

impl From<AdamParams> for StepParams {
    fn from(params: AdamParams) -> StepParams {
        StepParams::Adam(params)
    }
}

impl From<OptimizerParams> for StepParams {
    fn from(params: OptimizerParams) -> StepParams {
        StepParams::Other(params)
    }
}

type_tag!(
    /// The `"type": "create_model"` tag.
    CreateModelTag = CreateModel "create_model"
);
type_tag!(
    /// The `"type": "get_info"` tag.
    GetInfoTag = GetInfo "get_info"
);
type_tag!(
    /// The `"type": "optim_step"` tag.
    OptimStepTag = OptimStep "optim_step"
);
type_tag!(
    /// The `"type": "unload_model"` tag.
    UnloadModelTag = UnloadModel "unload_model"
);

/// Body of `POST /api/v1/create_model` (a future whose result is [`CreateModelResponse`]).
///
/// ```
/// use tinker_core::types::{CreateModelRequest, LoraConfig};
/// let req = CreateModelRequest::new("sess-0001", 0, "Qwen/Qwen3-8B", LoraConfig::new(8).with_seed(7));
/// let json = serde_json::to_value(&req).unwrap();
/// assert_eq!(json["optimizer_config"], serde_json::json!({"type": "adamw"}));
/// assert_eq!(json["type"], "create_model");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateModelRequest {
    /// The session creating the run.
    pub session_id: String,
    /// The session's training-client counter value for this run.
    pub model_seq_id: u64,
    /// Base model name.
    pub base_model: String,
    /// Run metadata; omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Metadata>,
    /// LoRA settings (the SDK always sends one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_config: Option<LoraConfig>,
    /// [0.38] Optimizer family; always sent by 0.38 (`None` only to reproduce a 0.25 body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_config: Option<OptimizerConfig>,
    /// Constant `"create_model"`.
    #[serde(rename = "type")]
    pub kind: CreateModelTag,
}

impl CreateModelRequest {
    /// A 0.38 create_model body with the default (AdamW) optimizer.
    pub fn new(
        session_id: impl Into<String>,
        model_seq_id: u64,
        base_model: impl Into<String>,
        lora_config: LoraConfig,
    ) -> CreateModelRequest {
        CreateModelRequest {
            session_id: session_id.into(),
            model_seq_id,
            base_model: base_model.into(),
            user_metadata: None,
            lora_config: Some(lora_config),
            optimizer_config: Some(OptimizerConfig::AdamW),
            kind: CreateModelTag::CreateModel,
        }
    }

    /// The same request as SDK 0.25 sent it (no `optimizer_config`).
    pub fn as_sdk_025(mut self) -> CreateModelRequest {
        self.optimizer_config = None;
        self
    }

    /// Checks the base model is named and the LoRA config is valid.
    pub fn validate(&self) -> Result<()> {
        check_non_empty("base_model", &self.base_model)?;
        if let Some(lora) = &self.lora_config {
            lora.validate()?;
        }
        Ok(())
    }
}

/// Future result of `create_model`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateModelResponse {
    /// The training run's id, `"<session_id>:train:<n>"`.
    pub model_id: String,
    /// `"create_model"` when present.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Body of `POST /api/v1/get_info` (direct).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetInfoRequest {
    /// The training run.
    pub model_id: String,
    /// Constant `"get_info"`.
    #[serde(rename = "type")]
    pub kind: GetInfoTag,
}

impl GetInfoRequest {
    /// A get_info body.
    pub fn new(model_id: impl Into<String>) -> GetInfoRequest {
        GetInfoRequest {
            model_id: model_id.into(),
            kind: GetInfoTag::GetInfo,
        }
    }
}

/// `model_data` of [`GetInfoResponse`]; every field optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ModelData {
    /// Architecture name, e.g. `"qwen3"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Model name (required by `get_tokenizer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// Tokenizer id, possibly with a `:revision` suffix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokenizer_id: Option<String>,
}

impl ModelData {
    /// The tokenizer id with anything after the first `:` (a revision suffix) removed, as the SDK
    /// does before loading it.
    pub fn tokenizer_name(&self) -> Option<&str> {
        self.tokenizer_id
            .as_deref()
            .map(|t| t.split(':').next().unwrap_or(t))
    }
}

/// Reply of `get_info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GetInfoResponse {
    /// Model description (required).
    pub model_data: ModelData,
    /// The training run (required).
    pub model_id: String,
    /// `"get_info"` when present.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Whether the run trains a LoRA adapter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub is_lora: Option<bool>,
    /// The adapter rank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_rank: Option<u32>,
    /// The base model's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// [0.38] The run's optimizer family (AdamW when absent).
    #[serde(default)]
    pub optimizer_config: OptimizerConfig,
}

/// Body of `POST /api/v1/optim_step` (a future whose result is [`OptimStepResponse`]).
///
/// ```
/// use tinker_core::types::{AdamParams, OptimStepRequest, StepParams};
/// let req = OptimStepRequest::new("s:train:0", 2, StepParams::Adam(AdamParams::default()));
/// let json = serde_json::to_value(&req).unwrap();
/// assert_eq!(json["adam_params"]["beta2"], 0.95);
/// assert!(json.get("optimizer_params").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimStepRequest {
    /// The training run.
    pub model_id: String,
    /// The request's place in the run's order (always sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_id: Option<u64>,
    /// Adam parameters, when the run uses Adam.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adam_params: Option<AdamParams>,
    /// [0.38] Non-Adam parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_params: Option<OptimizerParams>,
    /// Constant `"optim_step"`.
    #[serde(rename = "type")]
    pub kind: OptimStepTag,
}

impl OptimStepRequest {
    /// An optim_step body.
    pub fn new(model_id: impl Into<String>, seq_id: u64, params: StepParams) -> OptimStepRequest {
        let (adam_params, optimizer_params) = match params {
            StepParams::Adam(a) => (Some(a), None),
            StepParams::Other(o) => (None, Some(o)),
        };
        OptimStepRequest {
            model_id: model_id.into(),
            seq_id: Some(seq_id),
            adam_params,
            optimizer_params,
            kind: OptimStepTag::OptimStep,
        }
    }

    /// Checks exactly one parameter set is present and valid.
    pub fn validate(&self) -> Result<()> {
        match (&self.adam_params, &self.optimizer_params) {
            (Some(a), None) => a.validate(),
            (None, Some(OptimizerParams::Dimuon(d))) => d.validate(),
            _ => Err(Error::invalid(
                "optim_step",
                "exactly one of adam_params and optimizer_params must be given",
            )),
        }
    }
}

/// Future result of `optim_step`: flat `"<name>:<reduction>"` metrics (optional, nullable).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OptimStepResponse {
    /// Metrics such as `grad_norm:mean`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<std::collections::BTreeMap<String, f64>>,
}

/// Body of `POST /api/v1/unload_model` [0.25; defined, unused].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnloadModelRequest {
    /// The training run.
    pub model_id: String,
    /// Constant `"unload_model"`.
    #[serde(rename = "type")]
    pub kind: UnloadModelTag,
}

impl UnloadModelRequest {
    /// An unload_model body.
    pub fn new(model_id: impl Into<String>) -> UnloadModelRequest {
        UnloadModelRequest {
            model_id: model_id.into(),
            kind: UnloadModelTag::UnloadModel,
        }
    }
}

/// Future result of `unload_model` [0.25].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnloadModelResponse {
    /// The unloaded run.
    pub model_id: String,
    /// `"unload_model"` when present.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_captured_create_model_body_is_reproduced() {
        let req = CreateModelRequest::new(
            "sess-0001",
            0,
            "Qwen/Qwen3-8B",
            LoraConfig::new(8).with_seed(7),
        );
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"session_id": "sess-0001", "model_seq_id": 0, "base_model": "Qwen/Qwen3-8B",
                   "lora_config": {"rank": 8, "seed": 7, "train_unembed": true, "train_mlp": true, "train_attn": true},
                   "optimizer_config": {"type": "adamw"}, "type": "create_model"})
        );
        let old = serde_json::to_value(req.as_sdk_025()).unwrap();
        assert!(old.get("optimizer_config").is_none());
    }

    #[test]
    fn lora_validation_rejects_rank_zero_and_training_nothing() {
        assert_eq!(LoraConfig::default().rank, 32);
        assert!(LoraConfig::new(1).validate().is_ok());
        let err = LoraConfig::new(0).validate().unwrap_err();
        assert!(err.to_string().contains("lora_config.rank"), "{err}");
        let nothing = LoraConfig {
            train_unembed: false,
            train_mlp: false,
            train_attn: false,
            ..LoraConfig::new(8)
        };
        assert!(nothing
            .validate()
            .unwrap_err()
            .to_string()
            .contains("at least one"));
        let req = CreateModelRequest::new("s", 0, "", LoraConfig::new(8));
        assert!(req
            .validate()
            .unwrap_err()
            .to_string()
            .contains("base_model"));
    }

    #[test]
    fn optimizer_configs_round_trip_and_unknown_families_pass_through() {
        for (value, expected) in [
            (json!({"type": "adamw"}), OptimizerConfig::AdamW),
            (
                json!({"type": "dimuon", "version": 1}),
                OptimizerConfig::Dimuon { version: 1 },
            ),
        ] {
            let parsed: OptimizerConfig = serde_json::from_value(value.clone()).unwrap();
            assert_eq!(parsed, expected);
            assert_eq!(serde_json::to_value(&parsed).unwrap(), value);
        }
        let future = json!({"type": "lion", "beta": 0.5});
        let parsed: OptimizerConfig = serde_json::from_value(future.clone()).unwrap();
        assert_eq!(parsed.type_name(), "lion");
        assert_eq!(serde_json::to_value(&parsed).unwrap(), future);
        assert!(serde_json::from_value::<OptimizerConfig>(json!({"beta": 1})).is_err());
    }

    #[test]
    fn optim_step_puts_adam_and_dimuon_under_different_keys() {
        let adam = OptimStepRequest::new(
            "sess-0001:train:0",
            2,
            StepParams::Adam(AdamParams::default()),
        );
        assert_eq!(
            serde_json::to_value(&adam).unwrap(),
            json!({"model_id": "sess-0001:train:0", "seq_id": 2, "type": "optim_step",
                   "adam_params": {"learning_rate": 0.0001, "beta1": 0.9, "beta2": 0.95, "eps": 1e-12, "weight_decay": 0.0, "grad_clip_norm": 0.0}})
        );
        let dimuon = OptimStepRequest::new(
            "s:train:0",
            3,
            StepParams::Other(OptimizerParams::Dimuon(DimuonParams::new(0.02))),
        );
        assert_eq!(
            serde_json::to_value(&dimuon).unwrap(),
            json!({"model_id": "s:train:0", "seq_id": 3, "type": "optim_step",
                   "optimizer_params": {"type": "dimuon", "learning_rate": 0.02, "grad_clip_norm": 0.0, "beta1": 0.9}})
        );
        assert!(adam.validate().is_ok() && dimuon.validate().is_ok());
    }

    #[test]
    fn step_parameter_checks_name_the_field() {
        let bad = AdamParams {
            learning_rate: f64::NAN,
            ..AdamParams::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("adam_params.learning_rate"));
        let bad = AdamParams {
            beta2: 1.0,
            ..AdamParams::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("adam_params.beta2"));
        let bad = DimuonParams {
            beta1: 1.5,
            ..DimuonParams::new(0.1)
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("optimizer_params.beta1"));
        assert!(DimuonParams::new(-1.0).validate().is_err());
        let neither = OptimStepRequest {
            adam_params: None,
            ..OptimStepRequest::new("m", 1, StepParams::Adam(AdamParams::default()))
        };
        assert!(neither.validate().is_err());
    }

    #[test]
    fn get_info_reply_requires_model_data_and_model_id() {
        let r: GetInfoResponse = serde_json::from_value(json!({
            "type": "get_info", "model_id": "sess-0001:train:0",
            "model_data": {"arch": "qwen3", "model_name": "Qwen/Qwen3-8B", "tokenizer_id": "Qwen/Qwen3-8B:main"},
            "is_lora": true, "lora_rank": 32, "model_name": "Qwen/Qwen3-8B", "optimizer_config": {"type": "adamw"}}))
        .unwrap();
        assert_eq!(r.model_data.tokenizer_name(), Some("Qwen/Qwen3-8B"));
        assert_eq!(r.lora_rank, Some(32));
        let minimal: GetInfoResponse =
            serde_json::from_value(json!({"model_id": "m", "model_data": {}})).unwrap();
        assert_eq!(minimal.optimizer_config, OptimizerConfig::AdamW);
        let err = serde_json::from_value::<GetInfoResponse>(json!({"model_id": "m"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("model_data"), "{err}");
    }

    #[test]
    fn future_results_of_training_calls_decode() {
        let r: CreateModelResponse = serde_json::from_value(
            json!({"model_id": "sess-0001:train:0", "type": "create_model"}),
        )
        .unwrap();
        assert_eq!(r.model_id, "sess-0001:train:0");
        let r: OptimStepResponse =
            serde_json::from_value(json!({"metrics": {"grad_norm:mean": 0.5}})).unwrap();
        assert_eq!(r.metrics.unwrap()["grad_norm:mean"], 0.5);
        let r: OptimStepResponse = serde_json::from_value(json!({"metrics": null})).unwrap();
        assert_eq!(r.metrics, None);
        assert_eq!(
            serde_json::to_value(UnloadModelRequest::new("m")).unwrap(),
            json!({"model_id": "m", "type": "unload_model"})
        );
    }
}
