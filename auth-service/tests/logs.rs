//! No secret in any log line at any level: a whole session runs with every
//! target at TRACE, and the captured output is searched for each secret the
//! test used or the server stored.

use std::{
    io::Write,
    sync::{Arc, Mutex},
};

use test_harness::*;
use todo_proto::auth::v1 as pb;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Printable ASCII (so a valid header value) made to look like more log
/// fields.
const FORGED_REQUEST_ID: &str = "forged\" planted=\"yes msg=forged";

#[tokio::test]
async fn no_password_token_hash_or_key_reaches_the_log_even_at_trace() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("trace")
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let db = TestDatabase::sqlite();
    let server = AuthServer::start(&db).await;
    let mut client = server.client().await;
    let email = unique_email();
    let registered = register(&mut client, &email).await;
    let first = tokens(&registered.tokens).clone();
    login(&mut client, &email, "a wrong password")
        .await
        .unwrap_err();
    let second = refresh(&mut client, &first.refresh_token).await.unwrap();
    current_user(&mut client, &second.access_token)
        .await
        .unwrap();
    client
        .change_password(authorized(
            pb::ChangePasswordRequest {
                current_password: PASSWORD.into(),
                new_password: "the next password".into(),
            },
            &second.access_token,
        ))
        .await
        .unwrap();
    refresh(&mut client, &first.refresh_token)
        .await
        .unwrap_err();
    // A crafted request id on a direct call: quotes and a made-up field
    // would plant text inside the call's log lines if logged as given.
    let mut crafted = tonic::Request::new(pb::GetJwksRequest {});
    crafted
        .metadata_mut()
        .insert("x-request-id", FORGED_REQUEST_ID.parse().unwrap());
    let answer = client.get_jwks(crafted).await.unwrap();
    let given = answer.metadata().get("x-request-id").unwrap();
    assert_ne!(
        given, FORGED_REQUEST_ID,
        "a fresh id replaces the crafted one"
    );
    server.stop().await;

    let pool = sqlx::SqlitePool::connect(&db.url).await.unwrap();
    let hash: String = sqlx::query_scalar("SELECT password_hash FROM users")
        .fetch_one(&pool)
        .await
        .unwrap();
    let key: Vec<u8> = sqlx::query_scalar("SELECT private_key FROM signing_keys")
        .fetch_one(&pool)
        .await
        .unwrap();
    use base64::Engine;
    let key_b64 = base64::engine::general_purpose::STANDARD.encode(&key);
    let salt_and_digest = hash.rsplit('$').next().unwrap().to_owned();

    let log = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
    assert!(
        log.len() > 10_000,
        "TRACE logging was captured ({} bytes)",
        log.len()
    );
    let signature = |token: &str| token.rsplit('.').next().unwrap().to_owned();
    let secrets = [
        ("password", PASSWORD.to_owned()),
        ("wrong password", "a wrong password".to_owned()),
        ("new password", "the next password".to_owned()),
        ("refresh token", first.refresh_token.clone()),
        ("rotated refresh token", second.refresh_token.clone()),
        ("access token signature", signature(&first.access_token)),
        (
            "second access token signature",
            signature(&second.access_token),
        ),
        ("password hash", salt_and_digest),
        ("signing key", key_b64[key_b64.len() - 24..].to_owned()),
    ];
    for (name, secret) in secrets {
        assert!(!log.contains(&secret), "the log contains the {name}");
    }
    assert!(
        !log.contains("planted=") && !log.contains("forged"),
        "a crafted x-request-id reached the log"
    );
}
