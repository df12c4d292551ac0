//! Registration and sign-in, as CONTRACT.md promises them.

mod support;

use std::time::Duration;

use support::*;
use todo_proto::auth::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn register_returns_the_user_and_a_working_token_pair() {
    on_each_backend(|db| async move {
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let response = client
            .register(pb::RegisterRequest {
                email: "  Ada@Example.COM ".into(),
                password: PASSWORD.into(),
                display_name: "Ada".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let user = response.user.unwrap();
        assert_eq!(user.email, "ada@example.com");
        assert_eq!(user.display_name, "Ada");
        assert!(uuid::Uuid::parse_str(&user.id).unwrap().get_version_num() == 7);
        assert!(user.create_time.is_some());
        let pair = tokens(&response.tokens);
        assert_eq!(pair.token_type, "Bearer");
        assert!(pair.refresh_token.len() >= 43);
        let access_expiry =
            pair.access_token_expire_time.unwrap().seconds - server.clock.now().timestamp();
        assert!(
            (899..=900).contains(&access_expiry),
            "15 minutes, got {access_expiry}s"
        );
        let refresh_expiry =
            pair.refresh_token_expire_time.unwrap().seconds - server.clock.now().timestamp();
        assert!(
            (30 * 86_400 - 1..=30 * 86_400).contains(&refresh_expiry),
            "30 days, got {refresh_expiry}s"
        );
        assert_eq!(
            current_user(&mut client, &pair.access_token).await.unwrap(),
            user
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn invalid_fields_are_named_in_bad_request_details_and_create_nothing() {
    on_each_backend(|db| async move {
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let status = client
            .register(pb::RegisterRequest {
                email: "not-an-email".into(),
                password: "short".into(),
                display_name: "x".repeat(101),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            violated_fields(&status),
            ["email", "password", "display_name"]
        );
        let status = login(&mut client, "not-an-email", PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(violated_fields(&status), ["email"]);
        // Nothing was created: the address can still be registered... as a valid one.
        let status = client
            .register(pb::RegisterRequest {
                email: "ok@example.com".into(),
                password: PASSWORD.into(),
                display_name: "Line\r\nbreak".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(violated_fields(&status), ["display_name"]);
        register(&mut client, "ok@example.com").await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn email_variants_of_case_and_space_are_one_account() {
    on_each_backend(|db| async move {
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        register(&mut client, "bob@example.com").await;
        for variant in ["BOB@example.com", " bob@EXAMPLE.com  ", "Bob@Example.Com"] {
            let status = client
                .register(pb::RegisterRequest {
                    email: variant.into(),
                    password: PASSWORD.into(),
                    display_name: String::new(),
                })
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::AlreadyExists, "{variant}");
            login(&mut client, variant, PASSWORD)
                .await
                .expect("any variant signs in");
        }
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn twenty_concurrent_registrations_of_one_email_yield_one_account() {
    on_each_backend(|db| async move {
        let server = AuthServer::start(&db).await;
        let client = server.client().await;
        let attempts = (0..20).map(|i| {
            let mut client = client.clone();
            async move {
                client
                    .register(pb::RegisterRequest {
                        email: if i % 2 == 0 {
                            "race@example.com".into()
                        } else {
                            " RACE@example.com".into()
                        },
                        password: PASSWORD.into(),
                        display_name: format!("racer {i}"),
                    })
                    .await
            }
        });
        let results = futures::future::join_all(attempts).await;
        let ok = results.iter().filter(|r| r.is_ok()).count();
        let exists = results
            .iter()
            .filter(|r| matches!(r, Err(s) if s.code() == Code::AlreadyExists))
            .count();
        assert_eq!((ok, exists), (1, 19), "{results:?}");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn unknown_email_and_wrong_password_answer_identically() {
    on_each_backend(|db| async move {
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        register(&mut client, "known@example.com").await;
        let wrong = login(&mut client, "known@example.com", "wrong password")
            .await
            .unwrap_err();
        let unknown = login(&mut client, "nobody@example.com", "wrong password")
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated);
        assert_eq!(unknown.code(), Code::Unauthenticated);
        assert_eq!(wrong.message(), unknown.message());
        assert_eq!(wrong.details(), unknown.details());
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn failed_logins_throttle_the_account_until_the_window_ends() {
    on_each_backend(|db| async move {
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        register(&mut client, "victim@example.com").await;
        for _ in 0..5 {
            let status = login(&mut client, "victim@example.com", "guess guess")
                .await
                .unwrap_err();
            assert_eq!(status.code(), Code::Unauthenticated);
        }
        // Even the right password is refused while the window is full...
        let status = login(&mut client, "victim@example.com", PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        let retry = status
            .get_error_details()
            .retry_info()
            .unwrap()
            .retry_delay
            .unwrap();
        assert!(
            retry > Duration::ZERO && retry <= Duration::from_secs(15 * 60),
            "{retry:?}"
        );
        // ...an unknown email is throttled the same way (no enumeration)...
        for _ in 0..5 {
            login(&mut client, "ghost@example.com", "guess guess")
                .await
                .unwrap_err();
        }
        let ghost = login(&mut client, "ghost@example.com", "guess guess")
            .await
            .unwrap_err();
        assert_eq!(ghost.code(), Code::ResourceExhausted);
        assert_eq!(ghost.message(), status.message());
        // ...and the owner gets in once the window has passed.
        server.clock.advance(Duration::from_secs(15 * 60 + 1));
        login(&mut client, "victim@example.com", PASSWORD)
            .await
            .expect("window over");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn password_length_is_counted_in_unicode_scalar_values() {
    on_each_backend(|db| async move {
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
        assert_eq!(violated_fields(&seven), ["password"]);
        attempt("😀".repeat(8))
            .await
            .expect("8 emoji are 8 characters");
        attempt(format!("  spaces and ünïcödé {} ", "ж".repeat(40)))
            .await
            .expect("any characters, 64+ long");
        let too_long = attempt("a".repeat(129)).await.unwrap_err();
        assert_eq!(violated_fields(&too_long), ["password"]);
        let huge = attempt("a".repeat(1_000_000)).await.unwrap_err();
        assert_eq!(huge.code(), Code::InvalidArgument);
        let _ = &mut client;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn passwords_are_never_truncated() {
    on_each_backend(|db| async move {
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let password: String = (0..100)
            .map(|i| char::from(b'a' + (i % 26) as u8))
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
    on_each_backend(|db| async move {
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
    on_each_backend(|db| async move {
        let mut config = test_config(&db);
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
async fn each_address_is_rate_limited_with_retry_info() {
    on_each_backend(|db| async move {
        let mut config = test_config(&db);
        config.address_rate_per_minute = 1;
        config.address_burst = 2;
        let server = AuthServer::start_with(config).await;
        let mut client = server.client().await;
        for _ in 0..2 {
            login(&mut client, "nobody@example.com", "whatever pw")
                .await
                .unwrap_err();
        }
        let status = login(&mut client, "nobody@example.com", "whatever pw")
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert!(status.get_error_details().retry_info().is_some());
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_login_storm_does_not_stall_cheap_calls() {
    let db = test_harness::TestDatabase::sqlite();
    // Every attempt counts against the account until one succeeds (so
    // parallel guessing gains nothing); this storm is of correct logins.
    let server = AuthServer::start_with(auth_service::Config {
        login_max_failures: 100,
        ..test_config(&db)
    })
    .await;
    let mut client = server.client().await;
    register(&mut client, "storm@example.com").await;
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let storm: Vec<_> = (0..50)
        .map(|_| {
            let (mut client, finished) = (client.clone(), finished.clone());
            tokio::spawn(async move {
                login(&mut client, "storm@example.com", PASSWORD)
                    .await
                    .unwrap();
                finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    // Let the storm reach the hashing queue, then make cheap calls: they are
    // answered while most logins are still queued behind the hash permits.
    tokio::time::sleep(Duration::from_millis(20)).await;
    for _ in 0..5 {
        client.get_jwks(pb::GetJwksRequest {}).await.unwrap();
    }
    let done = finished.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        done < 50,
        "cheap calls waited for the whole storm ({done} logins finished first)"
    );
    for login in storm {
        login.await.unwrap();
    }
    assert_eq!(finished.load(std::sync::atomic::Ordering::SeqCst), 50);
    server.stop().await;
}

#[tokio::test]
async fn parallel_guesses_are_counted_like_serial_ones() {
    on_each_backend(|db| async move {
        let server = AuthServer::start(&db).await;
        let client = server.client().await;
        register(&mut client.clone(), "target@example.com").await;
        let guesses = futures::future::join_all((0..20).map(|i| {
            let mut client = client.clone();
            async move {
                login(
                    &mut client,
                    "target@example.com",
                    &format!("guess number {i}"),
                )
                .await
            }
        }))
        .await;
        let verified = guesses
            .iter()
            .filter(|r| matches!(r, Err(s) if s.code() == Code::Unauthenticated))
            .count();
        let throttled = guesses
            .iter()
            .filter(|r| matches!(r, Err(s) if s.code() == Code::ResourceExhausted))
            .count();
        assert_eq!((verified, throttled), (5, 15));
        server.stop().await;
    })
    .await;
}

async fn login_from(
    client: &mut todo_proto::auth::v1::auth_service_client::AuthServiceClient<
        tonic::transport::Channel,
    >,
    forwarded_for: &str,
) -> tonic::Status {
    let mut request = tonic::Request::new(pb::LoginRequest {
        email: unique_email(),
        password: "whatever pw".into(),
    });
    request
        .metadata_mut()
        .insert("x-forwarded-for", forwarded_for.parse().unwrap());
    client.login(request).await.unwrap_err()
}

#[tokio::test]
async fn the_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy() {
    let db = test_harness::TestDatabase::sqlite();
    let behind_gateway = auth_service::Config {
        address_rate_per_minute: 1,
        address_burst: 2,
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..test_config(&db)
    };
    let server = AuthServer::start_with(behind_gateway).await;
    let mut client = server.client().await;
    for _ in 0..2 {
        assert_eq!(
            login_from(&mut client, "203.0.113.7").await.code(),
            Code::Unauthenticated
        );
    }
    assert_eq!(
        login_from(&mut client, "203.0.113.7").await.code(),
        Code::ResourceExhausted
    );
    // Another client behind the same proxy has its own budget.
    assert_eq!(
        login_from(&mut client, "198.51.100.1, 203.0.113.8")
            .await
            .code(),
        Code::Unauthenticated
    );
    server.stop().await;

    // Without a trusted proxy the header is ignored: forging it gains nothing.
    let db = test_harness::TestDatabase::sqlite();
    let direct = auth_service::Config {
        address_rate_per_minute: 1,
        address_burst: 2,
        ..test_config(&db)
    };
    let server = AuthServer::start_with(direct).await;
    let mut client = server.client().await;
    for forged in ["203.0.113.1", "203.0.113.2"] {
        assert_eq!(
            login_from(&mut client, forged).await.code(),
            Code::Unauthenticated
        );
    }
    assert_eq!(
        login_from(&mut client, "203.0.113.3").await.code(),
        Code::ResourceExhausted
    );
    server.stop().await;
}

#[tokio::test]
async fn the_most_common_passwords_are_refused_with_the_reason() {
    let db = test_harness::TestDatabase::sqlite();
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
    assert_eq!(violated_fields(&status), ["password"]);
    assert!(status.message().contains("common"), "{}", status.message());
    server.stop().await;
}

#[tokio::test]
async fn a_deadline_that_fires_mid_write_leaves_no_partial_account_or_password() {
    on_each_backend(|db| async move {
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        // Deadlines from nothing to 40 ms, around one argon2id hash and
        // the writes that follow it: cut before, during and after.
        let deadline = |i: u64| Duration::from_millis(2 * i);
        let cut = |status: &tonic::Status| {
            assert!(
                matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
                "{status:?}"
            );
        };
        for i in 0..20 {
            let email = unique_email();
            let mut request = tonic::Request::new(pb::RegisterRequest {
                email: email.clone(),
                password: PASSWORD.into(),
                display_name: String::new(),
            });
            request.set_timeout(deadline(i));
            match client.register(request).await {
                // Acknowledged: the account is whole.
                Ok(_) => login(&mut client, &email, PASSWORD)
                    .await
                    .map(drop)
                    .unwrap(),
                // Cut: the account exists whole, or not at all.
                Err(status) => {
                    cut(&status);
                    match login(&mut client, &email, PASSWORD).await {
                        Ok(_) => {}
                        Err(status) => {
                            assert_eq!(status.code(), Code::Unauthenticated);
                            register(&mut client, &email).await;
                        }
                    }
                }
            }

            // A cut ChangePassword leaves exactly one password working.
            let session = login(&mut client, &email, PASSWORD).await.unwrap();
            let new_password = format!("a new passphrase {i}");
            let mut request = authorized(
                pb::ChangePasswordRequest {
                    current_password: PASSWORD.into(),
                    new_password: new_password.clone(),
                },
                &tokens(&session.tokens).access_token,
            );
            request.set_timeout(deadline(20 - i));
            if let Err(status) = client.change_password(request).await {
                cut(&status);
            }
            let old = login(&mut client, &email, PASSWORD).await.is_ok();
            let new = login(&mut client, &email, &new_password).await.is_ok();
            assert!(
                old != new,
                "exactly one password works (old: {old}, new: {new})"
            );
        }
        server.stop().await;
    })
    .await;
}
