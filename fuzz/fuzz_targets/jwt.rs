//! Access tokens: `access_token::Verifier::verify` with a verifier that
//! trusts one real Ed25519 key, generated once per run.
//!
//! Three kinds of input, all of which must be answered without a panic:
//!
//! - any string at all, as a client can send it;
//! - a token assembled from a fuzzed header, payload and signature, each
//!   base64url-encoded so the verifier gets past the framing into JSON and
//!   signature checks; the signature is not the key's, so it is refused;
//! - a token the real key signed over fuzzed claims, as the auth-service
//!   would sign them, verified at a fuzzed time: it verifies exactly when
//!   issuer, audience, `exp` (plus the 30 s leeway) and `nbf` allow, and
//!   then yields exactly the signed claims; with any one character changed
//!   it is refused.
//!
//! Whatever verifies, by any route, must satisfy the same checks: our
//! issuer and audience, not expired, already valid.

#![no_main]

use std::sync::LazyLock;

use access_token::{AccessClaims, IssuedClaims, Jwks, SigningKey, Verifier, VerifyError};
use arbitrary::Arbitrary;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use libfuzzer_sys::fuzz_target;
use uuid::Uuid;

const ISSUER: &str = "https://auth.example";
const AUDIENCE: &str = "todo";
/// The verifier's leeway, as the services configure it.
const LEEWAY_SECS: i64 = 30;

struct Fixture {
    key: SigningKey,
    verifier: Verifier,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let key = SigningKey::generate().expect("the system random source works");
    let verifier = Verifier::new(ISSUER, AUDIENCE, LEEWAY_SECS as u64);
    assert_eq!(verifier.set_keys(&Jwks::of([&key])), 1);
    Fixture { key, verifier }
});

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        token: String,
        now: i64,
    },
    Assembled {
        header: Header,
        payload: String,
        signature: Vec<u8>,
        now: i64,
    },
    Signed {
        claims: Claims,
        email_verified: bool,
        now: i64,
        tamper: Option<(usize, u8)>,
    },
}

/// A JOSE header: mostly well-formed, with our `kid`, so the verifier's
/// later checks are reached; sometimes any text at all.
#[derive(Arbitrary, Debug)]
enum Header {
    Fields {
        alg: String,
        typ: Option<String>,
        our_kid: bool,
        crit: bool,
    },
    Text(String),
}

impl Header {
    fn json(&self) -> String {
        match self {
            Self::Fields {
                alg,
                typ,
                our_kid,
                crit,
            } => {
                let mut header = serde_json::json!({ "alg": alg });
                if let Some(typ) = typ {
                    header["typ"] = typ.as_str().into();
                }
                if *our_kid {
                    header["kid"] = FIXTURE.key.kid().into();
                }
                if *crit {
                    header["crit"] = serde_json::json!(["exp"]);
                }
                header.to_string()
            }
            Self::Text(text) => text.clone(),
        }
    }
}

/// Claims; issuer and audience are ours unless the fuzzer says otherwise.
#[derive(Arbitrary, Debug)]
struct Claims {
    iss: Option<String>,
    aud: Option<String>,
    sub: [u8; 16],
    sid: [u8; 16],
    iat: i64,
    exp: i64,
    nbf: Option<i64>,
    jti: [u8; 16],
}

impl Claims {
    fn access(&self) -> AccessClaims {
        AccessClaims {
            iss: self.iss.clone().unwrap_or_else(|| ISSUER.to_owned()),
            aud: self.aud.clone().unwrap_or_else(|| AUDIENCE.to_owned()),
            sub: Uuid::from_bytes(self.sub),
            sid: Uuid::from_bytes(self.sid),
            iat: self.iat,
            exp: self.exp,
            nbf: self.nbf,
            jti: Uuid::from_bytes(self.jti),
        }
    }
}

/// Whether claims signed by a trusted key must be accepted at `now`. A
/// negative `exp` is never accepted (the JWT library reads it as a
/// malformed NumericDate), so it is left out of the promise.
fn acceptable(claims: &AccessClaims, now: i64) -> bool {
    claims.iss == ISSUER
        && claims.aud == AUDIENCE
        && claims.exp >= 0
        && now <= claims.exp.saturating_add(LEEWAY_SECS)
        && claims
            .nbf
            .is_none_or(|nbf| nbf <= now.saturating_add(LEEWAY_SECS))
}

/// What any accepted token must satisfy, however it was made.
fn check_sound(answer: &Result<AccessClaims, VerifyError>, now: i64) {
    if let Ok(claims) = answer {
        assert_eq!(claims.iss, ISSUER);
        assert_eq!(claims.aud, AUDIENCE);
        assert!(now <= claims.exp.saturating_add(LEEWAY_SECS), "{claims:?}");
        if let Some(nbf) = claims.nbf {
            assert!(nbf <= now.saturating_add(LEEWAY_SECS), "{claims:?}");
        }
        let identity = claims.identity();
        assert_eq!(identity.user_id, claims.sub);
        assert_eq!(identity.session_id, claims.sid);
        assert_eq!(identity.expires_at, claims.exp);
    }
}

fuzz_target!(|input: Input| {
    let Fixture { key, verifier } = &*FIXTURE;
    match input {
        Input::Raw { token, now } => {
            let answer = verifier.verify_claims(&token, now);
            check_sound(&answer, now);
            assert_eq!(
                verifier.verify(&token, now).ok(),
                answer.ok().map(|claims| claims.identity())
            );
        }
        Input::Assembled {
            header,
            payload,
            signature,
            now,
        } => {
            let token = format!(
                "{}.{}.{}",
                URL_SAFE_NO_PAD.encode(header.json()),
                URL_SAFE_NO_PAD.encode(payload),
                URL_SAFE_NO_PAD.encode(signature)
            );
            let answer = verifier.verify_claims(&token, now);
            assert!(answer.is_err(), "a token the key never signed verified");
        }
        Input::Signed {
            claims,
            email_verified,
            now,
            tamper,
        } => {
            let claims = claims.access();
            let token = key
                .sign(&IssuedClaims {
                    access: &claims,
                    email_verified,
                })
                .expect("signing plain claims cannot fail");
            let answer = verifier.verify_claims(&token, now);
            check_sound(&answer, now);
            if acceptable(&claims, now) {
                assert_eq!(answer.as_ref(), Ok(&claims));
            } else {
                assert!(answer.is_err(), "{claims:?} at {now}");
            }
            if let Some((at, byte)) = tamper {
                let mut bytes = token.into_bytes();
                let at = at % bytes.len();
                if bytes[at] != byte {
                    bytes[at] = byte;
                    if let Ok(tampered) = String::from_utf8(bytes) {
                        let answer = verifier.verify_claims(&tampered, now);
                        assert!(answer.is_err(), "a changed token verified: {tampered}");
                    }
                }
            }
        }
    }
});
