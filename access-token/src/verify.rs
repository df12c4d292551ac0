//! Verifying access tokens against a set of trusted public keys.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use crate::{AccessClaims, Identity, Jwks, TOKEN_TYPE};

/// Why a token was refused. Callers answer every one of these with the same
/// `UNAUTHENTICATED`; the variants exist for logs and for [`UnknownKey`]
/// (which tells a verifier to refresh its key set).
///
/// [`UnknownKey`]: VerifyError::UnknownKey
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("not a well-formed JWT")]
    Malformed,
    #[error("algorithm is not EdDSA")]
    Algorithm,
    #[error("typ is not at+jwt")]
    Type,
    #[error("the header has critical extensions")]
    Critical,
    #[error("no key with this kid")]
    UnknownKey,
    #[error("bad signature or claims")]
    Invalid,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
}

/// Verifies access tokens for one issuer and audience. The key set can be
/// replaced at any time (see [`Verifier::set_keys`]) while verifications run.
pub struct Verifier {
    keys: RwLock<Arc<HashMap<String, DecodingKey>>>,
    validation: Validation,
    leeway_secs: i64,
}

impl Verifier {
    /// `leeway_secs` absorbs clock skew between issuer and verifier; it is
    /// capped at 60 s so an expired token cannot live on for long.
    pub fn new(issuer: &str, audience: &str, leeway_secs: u64) -> Self {
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // Time is checked in `verify` against the caller's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Self {
            keys: RwLock::new(Arc::default()),
            validation,
            leeway_secs: leeway_secs.min(60).cast_signed(),
        }
    }

    /// Replaces the trusted keys with the Ed25519 keys of `jwks` that have a
    /// `kid`; other keys are ignored. Returns how many keys are now trusted.
    pub fn set_keys(&self, jwks: &Jwks) -> usize {
        let keys: HashMap<String, DecodingKey> = jwks
            .keys
            .iter()
            .filter(|jwk| jwk.kty == "OKP" && jwk.crv.as_deref() == Some("Ed25519"))
            .filter(|jwk| jwk.alg.as_deref().is_none_or(|alg| alg == "EdDSA"))
            .filter_map(|jwk| {
                let kid = jwk.kid.clone()?;
                let key = DecodingKey::from_ed_components(jwk.x.as_deref()?).ok()?;
                Some((kid, key))
            })
            .collect();
        let count = keys.len();
        *self
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
        count
    }

    /// How many keys are trusted now.
    pub fn key_count(&self) -> usize {
        self.current_keys().len()
    }

    fn current_keys(&self) -> Arc<HashMap<String, DecodingKey>> {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Verifies `token` at `now` (Unix seconds) and returns who it proves.
    pub fn verify(&self, token: &str, now: i64) -> Result<Identity, VerifyError> {
        Ok(self.verify_claims(token, now)?.identity())
    }

    /// Like [`Verifier::verify`], returning every claim.
    pub fn verify_claims(&self, token: &str, now: i64) -> Result<AccessClaims, VerifyError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| VerifyError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(VerifyError::Algorithm);
        }
        let typ_ok = header.typ.as_deref().is_some_and(|typ| {
            typ.eq_ignore_ascii_case(TOKEN_TYPE) || typ.eq_ignore_ascii_case("application/at+jwt")
        });
        if !typ_ok {
            return Err(VerifyError::Type);
        }
        if header.crit.is_some() {
            return Err(VerifyError::Critical);
        }
        let kid = header.kid.ok_or(VerifyError::UnknownKey)?;
        let keys = self.current_keys();
        let key = keys.get(&kid).ok_or(VerifyError::UnknownKey)?;
        let claims = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation)
            .map_err(|_| VerifyError::Invalid)?
            .claims;
        if now > claims.exp.saturating_add(self.leeway_secs) {
            return Err(VerifyError::Expired);
        }
        if claims
            .nbf
            .is_some_and(|nbf| nbf > now.saturating_add(self.leeway_secs))
        {
            return Err(VerifyError::NotYetValid);
        }
        Ok(claims)
    }
}

impl AccessClaims {
    pub fn identity(&self) -> Identity {
        Identity {
            user_id: self.sub,
            session_id: self.sid,
            expires_at: self.exp,
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
    use jsonwebtoken::{EncodingKey, Header};
    use uuid::Uuid;

    use super::*;
    use crate::SigningKey;

    const NOW: i64 = 1_800_000_000;

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: "iss".into(),
            aud: "aud".into(),
            sub: Uuid::now_v7(),
            sid: Uuid::now_v7(),
            iat: NOW,
            exp: NOW + 900,
            nbf: None,
            jti: Uuid::new_v4(),
        }
    }

