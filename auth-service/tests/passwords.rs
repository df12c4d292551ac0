//! Passwords: length counted in characters, any Unicode accepted and
//! normalised, never truncated, the most common ones refused with the
//! reason, and a stored hash upgraded when the hashing settings grow.

use test_harness::*;
use todo_proto::auth::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn password_length_is_counted_in_unicode_scalar_values() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let attempt = |password: String| {
            let mut client = client.clone();
            async move {
                client
                    .register(pb::RegisterRequest {
                        email: unique_email(),
                        password,
                        display_name: String::new(),
                    })
                    .await
            }
        };
        let seven = attempt("😀".repeat(7)).await.unwrap_err();
        assert_eq!(bad_fields(&seven), ["password"]);
        attempt("😀".repeat(8))
            .await
            .expect("8 emoji are 8 characters");
        attempt(format!("  spaces and ünïcödé {} ", "ж".repeat(40)))
            .await
            .expect("any characters, 64+ long");
        let too_long = attempt("a".repeat(129)).await.unwrap_err();
        assert_eq!(bad_fields(&too_long), ["password"]);
        let huge = attempt("a".repeat(1_000_000)).await.unwrap_err();
        assert_eq!(huge.code(), Code::InvalidArgument);
        let _ = &mut client;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn passwords_are_never_truncated() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let password: String = (0..100)
            .map(|i| char::from(b'a' + u8::try_from(i % 26).unwrap()))
            .collect();
        client
            .register(pb::RegisterRequest {
                email: "long@example.com".into(),
                password: password.clone(),
                display_name: String::new(),
            })
            .await
            .unwrap();
        for prefix in [72, 99] {
            let status = login(&mut client, "long@example.com", &password[..prefix])
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated, "prefix {prefix}");
        }
        login(&mut client, "long@example.com", &password)
            .await
            .expect("the whole password");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn composed_and_decomposed_accents_are_the_same_password() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        client
            .register(pb::RegisterRequest {
                email: "cafe@example.com".into(),
                password: "caf\u{e9} au lait".into(),
                display_name: String::new(),
            })
            .await
            .unwrap();
        login(&mut client, "cafe@example.com", "cafe\u{301} au lait")
            .await
            .expect("decomposed é signs in");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_weaker_hash_is_upgraded_on_the_next_login() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let mut config = auth_config(&db);
        config.hash_memory_kib = 8_192;
        config.hash_iterations = 1;
        let weak = AuthServer::start_with(config).await;
        register(&mut weak.client().await, "upgrade@example.com").await;
        weak.stop().await;

        let strong = AuthServer::start(&db).await;
        let before = password_hash(&db.url, "upgrade@example.com").await;
        assert!(before.contains("m=8192,t=1"), "{before}");
        login(&mut strong.client().await, "upgrade@example.com", PASSWORD)
            .await
            .unwrap();
        let after = password_hash(&db.url, "upgrade@example.com").await;
        assert!(
            after.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{after}"
        );
        login(&mut strong.client().await, "upgrade@example.com", PASSWORD)
            .await
            .expect("still the same password");
        strong.stop().await;
    })
    .await;
}

/// Reads a stored hash straight from the database (tests only).
async fn password_hash(url: &str, email: &str) -> String {
    let query = "SELECT password_hash FROM users WHERE email = $1";
    if url.starts_with("sqlite:") {
        let pool = sqlx::SqlitePool::connect(url).await.unwrap();
        sqlx::query_scalar(query)
            .bind(email)
            .fetch_one(&pool)
            .await
            .unwrap()
    } else {
        let pool = sqlx::PgPool::connect(url).await.unwrap();
        sqlx::query_scalar(query)
            .bind(email)
            .fetch_one(&pool)
            .await
            .unwrap()
    }
}

#[tokio::test]
async fn the_most_common_passwords_are_refused_with_the_reason() {
    let db = TestDatabase::sqlite();
    let server = AuthServer::start(&db).await;
    let mut client = server.client().await;
    let status = client
        .register(pb::RegisterRequest {
            email: unique_email(),
            password: "Password123".into(),
            display_name: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad_fields(&status), ["password"]);
    assert!(status.message().contains("common"), "{}", status.message());
    server.stop().await;
}
