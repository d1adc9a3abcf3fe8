//! Weights bodies: `load_weights`, `save_weights`, `save_weights_for_sampler`,
//! `save_weights_external`, `copy_weights`, `create_custom_loss`, `weights_info`
//! (protocol.md 6.3.5-6.3.10, 6.6.8, 11.4).

use serde::{Deserialize, Serialize};

use super::common::{check_non_empty, check_ttl, type_tag, Metadata};
use super::training::OptimizerConfig;
use crate::error::{Error, Result};
use crate::path::{check_segment, CheckpointKind, TinkerPath};

type_tag!(
    /// The `"type": "load_weights"` tag.
    LoadWeightsTag = LoadWeights "load_weights"
);
type_tag!(
    /// The `"type": "save_weights"` tag.
    SaveWeightsTag = SaveWeights "save_weights"
);
type_tag!(
    /// The `"type": "save_weights_for_sampler"` tag.
    SaveWeightsForSamplerTag = SaveWeightsForSampler "save_weights_for_sampler"
);
type_tag!(
    /// The `"type": "save_weights_external"` tag.
    SaveWeightsExternalTag = SaveWeightsExternal "save_weights_external"
);
type_tag!(
    /// The `"type": "create_custom_loss"` tag.
    CreateCustomLossTag = CreateCustomLoss "create_custom_loss"
);

/// Body of `POST /api/v1/load_weights` (a future whose result is [`LoadWeightsResponse`]).
///
/// Two addressing modes exist; build with [`LoadWeightsRequest::onto_model`] (legacy: an existing
/// run) or [`LoadWeightsRequest::create_via_load`] (0.38: a new run in a session).
///
/// ```
/// use tinker_core::types::LoadWeightsRequest;
/// let req = LoadWeightsRequest::onto_model("s:train:0", 1, "tinker://r/weights/x", true);
/// assert_eq!(
///     serde_json::to_string(&req).unwrap(),
///     r#"{"model_id":"s:train:0","seq_id":1,"path":"tinker://r/weights/x","optimizer":true,"type":"load_weights"}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadWeightsRequest {
    /// Legacy mode: the run to load into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// Legacy mode: the request's place in the run's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_id: Option<u64>,
    /// Create-via-load mode: the session creating the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Create-via-load mode: the session's training-client counter value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_seq_id: Option<u64>,
    /// Create-via-load mode: base model override.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// Create-via-load mode: run metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Metadata>,
    /// The `tinker://…/weights/…` checkpoint to load.
    pub path: String,
    /// Also restore the optimizer state.
    pub optimizer: bool,
    /// [0.38] Create-via-load, weights only: the new run's optimizer family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_config: Option<OptimizerConfig>,
    /// Token of another account that owns the checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights_access_token: Option<String>,
    /// Constant `"load_weights"`.
    #[serde(rename = "type")]
    pub kind: LoadWeightsTag,
}

impl LoadWeightsRequest {
    /// Legacy addressing: load into the existing run `model_id` at `seq_id`.
    pub fn onto_model(
        model_id: impl Into<String>,
        seq_id: u64,
        path: impl Into<String>,
        optimizer: bool,
    ) -> LoadWeightsRequest {
        LoadWeightsRequest {
            model_id: Some(model_id.into()),
            seq_id: Some(seq_id),
            ..LoadWeightsRequest::blank(path.into(), optimizer)
        }
    }

    /// Create-via-load addressing (0.38): create run `"<session_id>:train:<model_seq_id>"` from
    /// the checkpoint.
    pub fn create_via_load(
        session_id: impl Into<String>,
        model_seq_id: u64,
        path: impl Into<String>,
        optimizer: bool,
    ) -> LoadWeightsRequest {
        LoadWeightsRequest {
            session_id: Some(session_id.into()),
            model_seq_id: Some(model_seq_id),
            ..LoadWeightsRequest::blank(path.into(), optimizer)
        }
    }

    fn blank(path: String, optimizer: bool) -> LoadWeightsRequest {
        LoadWeightsRequest {
            model_id: None,
            seq_id: None,
            session_id: None,
            model_seq_id: None,
            base_model: None,
            user_metadata: None,
            path,
            optimizer,
            optimizer_config: None,
            weights_access_token: None,
            kind: LoadWeightsTag::LoadWeights,
        }
    }

