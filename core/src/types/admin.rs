//! Admin and billing resources: audit log, usage events, checkpoint storage (protocol.md 6.7).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::common::Metadata;
use super::timestamp::Timestamp;

/// Which audit events to list (`event_type` query parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditEventType {
    /// Everything (default).
    #[default]
    All,
    /// Checkpoint reads and writes.
    Checkpoints,
    /// [0.38] Project changes.
    Projects,
    /// [0.38] Team changes.
    Teams,
    /// [0.38] Organization changes.
    Organizations,
}

impl AuditEventType {
    /// The query-string value.
    pub fn name(self) -> &'static str {
        match self {
            AuditEventType::All => "all",
            AuditEventType::Checkpoints => "checkpoints",
            AuditEventType::Projects => "projects",
            AuditEventType::Teams => "teams",
            AuditEventType::Organizations => "organizations",
        }
    }
}

/// One audit log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditLogEntry {
    /// When it happened.
    pub timestamp: Timestamp,
    /// What happened, e.g. `"checkpoint_read"`.
    pub event: String,
    /// [0.38] Event-specific details.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_details: Option<Metadata>,
    /// The training run involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_id: Option<String>,
    /// The checkpoint involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tinker_path: Option<String>,
    /// Why it was accessed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
}

/// Reply of `GET /api/v1/audit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditLogResponse {
    /// The day's entries.
    pub entries: Vec<AuditLogEntry>,
}

/// What a billing bucket counts, tagged by `type`. Unknown kinds decode as [`EventInfo::Other`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventInfo {
    /// Training tokens.
    Training {
        /// Tokens processed.
        token_count: u64,
    },
    /// Sampling prompt (prefill) tokens.
    SamplingPrefill {
        /// Whether these tokens were prefix-cache hits.
        cached: bool,
        /// Tokens processed.
        token_count: u64,
    },
    /// Sampled tokens.
    SamplingSample {
        /// Tokens generated.
        token_count: u64,
    },
    /// Checkpoint operations.
    Checkpoint {
        /// How many.
        count: u64,
    },
    /// Checkpoint storage.
    Storage {
        /// Stored GB × hours.
        gigabyte_hours: f64,
        /// [0.38] Whether this storage is free of charge.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        free: Option<bool>,
    },
    /// A kind this SDK does not know.
    #[serde(other)]
    Other,
}

/// One hourly usage bucket.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BillingUsageEvent {
    /// Bucket start.
    pub bucket_start: Timestamp,
    /// Bucket end.
    pub bucket_end: Timestamp,
    /// What was counted.
    pub event_info: EventInfo,
    /// Model involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_model: Option<String>,
    /// User id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Session involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Project involved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// [0.38] Estimated cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_cost_usd: Option<f64>,
    /// [0.38] Effective token rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_rate_usd_per_million_tokens: Option<f64>,
    /// [0.38] Effective storage rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_rate_usd_per_gigabyte_month: Option<f64>,
}

/// Per-session details attached to a usage reply.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct BillingSessionInfo {
    /// The session's metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_metadata: Option<Metadata>,
}

/// Reply of `GET /api/v1/billing/usage/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BillingUsageResponse {
    /// Usage buckets.
    pub data: Vec<BillingUsageEvent>,
    /// Session id → details.
    #[serde(default)]
    pub sessions: BTreeMap<String, BillingSessionInfo>,
    /// [0.38] Costs are final up to this instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_data_through: Option<Timestamp>,
}

/// One row of current checkpoint storage usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointStorageRow {
    /// Project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// Owner URN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_user_urn: Option<String>,
    /// Owner email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_email: Option<String>,
    /// Owner name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    /// Checkpoints stored.
    pub checkpoint_count: u64,
    /// Bytes stored.
    pub size_bytes: u64,
    /// GB stored.
    pub size_gigabytes: f64,
    /// Estimated monthly cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_monthly_cost_usd: Option<f64>,
}

/// Reply of `GET /api/v1/billing/usage/checkpoints/current` [0.38].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointStorageUsage {
    /// Storage rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_rate_usd_per_gigabyte_month: Option<f64>,
    /// Rows.
    pub data: Vec<CheckpointStorageRow>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_protocol_usage_example_decodes() {
        let r: BillingUsageResponse = serde_json::from_value(json!({
            "data": [{"bucket_start": "2026-07-13T00:00:00Z", "bucket_end": "2026-07-13T01:00:00Z",
                      "base_model": "Qwen/Qwen3-8B", "user_id": null, "user_name": null,
                      "session_id": "sess-0001", "project_id": null,
                      "estimated_cost_usd": null, "effective_rate_usd_per_million_tokens": null,
                      "effective_rate_usd_per_gigabyte_month": null,
                      "event_info": {"type": "training", "token_count": 1000}}],
            "sessions": {"sess-0001": {"user_metadata": {"k": "v"}}},
            "cost_data_through": null}))
        .unwrap();
        assert_eq!(
            r.data[0].event_info,
            EventInfo::Training { token_count: 1000 }
        );
        assert_eq!(
            r.sessions["sess-0001"].user_metadata.as_ref().unwrap()["k"],
            "v"
        );
        let minimal: BillingUsageResponse = serde_json::from_value(json!({"data": []})).unwrap();
        assert!(minimal.sessions.is_empty());
    }

    #[test]
    fn every_event_info_variant_decodes_and_unknown_kinds_survive() {
        let cases = [
            (
                json!({"type": "sampling_prefill", "cached": true, "token_count": 5}),
                EventInfo::SamplingPrefill {
                    cached: true,
                    token_count: 5,
                },
            ),
            (
                json!({"type": "sampling_sample", "token_count": 6}),
                EventInfo::SamplingSample { token_count: 6 },
            ),
            (
                json!({"type": "checkpoint", "count": 2}),
                EventInfo::Checkpoint { count: 2 },
            ),
            (
                json!({"type": "storage", "gigabyte_hours": 1.5, "free": false}),
                EventInfo::Storage {
                    gigabyte_hours: 1.5,
                    free: Some(false),
                },
            ),
            (json!({"type": "teleport", "distance": 1}), EventInfo::Other),
        ];
        for (wire, expected) in cases {
            assert_eq!(serde_json::from_value::<EventInfo>(wire).unwrap(), expected);
        }
        assert!(serde_json::from_value::<EventInfo>(json!({"type": "checkpoint"})).is_err());
    }

    #[test]
    fn audit_and_storage_replies_decode() {
        let a: AuditLogResponse = serde_json::from_value(
            json!({"entries": [{"timestamp": "2026-08-01T12:00:00Z", "event": "checkpoint_read", "event_details": {"actor": "u-123"}}]}),
        )
        .unwrap();
        assert_eq!(a.entries[0].event, "checkpoint_read");
        assert_eq!(AuditEventType::Organizations.name(), "organizations");
        let s: CheckpointStorageUsage = serde_json::from_value(
            json!({"data": [{"checkpoint_count": 3, "size_bytes": 1000, "size_gigabytes": 1e-06}]}),
        )
        .unwrap();
        assert_eq!(s.data[0].checkpoint_count, 3);
        let err = serde_json::from_value::<CheckpointStorageUsage>(
            json!({"data": [{"checkpoint_count": 3}]}),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("size_bytes"), "{err}");
    }
}
