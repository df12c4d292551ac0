//! How the harness speaks to the services: one [`Client`] is one connection
//! (or, for HTTP/1.1, one pool) over one [`Via`]: gRPC straight to a
//! service, or through the gateway as gRPC, gRPC-Web over HTTP/1.1 or
//! HTTP/2, or Connect (protobuf or JSON).
//!
//! Every call answers `Result<message, Code>`: the harness never counts an
//! answer as a success unless its status was `OK` *and* its message
//! decoded, whatever the protocol carried the status in (gRPC trailers, a
//! trailers-only header, a gRPC-Web trailer frame, a Connect error body or
//! end-of-stream envelope). gRPC goes through tonic's generic client with
//! the prost codec; the web protocols through hyper, framed by hand, so
//! the harness measures the wire a browser uses. Connect JSON is
//! transcoded with the services' own descriptor set (`prost-reflect`),
//! exactly as the gateway does on the other side.

use std::{net::IpAddr, pin::Pin, sync::OnceLock, time::Duration};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use http::{HeaderValue, Request, StatusCode, Uri, header, uri::PathAndQuery};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client as HttpClient, connect::HttpConnector},
    rt::TokioExecutor,
};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tonic::{
    Code,
    transport::{Channel, Endpoint},
};

/// How calls reach the services.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// gRPC (HTTP/2) straight to the auth-service or the task-service.
    Direct,
    /// gRPC (HTTP/2) to the gateway.
    Grpc,
    /// gRPC-Web (binary) over HTTP/1.1 to the gateway.
    GrpcWebH1,
    /// gRPC-Web (binary) over HTTP/2 (prior knowledge) to the gateway.
    GrpcWebH2,
    /// Connect, protobuf messages, HTTP/1.1, to the gateway.
    ConnectProto,
    /// Connect, JSON messages, HTTP/1.1, to the gateway.
    ConnectJson,
}

impl Via {
    pub const ALL: [Via; 6] = [
        Via::Direct,
        Via::Grpc,
        Via::GrpcWebH1,
        Via::GrpcWebH2,
        Via::ConnectProto,
        Via::ConnectJson,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Via::Direct => "direct",
            Via::Grpc => "gateway-grpc",
            Via::GrpcWebH1 => "gateway-grpc-web-h1",
            Via::GrpcWebH2 => "gateway-grpc-web-h2",
            Via::ConnectProto => "gateway-connect-proto",
            Via::ConnectJson => "gateway-connect-json",
        }
    }
}

/// Where the three processes listen.
#[derive(Debug, Clone)]
pub struct Targets {
    pub auth: Uri,
    pub tasks: Uri,
    pub gateway: Uri,
}

/// One connection (HTTP/2) or one connection pool (HTTP/1.1).
#[derive(Clone)]
pub struct Client {
    inner: Inner,
}

