//! The gateway's edges, spoken to byte by byte: gRPC-Web text mode over
//! HTTP/1.1 and HTTP/2, CORS preflights, the body limit, an upstream that is
//! down or silent, unknown paths, the headers it sets, the JWKS document,
//! and the gateway's own calls upstream when the call connection is full.

mod stack;

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD},
};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use prost::Message;
use stack::{STEP, Stack, authorized, raw_client};
use todo_proto::{
    auth::v1::{GetJwksRequest, GetJwksResponse, RegisterRequest},
    tasks::v1::{
        CreateTaskRequest, ListTasksRequest, WatchTasksRequest,
        task_service_client::TaskServiceClient,
    },
};
use tokio::{sync::Notify, time::timeout};
use tonic::Code;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// What a gRPC-Web text client sends to get a text answer back.
const TEXT: &[(&str, &str)] = &[("accept", "application/grpc-web-text")];

/// One gRPC message frame: flag 0, big-endian length, the message.
fn frame(message: &impl Message) -> Vec<u8> {
    let encoded = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(encoded.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&encoded);
    frame
}

/// Splits a gRPC-Web body into (flag, payload) frames.
fn frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while body.len() >= 5 {
        let length = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        frames.push((body[0], body[5..5 + length].to_vec()));
        body = &body[5 + length..];
    }
    assert!(body.is_empty(), "a truncated frame");
    frames
}

/// Decodes a gRPC-Web text body, whose chunks are each padded base64.
fn decode_text(body: &[u8]) -> Vec<u8> {
    body.chunks(4)
        .flat_map(|quantum| STANDARD.decode(quantum).expect("valid base64"))
        .collect()
}

/// The `grpc-status` of a gRPC-Web answer: from a trailers frame, or from
/// the headers of a trailers-only answer.
fn grpc_status(headers: &HeaderMap, frames: &[(u8, Vec<u8>)]) -> Option<String> {
    if let Some(status) = headers.get("grpc-status") {
        return Some(status.to_str().expect("ascii").to_owned());
    }
    let (_, trailers) = frames.iter().find(|(flag, _)| flag & 0x80 != 0)?;
    String::from_utf8_lossy(trailers)
        .split("\r\n")
        .find_map(|line| {
            line.strip_prefix("grpc-status:")
                .map(|s| s.trim().to_owned())
        })
}

async fn post(
    stack: &Stack,
    http2: bool,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("{}{path}", stack.url()))
        .header("content-type", content_type)
        .header("x-grpc-web", "1");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request");
    let response = timeout(STEP, raw_client(http2).request(request))
        .await
        .expect("no hang")
        .expect("HTTP works");
    let (parts, body) = response.into_parts();
    let body = timeout(STEP, body.collect())
        .await
        .expect("no hang")
        .expect("a body")
        .to_bytes();
    (parts.status, parts.headers, body.to_vec())
}

