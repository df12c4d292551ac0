//! The process around the API: a database outage is `UNAVAILABLE` (with a
//! message that leaks nothing), health follows it, open watchers are told,
//! and everything recovers without a restart.

use std::time::{Duration, Instant};

use serving::clock::Clock;
use test_harness::*;
use todo_proto::tasks::v1 as pb;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn a_database_outage_is_unavailable_and_not_serving_then_recovers_by_itself() {
    if !Backend::all().contains(&Backend::Postgres) {
        eprintln!("SKIPPED: the outage test cuts a PostgreSQL connection");
        return;
    }
    let database = Backend::Postgres.fresh().await;
    let proxy = TcpProxy::start(database_address(&database.url)).await;
    let auth_database = TestDatabase::sqlite();
    let auth = AuthServer::start_with(auth_service::Config {
        clock: Clock::default(),
        ..auth_config(&auth_database)
    })
    .await;
    let tasks = TaskServer::start(task_config(
        &url_via(&database.url, proxy.addr()),
        &auth.url(),
        Clock::default(),
    ))
    .await;
    tasks.wait_serving().await;
    let user = auth.new_user("alice").await;
    let mut client = tasks.client(&user.token).await;
    let task = create(&mut client, titled("before the outage")).await;
    let mut events = client
        .watch_tasks(pb::WatchTasksRequest {})
        .await
        .expect("watch")
        .into_inner();

    proxy.cut();
    let started = Instant::now();
    let status = client
        .get_task(pb::GetTaskRequest {
            id: task.id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "answered within a deadline"
    );
    for leak in ["SELECT", "sqlx", "postgres", "127.0.0.1", "tasks", "pool"] {
        assert!(
            !status
                .message()
                .to_lowercase()
                .contains(&leak.to_lowercase()),
            "message leaks {leak}: {}",
            status.message()
        );
    }
    // The notice of the create may still be on its way to the listener
    // when the watch opens, so it may arrive first; then the status.
    let ended = loop {
        let message = tokio::time::timeout(PATIENCE, events.message())
            .await
            .expect("the watch ends in time");
        match message {
            Ok(Some(event)) => {
                assert_eq!(event.task.as_ref(), Some(&task), "only the earlier create");
            }
            Ok(None) => panic!("the watch ended without a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unavailable, "{ended:?}");
    eventually(PATIENCE, "health is NOT_SERVING", || async {
        tasks.health(task_service::SERVICE_NAME).await == Some(ServingStatus::NotServing)
    })
    .await;

    proxy.restore();
    tasks.wait_serving().await;
    let got = client
        .get_task(pb::GetTaskRequest {
            id: task.id.clone(),
        })
        .await
        .expect("recovered without a restart");
    assert_eq!(got.into_inner().task, Some(task));
    tasks.stop().await.unwrap();
    auth.stop().await;
}

#[tokio::test]
async fn every_call_gets_a_request_id_and_a_given_one_is_kept() {
    on_each_backend(|backend| async move {
        let stack = TaskStack::start(backend).await;
        let (_, mut alice) = stack.user("alice").await;
        let response = alice
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .unwrap();
        let generated = response
            .metadata()
            .get("x-request-id")
            .expect("a request id is generated");
        assert!(!generated.is_empty());

        let mut request = tonic::Request::new(pb::ListTasksRequest::default());
        request
            .metadata_mut()
            .insert("x-request-id", "trace-me-42".parse().unwrap());
        let response = alice.list_tasks(request).await.unwrap();
        assert_eq!(
            response.metadata().get("x-request-id").unwrap(),
            "trace-me-42"
        );
        // Refusals carry it too, so a client can quote it.
        let mut anonymous = stack.tasks.client("not-a-token").await;
        let status = anonymous
            .list_tasks(pb::ListTasksRequest::default())
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert!(status.metadata().get("x-request-id").is_some());
        stack.stop().await;
    })
    .await;
}
