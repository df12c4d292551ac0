//! The JWKS document at `/.well-known/jwks.json`: served as JSON over
//! HTTP/1.1 and HTTP/2, `503` at once while the auth-service is down, and
//! fetched on a connection of its own, so it never queues behind calls.

use std::{
    convert::Infallible,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use test_harness::{
    Backend, GatewayStack, STEP, bind, closed_port, origin, raw_client, web::frame,
};
use todo_proto::auth::v1::GetJwksResponse;
use tokio::{sync::Notify, time::timeout};

#[tokio::test]
async fn the_jwks_document_is_served_as_json() {
    let stack = GatewayStack::start(Backend::Sqlite).await;
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
async fn the_jwks_document_is_503_while_the_auth_service_is_down() {
    let down = closed_port().await;
    let stack =
        GatewayStack::start_without_tasks(Backend::Sqlite, |config| config.auth_url = origin(down))
            .await;
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

/// A stand-in auth-service whose connections allow one stream at a time.
/// It answers `GetJwks`, holds every `Login` open without answering
/// (notifying `held`), and answers anything else `UNIMPLEMENTED`.
async fn one_stream_auth_upstream(held: Arc<Notify>) -> SocketAddr {
    let listener = bind().await;
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
    let stack = GatewayStack::start_without_tasks(Backend::Sqlite, |config| {
        config.auth_url = origin(upstream);
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
