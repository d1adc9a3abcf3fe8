//! Authentication shapes: the JWT exchange, JWT claims, `whoami`, and the CLI's
//! `auth/apikey/me` (protocol.md 2.3, 6.1, 6.8, 12).

use serde::{Deserialize, Serialize};

/// Body of `POST /api/v1/auth/token`: an empty object `{}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AuthTokenRequest {}

/// Reply of `auth/token` (`jwt` required).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthTokenResponse {
    /// A compact JWS whose payload carries the claims below.
    pub jwt: String,
}

impl std::fmt::Debug for AuthTokenResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthTokenResponse { jwt: \"eyJ…\" }")
    }
}

/// Who the credential belongs to (no endpoint: derived from JWT claims).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WhoamiResponse {
    /// The `sub` claim, e.g. `"tml:org_user:u-123"`.
    pub user_urn: String,
    /// [0.38] `"tml:organization:<org_id>"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_urn: Option<String>,
    /// Email (an empty claim becomes `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `details.org_details` of [`ApiKeyInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OrgDetails {
    /// Organization name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// `details.user_details` of [`ApiKeyInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct UserDetails {
    /// User email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// `details` of [`ApiKeyInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ApiKeyDetails {
    /// The key's organization.
    #[serde(default)]
    pub org_details: OrgDetails,
    /// The key's user.
    #[serde(default)]
    pub user_details: UserDetails,
}

/// Reply of `GET /api/v1/auth/apikey/me` [0.38, CLI].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyInfo {
    /// The key's id.
    pub key_id: i64,
    /// The key's name.
    pub name: String,
    /// A note.
    #[serde(default)]
    pub note: String,
    /// Owner details.
    #[serde(default)]
    pub details: ApiKeyDetails,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_replies_do_not_print_the_token() {
        let r: AuthTokenResponse =
            serde_json::from_str(r#"{"jwt": "eyJsecret.eyJpayload.sig"}"#).unwrap();
        assert!(!format!("{r:?}").contains("secret"));
        assert_eq!(serde_json::to_string(&AuthTokenRequest {}).unwrap(), "{}");
        assert!(serde_json::from_str::<AuthTokenResponse>("{}").is_err());
    }

    #[test]
    fn apikey_me_decodes() {
        let r: ApiKeyInfo = serde_json::from_str(
            r#"{"key_id": 7, "name": "laptop", "note": "", "details": {"org_details": {"name": "Acme"}, "user_details": {"email": "a@b.c"}}}"#,
        )
        .unwrap();
        assert_eq!(r.details.org_details.name.as_deref(), Some("Acme"));
    }
}