    /// The model id the SDK assumes a create-via-load produces: `"<session_id>:train:<n>"`.
    pub fn created_model_id(&self) -> Option<String> {
        match (&self.session_id, self.model_seq_id) {
            (Some(s), Some(n)) => Some(format!("{s}:train:{n}")),
            _ => None,
        }
    }

    /// Checks exactly one addressing mode is used, mode-specific fields are not mixed, and the
    /// path is a `tinker://` path.
    pub fn validate(&self) -> Result<()> {
        let legacy = self.model_id.is_some() || self.seq_id.is_some();
        let create = self.session_id.is_some() || self.model_seq_id.is_some();
        match (legacy, create) {
            (true, true) => {
                return Err(Error::invalid(
                    "load_weights",
                    "give either model_id + seq_id or session_id + model_seq_id, not both",
                ))
            }
            (false, false) => {
                return Err(Error::invalid(
                    "load_weights",
                    "give model_id + seq_id (existing run) or session_id + model_seq_id (new run)",
                ))
            }
            (true, false) if self.model_id.is_none() || self.seq_id.is_none() => {
                return Err(Error::invalid(
                    "load_weights",
                    "model_id and seq_id go together",
                ))
            }
            (false, true) if self.session_id.is_none() || self.model_seq_id.is_none() => {
                return Err(Error::invalid(
                    "load_weights",
                    "session_id and model_seq_id go together",
                ))
            }
            _ => {}
        }
        if legacy
            && (self.base_model.is_some()
                || self.user_metadata.is_some()
                || self.optimizer_config.is_some())
        {
            return Err(Error::invalid(
                "load_weights",
                "base_model, user_metadata and optimizer_config only apply when creating a run",
            ));
        }
        if self.optimizer && self.optimizer_config.is_some() {
            return Err(Error::invalid(
                "load_weights.optimizer_config",
                "cannot override the optimizer of a restored optimizer state",
            ));
        }
        TinkerPath::parse(&self.path).map(|_| ())
    }
}

/// Future result of `load_weights`; every field optional.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LoadWeightsResponse {
    /// The loaded path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// [0.38] The canonical id of the model the weights were loaded onto.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// `"load_weights"` when present.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Body of `POST /api/v1/save_weights` (`save_state`; a future whose result is
/// [`SaveWeightsResponse`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaveWeightsRequest {
    /// The training run.
    pub model_id: String,
    /// The checkpoint *name* (not a URI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The request's place in the run's order (always sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_id: Option<u64>,
    /// Expiry; omitted = never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// Replace an existing checkpoint of the same name (always sent).
    #[serde(default)]
    pub overwrite: bool,
    /// [0.38] Checkpoint metadata (string values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<std::collections::BTreeMap<String, String>>,
    /// Constant `"save_weights"`.
    #[serde(rename = "type")]
    pub kind: SaveWeightsTag,
}

impl SaveWeightsRequest {
    /// A named save with no TTL and `overwrite: false`.
    pub fn new(
        model_id: impl Into<String>,
        seq_id: u64,
        name: impl Into<String>,
    ) -> SaveWeightsRequest {
        SaveWeightsRequest {
            model_id: model_id.into(),
            path: Some(name.into()),
            seq_id: Some(seq_id),
            ttl_seconds: None,
            overwrite: false,
            user_metadata: None,
            kind: SaveWeightsTag::SaveWeights,
        }
    }

    /// Checks the name is a valid path segment and the TTL is in range.
    pub fn validate(&self) -> Result<()> {
        if let Some(name) = &self.path {
            check_segment("save_weights.path", "checkpoint name", name)?;
        }
        if let Some(ttl) = self.ttl_seconds {
            check_ttl("save_weights.ttl_seconds", ttl)?;
        }
        Ok(())
    }
}

/// Future result of `save_weights` (`path` required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveWeightsResponse {
    /// `tinker://<run>/weights/<name>`.
    pub path: String,
    /// `"save_weights"` when present.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// [0.38] What a sampler save produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SamplerSaveKind {
    /// A frozen copy (default).
    #[default]
    Snapshot,
    /// Mutable weights shared by this model's inflight sampling clients; later inflight saves
    /// update them. Inflight saves take no TTL.
    Inflight,
}

