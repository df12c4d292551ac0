//! The gateway's limits, each refused at once rather than queued: the body
//! size, calls in flight in all and per client address (an open stream is a
//! call in flight for as long as it is open), connections, and a connection
//! that never speaks.

use std::time::{Duration, Instant};

use test_harness::{Backend, GatewayStack, STEP, authorized};
use todo_proto::{
    auth::v1::RegisterRequest,
    tasks::v1::{ListTasksRequest, WatchTasksRequest},
};
use tokio::time::timeout;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

#[tokio::test]
async fn a_body_over_the_limit_is_resource_exhausted() {
    let stack =
        GatewayStack::start_with(Backend::Sqlite, |config| config.max_body_bytes = 4096).await;
    for http2 in [false, true] {
        let status = timeout(
            STEP,
            stack.auth_web(http2).register(RegisterRequest {
                email: "big@example.com".into(),
                password: "correct horse battery staple".into(),
                display_name: "x".repeat(64 * 1024),
            }),
        )
        .await
        .expect("no hang")
        .expect_err("too large");
        assert_eq!(
            status.code(),
            Code::ResourceExhausted,
            "http2={http2}: {status:?}"
        );
    }
    // Plain gRPC too.
    let channel = tonic::transport::Endpoint::from(stack.uri())
        .connect()
        .await
        .expect("connects");
    let status = todo_proto::auth::v1::auth_service_client::AuthServiceClient::new(channel)
        .register(RegisterRequest {
            email: "big@example.com".into(),
            password: "correct horse battery staple".into(),
            display_name: "x".repeat(64 * 1024),
        })
        .await
        .expect_err("too large");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test]
async fn calls_over_the_concurrency_limit_are_refused_at_once() {
    let stack =
        GatewayStack::start_with(Backend::Sqlite, |config| config.max_concurrent_requests = 1)
            .await;
    // A call's permit is released when the gateway has sent its last byte,
    // which can be a moment after the client has read it: until then the
    // next call may be refused, so these first two calls retry.
    let token = loop {
        let request = RegisterRequest {
            email: "busy@example.com".into(),
            password: "correct horse battery staple".into(),
            display_name: String::new(),
        };
        match stack.auth_web(false).register(request).await {
            Ok(response) => break response.into_inner().tokens.expect("tokens").access_token,
            Err(status) if status.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("Register failed: {status:?}"),
        }
    };
    // An open stream is a call in flight for as long as it is open.
    let stream = loop {
        match stack
            .tasks_web(false)
            .watch_tasks(authorized(WatchTasksRequest {}, &token))
            .await
        {
            Ok(stream) => break stream,
            Err(status) if status.code() == Code::ResourceExhausted => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("WatchTasks failed: {status:?}"),
        }
    };
    let started = Instant::now();
    let status = timeout(
        STEP,
        stack
            .tasks_web(false)
            .list_tasks(authorized(ListTasksRequest::default(), &token)),
    )
    .await
    .expect("no hang")
    .expect_err("over the limit");
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        tonic_types::StatusExt::get_error_details(&status)
            .retry_info()
            .is_some(),
        "a load refusal says when to retry: {status:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, took {:?}",
        started.elapsed()
    );

    // Closing the stream frees its place.
    drop(stream);
    let deadline = Instant::now() + STEP;
    loop {
        match stack
            .tasks_web(false)
            .list_tasks(authorized(ListTasksRequest::default(), &token))
            .await
        {
            Ok(_) => break,
            Err(status)
                if status.code() == Code::ResourceExhausted && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("the permit was not released: {status:?}"),
        }
    }
}

/// Calls `call` until it is not refused for load (a finished call's permits
/// are released a moment after the client has read its answer).
async fn admitted<T, F, Fut>(what: &str, mut call: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let deadline = Instant::now() + STEP;
    loop {
        match call().await {
            Ok(response) => return response.into_inner(),
            Err(status)
                if status.code() == Code::ResourceExhausted && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(status) => panic!("{what} failed: {status:?}"),
        }
    }
}

/// Asserts that `status` is the per-address refusal, with its RetryInfo.
fn assert_refused_for_the_address(status: &tonic::Status) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("from your address"),
        "refused by the per-address cap, not the global one: {status:?}"
    );
    assert!(
        tonic_types::StatusExt::get_error_details(status)
            .retry_info()
            .is_some(),
        "a load refusal says when to retry: {status:?}"
    );
}

