//! Sessions end everywhere at once (CONTRACT.md, "Sessions end
//! everywhere"): a session ended in any of the six ways (Logout,
//! RevokeSession, ChangePassword for the other sessions, refresh-token
//! reuse, ResetPassword, DeleteAccount) is refused by both task-service
//! replicas, and its open WatchTasks stream on each replica ends with
//! `UNAUTHENTICATED`, within 2 seconds of the call that ended it
//! returning; the user's other sessions, where they survive, and other
//! users go on working on both replicas, their streams included.
//!
//! The 2 seconds are the contract's bound, kept as a deadline: the replicas
//! are polled every 20 ms from the moment the auth call returned. What the
//! path takes in practice is the auth-service's look at its log (every
//! 250 ms) and one message; the benchmark `benches/revocation.rs` measures
//! it. The stack is [`ReplicaStack`]: the replicas share one tasks
//! database, as replicas do (its module doc says why, for SQLite too).

use std::time::{Duration, Instant};

use test_harness::*;
use todo_proto::{
    auth::v1::{self as auth, TokenPair, auth_service_client::AuthServiceClient},
    tasks::v1::{self as pb},
};
use tonic::{Code, Streaming, transport::Channel};

/// The contract's bound from the end of a session to its refusal.
const BOUND: Duration = Duration::from_secs(2);

/// One signed-in session, a client of each replica sending its access
/// token, and its WatchTasks stream open on each replica.
struct Session {
    tokens: TokenPair,
    clients: Vec<TaskClient>,
    streams: Vec<Streaming<pb::WatchTasksResponse>>,
}

impl Session {
    async fn open(stack: &ReplicaStack, tokens: &Option<TokenPair>) -> Self {
        let tokens = tokens.clone().expect("a token pair");
        let mut clients = stack.clients(&tokens.access_token).await;
        let mut streams = Vec::new();
        for client in &mut clients {
            streams.push(open_watch(client).await);
        }
        Self {
            tokens,
            clients,
            streams,
        }
    }

    /// Refused by every replica, and each of its streams ended with
    /// `UNAUTHENTICATED`, within [`BOUND`] of `returned`.
    async fn ended_within_bound(&mut self, returned: Instant, what: &str) {
        let deadline = returned + BOUND;
        refused_everywhere_within(&mut self.clients, deadline, what).await;
        for (replica, stream) in self.streams.iter_mut().enumerate() {
            let status = stream_end(stream, deadline).await;
            assert_eq!(
                status.code(),
                Code::Unauthenticated,
                "replica {replica}, {what}: {status:?}"
            );
        }
    }

    /// Served by every replica, and its stream on each replica still
    /// delivers the task it creates there.
    async fn still_works(&mut self) {
        for (replica, client) in self.clients.iter_mut().enumerate() {
            let task = create(client, titled("still here")).await;
            let stream = &mut self.streams[replica];
            // On PostgreSQL a replica also sees the other replica's writes.
            while next_task_event(stream).await.id != task.id {}
        }
    }
}

/// Alice signed in on a laptop and a phone, and Bob, each with streams
/// open on both replicas.
struct Scene {
    stack: ReplicaStack,
    auth: AuthServiceClient<Channel>,
    email: String,
    laptop: Session,
    phone: Session,
    bob: Session,
}

impl Scene {
    async fn start(backend: Backend) -> Self {
        let stack = ReplicaStack::start(backend).await;
        let mut auth = stack.auth_client().await;
        let email = unique_email();
        let laptop = register(&mut auth, &email).await.tokens;
        let phone = login(&mut auth, &email, PASSWORD)
            .await
            .expect("a second sign-in")
            .tokens;
        let bob = register(&mut auth, &unique_email()).await.tokens;
        Self {
            laptop: Session::open(&stack, &laptop).await,
            phone: Session::open(&stack, &phone).await,
            bob: Session::open(&stack, &bob).await,
            stack,
            auth,
            email,
        }
    }

