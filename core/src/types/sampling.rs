//! Sampling bodies: `SamplingParams`, `asample`, `create_sampling_session`,
//! `join_sampling_session`, `samplers/{id}` (protocol.md 6.4, 9.4).

use serde::{Deserialize, Serialize};

use super::common::{check_finite, check_non_empty, type_tag};
use super::model_input::{ModelInput, TokenId};
use super::tensor::TensorData;
use crate::error::{Error, Result};
use crate::path::TINKER_SCHEME;

/// Where generation stops besides the length limit.
///
/// `None` in [`SamplingParams::stop`] keeps the model's implicit end-of-sequence stop; an empty
/// list disables every stop including EOS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StopCondition {
    /// One stop string.
    Text(String),
    /// Several stop strings.
    Strings(Vec<String>),
    /// Stop token ids.
    Tokens(Vec<TokenId>),
}

/// How to sample. `temperature`, `top_k` and `top_p` have defaults that are always sent; unset
/// options are omitted.
///
/// ```
/// use tinker_core::types::{SamplingParams, StopCondition};
/// let p = SamplingParams { max_tokens: Some(3), stop: Some(StopCondition::Strings(vec!["\n".into()])), temperature: 0.7, ..Default::default() };
/// assert_eq!(
///     serde_json::to_string(&p).unwrap(),
///     r#"{"max_tokens":3,"stop":["\n"],"temperature":0.7,"top_k":-1,"top_p":1.0}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Most tokens to generate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stop strings or token ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopCondition>,
    /// Softmax temperature, ≥ 0 (default 1).
    #[serde(default = "one")]
    pub temperature: f64,
    /// Keep the k most likely tokens; -1 = no limit (default).
    #[serde(default = "minus_one")]
    pub top_k: i64,
    /// Nucleus probability in (0, 1] (default 1).
    #[serde(default = "one")]
    pub top_p: f64,
}

fn one() -> f64 {
    1.0
}

fn minus_one() -> i64 {
    -1
}

impl Default for SamplingParams {
    fn default() -> SamplingParams {
        SamplingParams {
            max_tokens: None,
            seed: None,
            stop: None,
            temperature: 1.0,
            top_k: -1,
            top_p: 1.0,
        }
    }
}