#[derive(Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "a handful per run, made once and cloned per worker"
)]
enum Inner {
    Grpc {
        auth: Channel,
        tasks: Channel,
    },
    Http {
        client: HttpClient<HttpConnector, Full<Bytes>>,
        origin: String,
        wire: Wire,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wire {
    GrpcWeb,
    ConnectProto,
    ConnectJson,
}

/// A stream of server messages, ended by its status (`Err` unless `OK`).
pub type MessageStream<R> = Pin<Box<dyn Stream<Item = Result<R, Code>> + Send>>;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

impl Client {
    /// Opens a connection by `via`, from `local` when given (a loopback
    /// address of its own lets a benchmark play many client addresses).
    pub async fn connect(
        targets: &Targets,
        via: Via,
        local: Option<IpAddr>,
    ) -> anyhow::Result<Self> {
        let inner = match via {
            Via::Direct | Via::Grpc => {
                let channel = |uri: &Uri| {
                    Endpoint::from(uri.clone())
                        .connect_timeout(CONNECT_TIMEOUT)
                        .tcp_nodelay(true)
                        .local_address(local)
                        .initial_connection_window_size(Some(4 << 20))
                        .initial_stream_window_size(Some(1 << 20))
                };
                if via == Via::Direct {
                    Inner::Grpc {
                        auth: channel(&targets.auth).connect().await?,
                        tasks: channel(&targets.tasks).connect().await?,
                    }
                } else {
                    let gateway = channel(&targets.gateway).connect().await?;
                    Inner::Grpc {
                        auth: gateway.clone(),
                        tasks: gateway,
                    }
                }
            }
            Via::GrpcWebH1 | Via::GrpcWebH2 | Via::ConnectProto | Via::ConnectJson => {
                let mut connector = HttpConnector::new();
                connector.set_nodelay(true);
                connector.set_local_address(local);
                connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
                let mut builder = HttpClient::builder(TokioExecutor::new());
                builder.pool_idle_timeout(Duration::from_secs(90));
                if via == Via::GrpcWebH2 {
                    builder
                        .http2_only(true)
                        .http2_initial_connection_window_size(4 << 20)
                        .http2_initial_stream_window_size(1 << 20);
                } else {
                    builder.pool_max_idle_per_host(usize::MAX);
                }
                let wire = match via {
                    Via::ConnectProto => Wire::ConnectProto,
                    Via::ConnectJson => Wire::ConnectJson,
                    _ => Wire::GrpcWeb,
                };
                Inner::Http {
                    client: builder.build(connector),
                    origin: targets.gateway.to_string().trim_end_matches('/').to_owned(),
                    wire,
                }
            }
        };
        Ok(Self { inner })
    }

    /// One unary call of `path` (`/package.Service/Method`).
    pub async fn unary<Q, R>(
        &self,
        path: &'static str,
        request: Q,
        token: Option<&str>,
    ) -> Result<R, Code>
    where
        Q: Message + Send + Sync + 'static,
        R: Message + Default + Send + Sync + 'static,
    {
        match &self.inner {
            Inner::Grpc { auth, tasks } => {
                let channel = if path.starts_with("/auth.") {
                    auth
                } else {
                    tasks
                };
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready().await.map_err(|_| Code::Unavailable)?;
                let codec = tonic_prost::ProstCodec::<Q, R>::default();
                grpc.unary(
                    grpc_request(request, token),
                    PathAndQuery::from_static(path),
                    codec,
                )
                .await
                .map(tonic::Response::into_inner)
                .map_err(|status| status.code())
            }
            Inner::Http {
                client,
                origin,
                wire,
            } => {
                let (content_type, body) = match wire {
                    Wire::GrpcWeb => (
                        "application/grpc-web+proto",
                        envelope(&request.encode_to_vec()),
                    ),
                    Wire::ConnectProto => {
                        ("application/proto", Bytes::from(request.encode_to_vec()))
                    }
                    Wire::ConnectJson => (
                        "application/json",
                        to_json(path, true, &request.encode_to_vec())?,
                    ),
                };
                let response = client
                    .request(http_request(
                        origin,
                        path,
                        content_type,
                        *wire,
                        body,
                        token,
                    )?)
                    .await
                    .map_err(|_| Code::Unavailable)?;
                let (parts, body) = response.into_parts();
                let bytes = body
                    .collect()
                    .await
                    .map_err(|_| Code::Unavailable)?
                    .to_bytes();
                match wire {
                    Wire::GrpcWeb => {
                        if parts.status != StatusCode::OK {
                            return Err(http_code(parts.status));
                        }
                        if let Some(code) = header_status(&parts.headers)
                            && code != Code::Ok
                        {
                            return Err(code);
                        }
                        let mut frames = Frames::default();
                        frames.buffer.extend_from_slice(&bytes);
                        let mut message = None;
                        while let Some(frame) = frames.next_frame() {
                            match frame {
                                Frame::Message(bytes) => message = Some(bytes),
                                Frame::End(Ok(())) => break,
                                Frame::End(Err(code)) => return Err(code),
                            }
                        }
                        R::decode(message.ok_or(Code::Internal)?).map_err(|_| Code::Internal)
                    }
                    Wire::ConnectProto | Wire::ConnectJson => {
                        if parts.status != StatusCode::OK {
                            return Err(
                                connect_error(&bytes).unwrap_or_else(|| http_code(parts.status))
                            );
                        }
                        if *wire == Wire::ConnectJson {
                            R::decode(from_json(path, false, &bytes)?).map_err(|_| Code::Internal)
                        } else {
                            R::decode(bytes).map_err(|_| Code::Internal)
                        }
                    }
                }
            }
        }
    }

    /// A server-streaming call: the stream once the response headers are
    /// in (the server has taken the call), or the status that refused it.
    pub async fn server_stream<Q, R>(
        &self,
        path: &'static str,
        request: Q,
        token: Option<&str>,
    ) -> Result<MessageStream<R>, Code>
    where
        Q: Message + Send + Sync + 'static,
        R: Message + Default + Send + Sync + 'static,
    {
        match &self.inner {
            Inner::Grpc { auth, tasks } => {
                let channel = if path.starts_with("/auth.") {
                    auth
                } else {
                    tasks
                };
                let mut grpc = tonic::client::Grpc::new(channel.clone());
                grpc.ready().await.map_err(|_| Code::Unavailable)?;
                let codec = tonic_prost::ProstCodec::<Q, R>::default();
                let stream = grpc
                    .server_streaming(
                        grpc_request(request, token),
                        PathAndQuery::from_static(path),
                        codec,
                    )
                    .await
                    .map_err(|status| status.code())?
                    .into_inner();
                Ok(Box::pin(
                    stream.map(|item| item.map_err(|status| status.code())),
                ))
            }
            Inner::Http {
                client,
                origin,
                wire,
            } => {
                let (content_type, body) = match wire {
                    Wire::GrpcWeb => (
                        "application/grpc-web+proto",
                        envelope(&request.encode_to_vec()),
                    ),
                    Wire::ConnectProto => (
                        "application/connect+proto",
                        envelope(&request.encode_to_vec()),
                    ),
                    Wire::ConnectJson => (
                        "application/connect+json",
                        envelope(&to_json(path, true, &request.encode_to_vec())?),
                    ),
                };
                let response = client
                    .request(http_request(
                        origin,
                        path,
                        content_type,
                        *wire,
                        body,
                        token,
                    )?)
                    .await
                    .map_err(|_| Code::Unavailable)?;
                let (parts, body) = response.into_parts();
                if parts.status != StatusCode::OK {
                    let bytes = body
                        .collect()
                        .await
                        .map(http_body_util::Collected::to_bytes)
                        .unwrap_or_default();
                    return Err(connect_error(&bytes).unwrap_or_else(|| http_code(parts.status)));
                }
                if let Some(code) = header_status(&parts.headers) {
                    // Trailers-only: the call ended before any message.
                    return Err(if code == Code::Ok {
                        Code::Internal
                    } else {
                        code
                    });
                }
                let json = *wire == Wire::ConnectJson;
                let state = (body, Frames::default(), false);
                Ok(Box::pin(futures::stream::unfold(
                    state,
                    move |(mut body, mut frames, done)| async move {
                        if done {
                            return None;
                        }
                        loop {
                            if let Some(frame) = frames.next_frame() {
                                return match frame {
                                    Frame::Message(bytes) => {
                                        let decoded = if json {
                                            from_json(path, false, &bytes).and_then(|b| {
                                                R::decode(b).map_err(|_| Code::Internal)
                                            })
                                        } else {
                                            R::decode(bytes).map_err(|_| Code::Internal)
                                        };
                                        Some((decoded, (body, frames, false)))
                                    }
                                    Frame::End(Ok(())) => None,
                                    Frame::End(Err(code)) => {
                                        Some((Err(code), (body, frames, true)))
                                    }
                                };
                            }
                            match next_data(&mut body).await {
                                Some(Ok(data)) => frames.buffer.extend_from_slice(&data),
                                Some(Err(code)) => return Some((Err(code), (body, frames, true))),
                                // The body ended without a status.
                                None => return Some((Err(Code::Internal), (body, frames, true))),
                            }
                        }
                    },
                )))
            }
        }
    }
}

fn bearer(token: &str) -> HeaderValue {
    HeaderValue::try_from(format!("Bearer {token}")).expect("a token is printable ASCII")
}

fn grpc_request<Q>(request: Q, token: Option<&str>) -> tonic::Request<Q> {
    let mut request = tonic::Request::new(request);
    if let Some(token) = token {
        let value = tonic::metadata::MetadataValue::try_from(format!("Bearer {token}"))
            .expect("a token is printable ASCII");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn http_request(
    origin: &str,
    path: &str,
    content_type: &'static str,
    wire: Wire,
    body: Bytes,
    token: Option<&str>,
) -> Result<Request<Full<Bytes>>, Code> {
    let uri: Uri = format!("{origin}{path}")
        .parse()
        .map_err(|_| Code::InvalidArgument)?;
    let mut builder = Request::post(uri).header(header::CONTENT_TYPE, content_type);
    builder = match wire {
        Wire::GrpcWeb => builder.header("x-grpc-web", "1"),
        Wire::ConnectProto | Wire::ConnectJson => builder.header("connect-protocol-version", "1"),
    };
    if let Some(token) = token {
        builder = builder.header(header::AUTHORIZATION, bearer(token));
    }
    builder
        .body(Full::new(body))
        .map_err(|_| Code::InvalidArgument)
}

/// One message in the five-byte envelope gRPC, gRPC-Web and Connect share.
fn envelope(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).expect("requests are small"));
    framed.put_slice(message);
    framed.freeze()
}

/// The next data chunk of `body` (trailer frames, which HTTP/2 gRPC-Web
/// does not use, are skipped).
async fn next_data(body: &mut Incoming) -> Option<Result<Bytes, Code>> {
    loop {
        match body.frame().await? {
            Ok(frame) => match frame.into_data() {
                Ok(data) => return Some(Ok(data)),
                Err(_) => continue,
            },
            Err(_) => return Some(Err(Code::Unavailable)),
        }
    }
}

enum Frame {
    Message(Bytes),
    End(Result<(), Code>),
}

/// Envelopes parsed out of a growing buffer.
#[derive(Default)]
struct Frames {
    buffer: BytesMut,
}

impl Frames {
    fn next_frame(&mut self) -> Option<Frame> {
        if self.buffer.len() < 5 {
            return None;
        }
        let flags = self.buffer[0];
        let length = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if self.buffer.len() < 5 + length {
            return None;
        }
        self.buffer.advance(5);
        let payload = self.buffer.split_to(length).freeze();
        Some(if flags & 0x80 != 0 {
            // gRPC-Web trailers: `name: value\r\n` lines.
            Frame::End(trailer_status(&payload))
        } else if flags & 0x02 != 0 {
            // Connect end of stream: `{"error": {...}}` or `{}`.
            Frame::End(match connect_end_of_stream(&payload) {
                Some(code) => Err(code),
                None => Ok(()),
            })
        } else if flags & 0x01 != 0 {
            // Compressed: the harness never asks for it.
            Frame::End(Err(Code::Internal))
        } else {
            Frame::Message(payload)
        })
    }
}

fn trailer_status(block: &[u8]) -> Result<(), Code> {
    let text = String::from_utf8_lossy(block);
    for line in text.split("\r\n") {
        if let Some((name, value)) = line.split_once(':')
            && name.trim().eq_ignore_ascii_case("grpc-status")
        {
            let code = Code::from(value.trim().parse::<i32>().unwrap_or(2));
            return if code == Code::Ok { Ok(()) } else { Err(code) };
        }
    }
    Err(Code::Internal)
}

fn header_status(headers: &http::HeaderMap) -> Option<Code> {
    let value = headers.get("grpc-status")?.to_str().ok()?;
    Some(Code::from(value.trim().parse::<i32>().unwrap_or(2)))
}

/// The code of a Connect error body `{"code": "not_found", ...}`.
fn connect_error(body: &[u8]) -> Option<Code> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(code_named(value.get("code")?.as_str()?))
}

fn connect_end_of_stream(body: &[u8]) -> Option<Code> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let error = value.get("error")?;
    Some(
        error
            .get("code")
            .and_then(|c| c.as_str())
            .map_or(Code::Unknown, code_named),
    )
}