    fn setup() -> (SigningKey, Verifier) {
        let key = SigningKey::generate().unwrap();
        let verifier = Verifier::new("iss", "aud", 30);
        assert_eq!(verifier.set_keys(&Jwks::of([&key])), 1);
        (key, verifier)
    }

    #[test]
    fn a_signed_token_verifies_until_exp_plus_leeway() {
        let (key, verifier) = setup();
        let claims = claims();
        let token = key.sign(&claims).unwrap();
        assert_eq!(verifier.verify_claims(&token, NOW).unwrap(), claims);
        assert!(verifier.verify(&token, NOW + 930).is_ok());
        assert_eq!(
            verifier.verify(&token, NOW + 931),
            Err(VerifyError::Expired)
        );
    }

    #[test]
    fn foreign_key_wrong_iss_aud_and_future_nbf_are_refused() {
        let (key, verifier) = setup();
        let other = SigningKey::generate().unwrap();
        assert_eq!(
            verifier.verify(&other.sign(&claims()).unwrap(), NOW),
            Err(VerifyError::UnknownKey)
        );
        let mut c = claims();
        c.iss = "evil".into();
        assert_eq!(
            verifier.verify(&key.sign(&c).unwrap(), NOW),
            Err(VerifyError::Invalid)
        );
        let mut c = claims();
        c.aud = "evil".into();
        assert_eq!(
            verifier.verify(&key.sign(&c).unwrap(), NOW),
            Err(VerifyError::Invalid)
        );
        let mut c = claims();
        c.nbf = Some(NOW + 120);
        assert_eq!(
            verifier.verify(&key.sign(&c).unwrap(), NOW),
            Err(VerifyError::NotYetValid)
        );
    }

    #[test]
    fn algorithm_confusion_and_none_are_refused() {
        let (key, verifier) = setup();
        // HS256 keyed with the public key, with our kid.
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some(TOKEN_TYPE.into());
        header.kid = Some(key.kid().into());
        let hs = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_secret(key.public_key()),
        )
        .unwrap();
        assert_eq!(verifier.verify(&hs, NOW), Err(VerifyError::Algorithm));
        // alg none, in several spellings, unsigned.
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
        for alg in ["none", "None", "NONE"] {
            let head = URL_SAFE_NO_PAD.encode(format!(
                r#"{{"alg":"{alg}","typ":"at+jwt","kid":"{}"}}"#,
                key.kid()
            ));
            let token = format!("{head}.{payload}.");
            assert_eq!(
                verifier.verify(&token, NOW),
                Err(VerifyError::Malformed),
                "{alg}"
            );
        }
    }

    #[test]
    fn tampered_truncated_and_wrong_typ_tokens_are_refused() {
        let (key, verifier) = setup();
        let token = key.sign(&claims()).unwrap();
        let (head_payload, signature) = token.rsplit_once('.').unwrap();
        assert!(verifier.verify(&format!("{head_payload}."), NOW).is_err());
        assert!(
            verifier
                .verify(&format!("{head_payload}.{}", &signature[..10]), NOW)
                .is_err()
        );
        let (head, _) = head_payload.split_once('.').unwrap();
        let mut c = claims();
        c.sub = Uuid::now_v7();
        let forged = format!(
            "{head}.{}.{signature}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&c).unwrap())
        );
        assert_eq!(verifier.verify(&forged, NOW), Err(VerifyError::Invalid));
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid().into());
        header.typ = Some("JWT".into());
        let jwt = jsonwebtoken::encode(
            &header,
            &claims(),
            &EncodingKey::from_ed_der(key.pkcs8_der()),
        )
        .unwrap();
        assert_eq!(verifier.verify(&jwt, NOW), Err(VerifyError::Type));
        assert_eq!(verifier.verify("", NOW), Err(VerifyError::Malformed));
        assert_eq!(verifier.verify("a.b.c", NOW), Err(VerifyError::Malformed));
    }

    #[test]
    fn pem_keys_round_trip_with_a_stable_kid() {
        let key = SigningKey::generate().unwrap();
        let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", key.pkcs8_der().to_vec()));
        let again = SigningKey::from_pkcs8_pem(&pem).unwrap();
        assert_eq!(again.kid(), key.kid());
        assert_eq!(again.public_key(), key.public_key());
    }
}
