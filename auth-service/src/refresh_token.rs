//! Refresh tokens: 256 bits, base64url, handed to the client once.
//!
//! Only the SHA-256 of a token is stored, so a database dump yields nothing
//! that can be spent. A plain (unsalted, fast) hash is right here: unlike a
//! password the token has full entropy, so there is nothing to brute-force,
//! and lookups must be exact-match indexable.
//!
//! A session's first token is random. Each later one is *derived* from the
//! token it replaces, `HMAC-SHA256(key, token)`, under a key only the
//! service holds ([`SuccessorKey`]). That is what makes the multi-tab grace
//! possible without keeping tokens in plain text: when two tabs refresh the
//! same token at once, the second one is answered with the very token the
//! first received, recomputed from the token it presented, while the
//! database still holds only hashes. Without the key, a successor is as
//! unpredictable as a random token.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::{Digest, Sha256};

use crate::store::TokenHash;

/// Random bytes in a token: 256 bits.
const TOKEN_BYTES: usize = 32;

/// A freshly minted refresh token and its hash.
pub struct RefreshToken {
    pub token: SecretString,
    pub hash: TokenHash,
}

impl RefreshToken {
    /// A random token: the first of a session.
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8; TOKEN_BYTES]) -> Self {
        let token = URL_SAFE_NO_PAD.encode(bytes);
        let hash = hash(&token);
        Self {
            token: token.into(),
            hash,
        }
    }

    pub fn expose(&self) -> &str {
        self.token.expose_secret()
    }
}

/// The key that derives a token's successor (see the module doc). Kept by
/// the service in its database, shared by every replica; no `Debug`.
pub struct SuccessorKey(SecretBox<[u8]>);

impl SuccessorKey {
    pub fn new(key: SecretBox<[u8]>) -> Self {
        Self(key)
    }

    /// The token that replaces `token` when it is spent.
    pub fn successor_of(&self, token: &str) -> RefreshToken {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.0.expose_secret())
            .expect("HMAC accepts keys of any length");
        mac.update(b"todo refresh token successor\0");
        mac.update(token.as_bytes());
        RefreshToken::from_bytes(&mac.finalize().into_bytes().into())
    }
}

/// The stored form of a presented token. Any string hashes; one that was
/// never issued simply matches no row.
pub fn hash(token: &str) -> TokenHash {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether a presented string can be one of our tokens at all (43 base64url
/// characters); anything else is refused without touching the database.
pub fn is_well_formed(token: &str) -> bool {
    token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_well_formed_and_hashed() {
        let a = RefreshToken::generate();
        let b = RefreshToken::generate();
        assert_ne!(a.expose(), b.expose());
        assert!(is_well_formed(a.expose()));
        assert_eq!(hash(a.expose()), a.hash);
        assert!(!is_well_formed("short"));
        assert!(!is_well_formed(&"!".repeat(43)));
    }

    #[test]
    fn a_successor_is_the_same_for_the_same_token_and_key_only() {
        let key = SuccessorKey::new(vec![7; 32].into());
        let token = RefreshToken::generate();
        let next = key.successor_of(token.expose());
        assert_eq!(next.expose(), key.successor_of(token.expose()).expose());
        assert!(is_well_formed(next.expose()));
        assert_eq!(hash(next.expose()), next.hash);
        assert_ne!(next.expose(), token.expose());
        let other_key = SuccessorKey::new(vec![8; 32].into());
        assert_ne!(
            next.expose(),
            other_key.successor_of(token.expose()).expose()
        );
        let other_token = RefreshToken::generate();
        assert_ne!(
            next.expose(),
            key.successor_of(other_token.expose()).expose()
        );
    }
}
