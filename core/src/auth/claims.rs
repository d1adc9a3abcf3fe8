//! Reading a JWT's payload (no signature check, by design: the server checks it).

use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

use crate::types::WhoamiResponse;
use crate::Error;

/// base64url, accepting the payload with or without padding.
const URL_SAFE_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The claims the SDK reads from a JWT payload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtClaims {
    /// `exp`: expiry. `None` when absent or not a number, and then the token counts as expired.
    pub exp: Option<SystemTime>,
    /// `iat`: issue time (0.38 uses `exp − iat` as the lifetime).
    pub iat: Option<SystemTime>,
    /// `sub`: the user URN (`whoami().user_urn`).
    pub sub: Option<String>,
    /// `org_id`: organisation id (`whoami().org_urn = "tml:organization:<org_id>"`).
    pub org_id: Option<String>,
    /// `email` (an empty string is `None`).
    pub email: Option<String>,
    /// `iss`: issuer; `passport-…` issuers mark identity tokens.
    pub iss: Option<String>,
}

impl JwtClaims {
    /// The token's lifetime: `exp − iat`, or `exp − now_unix` without `iat`; zero if unknown or
    /// already past.
    pub fn lifetime(&self, now_unix: SystemTime) -> Duration {
        let Some(exp) = self.exp else {
            return Duration::ZERO;
        };
        exp.duration_since(self.iat.unwrap_or(now_unix))
            .unwrap_or(Duration::ZERO)
    }

    /// Whether the token is expired at `now_unix`. A token without a usable `exp` counts as
    /// expired, as in the SDK's refresh logic.
    pub fn is_expired_at(&self, now_unix: SystemTime) -> bool {
        self.exp.is_none_or(|exp| exp <= now_unix)
    }

    /// The `whoami` view of these claims (`sub` required; protocol.md 2.3, 12).
    pub fn whoami(&self) -> Result<WhoamiResponse, Error> {
        let user_urn = self
            .sub
            .clone()
            .ok_or_else(|| Error::decode("JWT claims", "missing field `sub`"))?;
        Ok(WhoamiResponse {
            user_urn,
            org_urn: self
                .org_id
                .as_ref()
                .map(|o| format!("tml:organization:{o}")),
            email: self.email.clone(),
        })
    }

    /// Time left before `exp` at `now_unix` (zero when expired or unknown).
    pub fn remaining(&self, now_unix: SystemTime) -> Duration {
        self.exp
            .and_then(|exp| exp.duration_since(now_unix).ok())
            .unwrap_or(Duration::ZERO)
    }
}

/// Decodes the payload (second segment) of a compact JWS into its claims.
///
/// Malformed tokens (not three segments, bad base64, payload not a JSON object) are
/// [`Error::Decode`]; claims of unexpected types are simply absent.
///
/// ```
/// use base64::Engine as _;
/// use tinker_core::auth::decode_claims;
///
/// let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
///     .encode(br#"{"sub":"tml:user:1","exp":1700000600,"iat":1700000000,"email":""}"#);
/// let claims = decode_claims(&format!("h.{payload}.sig")).unwrap();
/// assert_eq!(claims.sub.as_deref(), Some("tml:user:1"));
/// assert_eq!(claims.email, None);
/// assert_eq!(claims.lifetime(std::time::SystemTime::UNIX_EPOCH).as_secs(), 600);
/// ```
pub fn decode_claims(token: &str) -> Result<JwtClaims, Error> {
    let what = "JWT payload";
    let mut parts = token.trim().split('.');
    let (Some(_header), Some(payload), Some(_sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::decode(
            what,
            "a JWT must have three dot-separated segments",
        ));
    };
    let bytes = URL_SAFE_LENIENT
        .decode(payload)
        .map_err(|e| Error::decode(what, format!("payload is not base64url: {e}")))?;
    let value: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::decode(what, format!("payload is not JSON: {e}")))?;
    let serde_json::Value::Object(map) = value else {
        return Err(Error::decode(what, "payload is not a JSON object"));
    };
    let time = |key: &str| {
        map.get(key)
            .and_then(serde_json::Value::as_f64)
            .filter(|secs| secs.is_finite() && *secs >= 0.0 && *secs < 1e12)
            .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs))
    };
    let text = |key: &str| match map.get(key) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    Ok(JwtClaims {
        exp: time("exp"),
        iat: time("iat"),
        sub: text("sub"),
        org_id: text("org_id"),
        email: text("email"),
        iss: text("iss"),
    })
}