/// Body of `POST /api/v1/save_weights_for_sampler` (a future whose result is
/// [`SaveWeightsForSamplerResponse`]).
///
/// A *named* save (`path`) makes a persistent sampler checkpoint; an *unnamed* one
/// (`sampling_session_seq_id`) creates a sampling session directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SaveWeightsForSamplerRequest {
    /// The training run.
    pub model_id: String,
    /// Named save: the checkpoint name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Unnamed save: the session's sampling-client counter value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_session_seq_id: Option<u64>,
    /// [0.38] Snapshot or inflight; always sent by 0.38 (`None` only to reproduce a 0.25 body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<SamplerSaveKind>,
    /// The request's place in the run's order (always sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_id: Option<u64>,
    /// Named saves: expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// [0.38] Checkpoint metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Metadata>,
    /// Constant `"save_weights_for_sampler"`.
    #[serde(rename = "type")]
    pub type_tag: SaveWeightsForSamplerTag,
}

impl SaveWeightsForSamplerRequest {
    /// A named snapshot save.
    pub fn named(
        model_id: impl Into<String>,
        seq_id: u64,
        name: impl Into<String>,
    ) -> SaveWeightsForSamplerRequest {
        SaveWeightsForSamplerRequest {
            path: Some(name.into()),
            ..SaveWeightsForSamplerRequest::blank(model_id.into(), seq_id)
        }
    }

    /// An unnamed save that creates a sampling session (`save_weights_and_get_sampling_client`).
    pub fn for_sampling_session(
        model_id: impl Into<String>,
        seq_id: u64,
        sampling_session_seq_id: u64,
        kind: SamplerSaveKind,
    ) -> SaveWeightsForSamplerRequest {
        SaveWeightsForSamplerRequest {
            sampling_session_seq_id: Some(sampling_session_seq_id),
            kind: Some(kind),
            ..SaveWeightsForSamplerRequest::blank(model_id.into(), seq_id)
        }
    }

    fn blank(model_id: String, seq_id: u64) -> SaveWeightsForSamplerRequest {
        SaveWeightsForSamplerRequest {
            model_id,
            path: None,
            sampling_session_seq_id: None,
            kind: Some(SamplerSaveKind::Snapshot),
            seq_id: Some(seq_id),
            ttl_seconds: None,
            user_metadata: None,
            type_tag: SaveWeightsForSamplerTag::SaveWeightsForSampler,
        }
    }

    /// The same request as SDK 0.25 sent it (no `kind`).
    pub fn as_sdk_025(mut self) -> SaveWeightsForSamplerRequest {
        self.kind = None;
        self
    }

    /// Checks exactly one of `path` / `sampling_session_seq_id`, the name, the TTL, and that
    /// inflight saves carry no TTL.
    pub fn validate(&self) -> Result<()> {
        match (&self.path, self.sampling_session_seq_id) {
            (Some(name), None) => {
                check_segment("save_weights_for_sampler.path", "checkpoint name", name)?
            }
            (None, Some(_)) => {}
            _ => {
                return Err(Error::invalid(
                    "save_weights_for_sampler",
                    "give exactly one of path (named save) and sampling_session_seq_id",
                ))
            }
        }
        if let Some(ttl) = self.ttl_seconds {
            if self.kind == Some(SamplerSaveKind::Inflight) {
                return Err(Error::invalid(
                    "save_weights_for_sampler.ttl_seconds",
                    "inflight saves take no TTL",
                ));
            }
            check_ttl("save_weights_for_sampler.ttl_seconds", ttl)?;
        }
        Ok(())
    }
}

/// Future result of `save_weights_for_sampler`; fields optional on the wire, but a named save
/// must return `path` and an unnamed one `sampling_session_id` (see [`Self::expect_for`]).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SaveWeightsForSamplerResponse {
    /// Named save: `tinker://<run>/sampler_weights/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Unnamed save: the new sampling session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_session_id: Option<String>,
    /// `"save_weights_for_sampler"` when present.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl SaveWeightsForSamplerResponse {
    /// The SDK's assertion: the field the request asked for must be set.
    pub fn expect_for(&self, request: &SaveWeightsForSamplerRequest) -> Result<()> {
        let (field, present) = if request.path.is_some() {
            ("path", self.path.is_some())
        } else {
            ("sampling_session_id", self.sampling_session_id.is_some())
        };
        if present {
            Ok(())
        } else {
            Err(Error::decode(
                "SaveWeightsForSamplerResponse",
                format!("missing field `{field}`"),
            ))
        }
    }
}

