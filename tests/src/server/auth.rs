//! Credentials: API keys, and the JWTs `POST /auth/token` issues.
//!
//! Issued JWTs are well-formed compact JWS strings (`header.payload.signature`, base64url) whose
//! payload carries `iss`, `sub`, `org_id`, `email`, `iat`, `exp` and a `jti`. The signature
//! segment is a keyed hash of header and payload standing in for an HS256 MAC; the server does
//! not verify it cryptographically but accepts only tokens it issued (looked up by value), so a
//! forged or foreign token is rejected all the same.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use dashmap::{DashMap, DashSet};
use http::header::WWW_AUTHENTICATE;
use http::HeaderMap;
use serde_json::json;

use super::error::ApiError;
use super::state::{unix_secs, AppState};
use crate::model::{hash_name, SplitMix64};

/// How the request authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// An API key (`tml-…`).
    ApiKey(String),
    /// A JWT this server issued.
    Jwt(String),
}

/// JWT bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct AuthState {
    /// token → expiry (unix seconds).
    issued: DashMap<String, i64>,
    revoked_keys: DashSet<String>,
    next_jti: AtomicU64,
}

impl AuthState {
    /// Marks every issued JWT as expired (admin endpoint; exercises client refresh).
    pub fn expire_all(&self) {
        for mut e in self.issued.iter_mut() {
            *e.value_mut() = 0;
        }
    }

    pub fn revoke_key(&self, key: &str) {
        self.revoked_keys.insert(key.to_owned());
    }
}

fn invalid_token(detail: &str) -> ApiError {
    ApiError::unauthorized(detail).with_header(WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")
}

impl AppState {
    /// Checks the `X-API-Key` header.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Credential, ApiError> {
        let key = headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Missing X-API-Key header"))?;
        if key.starts_with("eyJ") {
            let exp = self
                .auth
                .issued
                .get(key)
                .map(|e| *e)
                .ok_or_else(|| invalid_token("Invalid token: not issued by this server"))?;
            if exp <= unix_secs(SystemTime::now()) {
                return Err(invalid_token("Token has expired"));
            }
            return Ok(Credential::Jwt(key.to_owned()));
        }
        let known = if self.cfg.api_keys.is_empty() {
            key.starts_with("tml-")
        } else {
            self.cfg.api_keys.iter().any(|k| k == key)
        };
        if !known || self.auth.revoked_keys.contains(key) {
            return Err(ApiError::unauthorized("Invalid API key"));
        }
        Ok(Credential::ApiKey(key.to_owned()))
    }

    /// Issues a JWT valid for the configured lifetime.
    pub fn issue_jwt(&self) -> String {
        let now = unix_secs(SystemTime::now());
        let lifetime = Duration::from_secs(self.cfg.jwt_lifetime_secs).as_secs() as i64;
        let jti = self.auth.next_jti.fetch_add(1, Ordering::Relaxed);
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": "tinker-local-server"});
        let payload = json!({
            "iss": "tinker-local-server",
            "sub": self.cfg.user_urn,
            "org_id": self.cfg.org_id,
            "email": self.cfg.email,
            "iat": now,
            "exp": now + lifetime,
            "jti": format!("jwt-{jti}"),
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(payload.to_string())
        );
        let mut rng = SplitMix64::new(self.cfg.seed ^ hash_name(&signing_input));
        let sig: Vec<u8> = (0..4).flat_map(|_| rng.next_u64().to_le_bytes()).collect();
        let token = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig));
        self.auth.issued.insert(token.clone(), now + lifetime);
        token
    }
}
