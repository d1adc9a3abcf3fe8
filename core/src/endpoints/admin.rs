//! Admin and billing endpoints (protocol.md 6.7).

use super::{ApiRequest, EndpointId, EndpointSpec};
use crate::error::{Error, Result};
use crate::types::{
    AuditEventType, AuditLogResponse, BillingUsageResponse, CheckpointStorageUsage, Timestamp,
};

/// `GET /api/v1/audit?event_type=<t>[&day=YYYY-MM-DD]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetAuditLog {
    /// Which events (default all).
    pub event_type: AuditEventType,
    /// The UTC day `YYYY-MM-DD`; `None` = today (server side).
    pub day: Option<String>,
}

impl ApiRequest for GetAuditLog {
    type Response = AuditLogResponse;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::AuditLog.spec()
    }
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("event_type", Some(self.event_type.name().to_owned())),
            ("day", self.day.clone()),
        ]
    }
    fn validate(&self) -> Result<()> {
        if let Some(day) = &self.day {
            let ok = day.len() == 10 && Timestamp::parse(day).is_ok();
            if !ok {
                return Err(Error::invalid(
                    "day",
                    format!("{day:?} must be a date YYYY-MM-DD"),
                ));
            }
        }
        Ok(())
    }
}

/// `GET /api/v1/billing/usage/events?starting_on=&ending_before=`: an hour-aligned window of at
/// most 14 days. (That the start is not in the future needs the clock; the caller checks it.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetBillingUsage {
    /// Window start (inclusive).
    pub starting_on: Timestamp,
    /// Window end (exclusive).
    pub ending_before: Timestamp,
}

impl GetBillingUsage {
    /// Longest window, in seconds.
    pub const MAX_WINDOW_SECONDS: i64 = 14 * 86_400;
}

impl ApiRequest for GetBillingUsage {
    type Response = BillingUsageResponse;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::BillingUsage.spec()
    }
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("starting_on", Some(self.starting_on.as_str().to_owned())),
            (
                "ending_before",
                Some(self.ending_before.as_str().to_owned()),
            ),
        ]
    }
    fn validate(&self) -> Result<()> {
        for (loc, t) in [
            ("starting_on", &self.starting_on),
            ("ending_before", &self.ending_before),
        ] {
            if t.unix_nanos().rem_euclid(3_600_000_000_000) != 0 {
                return Err(Error::invalid(loc, format!("{t} must be on a whole hour")));
            }
        }
        let span = self.ending_before.unix_seconds() - self.starting_on.unix_seconds();
        if span <= 0 {
            return Err(Error::invalid("ending_before", "must be after starting_on"));
        }
        if span > Self::MAX_WINDOW_SECONDS {
            return Err(Error::invalid(
                "ending_before",
                "the window must be at most 14 days",
            ));
        }
        Ok(())
    }
}

/// `GET /api/v1/billing/usage/checkpoints/current[?project_id=]` [0.38].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GetCheckpointStorageUsage {
    /// Only this project.
    pub project_id: Option<String>,
}

impl ApiRequest for GetCheckpointStorageUsage {
    type Response = CheckpointStorageUsage;
    fn endpoint(&self) -> &'static EndpointSpec {
        EndpointId::CheckpointStorageUsage.spec()
    }
    fn query(&self) -> Vec<(&'static str, Option<String>)> {
        vec![("project_id", self.project_id.clone())]
    }
}