/// Body of `POST /api/v1/save_weights_external` [0.38] (HuggingFace/PEFT export).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveWeightsExternalRequest {
    /// The training run.
    pub model_id: String,
    /// The export's name.
    pub path: String,
    /// The request's place in the run's order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_id: Option<u64>,
    /// Expiry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
    /// `age` recipients (age1… or ssh public keys, at most 10) to encrypt the files for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_encryption_recipients: Option<Vec<String>>,
    /// Constant `"save_weights_external"`.
    #[serde(rename = "type")]
    pub kind: SaveWeightsExternalTag,
}

impl SaveWeightsExternalRequest {
    /// Most encryption recipients accepted.
    pub const MAX_RECIPIENTS: usize = 10;

    /// An unencrypted export with no TTL.
    pub fn new(
        model_id: impl Into<String>,
        seq_id: u64,
        name: impl Into<String>,
    ) -> SaveWeightsExternalRequest {
        SaveWeightsExternalRequest {
            model_id: model_id.into(),
            path: name.into(),
            seq_id: Some(seq_id),
            ttl_seconds: None,
            age_encryption_recipients: None,
            kind: SaveWeightsExternalTag::SaveWeightsExternal,
        }
    }

    /// Checks the name, TTL and recipient count.
    pub fn validate(&self) -> Result<()> {
        check_segment("save_weights_external.path", "checkpoint name", &self.path)?;
        if let Some(ttl) = self.ttl_seconds {
            check_ttl("save_weights_external.ttl_seconds", ttl)?;
        }
        if let Some(r) = &self.age_encryption_recipients {
            if r.len() > Self::MAX_RECIPIENTS {
                return Err(Error::invalid(
                    "save_weights_external.age_encryption_recipients",
                    format!(
                        "at most {} recipients, got {}",
                        Self::MAX_RECIPIENTS,
                        r.len()
                    ),
                ));
            }
            for (i, key) in r.iter().enumerate() {
                check_non_empty(
                    &format!("save_weights_external.age_encryption_recipients[{i}]"),
                    key,
                )?;
            }
        }
        Ok(())
    }
}

/// Future result of `save_weights_external`; `path` is asserted by the SDK.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveWeightsExternalResponse {
    /// `tinker://<run>/external_weights/<name>`.
    pub path: String,
    /// Total size of the exported files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    /// `"save_weights_external"` when present.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Body of `POST /api/v1/copy_weights` [0.38] (direct). Give either a destination project or a
/// session (`session_id` + `model_seq_id`). The foreign-account token travels as the
/// `X-Tinker-Weights-Access-Token` header, not in this body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyWeightsRequest {
    /// Project to copy into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_project_id: Option<String>,
    /// Session to copy into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// With `session_id`: the session's training-client counter value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_seq_id: Option<u64>,
    /// The checkpoint to copy.
    pub source_path: String,
    /// Expiry of the copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<u64>,
}

impl CopyWeightsRequest {
    /// Copy into a project.
    pub fn to_project(
        project_id: impl Into<String>,
        source_path: impl Into<String>,
    ) -> CopyWeightsRequest {
        CopyWeightsRequest {
            destination_project_id: Some(project_id.into()),
            session_id: None,
            model_seq_id: None,
            source_path: source_path.into(),
            ttl_seconds: None,
        }
    }

    /// Checks the destination, the source path and the TTL.
    pub fn validate(&self) -> Result<()> {
        match (
            &self.destination_project_id,
            &self.session_id,
            self.model_seq_id,
        ) {
            (Some(p), None, None) => check_non_empty("copy_weights.destination_project_id", p)?,
            (None, Some(s), Some(_)) => check_non_empty("copy_weights.session_id", s)?,
            _ => {
                return Err(Error::invalid(
                    "copy_weights",
                    "give either destination_project_id, or session_id with model_seq_id",
                ))
            }
        }
        TinkerPath::parse(&self.source_path)?;
        if let Some(ttl) = self.ttl_seconds {
            check_ttl("copy_weights.ttl_seconds", ttl)?;
        }
        Ok(())
    }
}

/// Reply of `copy_weights` (`tinker_path` required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyWeightsResponse {
    /// The copy's path.
    pub tinker_path: String,
}

/// One input of a server-side custom loss.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomLossInput {
    /// Parameter name (`logprobs` first, then `loss_fn_inputs` keys).
    pub name: String,
    /// Tensor rank: 0, 1 or 2.
    pub rank: u8,
}

