//! What the gateway passes upstream: call metadata (authorization, the
//! deadline, a usable request id) goes through; `x-forwarded-for` is
//! replaced by the caller's real address, so a forged one cannot dodge the
//! auth-service's per-address limits; the query string never goes.

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use test_harness::{
    Backend, GatewayStack, STEP, authorized, bind, on_each_backend, origin,
    web::{frame, post},
};
use todo_proto::tasks::v1::ListTasksRequest;
use tokio::time::timeout;
use tonic::Code;

/// A stand-in upstream that answers every call OK and echoes, in response
/// headers, what the gateway sent it.
async fn echoing_upstream() -> SocketAddr {
    let listener = bind().await;
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service =
                hyper::service::service_fn(|request: Request<hyper::body::Incoming>| async move {
                    let joined = |name: &str| {
                        request
                            .headers()
                            .get_all(name)
                            .iter()
                            .map(|v| v.to_str().unwrap_or("?"))
                            .collect::<Vec<_>>()
                            .join("|")
                    };
                    let response = http::Response::builder()
                        .header("content-type", "application/grpc")
                        .header("grpc-status", "0")
                        .header("x-seen-forwarded-for", joined("x-forwarded-for"))
                        .header("x-seen-request-id", joined("x-request-id"))
                        .header("x-seen-authorization", joined("authorization"))
                        .header("x-seen-grpc-timeout", joined("grpc-timeout"))
                        .header(
                            "x-seen-uri",
                            request
                                .uri()
                                .path_and_query()
                                .map(http::uri::PathAndQuery::as_str)
                                .unwrap_or(""),
                        )
                        .body(Full::new(Bytes::new()))
                        .expect("a valid response");
                    Ok::<_, Infallible>(response)
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    address
}

#[tokio::test]
async fn metadata_is_forwarded_and_x_forwarded_for_is_replaced() {
    let upstream = echoing_upstream().await;
    let stack = GatewayStack::start_without_tasks(Backend::Sqlite, |config| {
        config.tasks_url = origin(upstream);
    })
    .await;
    let (_, headers, _) = post(
        &stack,
        false,
        "/tasks.v1.TaskService/ListTasks?authorization=Bearer%20from-url",
        "application/grpc-web+proto",
        frame(&ListTasksRequest::default()),
        &[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("authorization", "Bearer from-header"),
            ("x-request-id", "client-chosen-42"),
            ("grpc-timeout", "5S"),
        ],
    )
    .await;
    assert_eq!(headers["x-seen-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-seen-authorization"], "Bearer from-header");
    assert_eq!(headers["x-seen-grpc-timeout"], "5S");
    assert_eq!(headers["x-seen-request-id"], "client-chosen-42");
    assert_eq!(headers["x-request-id"], "client-chosen-42");
    assert_eq!(
        headers["x-seen-uri"], "/tasks.v1.TaskService/ListTasks",
        "the query string is never forwarded"
    );

    // An unusable request id is replaced by a UUID.
    let (_, headers, _) = post(
        &stack,
        true,
        "/tasks.v1.TaskService/ListTasks",
        "application/grpc-web+proto",
        frame(&ListTasksRequest::default()),
        &[("x-request-id", "has spaces and \"quotes\"")],
    )
    .await;
    let seen = headers["x-seen-request-id"].to_str().expect("ascii");
    assert!(uuid::Uuid::parse_str(seen).is_ok(), "{seen}");
}

#[tokio::test]
async fn a_forged_x_forwarded_for_does_not_escape_per_address_throttling() {
    // The auth-service believes the gateway's x-forwarded-for (loopback is
    // trusted) and throttles Login per address: if the gateway passed a
    // client's own header on, rotating it would dodge the throttle.
    let stack = GatewayStack::start(Backend::Sqlite).await;
    let mut auth = stack.auth_web(false);
    let mut throttled = false;
    for attempt in 0..200 {
        let mut request = tonic::Request::new(todo_proto::auth::v1::LoginRequest {
            email: format!("nobody-{attempt}@example.com"),
            password: "not the password".into(),
        });
        request.metadata_mut().insert(
            "x-forwarded-for",
            format!("10.9.{}.{}", attempt / 250, attempt % 250)
                .parse()
                .expect("ascii"),
        );
        let status = timeout(STEP, auth.login(request))
            .await
            .expect("no hang")
            .expect_err("no such account");
        if status.code() == Code::ResourceExhausted {
            throttled = true;
            break;
        }
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    }
    assert!(
        throttled,
        "rotating x-forwarded-for escaped the per-address limit"
    );
}

#[tokio::test]
async fn a_list_call_carries_authorization_through() {
    on_each_backend(|backend| async move {
        // Sanity check for the metadata path with the real task-service.
        let stack = GatewayStack::start(backend).await;
        let token = stack.register("meta@example.com").await;
        let listed = stack
            .tasks_web(false)
            .list_tasks(authorized(ListTasksRequest::default(), &token))
            .await
            .expect("the token reached the task-service")
            .into_inner();
        assert!(listed.tasks.is_empty());
    })
    .await;
}
