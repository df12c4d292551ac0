//! The life and death of sessions: logout ends one at once, a user lists
//! theirs and revokes any (another user's is not found), and a password
//! change ends every other session, also one a sign-in checked against the
//! old password is about to start.

use test_harness::*;
use todo_proto::auth::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn logout_ends_the_session_at_once() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let registered = register(&mut client, &unique_email()).await;
        let pair = tokens(&registered.tokens);
        client
            .logout(pb::LogoutRequest {
                refresh_token: pair.refresh_token.clone(),
            })
            .await
            .unwrap();
        assert_eq!(
            code(refresh(&mut client, &pair.refresh_token).await),
            Code::Unauthenticated
        );
        assert_eq!(
            code(current_user(&mut client, &pair.access_token).await),
            Code::Unauthenticated
        );
        // Logging out twice, or with an unknown token, is not an error.
        client
            .logout(pb::LogoutRequest {
                refresh_token: pair.refresh_token.clone(),
            })
            .await
            .unwrap();
        client
            .logout(pb::LogoutRequest {
                refresh_token: "B".repeat(43),
            })
            .await
            .unwrap();
        let status = client
            .logout(pb::LogoutRequest {
                refresh_token: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn sessions_are_listed_with_the_current_one_marked_and_can_be_revoked() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let email = unique_email();
        let phone = register(&mut client, &email).await;
        let phone = tokens(&phone.tokens).clone();
        let laptop = login(&mut client, &email, PASSWORD).await.unwrap();
        let laptop = tokens(&laptop.tokens).clone();

        let sessions = client
            .list_sessions(authorized(pb::ListSessionsRequest {}, &laptop.access_token))
            .await
            .unwrap()
            .into_inner()
            .sessions;
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions.iter().filter(|s| s.current).count(), 1);
        let current = sessions.iter().find(|s| s.current).unwrap();
        let other = sessions.iter().find(|s| !s.current).unwrap();
        assert!(
            current.create_time.is_some()
                && current.expire_time.is_some()
                && current.last_refresh_time.is_some()
        );

        // Another user cannot revoke it, and learns nothing: NOT_FOUND.
        let mallory = register(&mut client, &unique_email()).await;
        let status = client
            .revoke_session(authorized(
                pb::RevokeSessionRequest {
                    session_id: other.id.clone(),
                },
                &tokens(&mallory.tokens).access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        let made_up = client
            .revoke_session(authorized(
                pb::RevokeSessionRequest {
                    session_id: uuid::Uuid::now_v7().to_string(),
                },
                &tokens(&mallory.tokens).access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(made_up.message(), status.message());
        refresh(&mut client, &phone.refresh_token)
            .await
            .expect("phone session untouched");

        // The owner can, from the laptop.
        client
            .revoke_session(authorized(
                pb::RevokeSessionRequest {
                    session_id: other.id.clone(),
                },
                &laptop.access_token,
            ))
            .await
            .unwrap();
        let sessions = client
            .list_sessions(authorized(pb::ListSessionsRequest {}, &laptop.access_token))
            .await
            .unwrap()
            .into_inner()
            .sessions;
        assert!(sessions.iter().all(|s| s.id != other.id));
        // An id that is not a UUID names no session: NOT_FOUND, as for an
        // unknown one; only a missing id is a validation error.
        let malformed = client
            .revoke_session(authorized(
                pb::RevokeSessionRequest {
                    session_id: "not-a-uuid".into(),
                },
                &laptop.access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(malformed.code(), Code::NotFound);
        assert_eq!(malformed.message(), made_up.message());
        let status = client
            .revoke_session(authorized(
                pb::RevokeSessionRequest {
                    session_id: String::new(),
                },
                &laptop.access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&status), ["session_id"]);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn change_password_ends_every_other_session_and_returns_a_fresh_pair() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let email = unique_email();
        let other = tokens(&register(&mut client, &email).await.tokens).clone();
        let this = tokens(&login(&mut client, &email, PASSWORD).await.unwrap().tokens).clone();

        let wrong = client
            .change_password(authorized(
                pb::ChangePasswordRequest {
                    current_password: "wrong one".into(),
                    new_password: "brand new password".into(),
                },
                &this.access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated);
        let short = client
            .change_password(authorized(
                pb::ChangePasswordRequest {
                    current_password: PASSWORD.into(),
                    new_password: "short".into(),
                },
                &this.access_token,
            ))
            .await
            .unwrap_err();
        assert_eq!(bad_fields(&short), ["new_password"]);

        let fresh = client
            .change_password(authorized(
                pb::ChangePasswordRequest {
                    current_password: PASSWORD.into(),
                    new_password: "brand new password".into(),
                },
                &this.access_token,
            ))
            .await
            .unwrap()
            .into_inner()
            .tokens
            .unwrap();
        // The other session is over; this one continues with the fresh pair.
        assert_eq!(
            code(refresh(&mut client, &other.refresh_token).await),
            Code::Unauthenticated
        );
        assert_eq!(
            code(current_user(&mut client, &other.access_token).await),
            Code::Unauthenticated
        );
        current_user(&mut client, &fresh.access_token)
            .await
            .expect("fresh access token");
        let after = refresh(&mut client, &fresh.refresh_token)
            .await
            .expect("fresh refresh token");
        assert_eq!(
            code(login(&mut client, &email, PASSWORD).await),
            Code::Unauthenticated
        );
        login(&mut client, &email, "brand new password")
            .await
            .expect("new password");
        // This session's pre-change refresh token is simply invalid now; it
        // was replaced, not spent, so presenting it is not reuse and the
        // fresh pair goes on working.
        assert_eq!(
            code(refresh(&mut client, &this.refresh_token).await),
            Code::Unauthenticated
        );
        refresh(&mut client, &after.refresh_token)
            .await
            .expect("the session survives a stale token");
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_sign_in_checked_against_the_old_password_cannot_start_a_session_after_a_change() {
    use auth_service::store::{self, Credentials, NewSession, Session, User};
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let options = serving::database::PoolOptions::new(2, std::time::Duration::from_secs(5));
        let database =
            serving::database::Database::open(&db.url.clone().into(), options, store::MIGRATIONS)
                .await
                .unwrap();
        let store = store::open(&database, chrono::TimeDelta::minutes(15));
        let now = serving::clock::Clock::default().now();
        let day = chrono::TimeDelta::days(1);
        let session = |user_id| NewSession {
            session: Session {
                id: uuid::Uuid::now_v7(),
                user_id,
                create_time: now,
                last_refresh_time: now,
                idle_expire_time: now + day,
                absolute_expire_time: now + day,
                user_agent: String::new(),
                email_verified: false,
            },
            refresh_token: rand_hash(),
        };
        let user = User {
            id: uuid::Uuid::now_v7(),
            email: unique_email(),
            display_name: String::new(),
            create_time: now,
            email_verified: false,
        };
        let first = session(user.id);
        let credentials = Credentials {
            user: user.clone(),
            password_hash: "old-hash".into(),
        };
        store.create_user(&credentials, &first).await.unwrap();
        // A sign-in verified the password against "old-hash"; before it
        // stores its session, the owner changes the password.
        let changed = store
            .change_password(
                user.id,
                first.session.id,
                "new-hash",
                &rand_hash(),
                now,
                day,
            )
            .await
            .unwrap();
        assert!(changed.is_some());
        let late = session(user.id);
        assert!(
            !store
                .start_session(&late, "old-hash", None, HOME, now)
                .await
                .unwrap()
        );
        assert!(
            store
                .live_session(user.id, late.session.id, now)
                .await
                .unwrap()
                .is_none()
        );
        // Nor can a rehash of the old password overwrite the new hash.
        assert!(
            !store
                .start_session(
                    &session(user.id),
                    "old-hash",
                    Some("old-rehashed"),
                    HOME,
                    now
                )
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .user_by_id(user.id)
                .await
                .unwrap()
                .unwrap()
                .password_hash,
            "new-hash"
        );
        // The refused sign-ins recorded no success: the address's failures
        // still count, and it is not known.
        let window = chrono::TimeDelta::minutes(15);
        let attempt = || store.record_sign_in_attempt(&user.email, HOME, now, window, day);
        let before = attempt().await.unwrap();
        assert_eq!(before.from_address.attempts, 1);
        assert!(!before.known_address);
        let again = attempt().await.unwrap();
        assert_eq!(again.from_address.attempts, 2);
        assert!(
            store
                .start_session(&session(user.id), "new-hash", None, HOME, now)
                .await
                .unwrap()
        );
        // A started session is a success from its address, in its
        // transaction: the failures are forgotten, the address is known.
        let after = attempt().await.unwrap();
        assert_eq!(after.from_address.attempts, 1);
        assert!(after.known_address);
        database.close().await;
    })
    .await;
}

/// The address of the sign-ins in the store-level test.
const HOME: &str = "198.51.100.1";

fn rand_hash() -> [u8; 32] {
    *uuid::Uuid::new_v4()
        .as_bytes()
        .repeat(2)
        .first_chunk::<32>()
        .unwrap()
}
