//! CORS: a preflight is answered for the allowed origins only (by default,
//! local development's), and an allowed origin may read the gRPC status
//! headers of an answer.

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::Full;
use test_harness::{
    Backend, GatewayStack, raw_client,
    web::{frame, post},
};
use todo_proto::tasks::v1::ListTasksRequest;

#[tokio::test]
async fn cors_preflight_answers_allowed_origins_only() {
    let allowed = "http://app.example:3000";
    let stack = GatewayStack::start_with(Backend::Sqlite, |config| {
        config.allowed_origins = vec![allowed.into()];
    })
    .await;
    let preflight = |origin: &'static str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("{}/tasks.v1.TaskService/ListTasks", stack.url()))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type,x-grpc-web,x-user-agent,grpc-timeout",
            )
            .body(Full::new(Bytes::new()))
            .expect("a valid request")
    };
    let client = raw_client(false);

    let response = client
        .request(preflight(allowed))
        .await
        .expect("HTTP works");
    assert!(response.status().is_success());
    let headers = response.headers();
    assert_eq!(headers["access-control-allow-origin"], allowed);
    assert!(headers.get("access-control-allow-credentials").is_none());
    let methods = headers["access-control-allow-methods"]
        .to_str()
        .expect("ascii");
    assert!(
        methods.contains("POST") && !methods.contains("GET"),
        "{methods}"
    );
    let allowed_headers = headers["access-control-allow-headers"]
        .to_str()
        .expect("ascii");
    for header in [
        "authorization",
        "content-type",
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
    ] {
        assert!(
            allowed_headers.contains(header),
            "{header} missing from {allowed_headers}"
        );
    }

    let response = client
        .request(preflight("http://evil.example"))
        .await
        .expect("HTTP works");
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "{:?}",
        response.headers()
    );

    // The default list is local development only.
    drop(stack);
    let stack = GatewayStack::start(Backend::Sqlite).await;
    let response = client
        .request(
            Request::builder()
                .method(Method::OPTIONS)
                .uri(format!("{}/auth.v1.AuthService/Login", stack.url()))
                .header("origin", "http://localhost:5173")
                .header("access-control-request-method", "POST")
                .body(Full::new(Bytes::new()))
                .expect("a valid request"),
        )
        .await
        .expect("HTTP works");
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "http://localhost:5173"
    );
}

#[tokio::test]
async fn an_allowed_origin_may_read_the_status_headers() {
    let origin = "http://app.example:3000";
    let stack = GatewayStack::start_with(Backend::Sqlite, |config| {
        config.allowed_origins = vec![origin.into()];
    })
    .await;
    let body = frame(&ListTasksRequest::default());
    let (_, headers, _) = post(
        &stack,
        false,
        "/tasks.v1.TaskService/ListTasks",
        "application/grpc-web+proto",
        body,
        &[("origin", origin)],
    )
    .await;
    assert_eq!(headers["access-control-allow-origin"], origin);
    let exposed = headers["access-control-expose-headers"]
        .to_str()
        .expect("ascii");
    for header in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(header), "{header} missing from {exposed}");
    }
}