pub fn code_named(name: &str) -> Code {
    match name {
        "canceled" => Code::Cancelled,
        "invalid_argument" => Code::InvalidArgument,
        "deadline_exceeded" => Code::DeadlineExceeded,
        "not_found" => Code::NotFound,
        "already_exists" => Code::AlreadyExists,
        "permission_denied" => Code::PermissionDenied,
        "resource_exhausted" => Code::ResourceExhausted,
        "failed_precondition" => Code::FailedPrecondition,
        "aborted" => Code::Aborted,
        "out_of_range" => Code::OutOfRange,
        "unimplemented" => Code::Unimplemented,
        "internal" => Code::Internal,
        "unavailable" => Code::Unavailable,
        "data_loss" => Code::DataLoss,
        "unauthenticated" => Code::Unauthenticated,
        _ => Code::Unknown,
    }
}

/// The gRPC code of an HTTP status without one (the gRPC HTTP mapping).
fn http_code(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool = DescriptorPool::new();
        for set in [
            todo_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ] {
            pool.decode_file_descriptor_set(set)
                .expect("the services' descriptor sets decode");
        }
        pool
    })
}

fn message_of(path: &str, input: bool) -> Result<MessageDescriptor, Code> {
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .ok_or(Code::Unimplemented)?;
    let method = pool()
        .get_service_by_name(service)
        .and_then(|service| service.methods().find(|m| m.name() == method))
        .ok_or(Code::Unimplemented)?;
    Ok(if input {
        method.input()
    } else {
        method.output()
    })
}