impl SamplingParams {
    /// Checks temperature ≥ 0, top_p in (0, 1], top_k = -1 or ≥ 1, max_tokens ≥ 1.
    pub fn validate(&self) -> Result<()> {
        check_finite("sampling_params.temperature", self.temperature)?;
        check_finite("sampling_params.top_p", self.top_p)?;
        if self.temperature < 0.0 {
            return Err(Error::invalid(
                "sampling_params.temperature",
                format!("must be >= 0, got {}", self.temperature),
            ));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::invalid(
                "sampling_params.top_p",
                format!("must be in (0, 1], got {}", self.top_p),
            ));
        }
        if self.top_k == 0 || self.top_k < -1 {
            return Err(Error::invalid(
                "sampling_params.top_k",
                format!("must be -1 (no limit) or at least 1, got {}", self.top_k),
            ));
        }
        if self.max_tokens == Some(0) {
            return Err(Error::invalid(
                "sampling_params.max_tokens",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

type_tag!(
    /// The `"type": "sample"` tag.
    SampleTag = Sample "sample"
);
type_tag!(
    /// The `"type": "create_sampling_session"` tag.
    CreateSamplingSessionTag = CreateSamplingSession "create_sampling_session"
);
type_tag!(
    /// The `"type": "join_sampling_session"` tag.
    JoinSamplingSessionTag = JoinSamplingSession "join_sampling_session"
);

/// Body of `POST /api/v1/asample` (a future whose result is the protobuf `SampleResponse`).
///
/// Build with [`SampleRequest::new`], which fills the 0.38 defaults the SDK always sends.
///
/// ```
/// use tinker_core::types::{ModelInput, SampleRequest, SamplingParams};
/// let req = SampleRequest::new("sess-0001:sample:0", 0, ModelInput::from_tokens(vec![1, 2, 3]), SamplingParams::default());
/// let json = serde_json::to_value(&req).unwrap();
/// assert_eq!(json["num_samples"], 1);
/// assert_eq!(json["topk_sample_logprobs"], 0);
/// assert_eq!(json["type"], "sample");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRequest {
    /// How many sequences to sample (≥ 1, always sent).
    pub num_samples: u32,
    /// The prompt.
    pub prompt: ModelInput,
    /// Sampling settings.
    pub sampling_params: SamplingParams,
    /// The sampling session (the addressing the SDK always uses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampling_session_id: Option<String>,
    /// The request's place in the sampling client's order (with `sampling_session_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq_id: Option<u64>,
    /// Alternative addressing, unused by the SDK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// Alternative addressing, unused by the SDK.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_path: Option<String>,
    /// Return per-token prompt logprobs (the SDK always sends true/false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs: Option<bool>,
    /// Top-k alternatives per prompt position (always sent, default 0).
    #[serde(default)]
    pub topk_prompt_logprobs: u32,
    /// [0.38] Top-k alternatives per sampled position (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topk_sample_logprobs: Option<u32>,
    /// [0.38] int64 `[len(prompt)-1, K]` token ids whose prompt logprobs are wanted; -1 = none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_prompt_logprobs: Option<TensorData>,
    /// [0.38] Alternative prompt tokens per position (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_alt_tokens_k: Option<u32>,
    /// [0.38] Only the last n prompt logprobs (1 … len(prompt)-1); needs `prompt_logprobs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_logprobs_last_n: Option<u32>,
    /// [0.38] Record what `stable_reinforce` needs (the SDK always sends it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_stability_info: Option<bool>,
    /// Constant `"sample"`.
    #[serde(rename = "type")]
    pub kind: SampleTag,
}

impl SampleRequest {
    /// One sample of `prompt` in a sampling session, with the 0.38 defaults: no prompt logprobs,
    /// no top-k, no stability info.
    pub fn new(
        sampling_session_id: impl Into<String>,
        seq_id: u64,
        prompt: ModelInput,
        sampling_params: SamplingParams,
    ) -> SampleRequest {
        SampleRequest {
            num_samples: 1,
            prompt,
            sampling_params,
            sampling_session_id: Some(sampling_session_id.into()),
            seq_id: Some(seq_id),
            base_model: None,
            model_path: None,
            prompt_logprobs: Some(false),
            topk_prompt_logprobs: 0,
            topk_sample_logprobs: Some(0),
            target_prompt_logprobs: None,
            prompt_alt_tokens_k: Some(0),
            prompt_logprobs_last_n: None,
            record_stability_info: Some(false),
            kind: SampleTag::Sample,
        }
    }

    /// `compute_logprobs(prompt)`: one sample of one token at temperature 1 with prompt logprobs.
    pub fn compute_logprobs(
        sampling_session_id: impl Into<String>,
        seq_id: u64,
        prompt: ModelInput,
    ) -> SampleRequest {
        let params = SamplingParams {
            max_tokens: Some(1),
            ..SamplingParams::default()
        };
        let mut req = SampleRequest::new(sampling_session_id, seq_id, prompt, params);
        req.prompt_logprobs = Some(true);
        req
    }

    /// The same request as SDK 0.25 sent it (none of the 0.38-only fields).
    pub fn as_sdk_025(mut self) -> SampleRequest {
        self.topk_sample_logprobs = None;
        self.target_prompt_logprobs = None;
        self.prompt_alt_tokens_k = None;
        self.prompt_logprobs_last_n = None;
        self.record_stability_info = None;
        self
    }

    /// Checks num_samples ≥ 1, an addressing mode, the sampling params, the prompt and the
    /// 0.38 logprob options.
    pub fn validate(&self) -> Result<()> {
        if self.num_samples == 0 {
            return Err(Error::invalid("num_samples", "must be at least 1"));
        }
        match (&self.sampling_session_id, self.seq_id) {
            (Some(id), Some(_)) => check_non_empty("sampling_session_id", id)?,
            (Some(_), None) => {
                return Err(Error::invalid(
                    "seq_id",
                    "required with sampling_session_id",
                ))
            }
            (None, _) if self.base_model.is_none() && self.model_path.is_none() => {
                return Err(Error::invalid(
                    "sample",
                    "give sampling_session_id (or base_model / model_path)",
                ))
            }
            _ => {}
        }
        self.sampling_params.validate()?;
        let prompt_len = self.prompt.length()?;
        if prompt_len == 0 {
            return Err(Error::invalid("prompt", "the prompt must not be empty"));
        }
        if let Some(n) = self.prompt_logprobs_last_n {
            if self.prompt_logprobs != Some(true) {
                return Err(Error::invalid(
                    "prompt_logprobs_last_n",
                    "requires prompt_logprobs = true",
                ));
            }
            if n == 0 || n as usize > prompt_len.saturating_sub(1) {
                return Err(Error::invalid(
                    "prompt_logprobs_last_n",
                    format!(
                        "must be between 1 and len(prompt) - 1 = {}, got {n}",
                        prompt_len.saturating_sub(1)
                    ),
                ));
            }
        }
        if let Some(t) = &self.target_prompt_logprobs {
            t.validate("target_prompt_logprobs")?;
            let shape = t.shape();
            if shape.len() != 2 || shape[0] + 1 != prompt_len {
                return Err(Error::invalid(
                    "target_prompt_logprobs",
                    format!(
                        "must have shape [len(prompt) - 1, K] = [{}, K], got {shape:?}",
                        prompt_len.saturating_sub(1)
                    ),
                ));
            }
            if t.as_i64().is_none() {
                return Err(Error::invalid(
                    "target_prompt_logprobs",
                    "must be int64 token ids",
                ));
            }
        }
        Ok(())
    }
}

/// Body of `POST /api/v1/create_sampling_session` (direct).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSamplingSessionRequest {
    /// The owning session.
    pub session_id: String,
    /// The session's sampling-client counter value.
    pub sampling_session_seq_id: u64,
    /// Sample from a base model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// Sample from a `tinker://` sampler checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_path: Option<String>,
    /// Constant `"create_sampling_session"`.
    #[serde(rename = "type")]
    pub kind: CreateSamplingSessionTag,
}

impl CreateSamplingSessionRequest {
    /// A sampling session on a base model.
    pub fn for_base_model(
        session_id: impl Into<String>,
        sampling_session_seq_id: u64,
        base_model: impl Into<String>,
    ) -> CreateSamplingSessionRequest {
        CreateSamplingSessionRequest {
            session_id: session_id.into(),
            sampling_session_seq_id,
            base_model: Some(base_model.into()),
            model_path: None,
            kind: CreateSamplingSessionTag::CreateSamplingSession,
        }
    }

    /// A sampling session on saved weights.
    pub fn for_model_path(
        session_id: impl Into<String>,
        sampling_session_seq_id: u64,
        model_path: impl Into<String>,
    ) -> CreateSamplingSessionRequest {
        CreateSamplingSessionRequest {
            session_id: session_id.into(),
            sampling_session_seq_id,
            base_model: None,
            model_path: Some(model_path.into()),
            kind: CreateSamplingSessionTag::CreateSamplingSession,
        }
    }

    /// Checks something to sample from is named and `model_path` starts with `tinker://`.
    pub fn validate(&self) -> Result<()> {
        if self.base_model.is_none() && self.model_path.is_none() {
            return Err(Error::invalid(
                "create_sampling_session",
                "give model_path or base_model",
            ));
        }
        if let Some(p) = &self.model_path {
            if !p.starts_with(TINKER_SCHEME) {
                return Err(Error::invalid(
                    "create_sampling_session.model_path",
                    format!("{p:?} must start with {TINKER_SCHEME}"),
                ));
            }
        }
        if let Some(b) = &self.base_model {
            check_non_empty("create_sampling_session.base_model", b)?;
        }
        Ok(())
    }
}

/// Reply of `create_sampling_session` (`sampling_session_id` required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateSamplingSessionResponse {
    /// `"<session_id>:sample:<n>"`.
    pub sampling_session_id: String,
}

/// Body of `POST /api/v1/join_sampling_session` [0.38].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinSamplingSessionRequest {
    /// The session to join.
    pub sampling_session_id: String,
    /// Constant `"join_sampling_session"`.
    #[serde(rename = "type")]
    pub kind: JoinSamplingSessionTag,
}

