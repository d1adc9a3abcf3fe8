//! Server futures: the untyped future a submit returns, `retrieve_future` and the shapes of its
//! replies, `retrieve_futures`, `cancel_future` (protocol.md 6, 7.1-7.8).

use serde::{Deserialize, Serialize};

use crate::error::{Error, FailureCategory, Result};

/// What kind of result a future will produce; sent as `X-Tinker-Request-Type` on every poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RequestType {
    /// `create_model` → `CreateModelResponse`.
    CreateModel,
    /// `forward_backward` → protobuf `ForwardBackwardOutput`.
    ForwardBackward,
    /// `forward_backward` with `forward_only` → protobuf `ForwardBackwardOutput`.
    Forward,
    /// `optim_step` → `OptimStepResponse`.
    OptimStep,
    /// `save_weights` → `SaveWeightsResponse`.
    SaveWeights,
    /// `load_weights` → `LoadWeightsResponse`.
    LoadWeights,
    /// `save_weights_for_sampler` → `SaveWeightsForSamplerResponse`.
    SaveWeightsForSampler,
    /// `asample` → protobuf `SampleResponse`.
    Sample,
    /// [0.38] `save_weights_external` → `SaveWeightsExternalResponse`.
    SaveWeightsExternal,
    /// [0.38] `create_custom_loss` → `CreateCustomLossResponse`.
    CreateCustomLoss,
}

impl RequestType {
    /// The `X-Tinker-Request-Type` header value.
    pub fn header_value(self) -> &'static str {
        match self {
            RequestType::CreateModel => "CreateModel",
            RequestType::ForwardBackward => "ForwardBackward",
            RequestType::Forward => "Forward",
            RequestType::OptimStep => "OptimStep",
            RequestType::SaveWeights => "SaveWeights",
            RequestType::LoadWeights => "LoadWeights",
            RequestType::SaveWeightsForSampler => "SaveWeightsForSampler",
            RequestType::Sample => "Sample",
            RequestType::SaveWeightsExternal => "SaveWeightsExternal",
            RequestType::CreateCustomLoss => "CreateCustomLoss",
        }
    }

    /// Parses a header value.
    pub fn from_header_value(s: &str) -> Option<RequestType> {
        [
            RequestType::CreateModel,
            RequestType::ForwardBackward,
            RequestType::Forward,
            RequestType::OptimStep,
            RequestType::SaveWeights,
            RequestType::LoadWeights,
            RequestType::SaveWeightsForSampler,
            RequestType::Sample,
            RequestType::SaveWeightsExternal,
            RequestType::CreateCustomLoss,
        ]
        .into_iter()
        .find(|t| t.header_value() == s)
    }

    /// Whether the result arrives as protobuf (the poll then sends `Accept: application/x-protobuf`).
    pub fn result_is_protobuf(self) -> bool {
        matches!(
            self,
            RequestType::ForwardBackward | RequestType::Forward | RequestType::Sample
        )
    }
}

/// The direct reply of every future endpoint.
///
/// ```
/// use tinker_core::types::UntypedFuture;
/// let f: UntypedFuture = serde_json::from_str(r#"{"request_id": "req-0006", "sample_sequence_ids": ["seq-0", "seq-1"]}"#).unwrap();
/// assert_eq!(f.request_id, "req-0006");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UntypedFuture {
    /// Poll with `retrieve_future`.
    pub request_id: String,
    /// Echo of the model id; ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// [0.38] `asample` only: one sequence id per requested sample, in order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_sequence_ids: Option<Vec<String>>,
}

impl UntypedFuture {
    /// The 0.38 client's check on an `asample` reply: exactly `num_samples` sequence ids.
    pub fn expect_sequence_ids(&self, num_samples: u32) -> Result<&[String]> {
        match &self.sample_sequence_ids {
            Some(ids) if ids.len() == num_samples as usize => Ok(ids),
            Some(ids) => Err(Error::decode(
                "UntypedFuture",
                format!(
                    "sample_sequence_ids has {} entries for {num_samples} samples",
                    ids.len()
                ),
            )),
            None => Err(Error::decode(
                "UntypedFuture",
                "missing field `sample_sequence_ids`",
            )),
        }
    }
}

/// Body of `POST /api/v1/retrieve_future`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrieveFutureRequest {
    /// The future to poll.
    pub request_id: String,
    /// Allow a metadata-only answer for large payloads (7.4); the client starts with `true`.
    pub allow_metadata_only: bool,
}

