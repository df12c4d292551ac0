//! Stopping the gateway: streams still open when the shutdown grace runs out
//! end with `UNAVAILABLE` on every way in (gRPC-Web over HTTP/1.1 and
//! HTTP/2, plain gRPC), so do calls still waiting for their upstream, and
//! the listener closes.

use std::time::Duration;

use test_harness::{Backend, GatewayStack, STEP, authorized, on_each_backend};
use todo_proto::tasks::v1::{
    CreateTaskRequest, ListTasksRequest, WatchTasksRequest, task_service_client::TaskServiceClient,
};
use tokio::time::timeout;
use tonic::Code;

#[tokio::test]
async fn streams_open_at_the_end_of_the_shutdown_grace_end_with_unavailable() {
    on_each_backend(|backend| async move {
        let grace = Duration::from_millis(500);
        let mut stack =
            GatewayStack::start_with(backend, |config| config.shutdown_grace = grace).await;
        let token = stack.register("leaving@example.com").await;
        // One watcher per way in: gRPC-Web over HTTP/1.1 and HTTP/2, plain gRPC.
        let channel = tonic::transport::Endpoint::from(stack.uri())
            .connect()
            .await
            .expect("the gateway accepts gRPC");
        let mut streams = vec![
            (
                "gRPC-Web HTTP/1.1",
                stack
                    .tasks_web(false)
                    .watch_tasks(authorized(WatchTasksRequest {}, &token))
                    .await,
            ),
            (
                "gRPC-Web HTTP/2",
                stack
                    .tasks_web(true)
                    .watch_tasks(authorized(WatchTasksRequest {}, &token))
                    .await,
            ),
            (
                "gRPC",
                TaskServiceClient::new(channel)
                    .watch_tasks(authorized(WatchTasksRequest {}, &token))
                    .await,
            ),
        ]
        .into_iter()
        .map(|(way, opened)| (way, opened.expect("WatchTasks opens").into_inner()))
        .collect::<Vec<_>>();
        // An event first, so the cut comes after a message that went through.
        stack
            .tasks_web(false)
            .create_task(authorized(
                CreateTaskRequest {
                    title: "before the cut".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("CreateTask succeeds");
        for (way, stream) in &mut streams {
            let event = timeout(STEP, stream.message())
                .await
                .expect("the event arrives");
            let event = event.expect("no error yet").expect("the stream is open");
            assert_eq!(event.task.expect("a task").title, "before the cut", "{way}");
        }

        // Only the gateway stops; the task-service would keep the streams open.
        timeout(grace + Duration::from_secs(3), stack.stop_gateway())
            .await
            .expect("the gateway stops within its grace and a second");
        for (way, stream) in &mut streams {
            let ended = timeout(STEP, stream.message())
                .await
                .expect("the stream ends");
            match ended {
                Err(status) => assert_eq!(status.code(), Code::Unavailable, "{way}: {status:?}"),
                Ok(other) => panic!("{way}: expected UNAVAILABLE, got {other:?}"),
            }
        }
        // And the listener is closed.
        assert!(tokio::net::TcpStream::connect(stack.gateway).await.is_err());
    })
    .await;
}

#[tokio::test]
async fn a_call_still_waiting_for_its_upstream_when_the_grace_runs_out_gets_unavailable() {
    // Nothing answers on the task-service's port, and the request timeout
    // is far away: only the end of the shutdown grace can end the call.
    let grace = Duration::from_millis(300);
    let mut stack = GatewayStack::start_without_tasks(Backend::Sqlite, |config| {
        config.shutdown_grace = grace;
        config.request_timeout = Duration::from_secs(60);
    })
    .await;
    let mut client = stack.tasks_web(true);
    let call = tokio::spawn(async move { client.list_tasks(ListTasksRequest::default()).await });
    // Let the call reach the gateway before it starts shutting down.
    tokio::time::sleep(Duration::from_millis(500)).await;
    timeout(grace + Duration::from_secs(3), stack.stop_gateway())
        .await
        .expect("the gateway stops within its grace and a second");
    let status = timeout(STEP, call)
        .await
        .expect("the call ends")
        .expect("the client task did not panic")
        .expect_err("the call was cut");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}
