//! `tinker://` checkpoint paths (protocol.md 3.2).
//!
//! ```text
//! tinker://<training_run_id>/weights/<name>            training checkpoint   (checkpoint_type "training")
//! tinker://<training_run_id>/sampler_weights/<name>    sampler checkpoint    ("sampler")
//! tinker://<training_run_id>/external_weights/<name>   [0.38] HF-format export ("external")
//! ```
//!
//! The SDK's rule: strip `tinker://`, split on `/`, require exactly three parts, the middle one a
//! known kind. REST endpoints address a checkpoint by `training_run_id` plus the checkpoint id
//! `"<kind>/<name>"`, which contains a slash and is inserted into URLs verbatim.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The URI scheme prefix.
pub const TINKER_SCHEME: &str = "tinker://";

/// What a checkpoint holds; the middle segment of a `tinker://` path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CheckpointKind {
    /// `weights`: full training state from `save_state` (`checkpoint_type` `"training"`).
    Weights,
    /// `sampler_weights`: weights for sampling from `save_weights_for_sampler` (`"sampler"`).
    SamplerWeights,
    /// `external_weights` [0.38]: HuggingFace/PEFT export from `save_weights_external` (`"external"`).
    ExternalWeights,
}

impl CheckpointKind {
    /// The path segment, e.g. `"sampler_weights"`.
    pub fn segment(self) -> &'static str {
        match self {
            CheckpointKind::Weights => "weights",
            CheckpointKind::SamplerWeights => "sampler_weights",
            CheckpointKind::ExternalWeights => "external_weights",
        }
    }

    /// Parses a path segment.
    pub fn from_segment(s: &str) -> Option<CheckpointKind> {
        match s {
            "weights" => Some(CheckpointKind::Weights),
            "sampler_weights" => Some(CheckpointKind::SamplerWeights),
            "external_weights" => Some(CheckpointKind::ExternalWeights),
            _ => None,
        }
    }
}

/// A parsed `tinker://<run>/<kind>/<name>` path.
///
/// ```
/// use tinker_core::path::{CheckpointKind, TinkerPath};
///
/// let p: TinkerPath = "tinker://sess-0001:train:0/weights/step-1".parse().unwrap();
/// assert_eq!(p.training_run_id(), "sess-0001:train:0");
/// assert_eq!(p.kind(), CheckpointKind::Weights);
/// assert_eq!(p.name(), "step-1");
/// assert_eq!(p.checkpoint_id(), "weights/step-1");
/// assert_eq!(p.to_string(), "tinker://sess-0001:train:0/weights/step-1");
/// assert!("tinker://run/optimizer/x".parse::<TinkerPath>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TinkerPath {
    training_run_id: String,
    kind: CheckpointKind,
    name: String,
}

impl TinkerPath {
    /// Builds a path from its parts, checking each is a valid segment.
    pub fn new(
        training_run_id: impl Into<String>,
        kind: CheckpointKind,
        name: impl Into<String>,
    ) -> Result<TinkerPath> {
        let training_run_id = training_run_id.into();
        let name = name.into();
        check_segment("tinker path", "training run id", &training_run_id)?;
        check_segment("tinker path", "checkpoint name", &name)?;
        Ok(TinkerPath {
            training_run_id,
            kind,
            name,
        })
    }

    /// Parses `tinker://<run>/<kind>/<name>`; errors say which part is wrong.
    pub fn parse(path: &str) -> Result<TinkerPath> {
        let bad = |why: String| Error::invalid("tinker path", format!("{path:?} {why}"));
        let rest = path.strip_prefix(TINKER_SCHEME).ok_or_else(|| {
            bad(format!(
                "must start with {TINKER_SCHEME} (e.g. tinker://<run>/weights/<name>)"
            ))
        })?;
        let parts: Vec<&str> = rest.split('/').collect();
        if parts.len() != 3 {
            return Err(bad(format!(
                "must have exactly three parts after {TINKER_SCHEME}: <training_run_id>/<kind>/<name>, found {}",
                parts.len()
            )));
        }
        let kind = CheckpointKind::from_segment(parts[1]).ok_or_else(|| {
            bad(format!(
                "has unknown checkpoint kind {:?}; expected weights, sampler_weights or external_weights",
                parts[1]
            ))
        })?;
        check_segment("tinker path", "training run id", parts[0])
            .map_err(|_| bad("has an empty or invalid training run id".into()))?;
        check_segment("tinker path", "checkpoint name", parts[2])
            .map_err(|_| bad("has an empty or invalid checkpoint name".into()))?;
        Ok(TinkerPath {
            training_run_id: parts[0].to_owned(),
            kind,
            name: parts[2].to_owned(),
        })
    }