/// Queue state reported with a try-again reply (7.9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QueueState {
    /// Running or queued normally.
    Active,
    /// The backend is short on capacity.
    PausedCapacity,
    /// A per-user concurrency limit was hit.
    PausedRateLimit,
    /// Missing or unrecognised.
    #[default]
    Unknown,
}

impl QueueState {
    /// Parses the wire value; anything unrecognised is [`QueueState::Unknown`].
    pub fn from_wire(s: Option<&str>) -> QueueState {
        match s {
            Some("active") => QueueState::Active,
            Some("paused_capacity") => QueueState::PausedCapacity,
            Some("paused_rate_limit") => QueueState::PausedRateLimit,
            _ => QueueState::Unknown,
        }
    }

    /// The wire name (`"unknown"` for [`QueueState::Unknown`]).
    pub fn name(self) -> &'static str {
        match self {
            QueueState::Active => "active",
            QueueState::PausedCapacity => "paused_capacity",
            QueueState::PausedRateLimit => "paused_rate_limit",
            QueueState::Unknown => "unknown",
        }
    }
}

/// `{"type": "try_again", ...}`: still pending (also the body of a 408 on a poll).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TryAgainResponse {
    /// `"try_again"`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The polled future.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Raw queue state; see [`TryAgainResponse::queue_state`].
    #[serde(
        rename = "queue_state",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub queue_state_raw: Option<String>,
    /// Human-readable reason for the state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_state_reason: Option<String>,
}

impl TryAgainResponse {
    /// The parsed queue state.
    pub fn queue_state(&self) -> QueueState {
        QueueState::from_wire(self.queue_state_raw.as_deref())
    }
}

/// `{"error": ..., "category": ...}`: the future failed (terminal).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestFailedResponse {
    /// The server's message.
    pub error: String,
    /// `"user"`, `"server"` or absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
}

impl RequestFailedResponse {
    /// The parsed category.
    pub fn failure_category(&self) -> FailureCategory {
        FailureCategory::from_wire(self.category.as_deref())
    }

    /// The user-facing error for the future `request_id`.
    pub fn into_error(self, request_id: &str) -> Error {
        Error::RequestFailed {
            category: self.failure_category(),
            message: self.error,
            request_id: request_id.to_owned(),
        }
    }
}

/// What a 2xx `retrieve_future` reply means, checked in the SDK's order (7.3).
#[derive(Debug, Clone, PartialEq)]
pub enum FutureReply {
    /// The body is the serialized protobuf result (`Content-Type` contains `application/x-protobuf`).
    Protobuf(bytes::Bytes),
    /// Still pending.
    TryAgain(TryAgainResponse),
    /// The payload is `response_payload_size` bytes: reserve them and re-poll with
    /// `allow_metadata_only: false` (7.4).
    MetadataOnly {
        /// Announced payload size in bytes.
        response_payload_size: u64,
    },
    /// The request failed.
    Failed(RequestFailedResponse),
    /// A JSON result, to be decoded as the type the submit expects.
    Json(serde_json::Value),
}

impl FutureReply {
    /// Classifies a 2xx reply body given its `Content-Type`.
    ///
    /// ```
    /// use tinker_core::types::FutureReply;
    /// let r = FutureReply::classify(Some("application/json"), br#"{"type": "try_again", "queue_state": "active"}"#).unwrap();
    /// assert!(matches!(r, FutureReply::TryAgain(_)));
    /// ```
    pub fn classify(content_type: Option<&str>, body: &[u8]) -> Result<FutureReply> {
        if content_type.is_some_and(|c| c.contains("application/x-protobuf")) {
            return Ok(FutureReply::Protobuf(bytes::Bytes::copy_from_slice(body)));
        }
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| Error::decode("retrieve_future reply", format!("not JSON: {e}")))?;
        let obj = match value.as_object() {
            Some(o) => o,
            None => return Ok(FutureReply::Json(value)),
        };
        if obj.get("type").and_then(|t| t.as_str()) == Some("try_again") {
            return decode_value::<TryAgainResponse>("TryAgainResponse", value)
                .map(FutureReply::TryAgain);
        }
        if obj.get("status").and_then(|s| s.as_str()) == Some("complete_metadata") {
            let size = obj
                .get("response_payload_size")
                .ok_or_else(|| {
                    Error::decode(
                        "metadata-only reply",
                        "missing field `response_payload_size`",
                    )
                })?
                .as_u64()
                .ok_or_else(|| {
                    Error::decode(
                        "metadata-only reply",
                        "`response_payload_size` must be a non-negative integer",
                    )
                })?;
            return Ok(FutureReply::MetadataOnly {
                response_payload_size: size,
            });
        }
        if obj.contains_key("error") {
            return decode_value::<RequestFailedResponse>("RequestFailedResponse", value)
                .map(FutureReply::Failed);
        }
        Ok(FutureReply::Json(value))
    }
}

