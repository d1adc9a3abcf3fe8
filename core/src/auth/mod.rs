//! Authentication decisions: JWT claims and the JWT exchange/refresh schedule (protocol.md 2.3).
//!
//! The credential sent as `X-API-Key` is either the user's API key or a short-lived JWT obtained
//! from `POST /api/v1/auth/token` when the client config says `pjwt_auth_enabled`. The JWT is
//! never verified client-side; only its payload is read, for refresh timing and `whoami`.

mod claims;
mod credentials_file;
mod jwt_state;

pub use claims::{decode_claims, JwtClaims};
pub use credentials_file::{CredentialsFile, StoredKey, StoredKeyKind, CREDENTIALS_FILE};
pub use jwt_state::{
    is_invalid_token_challenge, BackgroundRefresh, CredentialNeed, ExchangeFallback,
    InvalidTokenAction, JwtSchedule, JwtState,
};
