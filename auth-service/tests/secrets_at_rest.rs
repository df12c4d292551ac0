//! A copy of the auth database yields nothing usable (checklist K1): every
//! byte of the SQLite files, or a `pg_dump`, holds no signing key that signs
//! a token anyone accepts, and no refresh token, mail token, password or
//! key-encryption key in any form (raw, hex, base64). What the database
//! holds sealed opens only with the key-encryption key (KEK), which is not
//! in it.
//!
//! The tests look at a dump twice. As an attacker: every value of the
//! columns that hold secrets, decoded every way a key could be written, is
//! tried as an Ed25519 key (PKCS#8, or any 32 bytes of it as a seed), and
//! a token signed with it is refused by a task-service. And as the owner of
//! the KEK: the real secrets, opened with it, appear nowhere in the dump,
//! while a token signed with the real key *is* accepted, so the attacker's
//! check would have seen a key that was there.

use std::time::Duration;

use access_token::{Jwks, SigningKey};
use auth_service::{
    key_encryption::{KeyEncryption, LocalKeks},
    store::{AuthStore, SecretSlot, StoredSecret},
};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD},
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use secrecy::ExposeSecret;
use serving::database::{Database, PoolOptions};
use test_harness::*;
use todo_proto::{auth::v1 as pb, tasks::v1 as tasks_pb};
use tonic::Code;

/// The PKCS#8 v1 prefix of an Ed25519 private key; the 32-byte seed follows.
const PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];
/// The Ed25519 algorithm identifier (OID 1.3.101.112), in every PKCS#8 key.
const ED25519_OID: [u8; 5] = [0x06, 0x03, 0x2b, 0x65, 0x70];

/// The auth-service's store on `db`, as an operator with the KEK reads it.
async fn store_of(db: &TestDatabase) -> (Database, std::sync::Arc<dyn AuthStore>) {
    let database = Database::open(
        &db.url.clone().into(),
        PoolOptions::new(2, Duration::from_secs(5)),
        auth_service::store::MIGRATIONS,
    )
    .await
    .expect("open the auth database");
    let store = auth_service::store::open(&database, chrono::TimeDelta::minutes(15));
    (database, store)
}

/// Every secret the store holds, opened with the KEK; all must be sealed.
async fn opened_secrets(db: &TestDatabase) -> Vec<(SecretSlot, Vec<u8>, StoredSecret)> {
    let keks = LocalKeks::load(&key_encryption_key_file(db), None, false).expect("the KEK");
    let (database, store) = store_of(db).await;
    let mut secrets = Vec::new();
    for (slot, stored) in store.stored_secrets().await.expect("the stored secrets") {
        let StoredSecret::Sealed(sealed) = &stored else {
            panic!("{slot:?} is stored unsealed");
        };
        let plain = keks
            .open(sealed, &slot.purpose())
            .unwrap_or_else(|error| panic!("{slot:?} does not open with the KEK: {error}"));
        secrets.push((slot, plain.expose_secret().to_vec(), stored));
    }
    database.close().await;
    secrets
}

/// The seed of an Ed25519 PKCS#8 key (v1 or v2): the 32 bytes after
/// `04 22 04 20`.
fn seed_of(pkcs8: &[u8]) -> [u8; 32] {
    let at = find(pkcs8, &PKCS8_PREFIX[12..]).expect("an Ed25519 PKCS#8 key") + 4;
    pkcs8[at..at + 32].try_into().expect("32 bytes")
}

fn public_of(seed: &[u8]) -> Vec<u8> {
    Ed25519KeyPair::from_seed_unchecked(seed)
        .expect("any 32 bytes are a seed")
        .public_key()
        .as_ref()
        .to_vec()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Every way `secret` could be written into a dump: raw, hex, and base64
/// (standard and URL-safe) at each of the three alignments a longer text
/// could put it at (whole 3-byte groups only, so the text is the same
/// wherever it starts).
fn written_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = vec![
        secret.to_vec(),
        hex::encode(secret).into_bytes(),
        hex::encode_upper(secret).into_bytes(),
    ];
    for offset in 0..3.min(secret.len()) {
        let whole = (secret.len() - offset) / 3 * 3;
        if whole >= 12 {
            let part = &secret[offset..offset + whole];
            forms.push(STANDARD.encode(part).into_bytes());
            forms.push(URL_SAFE.encode(part).into_bytes());
        }
    }
    forms
}

/// Panics if the dump holds `secret` in any of its [`written_forms`].
fn assert_absent(dump: &[u8], what: &str, secret: &[u8]) {
    for form in written_forms(secret) {
        assert!(
            find(dump, &form).is_none(),
            "the dump holds the {what} ({} bytes written as {:?}…)",
            form.len(),
            String::from_utf8_lossy(&form[..form.len().min(8)])
        );
    }
}