fn decode_value<T: serde::de::DeserializeOwned>(what: &str, value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| Error::decode(what, e.to_string()))
}

/// What `retrieve_futures` watches: a sampling session, per clone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FuturesTarget {
    /// `{"type": "sampling_session", ...}`.
    SamplingSession {
        /// The sampling session.
        sampling_session_id: String,
        /// The clone id (`seq_id / 10⁹`), 0 for the original client.
        #[serde(default)]
        cloned_sampler_id: u64,
    },
}

/// Body of `POST /api/v1/retrieve_futures` [0.38].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrieveFuturesRequest {
    /// What to watch.
    pub target: FuturesTarget,
    /// Cursor of the previous reply (0 = from the beginning); acknowledges earlier events.
    #[serde(default)]
    pub prev_cursor: u64,
    /// Omitted = normal long poll; `Some(0.0)` = return immediately (ack-only poll).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    /// Requests whose payloads were fetched (or failed) since the last successful poll.
    #[serde(default)]
    pub retrieved_request_ids: Vec<String>,
}

impl RetrieveFuturesRequest {
    /// A long poll of one sampling session clone.
    pub fn long_poll(
        sampling_session_id: impl Into<String>,
        cloned_sampler_id: u64,
        prev_cursor: u64,
        retrieved_request_ids: Vec<String>,
    ) -> RetrieveFuturesRequest {
        RetrieveFuturesRequest {
            target: FuturesTarget::SamplingSession {
                sampling_session_id: sampling_session_id.into(),
                cloned_sampler_id,
            },
            prev_cursor,
            timeout: None,
            retrieved_request_ids,
        }
    }

    /// The same poll as an ack-only poll (`timeout: 0.0`).
    pub fn ack_only(mut self) -> RetrieveFuturesRequest {
        self.timeout = Some(0.0);
        self
    }

    /// Whether this is an ack-only poll (short HTTP timeout).
    pub fn is_ack_only(&self) -> bool {
        self.timeout == Some(0.0)
    }
}

/// One completion event of `retrieve_futures`, tagged by `state`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum FutureCompletion {
    /// The request finished; fetch its payload with `retrieve_future`.
    Finished {
        /// The finished request.
        request_id: String,
        /// Payload size to reserve before fetching.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        response_payload_uncompressed_size: Option<u64>,
    },
    /// The request failed; `retrieve_future` returns the error.
    Failed {
        /// The failed request.
        request_id: String,
    },
}

impl FutureCompletion {
    /// The request this event is about.
    pub fn request_id(&self) -> &str {
        match self {
            FutureCompletion::Finished { request_id, .. }
            | FutureCompletion::Failed { request_id } => request_id,
        }
    }
}

/// Reply of `retrieve_futures` (both fields required).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetrieveFuturesResponse {
    /// New completion events.
    pub completions: Vec<FutureCompletion>,
    /// Pass back as `prev_cursor`.
    pub cursor: u64,
}