/// The traced graph of a custom loss: `{"format": 1, "nodes": [...]}`. Nodes are kept as JSON
/// values; their schema (11.4) is produced and checked by the custom-loss tracer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CustomLossGraph {
    /// Graph format version (1).
    pub format: u32,
    /// Nodes in execution order.
    pub nodes: Vec<serde_json::Value>,
}

/// Body of `POST /api/v1/create_custom_loss` [0.38] (a future whose result is
/// [`CreateCustomLossResponse`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateCustomLossRequest {
    /// The session owning the loss.
    pub session_id: String,
    /// The session's custom-loss counter value.
    pub custom_loss_seq_id: u64,
    /// The loss function's name.
    pub name: String,
    /// Inputs, `logprobs` first.
    pub inputs: Vec<CustomLossInput>,
    /// The traced graph.
    pub graph: CustomLossGraph,
    /// Constant `"create_custom_loss"`.
    #[serde(rename = "type")]
    pub kind: CreateCustomLossTag,
}

impl CreateCustomLossRequest {
    /// Most parameters a custom loss may take.
    pub const MAX_INPUTS: usize = 16;

    /// Checks the input list: non-empty, `logprobs` first with rank 1 or 2, ranks ≤ 2, names
    /// `[a-z_][a-z0-9_]{0,63}`, unique, at most 16.
    pub fn validate(&self) -> Result<()> {
        check_non_empty("create_custom_loss.name", &self.name)?;
        let first = self.inputs.first().ok_or_else(|| {
            Error::invalid("create_custom_loss.inputs", "must start with logprobs")
        })?;
        if first.name != "logprobs" || !(1..=2).contains(&first.rank) {
            return Err(Error::invalid(
                "create_custom_loss.inputs[0]",
                "the first input must be logprobs with rank 1 or 2",
            ));
        }
        if self.inputs.len() > Self::MAX_INPUTS {
            return Err(Error::invalid(
                "create_custom_loss.inputs",
                format!(
                    "at most {} inputs, got {}",
                    Self::MAX_INPUTS,
                    self.inputs.len()
                ),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, input) in self.inputs.iter().enumerate() {
            let loc = format!("create_custom_loss.inputs[{i}]");
            let valid_name = input.name.len() <= 64
                && input
                    .name
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
                && input
                    .name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid_name {
                return Err(Error::invalid(
                    loc,
                    format!("invalid input name {:?}", input.name),
                ));
            }
            if input.rank > 2 {
                return Err(Error::invalid(
                    loc,
                    format!("rank must be 0, 1 or 2, got {}", input.rank),
                ));
            }
            if !seen.insert(input.name.as_str()) {
                return Err(Error::invalid(
                    loc,
                    format!("duplicate input {:?}", input.name),
                ));
            }
        }
        Ok(())
    }
}

/// Future result of `create_custom_loss` (`loss_id` required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateCustomLossResponse {
    /// The uploaded loss' id, used as `loss_fn_config = {"loss_id": ...}`.
    pub loss_id: String,
    /// `"create_custom_loss"` when present.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

/// Body of `POST /api/v1/weights_info` (a hand-built `{"tinker_path": ...}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightsInfoRequest {
    /// The checkpoint.
    pub tinker_path: String,
}

/// Reply of `weights_info`: what is needed to load a (possibly public) checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsInfoResponse {
    /// Base model (required).
    pub base_model: String,
    /// Whether the checkpoint is a LoRA adapter (required).
    pub is_lora: bool,
    /// Adapter rank.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora_rank: Option<u32>,
    /// LoRA flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_unembed: Option<bool>,
    /// LoRA flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_mlp: Option<bool>,
    /// LoRA flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_attn: Option<bool>,
    /// [0.38] The run's optimizer family.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optimizer_config: Option<OptimizerConfig>,
}

