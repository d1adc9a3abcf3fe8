//! The one error type of tinker-rs.
//!
//! Every failure a user can see is an [`Error`]. It keeps what a person debugging a run needs: the
//! HTTP status and body, the request id of the server future, the server's log id, how many attempts
//! were made, and whether retrying could help ([`Error::kind`] and [`Error::is_retryable`]).
//! The API key never appears in an error: request headers are not kept.

use std::fmt;
use std::time::Duration;

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The broad class of an error, used by retry decisions and by callers that branch on failures.
///
/// Mirrors the status table of the official SDK (protocol.md 1.6) and its retry rules (section 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller's input was rejected before anything was sent.
    InvalidInput,
    /// 400 Bad Request (with a body; an empty-bodied 400 is a [`ErrorKind::Transport`] rejection).
    BadRequest,
    /// 401 Unauthorized.
    Authentication,
    /// 402 Payment Required: billing is not set up, or the billing pause window ran out.
    Billing,
    /// 403 Forbidden.
    PermissionDenied,
    /// 404 Not Found.
    NotFound,
    /// 408 Request Timeout from the server.
    RequestTimeout,
    /// 409 Conflict.
    Conflict,
    /// 410 Gone: a server future expired, or the session has finished.
    Gone,
    /// 422 Unprocessable Entity.
    Unprocessable,
    /// 429 Too Many Requests.
    RateLimited,
    /// 5xx.
    Server,
    /// Any other non-success status.
    OtherStatus,
    /// A server future completed with an error (`{"error": ..., "category": ...}`).
    RequestFailed,
    /// No response: connect, read or write failure, reset, or an empty-bodied 400.
    Transport,
    /// A deadline the user set (or a policy limit) ran out.
    Timeout,
    /// The server sent something that could not be decoded.
    Decode,
    /// The call was cancelled by the caller.
    Cancelled,
    /// Configuration is missing or invalid (no API key, bad base URL, ...).
    Config,
    /// The client was used after it was closed, or its session ended.
    Closed,
}

impl ErrorKind {
    /// The kind an HTTP error status maps to (protocol.md 1.6). `has_body` distinguishes a real
    /// 400 from the empty-bodied 400 that a proxy sends when it drops a connection (8.7).
    pub fn from_status(status: u16, has_body: bool) -> ErrorKind {
        match status {
            400 if !has_body => ErrorKind::Transport,
            400 => ErrorKind::BadRequest,
            401 => ErrorKind::Authentication,
            402 => ErrorKind::Billing,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            408 => ErrorKind::RequestTimeout,
            409 => ErrorKind::Conflict,
            410 => ErrorKind::Gone,
            422 => ErrorKind::Unprocessable,
            429 => ErrorKind::RateLimited,
            500..=599 => ErrorKind::Server,
            _ => ErrorKind::OtherStatus,
        }
    }

    /// Whether the official SDK's retry layers treat this kind as transient
    /// (408, 409, 429, 5xx and transport failures; protocol.md 8.2-8.3).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::RequestTimeout
                | ErrorKind::Conflict
                | ErrorKind::RateLimited
                | ErrorKind::Server
                | ErrorKind::Transport
        )
    }
}

/// Who a failed server future blames (`category` of a failed result, protocol.md 7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureCategory {
    /// The request was invalid (bad loss inputs, bad learning rate, ...).
    User,
    /// The service failed.
    Server,
    /// Missing or unrecognised category.
    Unknown,
}

impl FailureCategory {
    /// Parses the wire value; anything unrecognised is [`FailureCategory::Unknown`].
    pub fn from_wire(s: Option<&str>) -> FailureCategory {
        match s {
            Some("user") => FailureCategory::User,
            Some("server") => FailureCategory::Server,
            _ => FailureCategory::Unknown,
        }
    }
}

impl fmt::Display for FailureCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FailureCategory::User => "user",
            FailureCategory::Server => "server",
            FailureCategory::Unknown => "unknown",
        })
    }
}

/// Details of a non-success HTTP response.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusError {
    /// The HTTP status code.
    pub status: u16,
    /// The response body, verbatim (lossily decoded as UTF-8).
    pub body: String,
    /// The endpoint path that answered, e.g. `/api/v1/create_model`.
    pub endpoint: String,
    /// The server future's request id, when the failure happened while polling one.
    pub request_id: Option<String>,
    /// The server's own log/trace id, when the response carried one (`x-request-id`).
    pub server_log_id: Option<String>,
    /// How many attempts were made before giving up (1 = no retry).
    pub attempts: u32,
}

