//! WatchTasks: live changes of the caller's own tasks, in order, across
//! replicas, ending with a precise status when the token expires, the
//! watcher falls behind, the change feed breaks or the server shuts down.

use std::time::{Duration, Instant};

use prost_types::FieldMask;
use serving::clock::Clock;
use test_harness::*;
use todo_proto::tasks::v1::{self as pb, TaskEventType};
use tonic::{Code, Streaming};

/// Opens a watch, retrying while the change feed is still starting.
async fn watch(client: &mut TaskClient) -> Streaming<pb::WatchTasksResponse> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match client.watch_tasks(pb::WatchTasksRequest {}).await {
            Ok(response) => return response.into_inner(),
            Err(status)
                if status.code() == Code::Unavailable && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("WatchTasks refused: {status:?}"),
        }
    }
}

/// The next message of a stream, within [`PATIENCE`].
async fn next(
    stream: &mut Streaming<pb::WatchTasksResponse>,
) -> Result<Option<pb::WatchTasksResponse>, tonic::Status> {
    tokio::time::timeout(PATIENCE, stream.message())
        .await
        .expect("the stream answers in time")
}

async fn next_event(stream: &mut Streaming<pb::WatchTasksResponse>) -> (TaskEventType, pb::Task) {
    let event = next(stream)
        .await
        .expect("an event, not an error")
        .expect("an event, not the end");
    assert!(event.event_time.is_some());
    (event.event_type(), event.task.expect("a task"))
}