/// Checks a path names a checkpoint of the expected kind (e.g. external URLs need
/// `external_weights/…`).
pub fn expect_kind(location: &str, path: &TinkerPath, kind: CheckpointKind) -> Result<()> {
    if path.kind() != kind {
        return Err(Error::invalid(
            location,
            format!(
                "{path} is a {} checkpoint; a {} checkpoint is needed",
                path.kind().segment(),
                kind.segment()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn load_weights_has_two_addressing_modes_matching_the_sdk_serializer() {
        let legacy = LoadWeightsRequest::onto_model("s:train:0", 1, "tinker://r/weights/x", true);
        assert_eq!(
            serde_json::to_value(&legacy).unwrap(),
            json!({"model_id": "s:train:0", "seq_id": 1, "path": "tinker://r/weights/x", "optimizer": true, "type": "load_weights"})
        );
        assert!(legacy.validate().is_ok());
        let mut create = LoadWeightsRequest::create_via_load("s", 1, "tinker://r/weights/x", false);
        create.base_model = Some("Qwen/Qwen3-8B".into());
        create.user_metadata = Some(json!({"a": "b"}).as_object().unwrap().clone());
        create.optimizer_config = Some(OptimizerConfig::AdamW);
        create.weights_access_token = Some("tml-other".into());
        assert_eq!(
            serde_json::to_value(&create).unwrap(),
            json!({"session_id": "s", "model_seq_id": 1, "base_model": "Qwen/Qwen3-8B", "user_metadata": {"a": "b"},
                   "path": "tinker://r/weights/x", "optimizer": false, "optimizer_config": {"type": "adamw"},
                   "weights_access_token": "tml-other", "type": "load_weights"})
        );
        assert!(create.validate().is_ok());
        assert_eq!(create.created_model_id().as_deref(), Some("s:train:1"));
    }

    #[test]
    fn load_weights_rejects_mixed_or_missing_addressing_and_bad_paths() {
        let mut mixed = LoadWeightsRequest::onto_model("m", 1, "tinker://r/weights/x", true);
        mixed.session_id = Some("s".into());
        assert!(mixed
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not both"));
        let mut none = LoadWeightsRequest::onto_model("m", 1, "tinker://r/weights/x", true);
        none.model_id = None;
        none.seq_id = None;
        assert!(none.validate().is_err());
        let bad_path = LoadWeightsRequest::onto_model("m", 1, "r/weights/x", true);
        assert!(bad_path
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tinker://"));
        let mut restored_and_new =
            LoadWeightsRequest::create_via_load("s", 0, "tinker://r/weights/x", true);
        restored_and_new.optimizer_config = Some(OptimizerConfig::AdamW);
        assert!(restored_and_new.validate().is_err());
    }

    #[test]
    fn save_bodies_match_the_captures() {
        let save = SaveWeightsRequest::new("sess-0001:train:0", 3, "step-1");
        assert_eq!(
            serde_json::to_value(&save).unwrap(),
            json!({"model_id": "sess-0001:train:0", "path": "step-1", "seq_id": 3, "overwrite": false, "type": "save_weights"})
        );
        let named = SaveWeightsForSamplerRequest::named("sess-0001:train:0", 4, "s-1");
        assert_eq!(
            serde_json::to_value(&named).unwrap(),
            json!({"model_id": "sess-0001:train:0", "path": "s-1", "kind": "snapshot", "seq_id": 4, "type": "save_weights_for_sampler"})
        );
        let unnamed = SaveWeightsForSamplerRequest::for_sampling_session(
            "sess-0001:train:0",
            5,
            0,
            SamplerSaveKind::Snapshot,
        );
        assert_eq!(
            serde_json::to_value(&unnamed).unwrap(),
            json!({"model_id": "sess-0001:train:0", "sampling_session_seq_id": 0, "kind": "snapshot", "seq_id": 5, "type": "save_weights_for_sampler"})
        );
        assert!(serde_json::to_value(unnamed.clone().as_sdk_025())
            .unwrap()
            .get("kind")
            .is_none());
        assert!(named.validate().is_ok() && unnamed.validate().is_ok());
    }

    #[test]
    fn save_validation_covers_ttl_names_and_inflight() {
        let mut s = SaveWeightsRequest::new("m", 1, "step-1");
        s.ttl_seconds = Some(60);
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("save_weights.ttl_seconds"));
        s.ttl_seconds = Some(7200);
        assert!(s.validate().is_ok());
        assert!(SaveWeightsRequest::new("m", 1, "a/b").validate().is_err());
        let mut inflight = SaveWeightsForSamplerRequest::for_sampling_session(
            "m",
            1,
            0,
            SamplerSaveKind::Inflight,
        );
        inflight.ttl_seconds = Some(7200);
        assert!(inflight
            .validate()
            .unwrap_err()
            .to_string()
            .contains("inflight"));
        let mut both = SaveWeightsForSamplerRequest::named("m", 1, "x");
        both.sampling_session_seq_id = Some(0);
        assert!(both.validate().is_err());
    }

    #[test]
    fn sampler_save_results_are_checked_against_what_was_asked() {
        let named = SaveWeightsForSamplerRequest::named("m", 1, "s-1");
        let unnamed = SaveWeightsForSamplerRequest::for_sampling_session(
            "m",
            2,
            0,
            SamplerSaveKind::Snapshot,
        );
        let r: SaveWeightsForSamplerResponse = serde_json::from_value(
            json!({"path": null, "sampling_session_id": "sess-0001:sample:0", "type": "save_weights_for_sampler"}),
        )
        .unwrap();
        assert!(r.expect_for(&unnamed).is_ok());
        let err = r.expect_for(&named).unwrap_err();
        assert!(matches!(err, Error::Decode { .. }) && err.to_string().contains("path"));
    }

    #[test]
    fn external_export_copy_and_info_shapes() {
        let mut ext = SaveWeightsExternalRequest::new("m", 4, "export");
        ext.ttl_seconds = Some(3600);
        ext.age_encryption_recipients = Some(vec!["age1abc".into()]);
        assert_eq!(
            serde_json::to_value(&ext).unwrap(),
            json!({"model_id": "m", "path": "export", "seq_id": 4, "ttl_seconds": 3600, "age_encryption_recipients": ["age1abc"], "type": "save_weights_external"})
        );
        ext.age_encryption_recipients = Some(vec!["age1abc".into(); 11]);
        assert!(ext.validate().is_err());
        let r: SaveWeightsExternalResponse = serde_json::from_value(
            json!({"path": "tinker://r/external_weights/export", "size_bytes": 12}),
        )
        .unwrap();
        assert_eq!(r.size_bytes, Some(12));

        let mut copy = CopyWeightsRequest::to_project("proj-1", "tinker://run/weights/x");
        copy.ttl_seconds = Some(7200);
        assert_eq!(
            serde_json::to_value(&copy).unwrap(),
            json!({"destination_project_id": "proj-1", "source_path": "tinker://run/weights/x", "ttl_seconds": 7200})
        );
        assert!(copy.validate().is_ok());
        copy.session_id = Some("s".into());
        assert!(copy.validate().is_err());

        let info: WeightsInfoResponse = serde_json::from_value(
            json!({"base_model": "Qwen/Qwen3-8B", "is_lora": true, "lora_rank": 8, "optimizer_config": {"type": "dimuon", "version": 1}}),
        )
        .unwrap();
        assert_eq!(
            info.optimizer_config,
            Some(OptimizerConfig::Dimuon { version: 1 })
        );
        let err = serde_json::from_value::<WeightsInfoResponse>(json!({"base_model": "x"}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("is_lora"), "{err}");
    }

    #[test]
    fn the_protocol_custom_loss_example_round_trips_and_validates() {
        let golden = json!({"session_id": "s", "custom_loss_seq_id": 0, "name": "neg_ll",
            "inputs": [{"name": "logprobs", "rank": 1}, {"name": "weights", "rank": 1}],
            "graph": {"format": 1, "nodes": [
              {"op": "placeholder", "name": "logprobs", "target": "logprobs", "args": [], "kwargs": {}},
              {"op": "placeholder", "name": "weights", "target": "weights", "args": [], "kwargs": {}},
              {"op": "call_function", "name": "mul", "target": "operator.mul", "args": [{"ref": "logprobs"}, {"ref": "weights"}], "kwargs": {}},
              {"op": "output", "name": "output", "target": "output", "args": [{"tuple": [{"ref": "mul"}, {"dict": {}}]}], "kwargs": {}}]},
            "type": "create_custom_loss"});
        let req: CreateCustomLossRequest = serde_json::from_value(golden.clone()).unwrap();
        assert!(req.validate().is_ok());
        assert_eq!(serde_json::to_value(&req).unwrap(), golden);
        let mut bad = req.clone();
        bad.inputs.swap(0, 1);
        assert!(bad.validate().unwrap_err().to_string().contains("logprobs"));
        let mut bad = req;
        bad.inputs[1].name = "Weights".into();
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("inputs[1]"));
        let r: CreateCustomLossResponse =
            serde_json::from_value(json!({"loss_id": "loss-1"})).unwrap();
        assert_eq!(r.loss_id, "loss-1");
    }
}
