//! gRPC-Web, text mode above all, through the gateway's real stack: the
//! whole `gateway::stack::Gateway`, built once with the default config,
//! answers `POST`s with fuzzed bodies in a current-thread runtime.
//!
//! The base64 decoding and the framing are tonic-web's; what this checks is
//! that the gateway's stack as assembled (CORS, entry, gRPC-Web layer,
//! tracing, metrics, router, health and reflection) answers every body,
//! however it is cut into HTTP frames, and answers it the way the router
//! promises gRPC-Web callers: an `application/grpc-web*` answer is a
//! complete sequence of gRPC-Web frames (base64 in text mode) ending with a
//! trailers frame that holds `grpc-status`, and its body never fails.
//!
//! Only paths the gateway answers itself are called (health `Check`,
//! reflection, an unknown method): an upstream call would wait on a
//! connection to nowhere. Health `Watch` is left out because it never
//! ends. The body is given three ways: raw chunks (mostly not base64 at
//! all), gRPC frames base64-encoded as one text and cut at arbitrary
//! places, and frames each encoded with its own padding, as some clients
//! send them.

#![no_main]

use std::{
    convert::Infallible,
    net::{Ipv4Addr, SocketAddr},
};

use arbitrary::Arbitrary;
use base64::{Engine, engine::general_purpose::STANDARD};
use bytes::{BufMut, Bytes, BytesMut};
use gateway::{router::PeerAddr, stack::Gateway};
use http::{HeaderValue, Method, Request, Version, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use libfuzzer_sys::fuzz_target;
use tokio::runtime::Runtime;
use tonic::body::Body;
use tower::ServiceExt;

const PATHS: [&str; 4] = [
    "/grpc.health.v1.Health/Check",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.health.v1.Health/NoSuchMethod",
    "/no.such.Service/Method",
];

/// The text content types first and most often; then the binary ones and
/// spellings the gateway's protocol detection accepts but tonic-web does
/// not recognise.
const CONTENT_TYPES: [&str; 8] = [
    "application/grpc-web-text",
    "application/grpc-web-text+proto",
    "application/grpc-web-text",
    "application/grpc-web-text+proto",
    "application/grpc-web",
    "application/grpc-web+proto",
    "application/grpc-web-text; charset=utf-8",
    "Application/GRPC-Web-Text",
];

/// Most HTTP frames one body is cut into.
const MAX_FRAMES: usize = 64;

/// The gateway and the runtime it runs on, built once per process.
struct Stack {
    runtime: Runtime,
    gateway: Gateway,
}

thread_local! {
    static STACK: Stack = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds");
        let gateway = {
            let _entered = runtime.enter();
            Gateway::build(&gateway::Config::default()).expect("the default config is valid")
        };
        Stack { runtime, gateway }
    };
}

#[derive(Arbitrary, Debug)]
struct Input {
    path: u8,
    content_type: u8,
    accept_text: bool,
    http2: bool,
    payload: Payload,
}

#[derive(Arbitrary, Debug)]
enum Payload {
    /// Chunks sent as they are.
    Raw(Vec<Vec<u8>>),
    /// gRPC frames, base64 as one text, cut after each `splits` length.
    Encoded {
        frames: Vec<(u8, Vec<u8>)>,
        splits: Vec<u8>,
    },
    /// gRPC frames, each base64-encoded with its own padding, one HTTP
    /// frame each.
    EncodedEach(Vec<(u8, Vec<u8>)>),
}

impl Payload {
    fn chunks(&self) -> Vec<Bytes> {
        let chunks = match self {
            Self::Raw(chunks) => chunks.iter().map(|chunk| Bytes::copy_from_slice(chunk)).collect(),
            Self::Encoded { frames, splits } => {
                let text = Bytes::from(STANDARD.encode(framed(frames)));
                cut(text, splits)
            }
            Self::EncodedEach(frames) => frames
                .iter()
                .map(|frame| Bytes::from(STANDARD.encode(framed(std::slice::from_ref(frame)))))
                .collect(),
        };
        let mut chunks: Vec<Bytes> = chunks;
        chunks.truncate(MAX_FRAMES);
        chunks
    }
}

