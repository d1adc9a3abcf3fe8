//! forward_backward: the loss function a call names, its config values, and its result
//! (protocol.md 9.6, 9.7, 10.4).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::tensor::TensorData;
use crate::error::{Error, Result};

/// The server-side loss a forward_backward call computes (protocol.md 9.6).
///
/// ```
/// use tinker_core::types::LossFn;
/// let loss: LossFn = "importance_sampling".parse().unwrap();
/// assert_eq!(loss, LossFn::ImportanceSampling);
/// assert_eq!(loss.as_str(), "importance_sampling");
/// assert!("cross-entropy".parse::<LossFn>().unwrap_err().to_string().contains("cross_entropy"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LossFn {
    /// Supervised next-token loss: `target_tokens`, `weights`.
    CrossEntropy,
    /// Policy gradient with importance weights: `target_tokens`, `logprobs`, `advantages`.
    ImportanceSampling,
    /// Clipped PPO objective (config `clip_low_threshold`, `clip_high_threshold`).
    Ppo,
    /// Clipped importance-sampling policy optimisation.
    Cispo,
    /// Distributionally robust optimisation.
    Dro,
    /// Group sequence policy optimisation (SDK 0.38).
    Gspo,
    /// Stable REINFORCE, referring to sampled sequences by id (SDK 0.38).
    StableReinforce,
    /// A loss uploaded with `create_custom_loss`; config `loss_id` names it (SDK 0.38).
    Custom,
}

impl LossFn {
    /// Every loss, in the order the documentation lists them.
    pub const ALL: [LossFn; 8] = [
        LossFn::CrossEntropy,
        LossFn::ImportanceSampling,
        LossFn::Ppo,
        LossFn::Cispo,
        LossFn::Dro,
        LossFn::Gspo,
        LossFn::StableReinforce,
        LossFn::Custom,
    ];

    /// The wire name (`"cross_entropy"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            LossFn::CrossEntropy => "cross_entropy",
            LossFn::ImportanceSampling => "importance_sampling",
            LossFn::Ppo => "ppo",
            LossFn::Cispo => "cispo",
            LossFn::Dro => "dro",
            LossFn::Gspo => "gspo",
            LossFn::StableReinforce => "stable_reinforce",
            LossFn::Custom => "custom",
        }
    }
}

impl fmt::Display for LossFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LossFn {
    type Err = Error;

    fn from_str(s: &str) -> Result<LossFn> {
        LossFn::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = LossFn::ALL.iter().map(|l| l.as_str()).collect();
                Error::invalid(
                    "loss_fn",
                    format!("unknown loss {s:?}; expected one of {}", names.join(", ")),
                )
            })
    }
}

impl Serialize for LossFn {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for LossFn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<LossFn, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One `loss_fn_config` value: SDK 0.25 allows numbers only, 0.38 also strings (`loss_id`).
///
/// JSON form is the bare value (`0.2` or `"loss-abc"`).
///
/// ```
/// use tinker_core::types::LossConfigValue;
/// let v: LossConfigValue = 0.2.into();
/// assert_eq!(v, LossConfigValue::Number(0.2));
/// assert_eq!(serde_json::to_string(&LossConfigValue::from("id-1")).unwrap(), "\"id-1\"");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LossConfigValue {
    /// A number; sent in both `loss_fn_config` and `loss_fn_config_v2` (protocol.md 10.3).
    Number(f64),
    /// A string; sent only in `loss_fn_config_v2`.
    Text(String),
}

impl From<f64> for LossConfigValue {
    fn from(v: f64) -> LossConfigValue {
        LossConfigValue::Number(v)
    }
}

impl From<&str> for LossConfigValue {
    fn from(v: &str) -> LossConfigValue {
        LossConfigValue::Text(v.to_owned())
    }
}

impl From<String> for LossConfigValue {
    fn from(v: String) -> LossConfigValue {
        LossConfigValue::Text(v)
    }
}

/// The result of a forward or forward_backward call (protocol.md 10.4).
///
/// `loss_fn_outputs` has one map per datum, in the order the datums were sent; `metrics` is keyed
/// `"<name>:<reduction>"` (9.7), e.g. `loss:sum`.
///
/// ```
/// use std::collections::BTreeMap;
/// use tinker_core::types::{ForwardBackwardOutput, TensorData};
/// let out = ForwardBackwardOutput {
///     loss_fn_output_type: "CrossEntropyLossReturn".into(),
///     loss_fn_outputs: vec![BTreeMap::from([("logprobs".to_string(), TensorData::from_f32(vec![-0.5]))])],
///     metrics: BTreeMap::from([("loss:sum".to_string(), 0.5)]),
/// };
/// assert_eq!(out.loss(), Some(0.5));
/// assert_eq!(out.logprobs(0).unwrap().as_f32(), Some(&[-0.5f32][..]));
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ForwardBackwardOutput {
    /// The output record class, unqualified (e.g. `CrossEntropyLossReturn`).
    pub loss_fn_output_type: String,
    /// Per-datum named output tensors.
    pub loss_fn_outputs: Vec<BTreeMap<String, TensorData>>,
    /// Combined metrics, keyed `"<name>:<reduction>"`.
    pub metrics: BTreeMap<String, f64>,
}

impl ForwardBackwardOutput {
    /// `metrics["loss:sum"]`, the loss of the call (there is no other loss field).
    pub fn loss(&self) -> Option<f64> {
        self.metrics.get("loss:sum").copied()
    }

    /// The per-token `logprobs` output of datum `index`, when present.
    pub fn logprobs(&self, index: usize) -> Option<&TensorData> {
        self.loss_fn_outputs.get(index)?.get("logprobs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_loss_name_round_trips_and_unknown_names_list_the_valid_ones() {
        for loss in LossFn::ALL {
            assert_eq!(loss.as_str().parse::<LossFn>().unwrap(), loss);
            let json = serde_json::to_string(&loss).unwrap();
            assert_eq!(serde_json::from_str::<LossFn>(&json).unwrap(), loss);
        }
        let err = "grpo".parse::<LossFn>().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
        let text = err.to_string();
        for loss in LossFn::ALL {
            assert!(text.contains(loss.as_str()), "{text}");
        }
    }

    #[test]
    fn config_values_are_bare_json_numbers_or_strings() {
        let map: BTreeMap<String, LossConfigValue> =
            serde_json::from_str(r#"{"clip_low_threshold": 0.8, "loss_id": "abc"}"#).unwrap();
        assert_eq!(map["clip_low_threshold"], LossConfigValue::Number(0.8));
        assert_eq!(map["loss_id"], LossConfigValue::Text("abc".into()));
    }

    #[test]
    fn output_json_round_trips() {
        let out = ForwardBackwardOutput {
            loss_fn_output_type: "CrossEntropyLossReturn".into(),
            loss_fn_outputs: vec![BTreeMap::from([(
                "logprobs".to_string(),
                TensorData::from_f32(vec![-0.5, -1.0]),
            )])],
            metrics: BTreeMap::from([("loss:sum".to_string(), 1.5)]),
        };
        let json = serde_json::to_string(&out).unwrap();
        let back: ForwardBackwardOutput = serde_json::from_str(&json).unwrap();
        assert_eq!(back, out);
    }
}
