//! Ed25519 signing keys and the JWK Set that publishes their public halves.
//!
//! A key's `kid` is its RFC 7638 thumbprint, so the same key always has the
//! same id on every replica and in every JWKS, and a `kid` can never collide
//! with a different key.

use aws_lc_rs::{
    rand::SystemRandom,
    signature::{Ed25519KeyPair, KeyPair},
};
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, Header};
use secrecy::{ExposeSecret, SecretSlice};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::TOKEN_TYPE;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not an unencrypted PKCS#8 Ed25519 private key")]
    NotEd25519,
    #[error("not a PEM document: {0}")]
    Pem(#[from] pem::PemError),
    #[error("could not generate a key")]
    Generate,
    #[error("could not sign the token")]
    Sign,
}

/// An Ed25519 private key with its id. `Debug` shows only the `kid`.
///
/// The key is parsed once, when loaded. `jsonwebtoken::encode` parses its
/// PKCS#8 document and derives the public key again for every token:
/// ~98,000 instructions, a sixth of a `Refresh` under callgrind
/// (BENCHMARKS.md). [`SigningKey::sign`] writes the same compact JWS
/// (RFC 7515 §7.1) with the parsed key, byte for byte what
/// `jsonwebtoken::encode` writes (Ed25519 is deterministic; a test holds
/// the two equal); verifying stays with `jsonwebtoken`.
pub struct SigningKey {
    kid: String,
    pkcs8: SecretSlice<u8>,
    pair: Ed25519KeyPair,
    /// The first part of every token of this key: its JOSE header
    /// (`alg`, `typ`, `kid`), base64url-encoded.
    encoded_header: String,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let document =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8_der(document.as_ref())
    }

    /// A key from PKCS#8 DER (v1 as written by `openssl genpkey`, or v2).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|_| KeyError::NotEd25519)?;
        let kid = thumbprint(pair.public_key().as_ref());
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(kid.clone());
        let header = serde_json::to_vec(&header).expect("a JOSE header of strings serialises");
        Ok(Self {
            kid,
            pkcs8: der.to_vec().into(),
            pair,
            encoded_header: URL_SAFE_NO_PAD.encode(header),
        })
    }

    /// A key from a `-----BEGIN PRIVATE KEY-----` PEM document.
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, KeyError> {
        let document = pem::parse(pem)?;
        if document.tag() != "PRIVATE KEY" {
            return Err(KeyError::NotEd25519);
        }
        Self::from_pkcs8_der(document.contents())
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The PKCS#8 DER of the private key, for storing it.
    pub fn pkcs8_der(&self) -> &[u8] {
        self.pkcs8.expose_secret()
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> &[u8] {
        self.pair.public_key().as_ref()
    }

    /// Signs `claims` as an access token with this key: `header.claims.
    /// signature`, each part base64url without padding, the signature over
    /// the first two parts with their dot.
    pub fn sign(&self, claims: &impl serde::Serialize) -> Result<String, KeyError> {
        let claims = serde_json::to_vec(claims).map_err(|_| KeyError::Sign)?;
        // Ed25519 signatures are 64 bytes: 86 characters in base64url.
        let mut token =
            String::with_capacity(self.encoded_header.len() + claims.len().div_ceil(3) * 4 + 88);
        token.push_str(&self.encoded_header);
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(&claims, &mut token);
        let signature = self.pair.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        Ok(token)
    }
}

/// RFC 7638 thumbprint of an Ed25519 public key: members in lexicographic
/// order, no whitespace.
fn thumbprint(public: &[u8]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

/// A JWK Set (RFC 7517) of Ed25519 public keys.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

/// One public key of a [`Jwks`]. Unknown members of a parsed document are
/// ignored; keys that are not Ed25519 signing keys are skipped by the verifier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Jwk {
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
}

impl Jwk {
    /// The public JWK of an Ed25519 key given by its raw public bytes.
    pub fn ed25519(kid: &str, public: &[u8]) -> Self {
        Self {
            kty: "OKP".into(),
            crv: Some("Ed25519".into()),
            x: Some(URL_SAFE_NO_PAD.encode(public)),
            kid: Some(kid.into()),
            alg: Some("EdDSA".into()),
            use_: Some("sig".into()),
        }
    }
}

impl Jwks {
    /// The set publishing the given keys' public halves.
    pub fn of<'a>(keys: impl IntoIterator<Item = &'a SigningKey>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|key| Jwk::ed25519(key.kid(), key.public_key()))
                .collect(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a JWK Set of strings always serialises")
    }

    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::EncodingKey;

    use super::*;

    #[test]
    fn a_token_is_byte_for_byte_what_jsonwebtoken_signs() {
        #[derive(Serialize)]
        struct Claims<'a> {
            sub: &'a str,
            exp: i64,
            note: &'a str,
        }
        let key = SigningKey::generate().unwrap();
        let claims = Claims {
            sub: "someone",
            exp: 2_000_000_000,
            note: "needs \"escaping\" and ünïcode, and is long enough to pad: xy",
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.typ = Some(TOKEN_TYPE.to_owned());
        header.kid = Some(key.kid().to_owned());
        let expected =
            jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(key.pkcs8_der()))
                .unwrap();
        assert_eq!(key.sign(&claims).unwrap(), expected);
    }
}