#[tokio::test]
async fn one_address_cannot_hold_more_calls_than_its_cap() {
    let stack = GatewayStack::start_with(Backend::Sqlite, |config| {
        config.max_concurrent_requests_per_address = 3;
    })
    .await;
    let token = admitted("Register", || {
        let mut auth = stack.auth_web(false);
        async move {
            auth.register(RegisterRequest {
                email: "greedy@example.com".into(),
                password: "correct horse battery staple".into(),
                display_name: String::new(),
            })
            .await
        }
    })
    .await
    .tokens
    .expect("tokens")
    .access_token;

    // Three streams that never end by themselves: WatchTasks over gRPC-Web.
    let watch_tasks = || {
        let mut tasks = stack.tasks_web(false);
        let request = authorized(WatchTasksRequest {}, &token);
        async move { tasks.watch_tasks(request).await }
    };
    let first_watch = admitted("WatchTasks", watch_tasks).await;
    let second_watch = admitted("WatchTasks", watch_tasks).await;
    let third_watch = admitted("WatchTasks", watch_tasks).await;

    // A fourth call from the same address is refused at once, whether it
    // goes upstream (gRPC-Web: the status travels in the trailers) or is
    // the gateway's own.
    let channel = tonic::transport::Endpoint::from(stack.uri())
        .connect()
        .await
        .expect("the gateway accepts gRPC");
    let health = HealthClient::new(channel);
    let started = Instant::now();
    let status = timeout(
        STEP,
        stack
            .tasks_web(false)
            .list_tasks(authorized(ListTasksRequest::default(), &token)),
    )
    .await
    .expect("no hang")
    .expect_err("over the per-address cap");
    assert_refused_for_the_address(&status);
    let status = timeout(
        STEP,
        health.clone().check(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("no hang")
    .expect_err("over the per-address cap");
    assert_refused_for_the_address(&status);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused at once, took {:?}",
        started.elapsed()
    );
    // A health Watch draws on the budget of anonymous streams, not on the
    // calls' one.
    let health_watch = timeout(
        STEP,
        health.clone().watch(HealthCheckRequest {
            service: String::new(),
        }),
    )
    .await
    .expect("no hang")
    .expect("a health Watch has a budget of its own");

    // Closing a stream frees its place.
    drop(first_watch);
    admitted("ListTasks", || {
        let mut tasks = stack.tasks_web(false);
        let request = authorized(ListTasksRequest::default(), &token);
        async move { tasks.list_tasks(request).await }
    })
    .await;
    drop((second_watch, third_watch, health_watch));
}

#[tokio::test]
async fn at_the_connection_limit_new_connections_wait_until_one_closes() {
    let stack =
        GatewayStack::start_with(Backend::Sqlite, |config| config.max_connections = 2).await;
    let health = |channel: tonic::transport::Channel| async move {
        HealthClient::new(channel)
            .check(HealthCheckRequest::default())
            .await
    };
    let connect = |uri: http::Uri| async move {
        tonic::transport::Endpoint::from(uri)
            .connect()
            .await
            .expect("TCP connects (the kernel's backlog takes it)")
    };
    // Two clients hold a connection each, both served.
    let mut held = Vec::new();
    for _ in 0..2 {
        let channel = connect(stack.uri()).await;
        health(channel.clone()).await.expect("served");
        held.push(channel);
    }
    // A third is not served while they are open...
    let third = connect(stack.uri()).await;
    let mut waiting = tokio::spawn(health(third));
    assert!(
        timeout(Duration::from_millis(500), &mut waiting)
            .await
            .is_err(),
        "a connection over the limit was served"
    );
    // ...and is, once one of them closes.
    drop(held.pop());
    timeout(STEP, waiting)
        .await
        .expect("served once a connection closed")
        .expect("no panic")
        .expect("the health check answers");
}

#[tokio::test]
async fn a_connection_that_never_speaks_is_closed() {
    use tokio::io::AsyncReadExt;
    let stack = GatewayStack::start(Backend::Sqlite).await;
    let mut silent = tokio::net::TcpStream::connect(stack.gateway).await.unwrap();
    // The gateway waits up to its 10 s header timeout for the first bytes,
    // then closes: a read sees the end of the stream (or a reset).
    let mut buffer = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buffer))
        .await
        .expect("the gateway closed the silent connection");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    stack.stop();
}