    async fn stop(self) {
        drop((self.laptop, self.phone, self.bob));
        self.stack.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_logout_is_refused_by_both_replicas_within_two_seconds_and_ends_its_streams() {
    on_each_backend(|backend| async move {
        let mut scene = Scene::start(backend).await;
        scene
            .auth
            .logout(auth::LogoutRequest {
                refresh_token: scene.phone.tokens.refresh_token.clone(),
            })
            .await
            .expect("Logout");
        let returned = Instant::now();
        scene.phone.ended_within_bound(returned, "a logout").await;
        scene.laptop.still_works().await;
        scene.bob.still_works().await;
        scene.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_session_is_refused_by_both_replicas_within_two_seconds_and_ends_its_streams() {
    on_each_backend(|backend| async move {
        let mut scene = Scene::start(backend).await;
        let sessions = scene
            .auth
            .list_sessions(authorized(
                auth::ListSessionsRequest {},
                &scene.laptop.tokens.access_token,
            ))
            .await
            .expect("ListSessions")
            .into_inner()
            .sessions;
        let phone = sessions
            .iter()
            .find(|session| !session.current)
            .expect("the phone's session");
        scene
            .auth
            .revoke_session(authorized(
                auth::RevokeSessionRequest {
                    session_id: phone.id.clone(),
                },
                &scene.laptop.tokens.access_token,
            ))
            .await
            .expect("RevokeSession");
        let returned = Instant::now();
        scene
            .phone
            .ended_within_bound(returned, "a revoked session")
            .await;
        scene.laptop.still_works().await;
        scene.bob.still_works().await;
        scene.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_change_ends_the_other_sessions_on_both_replicas_within_two_seconds() {
    on_each_backend(|backend| async move {
        let mut scene = Scene::start(backend).await;
        scene
            .auth
            .change_password(authorized(
                auth::ChangePasswordRequest {
                    current_password: PASSWORD.into(),
                    new_password: "a brand new passphrase".into(),
                },
                &scene.laptop.tokens.access_token,
            ))
            .await
            .expect("ChangePassword");
        let returned = Instant::now();
        scene
            .phone
            .ended_within_bound(returned, "another session at a password change")
            .await;
        // The session that changed the password goes on, even with the
        // access token it had before.
        scene.laptop.still_works().await;
        scene.bob.still_works().await;
        scene.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_token_reuse_ends_the_session_on_both_replicas_within_two_seconds() {
    on_each_backend(|backend| async move {
        let mut scene = Scene::start(backend).await;
        let stolen = scene.phone.tokens.refresh_token.clone();
        let first = refresh(&mut scene.auth, &stolen).await.expect("a refresh");
        let latest = refresh(&mut scene.auth, &first.refresh_token)
            .await
            .expect("another refresh");
        // Older than the token spent last: reuse, even within the grace.
        let reuse = refresh(&mut scene.auth, &stolen).await;
        let returned = Instant::now();
        assert_eq!(code(reuse), Code::Unauthenticated);
        scene
            .phone
            .ended_within_bound(returned, "a reused session")
            .await;
        // Every access token of the session is refused, the newest too.
        for client in &mut scene.stack.clients(&latest.access_token).await {
            assert!(is_refused(client).await, "the newest access token");
        }
        scene.laptop.still_works().await;
        scene.bob.still_works().await;
        scene.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_reset_ends_every_session_on_both_replicas_within_two_seconds() {
    on_each_backend(|backend| async move {
        let mut scene = Scene::start(backend).await;
        scene
            .auth
            .request_password_reset(auth::RequestPasswordResetRequest {
                email: scene.email.clone(),
            })
            .await
            .expect("RequestPasswordReset");
        let token = mailed_token(&scene.stack.mail_dir(), &scene.email, "reset-password").await;
        scene
            .auth
            .reset_password(auth::ResetPasswordRequest {
                token,
                new_password: "a brand new passphrase".into(),
            })
            .await
            .expect("ResetPassword");
        let returned = Instant::now();
        scene
            .laptop
            .ended_within_bound(returned, "a reset (laptop)")
            .await;
        scene
            .phone
            .ended_within_bound(returned, "a reset (phone)")
            .await;
        scene.bob.still_works().await;
        scene.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_account_is_refused_by_both_replicas_within_two_seconds() {
    on_each_backend(|backend| async move {
        let mut scene = Scene::start(backend).await;
        scene
            .auth
            .delete_account(authorized(
                auth::DeleteAccountRequest {
                    password: PASSWORD.into(),
                },
                &scene.laptop.tokens.access_token,
            ))
            .await
            .expect("DeleteAccount");
        let returned = Instant::now();
        scene
            .laptop
            .ended_within_bound(returned, "a deletion (laptop)")
            .await;
        scene
            .phone
            .ended_within_bound(returned, "a deletion (phone)")
            .await;
        scene.bob.still_works().await;
        scene.stop().await;
    })
    .await;
}