/// Body of `POST /api/v1/cancel_future` [0.38] (hand-built, no `type`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CancelFutureRequest {
    /// The abandoned sample future.
    pub request_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replies_are_classified_in_the_sdk_order() {
        let proto = FutureReply::classify(Some("application/x-protobuf"), b"\x0a\x01").unwrap();
        assert_eq!(
            proto,
            FutureReply::Protobuf(bytes::Bytes::from_static(b"\x0a\x01"))
        );

        let again = FutureReply::classify(
            Some("application/json"),
            br#"{"type": "try_again", "request_id": "req-0000", "queue_state": "paused_capacity", "queue_state_reason": "mock: waiting for capacity"}"#,
        )
        .unwrap();
        match again {
            FutureReply::TryAgain(t) => {
                assert_eq!(t.queue_state(), QueueState::PausedCapacity);
                assert_eq!(
                    t.queue_state_reason.as_deref(),
                    Some("mock: waiting for capacity")
                );
            }
            other => panic!("expected try_again, got {other:?}"),
        }

        let meta = FutureReply::classify(
            None,
            br#"{"status": "complete_metadata", "response_payload_size": 270}"#,
        )
        .unwrap();
        assert_eq!(
            meta,
            FutureReply::MetadataOnly {
                response_payload_size: 270
            }
        );

        let failed = FutureReply::classify(
            None,
            br#"{"error": "mock: learning rate must be positive", "category": "user"}"#,
        )
        .unwrap();
        match failed {
            FutureReply::Failed(f) => {
                let err = f.into_error("req-0002");
                assert_eq!(err.request_id(), Some("req-0002"));
                assert!(err.to_string().contains("user error"), "{err}");
            }
            other => panic!("expected failure, got {other:?}"),
        }

        let ok = FutureReply::classify(
            None,
            br#"{"model_id": "sess-0001:train:0", "type": "create_model"}"#,
        )
        .unwrap();
        assert_eq!(
            ok,
            FutureReply::Json(json!({"model_id": "sess-0001:train:0", "type": "create_model"}))
        );
    }

    #[test]
    fn malformed_poll_replies_are_decode_errors() {
        for body in [
            &b"not json"[..],
            br#"{"status": "complete_metadata"}"#,
            br#"{"status": "complete_metadata", "response_payload_size": -1}"#,
            br#"{"error": 5}"#,
        ] {
            let err = FutureReply::classify(None, body).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{err}");
        }
        let unknown =
            FutureReply::classify(None, br#"{"type": "try_again", "queue_state": "weird"}"#)
                .unwrap();
        match unknown {
            FutureReply::TryAgain(t) => assert_eq!(t.queue_state(), QueueState::Unknown),
            other => panic!("{other:?}"),
        }
        let f = RequestFailedResponse {
            error: "x".into(),
            category: None,
        };
        assert_eq!(f.failure_category(), FailureCategory::Unknown);
    }

    #[test]
    fn request_types_name_their_header_and_result_encoding() {
        for t in [
            RequestType::ForwardBackward,
            RequestType::Forward,
            RequestType::Sample,
        ] {
            assert!(t.result_is_protobuf());
        }
        assert!(!RequestType::OptimStep.result_is_protobuf());
        assert_eq!(
            RequestType::from_header_value("SaveWeightsForSampler"),
            Some(RequestType::SaveWeightsForSampler)
        );
        assert_eq!(RequestType::from_header_value("Nope"), None);
    }

    #[test]
    fn sample_futures_must_carry_one_sequence_id_per_sample() {
        let f: UntypedFuture =
            serde_json::from_value(json!({"request_id": "r", "sample_sequence_ids": ["a", "b"]}))
                .unwrap();
        assert_eq!(f.expect_sequence_ids(2).unwrap(), ["a", "b"]);
        assert!(f.expect_sequence_ids(3).is_err());
        let bare: UntypedFuture =
            serde_json::from_value(json!({"request_id": "r", "model_id": "m"})).unwrap();
        assert!(bare
            .expect_sequence_ids(1)
            .unwrap_err()
            .to_string()
            .contains("sample_sequence_ids"));
        assert!(serde_json::from_value::<UntypedFuture>(json!({})).is_err());
    }

    #[test]
    fn retrieve_futures_bodies_match_the_captures() {
        let poll = RetrieveFuturesRequest::long_poll("sess-0001:sample:0", 0, 0, vec![]);
        assert_eq!(
            serde_json::to_value(&poll).unwrap(),
            json!({"target": {"type": "sampling_session", "sampling_session_id": "sess-0001:sample:0", "cloned_sampler_id": 0}, "prev_cursor": 0, "retrieved_request_ids": []})
        );
        let ack =
            RetrieveFuturesRequest::long_poll("sess-0001:sample:0", 0, 9, vec!["req-0008".into()])
                .ack_only();
        assert!(ack.is_ack_only());
        assert_eq!(
            serde_json::to_string(&ack).unwrap(),
            r#"{"target":{"type":"sampling_session","sampling_session_id":"sess-0001:sample:0","cloned_sampler_id":0},"prev_cursor":9,"timeout":0.0,"retrieved_request_ids":["req-0008"]}"#
        );
        let r: RetrieveFuturesResponse = serde_json::from_value(json!({"completions": [
            {"state": "finished", "request_id": "req-0008", "response_payload_uncompressed_size": 134},
            {"state": "failed", "request_id": "req-0009"}], "cursor": 9}))
        .unwrap();
        assert_eq!(r.completions[0].request_id(), "req-0008");
        assert_eq!(
            r.completions[1],
            FutureCompletion::Failed {
                request_id: "req-0009".into()
            }
        );
        assert!(
            serde_json::from_value::<RetrieveFuturesResponse>(json!({"completions": []})).is_err()
        );
    }
}
