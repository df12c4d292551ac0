//! What an access token says, and what a verified one proves.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The JOSE `typ` of an access token (RFC 9068). A verifier refuses any
/// other, so an ID token or some other JWT signed by the same key cannot be
/// replayed as an access token.
pub const TOKEN_TYPE: &str = "at+jwt";

/// The claims of an access token, exactly as serialised.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: Uuid,
    /// The session id: lets the auth-service refuse tokens of ended sessions.
    pub sid: Uuid,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: Uuid,
}

/// What the auth-service signs: the access claims, and beside them what it
/// asserts about the user (`email_verified`). Verifiers read
/// [`AccessClaims`] and ignore the rest; a relying party may read more.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct IssuedClaims<'a> {
    #[serde(flatten)]
    pub access: &'a AccessClaims,
    /// Whether the owner had proven their email address when the token was
    /// issued.
    pub email_verified: bool,
}

/// The caller, as proven by a verified access token. Handlers take the owner
/// of every row from here and from nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// Unix seconds after which the token (and a stream it opened) is dead.
    pub expires_at: i64,
}
