//! Registration, as CONTRACT.md promises it: the user and token pair it
//! returns, invalid fields named and nothing created, one account per email
//! however it is spelled or raced, and no partial account or password when
//! a deadline cuts a write short.

use std::time::Duration;

use test_harness::*;
use todo_proto::auth::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn register_returns_the_user_and_a_working_token_pair() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
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
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
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
        assert_eq!(bad_fields(&status), ["email", "password", "display_name"]);
        let status = login(&mut client, "not-an-email", PASSWORD)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(bad_fields(&status), ["email"]);
        // Nothing was created: the address can still be registered... as a valid one.
        let status = client
            .register(pb::RegisterRequest {
                email: "ok@example.com".into(),
                password: PASSWORD.into(),
                display_name: "Line\r\nbreak".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["display_name"]);
        register(&mut client, "ok@example.com").await;
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn email_variants_of_case_and_space_are_one_account() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
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
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
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
async fn a_deadline_that_fires_mid_write_leaves_no_partial_account_or_password() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
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