#[tokio::test]
async fn grpc_web_text_works_over_http1_and_http2() {
    let stack = Stack::start().await;
    for http2 in [false, true] {
        let body = STANDARD.encode(frame(&GetJwksRequest {})).into_bytes();
        let (status, headers, body) = post(
            &stack,
            http2,
            "/auth.v1.AuthService/GetJwks",
            "application/grpc-web-text",
            body,
            TEXT,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-type"], "application/grpc-web-text+proto");
        let frames = frames(&decode_text(&body));
        assert_eq!(
            grpc_status(&headers, &frames).as_deref(),
            Some("0"),
            "http2={http2}"
        );
        let (_, message) = frames
            .iter()
            .find(|(flag, _)| *flag == 0)
            .expect("a message frame");
        let jwks = GetJwksResponse::decode(&message[..]).expect("a GetJwksResponse");
        assert!(jwks.jwks_json.contains("\"keys\""), "{}", jwks.jwks_json);
    }
}

#[tokio::test]
async fn grpc_web_text_errors_carry_their_status_in_the_trailers() {
    let stack = Stack::start().await;
    let register = RegisterRequest {
        email: "text@example.com".into(),
        password: "short".into(),
        display_name: String::new(),
    };
    let body = STANDARD.encode(frame(&register)).into_bytes();
    let (status, headers, body) = post(
        &stack,
        false,
        "/auth.v1.AuthService/Register",
        "application/grpc-web-text",
        body,
        TEXT,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let frames = frames(&decode_text(&body));
    // The status travels in the trailers frame, not the HTTP headers.
    assert!(headers.get("grpc-status").is_none(), "{headers:?}");
    assert_eq!(grpc_status(&headers, &frames).as_deref(), Some("3"));
    let (_, trailers) = frames
        .iter()
        .find(|(flag, _)| flag & 0x80 != 0)
        .expect("a trailers frame");
    let trailers = String::from_utf8_lossy(trailers);
    let details = trailers
        .split("\r\n")
        .find_map(|line| line.strip_prefix("grpc-status-details-bin:"))
        .expect("status details in the trailers frame");
    let details = tonic_types::pb::Status::decode(
        &STANDARD_NO_PAD
            .decode(details.trim().trim_end_matches('='))
            .expect("base64")[..],
    )
    .expect("a google.rpc.Status");
    assert_eq!(details.code, 3);
    assert!(
        details
            .details
            .iter()
            .any(|any| any.type_url.ends_with("google.rpc.BadRequest")),
        "{details:?}"
    );
}

#[tokio::test]
async fn cors_preflight_answers_allowed_origins_only() {
    let allowed = "http://app.example:3000";
    let stack = Stack::start_with(|config| config.allowed_origins = vec![allowed.into()]).await;
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
    let stack = Stack::start().await;
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
    let stack = Stack::start_with(|config| config.allowed_origins = vec![origin.into()]).await;
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

#[tokio::test]
async fn a_body_over_the_limit_is_resource_exhausted() {
    let stack = Stack::start_with(|config| config.max_body_bytes = 4096).await;
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
async fn an_upstream_that_is_down_is_unavailable_at_once() {
    let down = stack::closed_port().await;
    let stack = Stack::start_without_tasks(|config| config.tasks_url = stack::origin(down)).await;
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
    let stack =
        Stack::start_without_tasks(|config| config.request_timeout = Duration::from_millis(700))
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
async fn an_unknown_path_is_unimplemented() {
    let stack = Stack::start().await;
    for path in [
        "/nope.v1.NopeService/Nothing",
        "/auth.v1.AuthServiceX/Login",
        "/",
    ] {
        let (status, headers, body) = post(
            &stack,
            false,
            path,
            "application/grpc-web+proto",
            frame(&GetJwksRequest {}),
            &[],
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(
            grpc_status(&headers, &frames(&body)).as_deref(),
            Some("12"),
            "{path}"
        );
    }
}

/// A stand-in upstream that answers every call OK and echoes, in response
/// headers, what the gateway sent it.
async fn echoing_upstream() -> SocketAddr {
    let listener = stack::bind().await;
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
                                .map(|p| p.as_str())
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
    let stack =
        Stack::start_without_tasks(|config| config.tasks_url = stack::origin(upstream)).await;
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
    let stack = Stack::start().await;
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
async fn the_jwks_document_is_served_as_json() {
    let stack = Stack::start().await;
    for http2 in [false, true] {
        let request = Request::builder()
            .method(Method::GET)
            .uri(format!("{}/.well-known/jwks.json", stack.url()))
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let response = timeout(STEP, raw_client(http2).request(request))
            .await
            .expect("no hang")
            .expect("HTTP works");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("a body")
            .to_bytes();
        let document: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        let keys = document["keys"].as_array().expect("a JWK Set has keys");
        assert!(!keys.is_empty());
        assert!(
            keys.iter().all(|key| key["kty"] == "OKP"
                && key["crv"] == "Ed25519"
                && key["kid"].is_string()),
            "{document}"
        );
    }
}

#[tokio::test]
async fn a_list_call_carries_authorization_through() {
    // Sanity check for the metadata path with the real task-service.
    let stack = Stack::start().await;
    let token = stack.register("meta@example.com").await;
    let listed = stack
        .tasks_web(false)
        .list_tasks(authorized(ListTasksRequest::default(), &token))
        .await
        .expect("the token reached the task-service")
        .into_inner();
    assert!(listed.tasks.is_empty());
}

#[tokio::test]
async fn calls_over_the_concurrency_limit_are_refused_at_once() {
    let stack = Stack::start_with(|config| config.max_concurrent_requests = 1).await;
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
                tokio::time::sleep(Duration::from_millis(20)).await
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
                tokio::time::sleep(Duration::from_millis(20)).await
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

#[tokio::test]
async fn streams_open_at_the_end_of_the_shutdown_grace_end_with_unavailable() {
    let grace = Duration::from_millis(500);
    let mut stack = Stack::start_with(|config| config.shutdown_grace = grace).await;
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
}

#[tokio::test]
async fn a_call_still_waiting_for_its_upstream_when_the_grace_runs_out_gets_unavailable() {
    // Nothing answers on the task-service's port, and the request timeout
    // is far away: only the end of the shutdown grace can end the call.
    let grace = Duration::from_millis(300);
    let mut stack = Stack::start_without_tasks(|config| {
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

#[tokio::test]
async fn at_the_connection_limit_new_connections_wait_until_one_closes() {
    let stack = Stack::start_with(|config| config.max_connections = 2).await;
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
async fn the_jwks_document_is_503_while_the_auth_service_is_down() {
    let down = stack::closed_port().await;
    let stack = Stack::start_without_tasks(|config| config.auth_url = stack::origin(down)).await;
    for _ in 0..2 {
        let started = Instant::now();
        let request = Request::builder()
            .uri(format!("{}/.well-known/jwks.json", stack.url()))
            .body(Full::new(Bytes::new()))
            .expect("a valid request");
        let response = timeout(STEP, raw_client(false).request(request))
            .await
            .expect("no hang")
            .expect("HTTP works");
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
    }
}

#[tokio::test]
async fn health_stays_serving_while_the_call_connection_is_full_of_streams() {
    // Every client call to the task-service shares one connection, which
    // here allows 40 streams: 40 open WatchTasks fill it and later calls
    // queue behind them. The gateway's own health probe must not queue
    // with them, or a busy gateway would report its upstream as down.
    let mut stack = Stack::start_without_tasks(|_| {}).await;
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

/// A stand-in auth-service whose connections allow one stream at a time.
/// It answers `GetJwks`, holds every `Login` open without answering
/// (notifying `held`), and answers anything else `UNIMPLEMENTED`.
async fn one_stream_auth_upstream(held: Arc<Notify>) -> SocketAddr {
    let listener = stack::bind().await;
    let address = listener.local_addr().expect("bound");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let held = held.clone();
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let held = held.clone();
                    async move {
                        let path = request.uri().path().to_owned();
                        let mut frames = Vec::new();
                        let mut response =
                            http::Response::builder().header("content-type", "application/grpc");
                        if path == "/auth.v1.AuthService/Login" {
                            held.notify_one();
                            std::future::pending::<()>().await;
                        } else if path == "/auth.v1.AuthService/GetJwks" {
                            let message = GetJwksResponse {
                                jwks_json: r#"{"keys":[]}"#.into(),
                            };
                            let mut trailers = HeaderMap::new();
                            trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                            frames.push(Ok::<_, Infallible>(Frame::data(Bytes::from(frame(
                                &message,
                            )))));
                            frames.push(Ok(Frame::trailers(trailers)));
                        } else {
                            response = response.header("grpc-status", "12");
                        }
                        let body = StreamBody::new(tokio_stream::iter(frames));
                        Ok::<_, Infallible>(response.body(body).expect("a valid response"))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(1)
                    .serve_connection(TokioIo::new(stream), service),
            );
        }
    });
    address
}

#[tokio::test]
async fn the_jwks_fetch_does_not_queue_behind_a_full_call_connection() {
    // The auth-service's call connection holds one stream, taken by a call
    // that never answers: a JWKS fetch on that connection would wait out
    // its timeout and the document would be 503.
    let held = Arc::new(Notify::new());
    let upstream = one_stream_auth_upstream(held.clone()).await;
    let stack = Stack::start_without_tasks(|config| {
        config.auth_url = stack::origin(upstream);
        config.request_timeout = Duration::from_secs(60);
    })
    .await;
    let mut auth = stack.auth_web(true);
    let hanging = tokio::spawn(async move {
        auth.login(todo_proto::auth::v1::LoginRequest {
            email: "someone@example.com".into(),
            password: "whatever password".into(),
        })
        .await
    });
    timeout(STEP, held.notified())
        .await
        .expect("the call reached the upstream");

    let started = Instant::now();
    let request = Request::builder()
        .uri(format!("{}/.well-known/jwks.json", stack.url()))
        .body(Full::new(Bytes::new()))
        .expect("a valid request");
    let response = timeout(STEP, raw_client(false).request(request))
        .await
        .expect("no hang")
        .expect("HTTP works");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    assert_eq!(&body[..], br#"{"keys":[]}"#);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the fetch queued behind the call: took {:?}",
        started.elapsed()
    );
    assert!(!hanging.is_finished(), "the call connection was not held");
    hanging.abort();
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
    let stack = Stack::start_with(|config| config.max_concurrent_requests_per_address = 3).await;
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
async fn a_connection_that_never_speaks_is_closed() {
    use tokio::io::AsyncReadExt;
    let stack = Stack::start().await;
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
