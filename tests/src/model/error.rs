//! The one error type of the toy model.

use std::fmt;

use tinker_core::error::FailureCategory;

/// Why the toy model refused or failed a request.
///
/// `category` is what the server puts in a failed future's `category` field (protocol.md 7.3):
/// [`FailureCategory::User`] for bad input the real service would reject (unknown loss, missing
/// or mistyped `loss_fn_inputs`, token ids outside the vocabulary, …), [`FailureCategory::Server`]
/// for internal failures (a corrupt snapshot, a non-finite value produced by training).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelError {
    /// A sentence naming where the problem is, e.g. `data[3].loss_fn_inputs.weights: …`.
    pub message: String,
    /// Who is to blame.
    pub category: FailureCategory,
}

impl ModelError {
    /// A user-category error (the request is invalid).
    pub fn user(message: impl Into<String>) -> ModelError {
        ModelError {
            message: message.into(),
            category: FailureCategory::User,
        }
    }

    /// A server-category error (the model itself failed).
    pub fn server(message: impl Into<String>) -> ModelError {
        ModelError {
            message: message.into(),
            category: FailureCategory::Server,
        }
    }

    /// Whether the request was at fault.
    pub fn is_user(&self) -> bool {
        self.category == FailureCategory::User
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} error: {}", self.category, self.message)
    }
}

impl std::error::Error for ModelError {}

/// Turns a core validation error (`Error::InvalidInput`) into a user-category model error.
impl From<tinker_core::Error> for ModelError {
    fn from(e: tinker_core::Error) -> ModelError {
        ModelError::user(e.to_string())
    }
}
