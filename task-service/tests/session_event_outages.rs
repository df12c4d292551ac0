//! The session events survive outages of either side (CONTRACT.md,
//! "Sessions end everywhere"; checklist S2): with the auth-service, or a
//! task-service replica, restarted in the middle of a burst of logouts,
//! every ended session is refused on every replica once it is back, none
//! missed, and the sessions left alone keep working; and while the event
//! stream is down (the auth-service stopped) each replica says so in its
//! health under `auth.internal.v1.SessionEventsService`, stays SERVING
//! for the tasks API with the documented bound (a token of a session that
//! ends meanwhile lives on to its `exp`), and catches up once the
//! auth-service is back, ending that session's streams too.
//!
//! The burst runs beside the restart: logouts go on, retried while the
//! auth-service is away (Logout is idempotent), so some are committed just
//! before it stops, some while a replica is down, and some after.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use test_harness::*;
use todo_proto::auth::v1::{self as auth, TokenPair, auth_service_client::AuthServiceClient};
use tokio::task::JoinHandle;
use tonic::{Code, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;

/// Users in a burst, and sessions of each ended in it (one more each
/// stays).
const USERS: usize = 2;
const ENDED_PER_USER: usize = 10;

/// Sessions to end, and one session per user that stays.
struct Sessions {
    ended: Vec<TokenPair>,
    kept: Vec<TokenPair>,
}

async fn sign_in(auth: &mut AuthServiceClient<Channel>) -> Sessions {
    let mut sessions = Sessions {
        ended: Vec::new(),
        kept: Vec::new(),
    };
    for _ in 0..USERS {
        let email = unique_email();
        sessions
            .kept
            .push(tokens(&register(auth, &email).await.tokens).clone());
        for _ in 0..ENDED_PER_USER {
            let signed_in = login(auth, &email, PASSWORD).await.expect("Login");
            sessions.ended.push(tokens(&signed_in.tokens).clone());
        }
    }
    sessions
}

/// Logs every session out, one after another, each retried until the
/// auth-service answers; counts those done in `done`.
fn burst(
    auth: AuthServiceClient<Channel>,
    sessions: &[TokenPair],
    done: Arc<AtomicUsize>,
) -> JoinHandle<()> {
    let refresh_tokens: Vec<String> = sessions.iter().map(|s| s.refresh_token.clone()).collect();
    tokio::spawn(async move {
        for refresh_token in refresh_tokens {
            let deadline = Instant::now() + PATIENCE;
            loop {
                let mut auth = auth.clone();
                let request = auth::LogoutRequest {
                    refresh_token: refresh_token.clone(),
                };
                match auth.logout(request).await {
                    Ok(_) => break,
                    Err(status) => {
                        assert!(Instant::now() < deadline, "Logout kept failing: {status:?}");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            done.fetch_add(1, Ordering::SeqCst);
        }
    })
}

/// Waits until `done` reaches `count`.
async fn until_done(done: &AtomicUsize, count: usize) {
    eventually(PATIENCE, "the burst is under way", || async {
        done.load(Ordering::SeqCst) >= count
    })
    .await;
}

/// Every ended session refused, and every kept one served, on every
/// running replica.
async fn none_missed(stack: &ReplicaStack, sessions: &Sessions) {
    for (n, ended) in sessions.ended.iter().enumerate() {
        let mut clients = stack.clients(&ended.access_token).await;
        let what = format!("ended session {n}");
        refused_everywhere_within(&mut clients, Instant::now() + PATIENCE, &what).await;
    }
    for kept in &sessions.kept {
        for client in &mut stack.clients(&kept.access_token).await {
            create(client, titled("still signed in")).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_ended_around_an_auth_service_restart_is_missed_by_either_replica() {
    on_each_backend(|backend| async move {
        let mut stack = ReplicaStack::start(backend).await;
        let mut auth = stack.auth_client().await;
        let sessions = sign_in(&mut auth).await;
        let done = Arc::new(AtomicUsize::new(0));
        let burst = burst(auth, &sessions.ended, done.clone());

        until_done(&done, sessions.ended.len() / 3).await;
        stack.stop_auth().await;
        stack.restart_auth().await;
        burst.await.expect("the burst ends");
        assert_eq!(done.load(Ordering::SeqCst), sessions.ended.len());

        none_missed(&stack, &sessions).await;
        stack.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_session_ended_around_a_replica_restart_is_missed_once_it_is_back() {
    on_each_backend(|backend| async move {
        let mut stack = ReplicaStack::start(backend).await;
        let mut auth = stack.auth_client().await;
        let sessions = sign_in(&mut auth).await;
        let done = Arc::new(AtomicUsize::new(0));
        let burst = burst(auth, &sessions.ended, done.clone());

        until_done(&done, sessions.ended.len() / 3).await;
        stack.stop_replica(1).await;
        until_done(&done, 2 * sessions.ended.len() / 3).await;
        stack.start_replica(1).await;
        burst.await.expect("the burst ends");

        none_missed(&stack, &sessions).await;
        stack.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_auth_service_is_down_replicas_say_so_keep_serving_and_catch_up_after() {
    on_each_backend(|backend| async move {
        let mut stack = ReplicaStack::start(backend).await;
        let mut auth = stack.auth_client().await;
        let email = unique_email();
        let laptop = tokens(&register(&mut auth, &email).await.tokens).clone();
        let phone = login(&mut auth, &email, PASSWORD).await.expect("Login");
        let phone = tokens(&phone.tokens).clone();
        let mut phone_clients = stack.clients(&phone.access_token).await;
        let mut phone_streams = Vec::new();
        for client in &mut phone_clients {
            phone_streams.push(open_watch(client).await);
        }

        stack.stop_auth().await;
        for replica in stack.replicas() {
            wait_following(replica, ServingStatus::NotServing).await;
            assert_eq!(
                replica.health(task_service::SERVICE_NAME).await,
                Some(ServingStatus::Serving),
                "the tasks API stays up"
            );
        }
        for client in &mut stack.clients(&laptop.access_token).await {
            create(client, titled("written while the events are down")).await;
        }

        // Another auth-service on the same data (a second replica of it)
        // ends the phone's session meanwhile. The replicas cannot hear of
        // it: the phone's token lives on, as documented, to its `exp`.
        let other = AuthServer::start_with(stack.auth_config()).await;
        other
            .client()
            .await
            .logout(auth::LogoutRequest {
                refresh_token: phone.refresh_token.clone(),
            })
            .await
            .expect("Logout at the other auth-service");
        other.stop().await;
        for client in &mut phone_clients {
            assert!(!is_refused(client).await, "no replica could hear of it");
        }

        // The auth-service is back: the replicas follow again and catch up.
        stack.restart_auth().await;
        for replica in stack.replicas() {
            wait_following(replica, ServingStatus::Serving).await;
        }
        let deadline = Instant::now() + PATIENCE;
        refused_everywhere_within(&mut phone_clients, deadline, "the phone's session").await;
        for stream in &mut phone_streams {
            assert_eq!(
                stream_end(stream, deadline).await.code(),
                Code::Unauthenticated
            );
        }
        for client in &mut stack.clients(&laptop.access_token).await {
            create(client, titled("still signed in")).await;
        }
        drop((phone_clients, phone_streams));
        stack.stop().await;
    })
    .await;
}
