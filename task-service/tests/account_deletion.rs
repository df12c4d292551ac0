//! DeleteAccount reaches the task-service (CONTRACT.md, `DeleteAccount`):
//! the account's tasks go from the tasks database shared by both replicas,
//! however many (more than one batch), also when every task-service was
//! down while the account went, and also one that a replica which had not
//! heard yet let the account's still-valid token write; nobody else's
//! tasks go; the email can be registered again at once and the new
//! account sees an empty list; and a wrong password answers
//! `UNAUTHENTICATED` and deletes nothing.
//!
//! A deleted account's tasks are visible to nobody, so these tests count
//! them in the tasks database itself ([`stored_tasks_of`]).

use std::time::Instant;

use futures::{StreamExt, stream};
use test_harness::*;
use todo_proto::{
    auth::v1::{self as auth, auth_service_client::AuthServiceClient},
    tasks::v1 as pb,
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::health_check_response::ServingStatus;
use uuid::Uuid;

/// More than the task-service deletes per statement (500).
const MANY: usize = 520;

/// A registered user: id, email, and access token.
struct Account {
    id: Uuid,
    email: String,
    token: String,
}

async fn account(auth: &mut AuthServiceClient<Channel>) -> Account {
    let email = unique_email();
    let response = register(auth, &email).await;
    Account {
        id: response.user.expect("a user").id.parse().expect("a UUID"),
        email,
        token: tokens(&response.tokens).access_token.clone(),
    }
}

/// Creates `count` tasks of the client's user, spread over `clients`.
async fn create_many(clients: &[TaskClient], count: usize) {
    stream::iter(0..count)
        .for_each_concurrent(16, |n| {
            let mut client = clients[n % clients.len()].clone();
            async move {
                create(&mut client, titled(&format!("task {n}"))).await;
            }
        })
        .await;
}

async fn delete_account(
    auth: &mut AuthServiceClient<Channel>,
    account: &Account,
    password: &str,
) -> Result<(), tonic::Status> {
    auth.delete_account(authorized(
        auth::DeleteAccountRequest {
            password: password.into(),
        },
        &account.token,
    ))
    .await
    .map(drop)
}

/// Waits until the tasks database holds none of `owner`'s tasks.
async fn tasks_gone(stack: &ReplicaStack, owner: Uuid) {
    eventually(PATIENCE, "the deleted account's tasks are gone", || async {
        stored_tasks_of(&stack.tasks_database, owner).await == 0
    })
    .await;
}

async fn listed(client: &mut TaskClient) -> usize {
    list_all(client, pb::ListTasksRequest::default())
        .await
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_account_removes_its_tasks_for_both_replicas_and_its_email_registers_again_at_once()
 {
    on_each_backend(|backend| async move {
        let stack = ReplicaStack::start(backend).await;
        let mut auth = stack.auth_client().await;
        let alice = account(&mut auth).await;
        let bob = account(&mut auth).await;
        let alice_clients = stack.clients(&alice.token).await;
        let mut bob_clients = stack.clients(&bob.token).await;
        create_many(&alice_clients, MANY).await;
        create_many(&bob_clients, 3).await;
        assert_eq!(
            stored_tasks_of(&stack.tasks_database, alice.id).await,
            i64::try_from(MANY).unwrap()
        );

        delete_account(&mut auth, &alice, PASSWORD)
            .await
            .expect("DeleteAccount");
        let returned = Instant::now();
        // At once: the email is free, and its new account sees nothing.
        let again = register(&mut auth, &alice.email).await;
        let again_token = &tokens(&again.tokens).access_token;
        assert_ne!(again.user.expect("a user").id, alice.id.to_string());
        let mut again_clients = stack.clients(again_token).await;
        for client in &mut again_clients {
            assert_eq!(
                listed(client).await,
                0,
                "the new account sees an empty list on each replica"
            );
        }
        create(&mut again_clients[0], titled("a fresh start")).await;

        tasks_gone(&stack, alice.id).await;
        let mut old = stack.clients(&alice.token).await;
        refused_everywhere_within(&mut old, returned + PATIENCE, "the deleted account").await;
        for client in &mut bob_clients {
            assert_eq!(listed(client).await, 3, "another user's tasks stay");
        }
        for client in &mut stack.clients(again_token).await {
            assert_eq!(listed(client).await, 1, "the new account's task stays");
        }
        drop((alice_clients, bob_clients, old));
        stack.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_deleted_while_every_replica_was_down_loses_its_tasks_when_one_comes_back() {
    on_each_backend(|backend| async move {
        let mut stack = ReplicaStack::start(backend).await;
        let mut auth = stack.auth_client().await;
        let alice = account(&mut auth).await;
        let bob = account(&mut auth).await;
        create_many(&stack.clients(&alice.token).await, 5).await;
        create_many(&stack.clients(&bob.token).await, 2).await;

        for replica in 0..REPLICAS {
            stack.stop_replica(replica).await;
        }
        delete_account(&mut auth, &alice, PASSWORD)
            .await
            .expect("DeleteAccount");
        assert_eq!(
            stored_tasks_of(&stack.tasks_database, alice.id).await,
            5,
            "nobody deleted them yet"
        );

        // One replica comes back: it replays the log and deletes them.
        stack.start_replica(1).await;
        tasks_gone(&stack, alice.id).await;
        let mut old = stack.clients(&alice.token).await;
        for client in &mut old {
            assert!(is_refused(client).await);
        }
        stack.start_replica(0).await;
        for client in &mut stack.clients(&alice.token).await {
            assert!(is_refused(client).await);
        }
        for client in &mut stack.clients(&bob.token).await {
            assert_eq!(listed(client).await, 2);
        }
        drop(old);
        stack.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_written_through_a_replica_that_had_not_heard_yet_goes_when_it_hears() {
    on_each_backend(|backend| async move {
        let stack = ReplicaStack::start_with_event_proxies(backend).await;
        let mut auth = stack.auth_client().await;
        let alice = account(&mut auth).await;
        create_many(&stack.clients(&alice.token).await, 4).await;

        // Replica 1 cannot hear while the account goes; replica 0 deletes
        // the tasks.
        stack.cut_events(1);
        wait_following(stack.replica(1), ServingStatus::NotServing).await;
        delete_account(&mut auth, &alice, PASSWORD)
            .await
            .expect("DeleteAccount");
        tasks_gone(&stack, alice.id).await;
        let mut on_0 = stack.replica(0).client(&alice.token).await;
        assert!(is_refused(&mut on_0).await);

        // Replica 1 still honours the token (the documented bound: to its
        // `exp`), so a last write lands there.
        let mut on_1 = stack.replica(1).client(&alice.token).await;
        create(&mut on_1, titled("written late")).await;
        assert_eq!(stored_tasks_of(&stack.tasks_database, alice.id).await, 1);

        // Once it hears, it refuses the token and the late task goes too.
        stack.restore_events(1);
        wait_following(stack.replica(1), ServingStatus::Serving).await;
        eventually(PATIENCE, "replica 1 refuses the deleted account", || {
            let mut on_1 = on_1.clone();
            async move { is_refused(&mut on_1).await }
        })
        .await;
        tasks_gone(&stack, alice.id).await;
        drop((on_0, on_1));
        stack.stop().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_answers_unauthenticated_and_deletes_nothing() {
    on_each_backend(|backend| async move {
        let stack = ReplicaStack::start(backend).await;
        let mut auth = stack.auth_client().await;
        let alice = account(&mut auth).await;
        let bob_email = account(&mut auth).await.email;
        let bob = login(&mut auth, &bob_email, PASSWORD)
            .await
            .expect("Bob signs in");
        create_many(&stack.clients(&alice.token).await, 3).await;

        let status = delete_account(&mut auth, &alice, "not the password")
            .await
            .expect_err("a wrong password");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        let status = delete_account(&mut auth, &alice, "")
            .await
            .expect_err("no password");
        assert_eq!(bad_fields(&status), ["password"]);

        // The log is ordered: once both replicas have heard of a later
        // event (Bob's logout), anything the refused calls had logged would
        // have been acted on too.
        auth.logout(auth::LogoutRequest {
            refresh_token: tokens(&bob.tokens).refresh_token.clone(),
        })
        .await
        .expect("Logout");
        let mut bob = stack.clients(&tokens(&bob.tokens).access_token).await;
        refused_everywhere_within(&mut bob, Instant::now() + PATIENCE, "Bob's logout").await;

        for client in &mut stack.clients(&alice.token).await {
            assert_eq!(listed(client).await, 3, "nothing deleted");
        }
        assert_eq!(stored_tasks_of(&stack.tasks_database, alice.id).await, 3);
        login(&mut auth, &alice.email, PASSWORD)
            .await
            .expect("the account is still there");
        drop(bob);
        stack.stop().await;
    })
    .await;
}