#[cfg(test)]
pub(crate) fn make_token(payload_json: &str) -> String {
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(payload_json);
    format!("eyJhbGciOiJIUzI1NiJ9.{payload}.c2ln")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_captured_mock_jwt_yields_whoami_and_expires_when_it_says() {
        // The JWT the capture mock handed the official SDK (protocol.md 6.1).
        let token = "eyJhbGciOiAiSFMyNTYiLCAidHlwIjogIkpXVCJ9.eyJpc3MiOiAicGFzc3BvcnQtbW9jayIsICJzdWIiOiAidG1sOm9yZ191c2VyOnUtMTIzIiwgIm9yZ19pZCI6ICJvcmctNDU2IiwgImVtYWlsIjogImRldkBleGFtcGxlLmNvbSIsICJpYXQiOiAxNzk1ODc1MzQxLCAiZXhwIjogMTc5NTg3ODk0MX0.c2ln";
        let claims = decode_claims(token).unwrap();
        assert_eq!(claims.iss.as_deref(), Some("passport-mock"));
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        assert_eq!(claims.lifetime(at(0)).as_secs(), 3600);
        let me = claims.whoami().unwrap();
        assert_eq!(me.user_urn, "tml:org_user:u-123");
        assert_eq!(me.org_urn.as_deref(), Some("tml:organization:org-456"));
        assert_eq!(me.email.as_deref(), Some("dev@example.com"));
        assert!(!claims.is_expired_at(at(1_795_875_341)));
        assert!(claims.is_expired_at(at(1_795_878_941)));
        assert!(decode_claims(&make_token("{}")).unwrap().whoami().is_err());
        assert!(decode_claims(&make_token("{}"))
            .unwrap()
            .is_expired_at(at(0)));
    }

    #[test]
    fn every_claim_the_sdk_reads_is_decoded() {
        let token = make_token(
            r#"{"exp":1700003600.5,"iat":1700000000,"sub":"tml:user:u1","org_id":42,"email":"a@b.c","iss":"passport-x"}"#,
        );
        let c = decode_claims(&token).unwrap();
        let t = |s: f64| SystemTime::UNIX_EPOCH + Duration::from_secs_f64(s);
        assert_eq!(c.exp, Some(t(1700003600.5)));
        assert_eq!(c.iat, Some(t(1700000000.0)));
        assert_eq!(c.sub.as_deref(), Some("tml:user:u1"));
        assert_eq!(c.org_id.as_deref(), Some("42"));
        assert_eq!(c.email.as_deref(), Some("a@b.c"));
        assert_eq!(c.iss.as_deref(), Some("passport-x"));
        assert_eq!(c.lifetime(t(0.0)), Duration::from_secs_f64(3600.5));
    }

    #[test]
    fn padding_is_optional_and_odd_claims_are_absent_not_errors() {
        let padded = format!(
            "h.{}.s",
            base64::engine::general_purpose::URL_SAFE.encode(r#"{"exp":"soon","sub":null}"#)
        );
        let c = decode_claims(&padded).unwrap();
        assert_eq!(c.exp, None);
        assert_eq!(c.sub, None);
        assert_eq!(
            c.remaining(SystemTime::UNIX_EPOCH),
            Duration::ZERO,
            "no exp = expired"
        );
    }

    #[test]
    fn malformed_tokens_are_decode_errors_naming_the_problem() {
        for (token, needle) in [
            ("abc", "three dot-separated"),
            ("a.b.c.d", "three dot-separated"),
            ("h.!!!.s", "base64url"),
            (&make_token("not json"), "not JSON"),
            (&make_token("[1]"), "not a JSON object"),
        ] {
            let err = decode_claims(token).unwrap_err();
            assert!(err.to_string().contains(needle), "{token}: {err}");
        }
    }
}
