//! Refresh tokens: 256 random bits, base64url, handed to the client once.
//!
//! Only the SHA-256 of a token is stored, so a database dump yields nothing
//! that can be spent. A plain (unsalted, fast) hash is right here: unlike a
//! password the token has full entropy, so there is nothing to brute-force,
//! and lookups must be exact-match indexable.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
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
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
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
}