/// The error type of every tinker-rs operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller's input is invalid; nothing was sent.
    #[error("invalid input at {location}: {message}")]
    InvalidInput {
        /// Where the problem is, e.g. `data[3].loss_fn_inputs.weights`.
        location: String,
        /// What is wrong and, where possible, how to fix it.
        message: String,
    },

    /// The server answered with a non-success status.
    #[error("{} (HTTP {}) from {}{}: {}", status_name(.0.status), .0.status, .0.endpoint, request_suffix(.0.request_id.as_deref(), .0.attempts), .0.body)]
    Status(Box<StatusError>),

    /// A server future completed with an error.
    #[error("request {request_id} failed ({category} error): {message}")]
    RequestFailed {
        /// The error message the server gave.
        message: String,
        /// The request id of the failed future.
        request_id: String,
        /// Who the server blames.
        category: FailureCategory,
    },

    /// No response could be obtained (connect, read or write failure, reset, timeout of one read).
    #[error("transport error on {endpoint} after {attempts} attempt(s): {message}")]
    Transport {
        /// The endpoint path being called.
        endpoint: String,
        /// What went wrong, as the HTTP stack described it.
        message: String,
        /// How many attempts were made.
        attempts: u32,
    },

    /// A deadline ran out. Says what was awaited so a hang is never silent.
    #[error("timed out after {elapsed:?} waiting for {waiting_for}{}{}", opt_suffix(" (request id ", .request_id.as_deref(), ")"), opt_suffix(", last queue state: ", .queue_state.as_deref(), ""))]
    Timeout {
        /// What the call was waiting for, e.g. `the result of forward_backward`.
        waiting_for: String,
        /// The server future's request id, when one existed.
        request_id: Option<String>,
        /// The last queue state the server reported, with its reason.
        queue_state: Option<String>,
        /// How long the call waited.
        elapsed: Duration,
    },

    /// The server sent something that does not decode as the expected type.
    #[error("could not decode {what}: {message}")]
    Decode {
        /// What was being decoded, e.g. `GetInfoResponse` or `ForwardBackwardOutput`.
        what: String,
        /// What is wrong, naming the missing or malformed field.
        message: String,
    },

    /// Configuration is missing or invalid.
    #[error("configuration error: {0}")]
    Config(String),

    /// The call was cancelled by the caller.
    #[error("cancelled: {0}")]
    Cancelled(String),

    /// The client or its session is closed.
    #[error("closed: {0}")]
    Closed(String),
}

fn status_name(status: u16) -> &'static str {
    match ErrorKind::from_status(status, true) {
        ErrorKind::BadRequest => "bad request",
        ErrorKind::Authentication => "authentication failed",
        ErrorKind::Billing => "billing issue",
        ErrorKind::PermissionDenied => "permission denied",
        ErrorKind::NotFound => "not found",
        ErrorKind::RequestTimeout => "request timeout",
        ErrorKind::Conflict => "conflict",
        ErrorKind::Gone => "gone",
        ErrorKind::Unprocessable => "unprocessable entity",
        ErrorKind::RateLimited => "rate limited",
        ErrorKind::Server => "server error",
        _ => "API error",
    }
}

fn request_suffix(request_id: Option<&str>, attempts: u32) -> String {
    let mut s = String::new();
    if let Some(id) = request_id {
        s.push_str(&format!(" (request id {id})"));
    }
    if attempts > 1 {
        s.push_str(&format!(" after {attempts} attempts"));
    }
    s
}

fn opt_suffix(prefix: &str, value: Option<&str>, suffix: &str) -> String {
    value
        .map(|v| format!("{prefix}{v}{suffix}"))
        .unwrap_or_default()
}

impl Error {
    /// Builds an [`Error::InvalidInput`].
    pub fn invalid(location: impl Into<String>, message: impl Into<String>) -> Error {
        Error::InvalidInput {
            location: location.into(),
            message: message.into(),
        }
    }

    /// Builds an [`Error::Decode`].
    pub fn decode(what: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Decode {
            what: what.into(),
            message: message.into(),
        }
    }

    /// The broad class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidInput { .. } => ErrorKind::InvalidInput,
            Error::Status(s) => ErrorKind::from_status(s.status, !s.body.is_empty()),
            Error::RequestFailed { .. } => ErrorKind::RequestFailed,
            Error::Transport { .. } => ErrorKind::Transport,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Decode { .. } => ErrorKind::Decode,
            Error::Config(_) => ErrorKind::Config,
            Error::Cancelled(_) => ErrorKind::Cancelled,
            Error::Closed(_) => ErrorKind::Closed,
        }
    }

    /// Whether retrying the same operation could succeed.
    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    /// The HTTP status, when the error came from a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status(s) => Some(s.status),
            _ => None,
        }
    }

    /// The server future's request id, when known.
    pub fn request_id(&self) -> Option<&str> {
        match self {
            Error::Status(s) => s.request_id.as_deref(),
            Error::RequestFailed { request_id, .. } => Some(request_id),
            Error::Timeout { request_id, .. } => request_id.as_deref(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_the_sdk_classes_and_retry_rules() {
        let table = [
            (400, true, ErrorKind::BadRequest, false),
            (400, false, ErrorKind::Transport, true),
            (401, true, ErrorKind::Authentication, false),
            (402, true, ErrorKind::Billing, false),
            (404, true, ErrorKind::NotFound, false),
            (408, true, ErrorKind::RequestTimeout, true),
            (409, true, ErrorKind::Conflict, true),
            (410, true, ErrorKind::Gone, false),
            (422, true, ErrorKind::Unprocessable, false),
            (429, true, ErrorKind::RateLimited, true),
            (503, true, ErrorKind::Server, true),
            (418, true, ErrorKind::OtherStatus, false),
        ];
        for (status, has_body, kind, retryable) in table {
            assert_eq!(
                ErrorKind::from_status(status, has_body),
                kind,
                "status {status}"
            );
            assert_eq!(kind.is_retryable(), retryable, "status {status}");
        }
    }

    #[test]
    fn a_timeout_names_what_it_waited_for() {
        let e = Error::Timeout {
            waiting_for: "the result of forward_backward".into(),
            request_id: Some("req-7".into()),
            queue_state: Some("paused_capacity (waiting for capacity)".into()),
            elapsed: Duration::from_secs(30),
        };
        let text = e.to_string();
        assert!(text.contains("forward_backward"), "{text}");
        assert!(text.contains("req-7"), "{text}");
        assert!(text.contains("paused_capacity"), "{text}");
        assert_eq!(e.request_id(), Some("req-7"));
    }
}