/// A text token's own bytes and, when it is base64url, the bytes it stands for.
fn token_forms(token: &str) -> Vec<Vec<u8>> {
    let mut forms = vec![token.as_bytes().to_vec()];
    forms.extend(URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).ok());
    forms.extend(STANDARD.decode(token).ok());
    forms
}

/// What an attacker could read out of one stored value as key material:
/// its bytes, and what they decode to as hex or base64 text.
fn decodings(value: &[u8]) -> Vec<Vec<u8>> {
    let mut decoded = vec![value.to_vec()];
    if let Ok(text) = std::str::from_utf8(value) {
        let text = text.trim();
        decoded.extend(hex::decode(text.trim_start_matches("\\x")).ok());
        for engine in [&STANDARD, &URL_SAFE] {
            decoded.extend(engine.decode(text).ok());
        }
        decoded.extend(URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok());
    }
    decoded
}

/// Every Ed25519 seed `blob` could be: the key of a PKCS#8 document in it,
/// and every run of 32 bytes.
fn candidate_seeds(blob: &[u8]) -> Vec<Vec<u8>> {
    let mut seeds: Vec<Vec<u8>> = blob.windows(32).map(<[u8]>::to_vec).collect();
    for start in 0..blob.len() {
        if let Ok(key) = SigningKey::from_pkcs8_der(&blob[start..]) {
            seeds.push(seed_of(key.pkcs8_der()).to_vec());
        }
    }
    seeds
}

/// An access token with `claims` and the server's `kid`, signed with the
/// Ed25519 key of `seed`.
fn signed_with(seed: &[u8], kid: &str, claims: &serde_json::Value) -> String {
    let mut pkcs8 = PKCS8_PREFIX.to_vec();
    pkcs8.extend_from_slice(seed);
    let mut header = Header::new(Algorithm::EdDSA);
    header.typ = Some("at+jwt".into());
    header.kid = Some(kid.into());
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&pkcs8)).expect("signs")
}

