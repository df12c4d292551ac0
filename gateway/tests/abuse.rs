//! No caller can hurt another through the gateway: each attack of the
//! abuse review runs while a victim (another user's open `WatchTasks` and
//! writes, and an anonymous `GetJwks`) keeps being served.
//!
//! - A 60 KB and a 900 KB `update_mask` path: one refused call, quoted
//!   briefly, and the gateway's shared connection to the task-service
//!   stays up (it used to be reset for everyone).
//! - Anonymous health `Watch` streams from several addresses: they draw on
//!   a budget of their own, so calls are still admitted.
//! - Malformed gRPC (a frame flagged compressed that is not gzip, a
//!   compression flag of 2, no message at all): `INVALID_ARGUMENT` with a
//!   fixed message, never `INTERNAL`, and nothing changes.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use prost::Message as _;
use test_harness::{
    Bearer, GatewayStack, TaskClient, connect, create, flagged_frame, grpc_raw, grpc_web_from,
    next_task_event, on_each_backend, titled, unique_email,
};
use todo_proto::{
    auth::v1::{GetJwksRequest, auth_service_client::AuthServiceClient},
    tasks::v1::{
        CreateTaskRequest, ListTasksRequest, Task, UpdateTaskRequest, WatchTasksRequest,
        task_service_client::TaskServiceClient,
    },
};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// How long an attack's refusal may take: it is answered at once.
const STEP: Duration = Duration::from_secs(10);

/// A malformed call: what it is, its body, its extra headers.
type Malformed = (&'static str, Vec<u8>, Vec<(&'static str, &'static str)>);

/// The victim is served: an anonymous `GetJwks` answers, and a task the
/// victim creates reaches its open stream.
async fn victim_is_served(
    channel: &Channel,
    victim: &mut TaskClient,
    stream: &mut tonic::Streaming<todo_proto::tasks::v1::WatchTasksResponse>,
    what: &str,
) {
    AuthServiceClient::new(channel.clone())
        .get_jwks(GetJwksRequest {})
        .await
        .unwrap_or_else(|status| panic!("GetJwks after {what}: {status:?}"));
    let made = create(victim, titled(&format!("after {what}"))).await;
    let seen = next_task_event(stream).await;
    assert_eq!(seen.id, made.id, "the victim's stream goes on after {what}");
}

#[tokio::test]
async fn a_huge_update_mask_fails_one_call_and_no_one_elses_stream() {
    on_each_backend(|backend| async move {
        let stack = GatewayStack::start(backend).await;
        let channel = connect(&stack.url()).await;
        let victim_token = stack.register(&unique_email()).await;
        let attacker_token = stack.register(&unique_email()).await;
        let mut victim =
            TaskServiceClient::with_interceptor(channel.clone(), Bearer::new(&victim_token));
        let mut stream = victim
            .watch_tasks(WatchTasksRequest {})
            .await
            .expect("the victim watches")
            .into_inner();
        let mut attacker =
            TaskServiceClient::with_interceptor(channel.clone(), Bearer::new(&attacker_token));
        let target = create(&mut attacker, titled("the attacker's own")).await;

        for size in [60_000, 900_000] {
            let status = attacker
                .update_task(UpdateTaskRequest {
                    task: Some(Task {
                        id: target.id.clone(),
                        title: "changed".into(),
                        ..Task::default()
                    }),
                    update_mask: test_harness::mask(&[&"x".repeat(size)]),
                })
                .await
                .expect_err("an unknown mask path");
            assert!(
                matches!(
                    status.code(),
                    Code::InvalidArgument | Code::ResourceExhausted
                ),
                "{size}: {:?} {}",
                status.code(),
                status.message()
            );
            assert!(
                status.message().len() < 300 && status.details().len() < 1_000,
                "{size}: the refusal quotes at most a prefix ({} + {} bytes)",
                status.message().len(),
                status.details().len()
            );
            victim_is_served(
                &channel,
                &mut victim,
                &mut stream,
                &format!("a {size}-byte mask"),
            )
            .await;
        }
        let unchanged = attacker
            .get_task(todo_proto::tasks::v1::GetTaskRequest {
                id: target.id.clone(),
            })
            .await
            .expect("GetTask")
            .into_inner()
            .task
            .expect("a task");
        assert_eq!(unchanged.title, "the attacker's own", "nothing changed");
        stack.stop();
    })
    .await;
}

#[tokio::test]
async fn anonymous_watch_streams_from_many_addresses_leave_calls_served() {
    on_each_backend(|backend| async move {
        let stack = GatewayStack::start_with(backend, |config| {
            config.max_anonymous_streams = 24;
            config.max_anonymous_streams_per_address = 8;
        })
        .await;
        let channel = connect(&stack.url()).await;
        let victim_token = stack.register(&unique_email()).await;
        let mut victim =
            TaskServiceClient::with_interceptor(channel.clone(), Bearer::new(&victim_token));
        let mut stream = victim
            .watch_tasks(WatchTasksRequest {})
            .await
            .expect("the victim watches")
            .into_inner();

        // Four addresses each try to hold 16 health Watch streams over
        // gRPC-Web: twice the per-address budget, and more than the total.
        let mut held = Vec::new();
        let mut refused = 0;
        for last in 2..=5u8 {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, last));
            let mut health = HealthClient::with_origin(grpc_web_from(source, true), stack.uri());
            for _ in 0..16 {
                // Over gRPC-Web a refusal arrives in the body's trailers:
                // a held stream is one that answers its first status.
                let answer = tokio::time::timeout(STEP, async {
                    let mut watching = health.watch(HealthCheckRequest::default()).await?;
                    watching.get_mut().message().await?;
                    Ok::<_, tonic::Status>(watching)
                })
                .await
                .expect("answered at once");
                match answer {
                    Ok(watching) => held.push(watching),
                    Err(status) => {
                        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                        refused += 1;
                    }
                }
            }
        }
        assert_eq!(
            held.len(),
            24,
            "the total budget of anonymous streams is used up"
        );
        assert_eq!(refused, 64 - 24);

        // Calls have their own budget: the victim and an anonymous client
        // are served while every anonymous stream place is taken.
        victim_is_served(&channel, &mut victim, &mut stream, "the watch flood").await;
        let listed = victim
            .list_tasks(ListTasksRequest::default())
            .await
            .expect("ListTasks during the flood")
            .into_inner();
        assert_eq!(listed.tasks.len(), 1);
        drop(held);
        stack.stop();
    })
    .await;
}