impl JoinSamplingSessionRequest {
    /// A join body.
    pub fn new(sampling_session_id: impl Into<String>) -> JoinSamplingSessionRequest {
        JoinSamplingSessionRequest {
            sampling_session_id: sampling_session_id.into(),
            kind: JoinSamplingSessionTag::JoinSamplingSession,
        }
    }
}

/// Reply of `join_sampling_session` (`client_counter` required): the clone id; the clone's
/// `seq_id`s start at `client_counter × 10⁹`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinSamplingSessionResponse {
    /// The clone id (the original client is 0).
    pub client_counter: u64,
}

/// Reply of `GET /api/v1/samplers/{sampler_id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerInfo {
    /// The sampling session (required).
    pub sampler_id: String,
    /// Its base model (required).
    pub base_model: String,
    /// The checkpoint it samples from, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_path: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_captured_038_and_025_sample_bodies_are_reproduced() {
        let params = SamplingParams {
            max_tokens: Some(3),
            stop: Some(StopCondition::Strings(vec!["\n".into()])),
            temperature: 0.7,
            ..SamplingParams::default()
        };
        let mut req = SampleRequest::new(
            "sess-0001:sample:0",
            0,
            ModelInput::from_tokens(vec![1, 2, 3]),
            params,
        );
        req.num_samples = 2;
        req.prompt_logprobs = Some(true);
        req.topk_prompt_logprobs = 2;
        let golden = json!({"num_samples": 2, "prompt": {"chunks": [{"tokens": [1, 2, 3], "type": "encoded_text"}]},
            "sampling_params": {"max_tokens": 3, "stop": ["\n"], "temperature": 0.7, "top_k": -1, "top_p": 1.0},
            "sampling_session_id": "sess-0001:sample:0", "seq_id": 0, "prompt_logprobs": true,
            "topk_prompt_logprobs": 2, "topk_sample_logprobs": 0, "prompt_alt_tokens_k": 0,
            "record_stability_info": false, "type": "sample"});
        assert_eq!(serde_json::to_value(&req).unwrap(), golden);
        assert!(req.validate().is_ok());
        let mut old = golden.clone();
        for k in [
            "topk_sample_logprobs",
            "prompt_alt_tokens_k",
            "record_stability_info",
        ] {
            old.as_object_mut().unwrap().remove(k);
        }
        assert_eq!(serde_json::to_value(req.as_sdk_025()).unwrap(), old);
    }

    #[test]
    fn compute_logprobs_is_a_one_token_sample_with_prompt_logprobs() {
        let req = SampleRequest::compute_logprobs(
            "s:sample:0",
            1,
            ModelInput::from_tokens(vec![1, 2, 3]),
        );
        let v = serde_json::to_value(&req).unwrap();
        assert_eq!(
            v["sampling_params"],
            json!({"max_tokens": 1, "temperature": 1.0, "top_k": -1, "top_p": 1.0})
        );
        assert_eq!(v["prompt_logprobs"], true);
        assert_eq!(v["num_samples"], 1);
    }

    #[test]
    fn stop_conditions_take_all_three_wire_forms() {
        for (wire, expected) in [
            (json!("\n"), StopCondition::Text("\n".into())),
            (
                json!(["a", "b"]),
                StopCondition::Strings(vec!["a".into(), "b".into()]),
            ),
            (json!([13]), StopCondition::Tokens(vec![13])),
        ] {
            let parsed: StopCondition = serde_json::from_value(wire.clone()).unwrap();
            assert_eq!(parsed, expected);
            assert_eq!(serde_json::to_value(&parsed).unwrap(), wire);
        }
        assert_eq!(
            serde_json::to_value(StopCondition::Tokens(vec![])).unwrap(),
            json!([])
        );
    }

    #[test]
    fn sampling_params_out_of_range_are_rejected_by_name() {
        let cases = [
            (
                SamplingParams {
                    temperature: -0.1,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    temperature: f64::INFINITY,
                    ..Default::default()
                },
                "temperature",
            ),
            (
                SamplingParams {
                    top_p: 0.0,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    top_p: 1.5,
                    ..Default::default()
                },
                "top_p",
            ),
            (
                SamplingParams {
                    top_k: 0,
                    ..Default::default()
                },
                "top_k",
            ),
            (
                SamplingParams {
                    top_k: -2,
                    ..Default::default()
                },
                "top_k",
            ),
            (
                SamplingParams {
                    max_tokens: Some(0),
                    ..Default::default()
                },
                "max_tokens",
            ),
        ];
        for (params, field) in cases {
            let err = params.validate().unwrap_err();
            assert!(err.to_string().contains(field), "{field}: {err}");
        }
        assert!(SamplingParams {
            temperature: 0.0,
            top_k: 50,
            top_p: 0.9,
            ..Default::default()
        }
        .validate()
        .is_ok());
    }

    #[test]
    fn sample_request_checks_count_prompt_and_last_n() {
        let prompt = ModelInput::from_tokens(vec![1, 2, 3]);
        let mut req =
            SampleRequest::new("s:sample:0", 0, prompt.clone(), SamplingParams::default());
        req.num_samples = 0;
        assert!(req
            .validate()
            .unwrap_err()
            .to_string()
            .contains("num_samples"));
        let empty = SampleRequest::new(
            "s:sample:0",
            0,
            ModelInput::from_tokens(Vec::<i32>::new()),
            SamplingParams::default(),
        );
        assert!(empty.validate().unwrap_err().to_string().contains("prompt"));
        let mut last_n = SampleRequest::new("s:sample:0", 0, prompt, SamplingParams::default());
        last_n.prompt_logprobs_last_n = Some(1);
        assert!(last_n
            .validate()
            .unwrap_err()
            .to_string()
            .contains("requires prompt_logprobs"));
        last_n.prompt_logprobs = Some(true);
        assert!(last_n.validate().is_ok());
        last_n.prompt_logprobs_last_n = Some(3);
        assert!(last_n.validate().is_err());
    }

    #[test]
    fn sampling_session_bodies_and_replies() {
        let req = CreateSamplingSessionRequest::for_base_model("sess-0001", 1, "Qwen/Qwen3-8B");
        assert_eq!(
            serde_json::to_value(&req).unwrap(),
            json!({"session_id": "sess-0001", "sampling_session_seq_id": 1, "base_model": "Qwen/Qwen3-8B", "type": "create_sampling_session"})
        );
        assert!(req.validate().is_ok());
        let bad = CreateSamplingSessionRequest::for_model_path("s", 0, "s3://x");
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("tinker://"));
        let r: CreateSamplingSessionResponse = serde_json::from_value(
            json!({"type": "create_sampling_session", "sampling_session_id": "sess-0001:sample:1"}),
        )
        .unwrap();
        assert_eq!(r.sampling_session_id, "sess-0001:sample:1");
        assert_eq!(
            serde_json::to_value(JoinSamplingSessionRequest::new("sess-0001:sample:0")).unwrap(),
            json!({"sampling_session_id": "sess-0001:sample:0", "type": "join_sampling_session"})
        );
        let j: JoinSamplingSessionResponse =
            serde_json::from_value(json!({"type": "join_sampling_session", "client_counter": 3}))
                .unwrap();
        assert_eq!(j.client_counter, 3);
        let s: SamplerInfo = serde_json::from_value(
            json!({"sampler_id": "sess-0001:sample:0", "base_model": "Qwen/Qwen3-8B", "model_path": null}),
        )
        .unwrap();
        assert_eq!(s.model_path, None);
        assert!(serde_json::from_value::<SamplerInfo>(json!({"sampler_id": "x"})).is_err());
    }
}