/// The raw public keys of a JWK Set.
fn published_keys(jwks: &str) -> Vec<Vec<u8>> {
    Jwks::from_json(jwks)
        .expect("a JWK Set")
        .keys
        .iter()
        .map(|jwk| {
            URL_SAFE_NO_PAD
                .decode(jwk.x.as_deref().expect("x"))
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn a_database_dump_holds_no_usable_signing_key_and_no_token_or_password() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        // Mail that cannot be delivered stays queued, sealed, in the dump.
        let config = auth_service::Config {
            smtp_url: Some(format!("smtp://127.0.0.1:{}", closed_port().await.port()).into()),
            ..auth_config(&db)
        };
        let server = AuthServer::start_with(config).await;
        let tasks_db = TestDatabase::sqlite();
        let tasks = TaskServer::start(task_config(
            &tasks_db.url,
            &server.url(),
            server.clock.clone(),
        ))
        .await;
        tasks.wait_serving().await;

        let mut client = server.client().await;
        let email = unique_email();
        let registered = tokens(&register(&mut client, &email).await.tokens).clone();
        let signed_in = tokens(&login(&mut client, &email, PASSWORD).await.unwrap().tokens).clone();
        let refreshed = refresh(&mut client, &signed_in.refresh_token)
            .await
            .unwrap();
        client
            .request_email_verification(authorized(
                pb::RequestEmailVerificationRequest {},
                &refreshed.access_token,
            ))
            .await
            .unwrap();
        client
            .request_password_reset(pb::RequestPasswordResetRequest {
                email: email.clone(),
            })
            .await
            .unwrap();
        // The reset mail is queued after the answer (an unknown address is
        // answered as fast as a known one), so wait for both mails.
        eventually(PATIENCE, "both mails are queued", || async {
            outbox(&db.url).await.len() == 2
        })
        .await;
        let jwks = server.jwks_json().await;

        // The dump is taken while the service runs (recent writes are in
        // SQLite's WAL); every secret is also read with the KEK.
        let Some(dump) = dump(&db) else {
            return;
        };
        let secrets = opened_secrets(&db).await;
        let kinds =
            |want: fn(&SecretSlot) -> bool| secrets.iter().filter(|(s, ..)| want(s)).count();
        assert_eq!(kinds(|slot| matches!(slot, SecretSlot::SigningKey(_))), 1);
        assert_eq!(
            kinds(|slot| matches!(slot, SecretSlot::ServiceSecret(_))),
            1
        );
        assert_eq!(
            kinds(|slot| matches!(slot, SecretSlot::Mail(_))),
            2,
            "two mails queued"
        );

        // The owner's view: the real signing key, opened with the KEK, is
        // the published one and signs tokens the task-service accepts...
        let genuine = &refreshed.access_token;
        let kid = jsonwebtoken::decode_header(genuine).unwrap().kid.unwrap();
        let claims: serde_json::Value = jsonwebtoken::dangerous::insecure_decode(genuine)
            .unwrap()
            .claims;
        let published = published_keys(&jwks);
        let mut mail_tokens = Vec::new();
        for (slot, plain, _) in &secrets {
            match slot {
                SecretSlot::SigningKey(_) => {
                    let seed = seed_of(plain);
                    assert!(
                        published.contains(&public_of(&seed)),
                        "the KEK opens the real key"
                    );
                    let mut accepted = tasks.client(&signed_with(&seed, &kid, &claims)).await;
                    accepted
                        .list_tasks(tasks_pb::ListTasksRequest::default())
                        .await
                        .expect("a token signed with the real key is accepted");
                    assert_absent(&dump, "signing key's seed", &seed);
                    assert_absent(&dump, "signing key's PKCS#8", plain);
                }
                SecretSlot::ServiceSecret(name) => assert_absent(&dump, name, plain),
                SecretSlot::Mail(_) => {
                    let mail = ReceivedMail::parse(std::str::from_utf8(plain).unwrap());
                    mail_tokens.push(mail.token());
                    assert_absent(&dump, "mail's text", mail.text().as_bytes());
                }
            }
        }
        // ...and no token, password or KEK is in the dump in any form.
        let kek = std::fs::read_to_string(key_encryption_key_file(&db)).unwrap();
        let mut tokens_given = vec![PASSWORD.to_owned(), kek.trim().to_owned()];
        tokens_given.extend(mail_tokens);
        for pair in [&registered, &signed_in, &refreshed] {
            tokens_given.push(pair.refresh_token.clone());
            tokens_given.push(pair.access_token.rsplit('.').next().unwrap().to_owned());
        }
        for token in &tokens_given {
            for form in token_forms(token) {
                assert_absent(&dump, "token, password or KEK", &form);
            }
        }
        for marker in [&ED25519_OID[..], b"06032b6570", b"06032B6570"] {
            assert!(find(&dump, marker).is_none(), "the dump holds a PKCS#8 key");
        }

        // The attacker's view: every value of the columns holding secrets,
        // decoded every way, as a key. None is the published key, and
        // tokens signed with them are refused.
        let mut values: Vec<Vec<u8>> = Vec::new();
        for (slot, _, stored) in &secrets {
            let StoredSecret::Sealed(sealed) = stored else {
                unreachable!()
            };
            values.push(format!("{slot:?}").into_bytes());
            values.extend([
                sealed.ciphertext.clone(),
                sealed.nonce.clone(),
                sealed.kek_id.clone().into_bytes(),
                sealed.algorithm.clone().into_bytes(),
            ]);
        }
        let mut tried = 0;
        let mut forged = Vec::new();
        for blob in values.iter().flat_map(|value| decodings(value)) {
            for (i, seed) in candidate_seeds(&blob).into_iter().enumerate() {
                tried += 1;
                assert!(
                    !published.contains(&public_of(&seed)),
                    "the dump holds the key"
                );
                if i == 0 {
                    forged.push(signed_with(&seed, &kid, &claims));
                }
            }
        }
        assert!(
            tried > 100 && !forged.is_empty(),
            "tried {tried} candidate keys"
        );
        for token in forged {
            let refused = tasks
                .client(&token)
                .await
                .list_tasks(tasks_pb::ListTasksRequest::default())
                .await;
            assert_eq!(code(refused), Code::Unauthenticated);
        }
        tasks.stop().await.unwrap();
        server.stop().await;
    })
    .await;
}

/// A PEM document of `key` (`-----BEGIN PRIVATE KEY-----`).
fn pem_of(key: &SigningKey) -> String {
    let body = STANDARD.encode(key.pkcs8_der());
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|line| std::str::from_utf8(line).unwrap())
        .collect();
    format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        lines.join("\n")
    )
}

#[tokio::test]
async fn a_signing_key_given_as_a_file_signs_but_is_never_copied_into_the_database() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let key = SigningKey::generate().unwrap();
        let key_file = db.path("signing-key.pem");
        std::fs::write(&key_file, pem_of(&key)).unwrap();
        let server = AuthServer::start_with(auth_service::Config {
            signing_key_file: Some(key_file),
            ..auth_config(&db)
        })
        .await;
        let mut client = server.client().await;
        let pair = tokens(&register(&mut client, &unique_email()).await.tokens).clone();
        let kid = jsonwebtoken::decode_header(&pair.access_token)
            .unwrap()
            .kid
            .unwrap();
        assert_eq!(kid, key.kid(), "the file's key signs");
        assert!(published_keys(&server.jwks_json().await).contains(&key.public_key().to_vec()));

        let (database, store) = store_of(&db).await;
        assert!(
            store.signing_keys().await.unwrap().is_empty(),
            "no key was stored, the file's or a generated one"
        );
        database.close().await;
        if let Some(dump) = dump(&db) {
            assert_absent(&dump, "file's seed", &seed_of(key.pkcs8_der()));
            assert_absent(&dump, "file's PKCS#8", key.pkcs8_der());
        }
        server.stop().await;
    })
    .await;
}
