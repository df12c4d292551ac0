//! Upstreams that fail or fill up: one that is down is `UNAVAILABLE` at
//! once, one that never answers is cut at the request timeout, and the
//! gateway's own health probe does not queue behind a call connection full
//! of streams.

use std::time::{Duration, Instant};

use test_harness::{Backend, GatewayStack, STEP, authorized, closed_port, origin};
use todo_proto::tasks::v1::{ListTasksRequest, WatchTasksRequest};
use tokio::time::timeout;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;

#[tokio::test]
async fn an_upstream_that_is_down_is_unavailable_at_once() {
    let down = closed_port().await;
    let stack = GatewayStack::start_without_tasks(Backend::Sqlite, |config| {
        config.tasks_url = origin(down);
    })
    .await;
    let started = Instant::now();
    let status = timeout(
        Duration::from_secs(5),
        stack
            .tasks_web(false)
            .list_tasks(ListTasksRequest::default()),
    )
    .await
    .expect("no hang")
    .expect_err("nothing listens");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_upstream_that_never_answers_is_cut_at_the_request_timeout() {
    // The task-service's port is reserved (connections are accepted by the
    // kernel) but nothing ever answers on it.
    let stack = GatewayStack::start_without_tasks(Backend::Sqlite, |config| {
        config.request_timeout = Duration::from_millis(700);
    })
    .await;
    let started = Instant::now();
    let status = timeout(
        Duration::from_secs(5),
        stack
            .tasks_web(false)
            .list_tasks(ListTasksRequest::default()),
    )
    .await
    .expect("no hang")
    .expect_err("nobody answers");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn health_stays_serving_while_the_call_connection_is_full_of_streams() {
    // Every client call to the task-service shares one connection, which
    // here allows 40 streams: 40 open WatchTasks fill it and later calls
    // queue behind them. The gateway's own health probe must not queue
    // with them, or a busy gateway would report its upstream as down.
    let mut stack = GatewayStack::start_without_tasks(Backend::Sqlite, |_| {}).await;
    stack
        .start_tasks_with(|config| config.transport.max_concurrent_streams = 40)
        .await;
    stack.wait_for_gateway_health(ServingStatus::Serving).await;
    // The task-service caps each user's watchers; two users share the load.
    let tokens = [
        stack.register("full-a@example.com").await,
        stack.register("full-b@example.com").await,
    ];
    let client = stack.tasks_web(true);
    let mut streams = Vec::new();
    for i in 0..40 {
        let stream = timeout(
            STEP,
            client
                .clone()
                .watch_tasks(authorized(WatchTasksRequest {}, &tokens[i % 2])),
        )
        .await
        .expect("no hang")
        .expect("WatchTasks opens");
        streams.push(stream);
    }
    // Ten more queue behind them: 50 streams asked for in all.
    let queued: Vec<_> = (0..10)
        .map(|i| {
            let mut client = client.clone();
            let token = tokens[i % 2].clone();
            tokio::spawn(async move {
                client
                    .watch_tasks(authorized(WatchTasksRequest {}, &token))
                    .await
            })
        })
        .collect();
    // Probes run every 2 s and give up after 1 s: several rounds pass.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        assert_eq!(
            stack.gateway_health().await,
            Some(ServingStatus::Serving),
            "a full call connection made the gateway report NOT_SERVING"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(
        queued.iter().all(|call| !call.is_finished()),
        "the call connection was not full, so this test proved nothing"
    );
    for call in queued {
        call.abort();
    }
    drop(streams);
}