    /// The training run (model) id, e.g. `"sess-0001:train:0"`.
    pub fn training_run_id(&self) -> &str {
        &self.training_run_id
    }

    /// What the checkpoint holds.
    pub fn kind(&self) -> CheckpointKind {
        self.kind
    }

    /// The checkpoint's name, e.g. `"step-1"`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The REST checkpoint id `"<kind>/<name>"`, e.g. `"weights/step-1"`.
    pub fn checkpoint_id(&self) -> String {
        format!("{}/{}", self.kind.segment(), self.name)
    }
}

/// Checks one path segment: non-empty, no `/`, and nothing that would break a URL path
/// (whitespace, control characters, `?`, `#`).
pub(crate) fn check_segment(location: &str, what: &str, s: &str) -> Result<()> {
    if s.is_empty() {
        return Err(Error::invalid(
            location,
            format!("{what} must not be empty"),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| *c == '/' || *c == '?' || *c == '#' || c.is_whitespace() || c.is_control())
    {
        return Err(Error::invalid(
            location,
            format!("{what} {s:?} contains {c:?}, which cannot appear in a URL path segment"),
        ));
    }
    Ok(())
}

impl fmt::Display for TinkerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{TINKER_SCHEME}{}/{}/{}",
            self.training_run_id,
            self.kind.segment(),
            self.name
        )
    }
}

impl FromStr for TinkerPath {
    type Err = Error;
    fn from_str(s: &str) -> Result<TinkerPath> {
        TinkerPath::parse(s)
    }
}

impl Serialize for TinkerPath {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TinkerPath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<TinkerPath, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        TinkerPath::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_and_formats_back() {
        for (text, kind, cid) in [
            ("tinker://r/weights/x", CheckpointKind::Weights, "weights/x"),
            (
                "tinker://sess-0001:train:0/sampler_weights/s-1",
                CheckpointKind::SamplerWeights,
                "sampler_weights/s-1",
            ),
            (
                "tinker://run/external_weights/e1",
                CheckpointKind::ExternalWeights,
                "external_weights/e1",
            ),
        ] {
            let p = TinkerPath::parse(text).unwrap();
            assert_eq!(p.kind(), kind);
            assert_eq!(p.checkpoint_id(), cid);
            assert_eq!(p.to_string(), text);
            let built = TinkerPath::new(p.training_run_id(), kind, p.name()).unwrap();
            assert_eq!(built, p);
        }
    }

    #[test]
    fn each_malformed_path_gets_an_error_saying_what_is_wrong() {
        let cases = [
            ("s3://bucket/weights/x", "must start with tinker://"),
            ("run/weights/x", "must start with tinker://"),
            ("tinker://run/weights", "exactly three parts"),
            ("tinker://run/weights/x/y", "exactly three parts"),
            ("tinker://", "exactly three parts"),
            ("tinker://run/checkpoints/x", "unknown checkpoint kind"),
            ("tinker:///weights/x", "training run id"),
            ("tinker://run/weights/", "checkpoint name"),
            ("tinker://run/weights/a b", "checkpoint name"),
            ("tinker://ru?n/weights/x", "training run id"),
        ];
        for (text, expected) in cases {
            let err = TinkerPath::parse(text).unwrap_err();
            assert!(matches!(err, Error::InvalidInput { .. }));
            assert!(err.to_string().contains(expected), "{text}: {err}");
        }
        assert!(TinkerPath::new("run/x", CheckpointKind::Weights, "n").is_err());
    }

    #[test]
    fn serde_uses_the_string_form() {
        let p: TinkerPath = serde_json::from_str("\"tinker://r/weights/x\"").unwrap();
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            "\"tinker://r/weights/x\""
        );
        assert!(serde_json::from_str::<TinkerPath>("\"tinker://r/x\"").is_err());
    }
}
