//! Refresh tokens: each refresh rotates the token; within a short grace the
//! token spent last is answered with the same successor (two tabs
//! refreshing at once), after it a spent token presented again is reuse
//! and revokes the whole session, so parallel refreshes never fork it; and
//! a session ends when idle for the refresh token's lifetime or at its
//! absolute lifetime, however often it is refreshed.

use std::time::Duration;

use test_harness::*;
use tonic::Code;

#[tokio::test]
async fn refresh_rotates_and_the_spent_token_no_longer_works() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
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
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
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
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
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
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let server = AuthServer::start(&db).await;
        let mut client = server.client().await;
        let registered = register(&mut client, &unique_email()).await;
        let pair = tokens(&registered.tokens);
        let status = refresh(&mut client, &pair.access_token).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let status = refresh(&mut client, &"A".repeat(43)).await.unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        let status = refresh(&mut client, "").await.unwrap_err();
        assert_eq!(bad_fields(&status), ["refresh_token"]);
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
async fn an_idle_session_expires_with_its_refresh_token() {
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let mut config = auth_config(&db);
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
    on_each_backend(|backend| async move {
        let db = backend.fresh().await;
        let mut config = auth_config(&db);
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