#[tokio::test]
async fn malformed_grpc_is_invalid_argument_and_changes_nothing() {
    on_each_backend(|backend| async move {
        let stack = GatewayStack::start(backend).await;
        let token = stack.register(&unique_email()).await;
        let authorization = format!("Bearer {token}");
        let create = CreateTaskRequest {
            title: "never stored".into(),
            ..CreateTaskRequest::default()
        }
        .encode_to_vec();
        let cases: [Malformed; 3] = [
            (
                "flagged compressed, not gzip",
                flagged_frame(1, &create),
                vec![("grpc-encoding", "gzip")],
            ),
            ("a compression flag of 2", flagged_frame(2, &create), vec![]),
            ("no message at all", Vec::new(), vec![]),
        ];
        // Through the gateway, and straight to each service.
        for address in [stack.gateway, stack.tasks] {
            for (what, body, extra) in &cases {
                let mut headers = extra.clone();
                headers.push(("authorization", authorization.as_str()));
                let status = grpc_raw(
                    address,
                    "/tasks.v1.TaskService/CreateTask",
                    body.clone(),
                    &headers,
                )
                .await;
                assert_eq!(
                    status.code(),
                    Code::InvalidArgument,
                    "{what} at {address}: {status:?}"
                );
                assert!(status.message().len() < 120, "{what}: {}", status.message());
            }
        }
        for (what, body, extra) in &cases {
            let status = grpc_raw(
                stack.auth,
                "/auth.v1.AuthService/GetJwks",
                body.clone(),
                extra,
            )
            .await;
            assert_eq!(
                status.code(),
                Code::InvalidArgument,
                "auth-service, {what}: {status:?}"
            );
        }

        let channel = connect(&stack.url()).await;
        let listed = TaskServiceClient::with_interceptor(channel, Bearer::new(&token))
            .list_tasks(ListTasksRequest::default())
            .await
            .expect("ListTasks")
            .into_inner();
        assert!(listed.tasks.is_empty(), "nothing was stored: {listed:?}");
        stack.stop();
    })
    .await;
}