#[tokio::test]
async fn a_users_other_client_sees_create_update_complete_delete_in_order_and_nobody_else_does() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        let (alice, mut laptop) = stack.user("alice").await;
        let mut phone = stack.tasks.client(&alice.token).await;
        let (_, mut bob) = stack.user("bob").await;
        let mut phone_events = watch(&mut phone).await;
        let mut bob_events = watch(&mut bob).await;

        let task = create(&mut laptop, titled("groceries")).await;
        let renamed = laptop
            .update_task(pb::UpdateTaskRequest {
                task: Some(pb::Task {
                    id: task.id.clone(),
                    title: "groceries!".into(),
                    ..pb::Task::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into()],
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        let completed = laptop
            .set_task_completed(pb::SetTaskCompletedRequest {
                id: task.id.clone(),
                completed: true,
            })
            .await
            .unwrap()
            .into_inner()
            .task
            .unwrap();
        // Idempotent: no write, so no event.
        laptop
            .set_task_completed(pb::SetTaskCompletedRequest {
                id: task.id.clone(),
                completed: true,
            })
            .await
            .unwrap();
        laptop
            .delete_task(pb::DeleteTaskRequest {
                id: task.id.clone(),
                etag: String::new(),
            })
            .await
            .unwrap();

        assert_eq!(
            next_event(&mut phone_events).await,
            (TaskEventType::Created, task.clone())
        );
        assert_eq!(
            next_event(&mut phone_events).await,
            (TaskEventType::Updated, renamed)
        );
        assert_eq!(
            next_event(&mut phone_events).await,
            (TaskEventType::Updated, completed)
        );
        let (kind, deleted) = next_event(&mut phone_events).await;
        assert_eq!((kind, deleted.id), (TaskEventType::Deleted, task.id));

        // Bob's stream is ordered too: his own create is the first thing he
        // sees, so none of alice's four changes reached him.
        let bobs = create(&mut bob, titled("bob's")).await;
        assert_eq!(
            next_event(&mut bob_events).await,
            (TaskEventType::Created, bobs)
        );
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_write_through_one_replica_reaches_a_watcher_on_another() {
    if !Backend::all().contains(&Backend::Postgres) {
        eprintln!("SKIPPED: replicas share a database only on PostgreSQL");
        return;
    }
    let stack = TaskStack::start(Backend::Postgres).await;
    let replica = TaskServer::start(task_config(
        &stack.database.url,
        &stack.auth.url(),
        Clock::default(),
    ))
    .await;
    replica.wait_serving().await;
    let (alice, mut on_first) = stack.user("alice").await;
    let mut on_second = replica.client(&alice.token).await;
    let mut first_events = watch(&mut on_first).await;
    let mut second_events = watch(&mut on_second).await;

    let task = create(&mut on_first, titled("written on the first")).await;
    assert_eq!(
        next_event(&mut second_events).await,
        (TaskEventType::Created, task.clone())
    );
    assert_eq!(
        next_event(&mut first_events).await,
        (TaskEventType::Created, task.clone())
    );
    let done = on_second
        .set_task_completed(pb::SetTaskCompletedRequest {
            id: task.id.clone(),
            completed: true,
        })
        .await
        .unwrap()
        .into_inner()
        .task
        .unwrap();
    assert_eq!(
        next_event(&mut first_events).await,
        (TaskEventType::Updated, done.clone())
    );
    assert_eq!(
        next_event(&mut second_events).await,
        (TaskEventType::Updated, done)
    );
    replica.stop().await.unwrap();
    stack.stop().await;
}

#[tokio::test]
async fn a_rolled_back_write_notifies_nobody() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        let (alice, mut client) = stack.user("alice").await;
        let mut events = watch(&mut stack.tasks.client(&alice.token).await).await;
        let task = create(&mut client, titled("v1")).await;
        assert_eq!(next_event(&mut events).await.0, TaskEventType::Created);
        // A stale etag: the write is refused, nothing is published.
        let refused = client
            .update_task(pb::UpdateTaskRequest {
                task: Some(pb::Task {
                    id: task.id.clone(),
                    title: "lost".into(),
                    etag: "999".into(),
                    ..pb::Task::default()
                }),
                update_mask: Some(FieldMask {
                    paths: vec!["title".into()],
                }),
            })
            .await;
        assert_eq!(code(refused), Code::Aborted);
        let next_task = create(&mut client, titled("v2")).await;
        assert_eq!(
            next_event(&mut events).await,
            (TaskEventType::Created, next_task)
        );
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn an_expiring_token_ends_the_stream_with_unauthenticated() {
    on_each_backend(|backend| async move {
        let clock = Clock::manual();
        let stack = TaskStack::start_with(backend, clock.clone(), |_| {}).await;
        let (_, mut alice) = stack.user("alice").await;
        let mut events = watch(&mut alice).await;
        let task = create(&mut alice, titled("before expiry")).await;
        assert_eq!(
            next_event(&mut events).await,
            (TaskEventType::Created, task)
        );

        clock.advance(Duration::from_secs(15 * 60));
        let status = next(&mut events)
            .await
            .expect_err("the stream ends with a status");
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_watcher_too_far_behind_is_ended_with_resource_exhausted() {
    on_each_backend(|backend| async move {
        let stack =
            TaskStack::start_with(backend, Clock::default(), |config| config.watch_buffer = 2)
                .await;
        let (alice, writer) = stack.user("alice").await;
        // A reader with a tiny HTTP/2 window that does not read: the
        // transport's buffers fill, then its queue overflows.
        let channel = tonic::transport::Channel::from_shared(stack.tasks.url())
            .unwrap()
            .initial_stream_window_size(Some(1024))
            .connect()
            .await
            .unwrap();
        let mut slow =
            todo_proto::tasks::v1::task_service_client::TaskServiceClient::with_interceptor(
                channel,
                Bearer::new(&alice.token),
            );
        let mut slow_events = watch(&mut slow).await;
        let (_, mut bob) = stack.user("bob").await;
        let mut bob_events = watch(&mut bob).await;
        let mut calls = Vec::new();
        for batch in 0..8 {
            let mut client = writer.clone();
            calls.push(tokio::spawn(async move {
                for i in 0..75 {
                    create(
                        &mut client,
                        titled(&format!("flood {batch}-{i} {}", "x".repeat(150))),
                    )
                    .await;
                }
            }));
        }
        for call in calls {
            call.await.unwrap();
        }
        let mut received = 0;
        let status = loop {
            match next(&mut slow_events).await {
                Ok(Some(_)) => received += 1,
                Ok(None) => panic!("the stream ended without a status after {received} events"),
                Err(status) => break status,
            }
        };
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
        assert!(
            received < 600,
            "the watcher was cut before receiving everything ({received})"
        );

        // Another watcher, open all along, is unaffected. (Bob's: alice's
        // own new watchers may still see the tail of her flood, as notices
        // on PostgreSQL can be in flight when a watcher subscribes.)
        let bobs = create(&mut bob, titled("after the flood")).await;
        assert_eq!(
            next_event(&mut bob_events).await,
            (TaskEventType::Created, bobs)
        );
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn shutdown_ends_open_streams_and_does_not_hang() {
    on_each_backend(|backend| async move {
        // A drain grace far longer than the test's patience: if the open
        // stream did not end by itself, `stop` would time out.
        let stack = TaskStack::start_with(backend, Clock::default(), |config| {
            config.transport.shutdown_grace = Duration::from_secs(600);
        })
        .await;
        let (_, mut alice) = stack.user("alice").await;
        let mut events = watch(&mut alice).await;
        let started = Instant::now();
        let TaskStack {
            auth,
            tasks,
            database,
            ..
        } = stack;
        tasks.stop().await.expect("serve returns Ok");
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(10),
            "shutdown took {elapsed:?}"
        );
        match next(&mut events).await {
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
            Ok(other) => panic!("expected UNAVAILABLE, got {other:?}"),
        }
        auth.stop().await;
        drop(database);
    })
    .await;
}

#[tokio::test]
async fn losing_the_change_feed_ends_streams_with_unavailable_and_recovers() {
    if !Backend::all().contains(&Backend::Postgres) {
        eprintln!("SKIPPED: the change feed is a database connection only on PostgreSQL");
        return;
    }
    let stack = TaskStack::start(Backend::Postgres).await;
    let (_, mut alice) = stack.user("alice").await;
    let mut events = watch(&mut alice).await;

    // Kill the listener's connection, as a database restart or a network
    // cut would.
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(&stack.database.url)
        .await
        .unwrap();
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() AND query ILIKE 'LISTEN%'",
    )
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(killed.len(), 1, "exactly one listener connection");

    let status = next(&mut events)
        .await
        .expect_err("the stream ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // The listener reconnects by itself; a new watcher gets changes again.
    let mut again = watch(&mut alice).await;
    let task = create(&mut alice, titled("after the outage")).await;
    assert_eq!(next_event(&mut again).await, (TaskEventType::Created, task));
    stack.stop().await;
}

#[tokio::test]
async fn a_watch_outlives_the_unary_request_timeout() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start_with(backend, Clock::default(), |config| {
            config.transport.request_timeout = Duration::from_secs(1);
        })
        .await;
        let (_, mut alice) = stack.user("alice").await;
        let mut events = watch(&mut alice).await;
        // Time passing is the point here: well past the per-call timeout.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let task = create(&mut alice, titled("still watching")).await;
        assert_eq!(
            next_event(&mut events).await,
            (TaskEventType::Created, task)
        );
        stack.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_quiet_stream_sends_heartbeats_and_then_the_next_change() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start_with(backend, Clock::default(), |config| {
            config.watch_heartbeat = Duration::from_millis(200);
        })
        .await;
        let (_, mut alice) = stack.user("alice").await;
        let mut events = watch(&mut alice).await;
        // Nothing changes: the stream still carries data, so an idle proxy
        // sees it alive.
        let heartbeat = next(&mut events)
            .await
            .expect("a heartbeat, not an error")
            .expect("a heartbeat, not the end");
        assert_eq!(heartbeat.event_type(), TaskEventType::Unspecified);
        assert!(heartbeat.task.is_none() && heartbeat.event_time.is_some());
        let task = create(&mut alice, titled("after the silence")).await;
        let (kind, received) = loop {
            let event = next(&mut events).await.unwrap().unwrap();
            if event.event_type() != TaskEventType::Unspecified {
                break (event.event_type(), event.task.unwrap());
            }
        };
        assert_eq!((kind, received), (TaskEventType::Created, task));
        stack.stop().await;
    })
    .await;
}