/// Protobuf bytes of `path`'s request (or response) as proto3 JSON.
fn to_json(path: &str, input: bool, bytes: &[u8]) -> Result<Bytes, Code> {
    let message =
        DynamicMessage::decode(message_of(path, input)?, bytes).map_err(|_| Code::Internal)?;
    serde_json::to_vec(&message)
        .map(Bytes::from)
        .map_err(|_| Code::Internal)
}

/// proto3 JSON of `path`'s response (or request) as protobuf bytes.
fn from_json(path: &str, input: bool, json: &[u8]) -> Result<Bytes, Code> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let message = DynamicMessage::deserialize(message_of(path, input)?, &mut deserializer)
        .map_err(|_| Code::Internal)?;
    Ok(Bytes::from(message.encode_to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_messages_and_trailers() {
        let mut frames = Frames::default();
        frames.buffer.extend_from_slice(&envelope(b"abc"));
        let trailers = b"grpc-status:5\r\ngrpc-message:x\r\n";
        frames
            .buffer
            .extend_from_slice(&[0x80, 0, 0, 0, u8::try_from(trailers.len()).unwrap()]);
        frames.buffer.extend_from_slice(trailers);
        assert!(matches!(frames.next_frame(), Some(Frame::Message(m)) if &m[..] == b"abc"));
        assert!(matches!(
            frames.next_frame(),
            Some(Frame::End(Err(Code::NotFound)))
        ));
    }

    #[test]
    fn json_round_trips_through_the_descriptor_set() {
        let request = todo_proto::tasks::v1::GetTaskRequest { id: "x".into() };
        let json = to_json(
            "/tasks.v1.TaskService/GetTask",
            true,
            &request.encode_to_vec(),
        )
        .unwrap();
        assert_eq!(&json[..], br#"{"id":"x"}"#);
        let back = from_json("/tasks.v1.TaskService/GetTask", true, &json).unwrap();
        assert_eq!(
            todo_proto::tasks::v1::GetTaskRequest::decode(back).unwrap(),
            request
        );
    }
}
