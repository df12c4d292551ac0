//! Refresh rotation, reuse detection, and the life and death of sessions.

mod support;

use std::time::Duration;

use support::*;
use todo_proto::auth::v1 as pb;
use tonic::Code;

#[tokio::test]
async fn refresh_rotates_and_the_spent_token_no_longer_works() {
    on_each_backend(|db| async move {
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let first = register(&mut client, &unique_email()).await;
        let first = tokens(&first.tokens);
        server.clock.advance(Duration::from_secs(1));
        let second = refresh(&mut client, &first.refresh_token).await.unwrap();
        assert_ne!(second.refresh_token, first.refresh_token);
        assert_ne!(second.access_token, first.access_token);
        current_user(&mut client, &second.access_token)
            .await
            .expect("new access token works");
        let third = refresh(&mut client, &second.refresh_token)
            .await
            .expect("the new refresh token works");
        current_user(&mut client, &third.access_token)
            .await
            .unwrap();
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn reused_refresh_token_revokes_the_whole_session() {
    on_each_backend(|db| async move {
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let registered = register(&mut client, &unique_email()).await;
        let stolen = tokens(&registered.tokens).refresh_token.clone();
        // The victim refreshes; the thief replays the spent token after the
        // grace that covers two tabs refreshing at once.
        let victims = refresh(&mut client, &stolen).await.unwrap();
        server.clock.advance(std::time::Duration::from_secs(11));
        let replay = refresh(&mut client, &stolen).await.unwrap_err();
        assert_eq!(replay.code(), Code::Unauthenticated);
        // Revocation was committed although the call failed: the victim's
        // newer tokens are dead too, at the auth-service at once.
        let status = refresh(&mut client, &victims.refresh_token)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let status = current_user(&mut client, &victims.access_token)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn ten_parallel_refreshes_never_fork_the_session() {
    on_each_backend(|db| async move {
        let server = AuthServer::start(&db).await;
        let client = server.client().await;
        let registered = register(&mut client.clone(), &unique_email()).await;
        let token = tokens(&registered.tokens).refresh_token.clone();
        let refresh_all = |token: String| {
            let client = client.clone();
            futures::future::join_all((0..10).map(move |_| {
                let (mut client, token) = (client.clone(), token.clone());
                async move { refresh(&mut client, &token).await }
            }))
        };
        // Within the grace (two tabs refreshing at once), every call gets
        // the same successor, each with its own access token.
        let results = refresh_all(token.clone()).await;
        let successors: std::collections::HashSet<_> = results
            .iter()
            .map(|result| {
                result
                    .as_ref()
                    .expect("served within the grace")
                    .refresh_token
                    .clone()
            })
            .collect();
        assert_eq!(successors.len(), 1, "one successor: {successors:?}");
        let successor = successors.into_iter().next().unwrap();
        current_user(
            &mut client.clone(),
            &results[9].as_ref().unwrap().access_token,
        )
        .await
        .expect("every access token works");
        // The session has exactly one live token: the successor. Spending it
        // once makes the first token older than the immediately previous
        // one, so presenting that again now is reuse and ends the session.
        let next = refresh(&mut client.clone(), &successor).await.unwrap();
        let stale = refresh(&mut client.clone(), &token).await.unwrap_err();
        assert_eq!(stale.code(), Code::Unauthenticated);
        assert_eq!(
            refresh(&mut client.clone(), &next.refresh_token)
                .await
                .unwrap_err()
                .code(),
            Code::Unauthenticated,
            "reuse ended the session"
        );

        // After the grace, ten parallel refreshes of one token: at most one
        // wins, and the others' reuse revokes the session it would fork.
        let registered = register(&mut client.clone(), &unique_email()).await;
        let token = tokens(&registered.tokens).refresh_token.clone();
        let first = refresh(&mut client.clone(), &token).await.unwrap();
        server.clock.advance(std::time::Duration::from_secs(11));
        let results = refresh_all(token).await;
        for result in &results {
            assert_eq!(
                result
                    .as_ref()
                    .expect_err("after the grace it is reuse")
                    .code(),
                Code::Unauthenticated
            );
        }
        assert_eq!(
            refresh(&mut client.clone(), &first.refresh_token)
                .await
                .unwrap_err()
                .code(),
            Code::Unauthenticated,
            "no child of the session is live"
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_access_token_is_not_a_refresh_token_and_garbage_changes_nothing() {
    on_each_backend(|db| async move {
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let registered = register(&mut client, &unique_email()).await;
        let pair = tokens(&registered.tokens);
        let status = refresh(&mut client, &pair.access_token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let status = refresh(&mut client, &"A".repeat(43)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let status = refresh(&mut client, "").await.unwrap_err();
        assert_eq!(violated_fields(&status), ["refresh_token"]);
        // The real refresh token is untouched by all of that.
        refresh(&mut client, &pair.refresh_token)
            .await
            .expect("still live");
        // A refresh token is not an access token either.
        let status = current_user(&mut client, &pair.refresh_token)
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn logout_ends_the_session_at_once() {
    on_each_backend(|db| async move {
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
    on_each_backend(|db| async move {
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
        assert_eq!(violated_fields(&status), ["session_id"]);
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn change_password_ends_every_other_session_and_returns_a_fresh_pair() {
    on_each_backend(|db| async move {
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
        assert_eq!(violated_fields(&short), ["new_password"]);

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
async fn an_idle_session_expires_with_its_refresh_token() {
    on_each_backend(|db| async move {
        let mut config = test_config(&db);
        config.refresh_token_ttl = Duration::from_secs(3600);
        let server = AuthServer::start_with(config).await;
        let mut client = server.client().await;
        let pair = tokens(&register(&mut client, &unique_email()).await.tokens).clone();
        server.clock.advance(Duration::from_secs(3000));
        let pair = refresh(&mut client, &pair.refresh_token)
            .await
            .expect("used within the idle window");
        server.clock.advance(Duration::from_secs(3599));
        let pair = refresh(&mut client, &pair.refresh_token)
            .await
            .expect("the idle window moved with the refresh");
        server.clock.advance(Duration::from_secs(3601));
        assert_eq!(
            code(refresh(&mut client, &pair.refresh_token).await),
            Code::Unauthenticated
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_session_ends_at_its_absolute_lifetime_however_often_refreshed() {
    on_each_backend(|db| async move {
        let mut config = test_config(&db);
        config.refresh_token_ttl = Duration::from_secs(3600);
        config.session_max_lifetime = Duration::from_secs(3 * 3600);
        let server = AuthServer::start_with(config).await;
        let mut client = server.client().await;
        let mut pair = tokens(&register(&mut client, &unique_email()).await.tokens).clone();
        for _ in 0..5 {
            server.clock.advance(Duration::from_secs(1800));
            pair = refresh(&mut client, &pair.refresh_token).await.unwrap();
        }
        // 2.5 h in: the refresh token may not outlive the session's 3 h.
        let left = pair.refresh_token_expire_time.unwrap().seconds - server.clock.now().timestamp();
        assert!(left <= 1800, "{left}");
        server.clock.advance(Duration::from_secs(1801));
        assert_eq!(
            code(refresh(&mut client, &pair.refresh_token).await),
            Code::Unauthenticated
        );
        server.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_sign_in_checked_against_the_old_password_cannot_start_a_session_after_a_change() {
    use auth_service::store::{self, Credentials, NewSession, Session, User};
    on_each_backend(|db| async move {
        let options = serving::database::PoolOptions::new(2, std::time::Duration::from_secs(5));
        let database = serving::database::Database::open(&db.url, options, store::MIGRATIONS)
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
            },
            refresh_token: rand_hash(),
        };
        let user = User {
            id: uuid::Uuid::now_v7(),
            email: unique_email(),
            display_name: String::new(),
            create_time: now,
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
                .start_session(&late, "old-hash", None, now)
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
                .start_session(&session(user.id), "old-hash", Some("old-rehashed"), now)
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
        assert!(
            store
                .start_session(&session(user.id), "new-hash", None, now)
                .await
                .unwrap()
        );
        database.close().await;
    })
    .await;
}

fn rand_hash() -> [u8; 32] {
    *uuid::Uuid::new_v4()
        .as_bytes()
        .repeat(2)
        .first_chunk::<32>()
        .unwrap()
}
