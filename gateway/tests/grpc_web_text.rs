//! gRPC-Web text mode spoken byte by byte, as a browser without binary
//! support sends it: base64 frames over HTTP/1.1 and HTTP/2, errors whose
//! status and details travel in the trailers frame, and paths nobody serves
//! answered `UNIMPLEMENTED`.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, STANDARD_NO_PAD},
};
use http::StatusCode;
use prost::Message;
use test_harness::{
    Backend, GatewayStack,
    web::{decode_text, frame, frames, grpc_status, post},
};
use todo_proto::auth::v1::{GetJwksRequest, GetJwksResponse, RegisterRequest};

/// What a gRPC-Web text client sends to get a text answer back.
const TEXT: &[(&str, &str)] = &[("accept", "application/grpc-web-text")];

#[tokio::test]
async fn grpc_web_text_works_over_http1_and_http2() {
    let stack = GatewayStack::start(Backend::Sqlite).await;
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
    let stack = GatewayStack::start(Backend::Sqlite).await;
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
async fn an_unknown_path_is_unimplemented() {
    let stack = GatewayStack::start(Backend::Sqlite).await;
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
