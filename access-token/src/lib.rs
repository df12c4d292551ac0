//! The access-token model that the issuer and every verifier share.
//!
//! An access token is a JWT signed with Ed25519 (`alg: EdDSA`), header `typ:
//! at+jwt` (RFC 9068) and `kid`, carrying `iss`, `aud`, `sub` (user id), `sid`
//! (session id), `iat`, `exp` and `jti`. The auth-service signs them with a
//! [`SigningKey`] and publishes the public halves as a JWK Set ([`Jwks`]);
//! the task-service and any other resource server verify them locally with a
//! [`Verifier`] built from that set, never calling the auth-service on the
//! request path.
//!
//! Verification is deliberately narrow (RFC 8725): the algorithm is pinned to
//! EdDSA whatever the header says, the key is chosen only by `kid` from keys
//! this process already holds (a `jku`, `x5u` or `jwk` header is never
//! followed), `typ` must be `at+jwt`, `iss` and `aud` must be ours, and `exp`
//! (required) and `nbf` (if present) are checked against a clock the caller
//! passes in, so tests can move time.

mod bearer;
mod claims;
mod keys;
mod verify;

pub use bearer::{BearerError, bearer_token};
pub use claims::{AccessClaims, Identity, IssuedClaims, TOKEN_TYPE};
pub use keys::{Jwks, KeyError, SigningKey};
pub use verify::{Verifier, VerifyError};
