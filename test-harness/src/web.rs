//! Speaking to the gateway as a browser does: gRPC-Web with tonic-web's
//! client layer ([`grpc_web`]), and, for what a client library hides (text
//! mode, trailers frames, CORS, forwarded headers), raw HTTP requests with
//! the gRPC-Web wire format written by hand ([`post`], [`frame`],
//! [`frames`], [`decode_text`], [`grpc_status`]).

use std::net::IpAddr;

use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use prost::Message;
use tokio::time::timeout;
use tonic::body::Body;
use tonic_web::{GrpcWebCall, GrpcWebClientLayer, GrpcWebClientService};
use tower::Layer;

use crate::{GatewayStack, STEP};

/// A gRPC-Web client channel (tonic-web's client layer over hyper).
pub type GrpcWeb = GrpcWebClientService<Client<HttpConnector, GrpcWebCall<Body>>>;

/// A gRPC-Web channel over HTTP/1.1, or HTTP/2 with prior knowledge.
pub fn grpc_web(http2: bool) -> GrpcWeb {
    grpc_web_client(None, http2)
}

/// A gRPC-Web channel whose connections come from `source` (any address
/// of 127.0.0.0/8 works on loopback): a client at another address, as
/// the gateway's per-address limits see it.
pub fn grpc_web_from(source: IpAddr, http2: bool) -> GrpcWeb {
    grpc_web_client(Some(source), http2)
}

fn grpc_web_client(source: Option<IpAddr>, http2: bool) -> GrpcWeb {
    // As browsers do, send small requests at once (no Nagle delay).
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_local_address(source);
    let client = Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build(connector);
    GrpcWebClientLayer::new().layer(client)
}

/// A raw HTTP client (HTTP/1.1, or HTTP/2 with prior knowledge) sending
/// request bodies of type `B` (usually `Full<Bytes>`).
pub fn raw_client<B>(http2: bool) -> Client<HttpConnector, B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new())
        .http2_only(http2)
        .build_http()
}

/// One gRPC message frame: flag 0, big-endian length, the message.
pub fn frame(message: &impl Message) -> Vec<u8> {
    let encoded = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(encoded.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(&encoded);
    frame
}

/// Splits a gRPC-Web body into (flag, payload) frames.
pub fn frames(mut body: &[u8]) -> Vec<(u8, Vec<u8>)> {
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
pub fn decode_text(body: &[u8]) -> Vec<u8> {
    body.chunks(4)
        .flat_map(|quantum| STANDARD.decode(quantum).expect("valid base64"))
        .collect()
}

/// The `grpc-status` of a gRPC-Web answer: from a trailers frame, or from
/// the headers of a trailers-only answer.
pub fn grpc_status(headers: &HeaderMap, frames: &[(u8, Vec<u8>)]) -> Option<String> {
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

/// POSTs `body` to the gateway's `path` as a gRPC-Web call
/// (`x-grpc-web: 1`, `content_type`, and the `extra` headers); returns the
/// answer's status, headers and whole body.
pub async fn post(
    stack: &GatewayStack,
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
