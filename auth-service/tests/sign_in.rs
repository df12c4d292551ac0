//! Sign-in and its limits: a wrong password and an unknown email answer
//! identically, failures throttle the account until the window ends,
//! parallel guesses count like serial ones, each client address has a rate
//! (its address taken from `x-forwarded-for` only behind a trusted proxy),
//! and a storm of sign-ins does not stall cheap calls.

use std::time::Duration;

use test_harness::*;
use todo_proto::auth::v1 as pb;
use tonic::Code;
use tonic_types::StatusExt;

#[tokio::test]
async fn unknown_email_and_wrong_password_answer_identically() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
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
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
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
        let retry = retry_delay(&status);
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
async fn each_address_is_rate_limited_with_retry_info() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let mut config = auth_config(&db);
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
    let db = TestDatabase::sqlite();
    // Every attempt counts against the account until one succeeds (so
    // parallel guessing gains nothing); this storm is of correct logins.
    let server = AuthServer::start_with(auth_service::Config {
        login_max_failures: 100,
        ..auth_config(&db)
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
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
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
    let request = from_address(
        pb::LoginRequest {
            email: unique_email(),
            password: "whatever pw".into(),
        },
        forwarded_for,
    );
    client.login(request).await.unwrap_err()
}

#[tokio::test]
async fn the_address_comes_from_x_forwarded_for_only_behind_a_trusted_proxy() {
    let db = TestDatabase::sqlite();
    let behind_gateway = auth_service::Config {
        address_rate_per_minute: 1,
        address_burst: 2,
        trusted_proxies: vec!["127.0.0.1/32".parse().unwrap()],
        ..auth_config(&db)
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
    let db = TestDatabase::sqlite();
    let direct = auth_service::Config {
        address_rate_per_minute: 1,
        address_burst: 2,
        ..auth_config(&db)
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