/// gRPC's five-byte envelope around each message.
fn framed(frames: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut bytes = BytesMut::new();
    for (flags, message) in frames {
        bytes.put_u8(*flags);
        bytes.put_u32(message.len() as u32);
        bytes.put_slice(message);
    }
    bytes.to_vec()
}

/// `text` cut into pieces of the given lengths (each at least one byte),
/// the rest as the last piece.
fn cut(mut text: Bytes, splits: &[u8]) -> Vec<Bytes> {
    let mut pieces = Vec::new();
    for &length in splits {
        if text.is_empty() {
            break;
        }
        let length = (usize::from(length) + 1).min(text.len());
        pieces.push(text.split_to(length));
    }
    if !text.is_empty() {
        pieces.push(text);
    }
    pieces
}

fuzz_target!(|input: Input| {
    let content_type = CONTENT_TYPES[usize::from(input.content_type) % CONTENT_TYPES.len()];
    let path = PATHS[usize::from(input.path) % PATHS.len()];
    let chunks = input.payload.chunks();
    let body = StreamBody::new(tokio_stream::iter(
        chunks
            .into_iter()
            .map(|chunk| Ok::<_, Infallible>(Frame::data(chunk))),
    ));
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .version(if input.http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        })
        .header(header::CONTENT_TYPE, content_type)
        .header("x-grpc-web", "1")
        .body(Body::new(body))
        .expect("a request of valid parts");
    if input.accept_text {
        request.headers_mut().insert(
            header::ACCEPT,
            HeaderValue::from_static("application/grpc-web-text"),
        );
    }
    request
        .extensions_mut()
        .insert(PeerAddr(SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000))));

    STACK.with(|stack| {
        let service = stack.gateway.service.clone();
        let (parts, body) = stack.runtime.block_on(async move {
            let response = match service.oneshot(request).await {
                Ok(response) => response,
                Err(infallible) => match infallible {},
            };
            let (parts, body) = response.into_parts();
            (parts, body.collect().await)
        });
        let answer_type = parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default();
        if !answer_type.starts_with("application/grpc-web") {
            return;
        }
        let body = match body {
            Ok(collected) => collected.to_bytes(),
            Err(status) => panic!("a gRPC-Web answer's body failed: {status:?} ({parts:?})"),
        };
        let bytes = if answer_type.starts_with("application/grpc-web-text") {
            decode_text(&body)
        } else {
            body.to_vec()
        };
        check_frames(&bytes, &parts);
    });
});

/// The bytes of a text-mode body, which tonic-web writes as one padded
/// base64 text per HTTP frame: every four characters decode alone.
fn decode_text(body: &[u8]) -> Vec<u8> {
    assert_eq!(body.len() % 4, 0, "text-mode answer: {body:?}");
    body.chunks(4)
        .flat_map(|group| {
            STANDARD
                .decode(group)
                .unwrap_or_else(|error| panic!("text-mode answer is not base64 ({error}): {body:?}"))
        })
        .collect()
}

/// gRPC-Web frames, the last and only the last a trailers frame (flag
/// 0x80) with `grpc-status`.
fn check_frames(mut bytes: &[u8], parts: &http::response::Parts) {
    let mut trailers = None;
    while !bytes.is_empty() {
        assert!(trailers.is_none(), "a frame after the trailers: {parts:?}");
        assert!(bytes.len() >= 5, "a truncated frame header: {bytes:?}");
        let length = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]) as usize;
        assert!(bytes.len() >= 5 + length, "a truncated frame: {bytes:?}");
        if bytes[0] & 0x80 != 0 {
            trailers = Some(String::from_utf8_lossy(&bytes[5..5 + length]).into_owned());
        }
        bytes = &bytes[5 + length..];
    }
    let trailers = trailers.unwrap_or_else(|| panic!("no trailers frame: {parts:?}"));
    assert!(
        trailers
            .lines()
            .any(|line| line.to_ascii_lowercase().starts_with("grpc-status:")),
        "no grpc-status in the trailers: {trailers:?}"
    );
}
