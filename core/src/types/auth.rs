//! Authentication shapes: the JWT exchange, JWT claims, `whoami`, and the CLI's
//! `auth/apikey/me` (protocol.md 2.3, 6.1, 6.8, 12).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

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

/// The JWT claims the SDK reads. The signature is never checked (the server does that).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct JwtClaims {
    /// Expiry, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<f64>,
    /// Issue time, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<f64>,
    /// Subject: the user URN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// [0.38] Organization id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_id: Option<String>,
    /// Email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Issuer; `passport-…` marks an identity token usable for `whoami`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
}

impl JwtClaims {
    /// Decodes the payload (second dot-separated part, base64url) of a compact JWT.
    ///
    /// ```
    /// use tinker_core::types::JwtClaims;
    /// // header {"alg":"none"} . payload {"sub":"tml:org_user:u-1","exp":2000000000} . signature
    /// let jwt = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ0bWw6b3JnX3VzZXI6dS0xIiwiZXhwIjoyMDAwMDAwMDAwfQ.c2ln";
    /// let claims = JwtClaims::decode(jwt).unwrap();
    /// assert_eq!(claims.sub.as_deref(), Some("tml:org_user:u-1"));
    /// assert_eq!(claims.exp, Some(2_000_000_000.0));
    /// ```
    pub fn decode(jwt: &str) -> Result<JwtClaims> {
        let mut parts = jwt.split('.');
        let payload = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(_), Some(p), Some(_), None) => p,
            _ => return Err(Error::decode("JWT", "expected three dot-separated parts")),
        };
        let bytes = URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .map_err(|e| Error::decode("JWT", format!("payload is not base64url: {e}")))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::decode("JWT claims", e.to_string()))
    }

    /// Whether the token is expired at `now_unix_seconds`. A token without a usable `exp` counts
    /// as expired, as in the SDK's refresh logic.
    pub fn is_expired_at(&self, now_unix_seconds: f64) -> bool {
        match self.exp {
            Some(exp) if exp.is_finite() => exp <= now_unix_seconds,
            _ => true,
        }
    }

    /// The token's lifetime `exp − iat` in seconds, when both are present and sensible.
    pub fn lifetime_seconds(&self) -> Option<f64> {
        match (self.exp, self.iat) {
            (Some(exp), Some(iat)) if exp.is_finite() && iat.is_finite() && exp > iat => {
                Some(exp - iat)
            }
            _ => None,
        }
    }

    /// The `whoami` view of these claims (`sub` required).
    pub fn whoami(&self) -> Result<WhoamiResponse> {
        let user_urn = self
            .sub
            .clone()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::decode("JWT claims", "missing field `sub`"))?;
        Ok(WhoamiResponse {
            user_urn,
            org_urn: self
                .org_id
                .as_ref()
                .map(|o| format!("tml:organization:{o}")),
            email: self.email.clone().filter(|e| !e.is_empty()),
        })
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

    fn jwt(payload: &str) -> String {
        format!(
            "eyJhbGciOiAiSFMyNTYifQ.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn the_captured_mock_jwt_yields_whoami() {
        let token = "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJpc3MiOiAicGFzc3BvcnQtbW9jayIsICJzdWIiOiAidG1sOm9yZ191c2VyOnUtMTIzIiwgIm9yZ19pZCI6ICJvcmctNDU2IiwgImVtYWlsIjogImRldkBleGFtcGxlLmNvbSIsICJpYXQiOiAxNzk1ODc1MzQxLCAiZXhwIjogMTc5NTg3ODk0MX0.c2ln";
        let claims = JwtClaims::decode(token).unwrap();
        assert_eq!(claims.iss.as_deref(), Some("passport-mock"));
        assert_eq!(claims.lifetime_seconds(), Some(3600.0));
        let me = claims.whoami().unwrap();
        assert_eq!(me.user_urn, "tml:org_user:u-123");
        assert_eq!(me.org_urn.as_deref(), Some("tml:organization:org-456"));
        assert_eq!(me.email.as_deref(), Some("dev@example.com"));
        assert!(!claims.is_expired_at(1_795_875_341.0));
        assert!(claims.is_expired_at(1_795_878_941.0));
    }

    #[test]
    fn missing_exp_counts_as_expired_and_empty_email_is_none() {
        let claims = JwtClaims::decode(&jwt(r#"{"sub": "u", "email": ""}"#)).unwrap();
        assert!(claims.is_expired_at(0.0));
        assert_eq!(claims.whoami().unwrap().email, None);
        assert!(JwtClaims::decode(&jwt("{}")).unwrap().whoami().is_err());
    }

    #[test]
    fn malformed_tokens_are_decode_errors() {
        for bad in ["tml-key", "a.b", "a.!!!.c", &jwt("not json"), "a.b.c.d"] {
            let err = JwtClaims::decode(bad).unwrap_err();
            assert!(matches!(err, Error::Decode { .. }), "{bad}: {err}");
        }
    }

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
