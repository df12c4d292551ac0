//! The Connect protocol (<https://connectrpc.com/docs/protocol>), spoken to
//! clients and translated to gRPC for the services, so `curl` with JSON,
//! connect-web's and connect-go's default transport, and `buf curl
//! --protocol connect` all work, over HTTP/1.1 and HTTP/2.
//!
//! Still no per-RPC code: a call is recognised by its content type, and a
//! JSON message is translated to and from protobuf with the services' own
//! descriptor set (`prost-reflect`), following the proto3 JSON mapping.
//!
//! - **Unary** (`application/proto`, `application/json`): the body is one
//!   bare message. It goes upstream as a gRPC call of one message; the
//!   answer comes back as a bare message (HTTP 200) or as a Connect error:
//!   an HTTP status from the code, and a JSON body `{"code", "message",
//!   "details"}` with the `google.rpc` details (`BadRequest`, `RetryInfo`,
//!   ...) as base64 protobuf. Trailing metadata becomes `trailer-`
//!   headers. `connect-timeout-ms` becomes `grpc-timeout`.
//! - **Server streaming** (`application/connect+proto`, `+json`): the
//!   request is one enveloped message, the response a stream of enveloped
//!   messages, always HTTP 200, ended by an end-of-stream envelope holding
//!   the error (if any) and the trailing metadata as JSON. The envelope of
//!   Connect and of gRPC is the same five bytes, so protobuf messages pass
//!   through untouched; JSON ones are translated one by one. The response
//!   headers go out as soon as the upstream's do, so a `WatchTasks` client
//!   knows at once that its stream is open.
//!
//! - **Client and bidirectional streaming** (the same content types, and
//!   any protobuf stream to a method the gateway has no descriptor of, such
//!   as server reflection, which `buf curl --protocol connect` uses): the
//!   request's envelopes are passed on as they arrive, each checked against
//!   `--max-body-bytes`, inflated and translated from JSON one by one
//!   ([`RequestStream`]), so a client that waits for an answer before it
//!   sends its next message is answered.
//!
//! Otherwise a request body is read whole (at most `--max-body-bytes`,
//! inflated if gzip) before it is translated; a unary answer is read whole too (at most
//! [`MAX_UNARY_RESPONSE_BYTES`]). Errors the gateway finds itself (bad
//! JSON, a message too large) quote nothing of the client's input past a
//! short prefix.

use std::{collections::HashMap, convert::Infallible, io::Read, pin::Pin, task::Poll};

use base64::{Engine, engine::general_purpose::STANDARD_NO_PAD};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Frame;
use http_body_util::BodyExt;
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use serde_json::json;
use tonic::{Code, Status, body::Body};
use tower::{ServiceExt, util::BoxCloneService};

/// Largest unary answer the gateway reads to translate: a full ListTasks
/// page (500 tasks of 4,000 characters) is far below.
pub const MAX_UNARY_RESPONSE_BYTES: usize = 32 * 1024 * 1024;

/// The flag of an end-of-stream envelope.
const END_STREAM: u8 = 0x02;
/// The flag of a compressed message.
const COMPRESSED: u8 = 0x01;

/// What a Connect message is encoded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Proto,
    Json,
}

/// The two kinds of Connect call the gateway speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Unary,
    Stream,
}

/// How the gateway must treat a request, by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// gRPC or gRPC-Web: handled as before.
    Grpc,
    Connect(Kind, Codec),
    /// A POST in a content type the gateway does not speak: 415.
    Unsupported,
}

/// The content types of every protocol spoken, for `Accept-Post`.
pub const ACCEPTED: &str = "application/grpc, application/grpc+proto, application/grpc-web, \
     application/grpc-web+proto, application/grpc-web-text, application/grpc-web-text+proto, \
     application/proto, application/json, application/connect+proto, application/connect+json";

/// The protocol of a request, from its `content-type`.
pub fn protocol(headers: &HeaderMap) -> Protocol {
    let Some(content_type) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
    else {
        return Protocol::Unsupported;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/grpc"
        | "application/grpc+proto"
        | "application/grpc-web"
        | "application/grpc-web+proto"
        | "application/grpc-web-text"
        | "application/grpc-web-text+proto" => Protocol::Grpc,
        "application/proto" => Protocol::Connect(Kind::Unary, Codec::Proto),
        "application/json" => Protocol::Connect(Kind::Unary, Codec::Json),
        "application/connect+proto" => Protocol::Connect(Kind::Stream, Codec::Proto),
        "application/connect+json" => Protocol::Connect(Kind::Stream, Codec::Json),
        _ => Protocol::Unsupported,
    }
}

/// The `415 Unsupported Media Type` answer; nothing reaches a service.
pub fn unsupported_media_type() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    response
        .headers_mut()
        .insert("accept-post", HeaderValue::from_static(ACCEPTED));
    response
}

/// The methods of the public APIs, by path, and the request limit.
pub struct Connect {
    methods: HashMap<String, MethodDescriptor>,
    max_request_bytes: usize,
}

/// The gRPC stack a translated call is handed to.
pub type Grpc = BoxCloneService<Request<Body>, Response<Body>, Infallible>;

impl Connect {
    /// Every method of `services`, described in `descriptor_sets`.
    pub fn new(descriptor_sets: &[&[u8]], services: &[&str], max_request_bytes: usize) -> Self {
        let mut pool = DescriptorPool::new();
        for set in descriptor_sets {
            pool.decode_file_descriptor_set(*set)
                .expect("the compiled-in descriptor sets are valid");
        }
        let methods = services
            .iter()
            .filter_map(|name| pool.get_service_by_name(name))
            .flat_map(|service| service.methods().collect::<Vec<_>>())
            .map(|method| {
                let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
                (path, method)
            })
            .collect();
        Self {
            methods,
            max_request_bytes,
        }
    }

    /// Answers one Connect call through `grpc`. Never fails: every failure
    /// is a Connect error.
    pub async fn call(
        &self,
        request: Request<Body>,
        kind: Kind,
        codec: Codec,
        grpc: Grpc,
    ) -> Response<Body> {
        let error = |status: Status| match kind {
            Kind::Unary => unary_error(&status, &HeaderMap::new(), &HeaderMap::new()),
            Kind::Stream => stream_error(&status, codec),
        };
        if request.method() != Method::POST {
            let mut response = error(Status::unimplemented("Connect calls are POSTs"));
            *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            return response;
        }
        let method = self.methods.get(request.uri().path()).cloned();
        if let Some(method) = &method
            && (method.is_server_streaming() || method.is_client_streaming())
                != (kind == Kind::Stream)
        {
            return unsupported_media_type();
        }
        let method = match (method, codec) {
            (Some(method), _) => Some(method),
            // A protobuf body needs no descriptor; the router answers an
            // unknown method as a gRPC server would.
            (None, Codec::Proto) => None,
            (None, Codec::Json) => {
                return error(Status::unimplemented("unknown service or method"));
            }
        };
        let (parts, body) = request.into_parts();
        let streams_requests = kind == Kind::Stream
            && method
                .as_ref()
                .is_none_or(MethodDescriptor::is_client_streaming);
        let messages = if streams_requests {
            let input = method.as_ref().map(MethodDescriptor::input);
            Body::new(RequestStream::new(
                body,
                codec,
                input,
                self.max_request_bytes,
            ))
        } else {
            match self
                .request_message(&parts.headers, body, kind, codec, method.as_ref())
                .await
            {
                Ok(message) => Body::new(http_body_util::Full::new(envelope(0, &message))),
                Err(status) => return error(status),
            }
        };
        let upstream = grpc_request(parts, messages);
        let output = method.as_ref().map(MethodDescriptor::output);
        let response = match grpc.oneshot(upstream).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        match kind {
            Kind::Unary => unary_response(response, codec, output).await,
            Kind::Stream => stream_response(response, codec, output),
        }
    }

    /// The request's one message, as protobuf bytes.
    async fn request_message(
        &self,
        headers: &HeaderMap,
        body: Body,
        kind: Kind,
        codec: Codec,
        method: Option<&MethodDescriptor>,
    ) -> Result<Bytes, Status> {
        let too_large = || Status::resource_exhausted("request message too large for the gateway");
        let body = http_body_util::Limited::new(body, self.max_request_bytes)
            .collect()
            .await
            .map_err(|_| too_large())?
            .to_bytes();
        let (compressed, payload) = match kind {
            Kind::Unary => {
                let gzip = headers
                    .get(header::CONTENT_ENCODING)
                    .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"gzip"));
                (gzip, body)
            }
            Kind::Stream => {
                let mut body = body;
                let (flags, message) = take_envelope(&mut body).ok_or_else(|| {
                    Status::invalid_argument("the request holds no enveloped message")
                })?;
                if !body.is_empty() {
                    return Err(Status::invalid_argument(
                        "a server-streaming call takes one message",
                    ));
                }
                (flags & COMPRESSED != 0, message)
            }
        };
        let payload = if compressed {
            inflate(&payload, self.max_request_bytes)?
        } else {
            payload
        };
        match (codec, method) {
            (Codec::Proto, _) => Ok(payload),
            (Codec::Json, Some(method)) => json_to_proto(&payload, method.input()),
            (Codec::Json, None) => Err(Status::unimplemented("unknown service or method")),
        }
    }
}

/// The five-byte envelope of gRPC and Connect around `message`.
fn envelope(flags: u8, message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(5 + message.len());
    framed.put_u8(flags);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// Splits the first complete envelope off `buffer`: its flags and message.
/// `None` (with `buffer` untouched) while the envelope is incomplete. Public
/// for the fuzz targets, which feed it arbitrary client bytes.
pub fn take_envelope(buffer: &mut Bytes) -> Option<(u8, Bytes)> {
    let (flags, length) = envelope_header(buffer)?;
    if buffer.len() < 5 + length {
        return None;
    }
    buffer.advance(5);
    Some((flags, buffer.split_to(length)))
}

/// The flags and declared message length of the envelope `buffer` starts
/// with, once its five-byte header is there.
fn envelope_header(buffer: &[u8]) -> Option<(u8, usize)> {
    let header: [u8; 5] = buffer.get(..5)?.try_into().ok()?;
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    Some((header[0], length))
}

fn inflate(compressed: &[u8], limit: usize) -> Result<Bytes, Status> {
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(compressed)
        .take(limit as u64 + 1)
        .read_to_end(&mut inflated)
        .map_err(|_| Status::invalid_argument("the request body is not valid gzip"))?;
    if inflated.len() > limit {
        return Err(Status::resource_exhausted(
            "request message too large for the gateway",
        ));
    }
    Ok(inflated.into())
}

/// A client's JSON message (proto3 JSON mapping) as protobuf bytes of
/// `descriptor`, or `INVALID_ARGUMENT` quoting a short prefix of the
/// parser's complaint. Public for the fuzz targets.
pub fn json_to_proto(json: &[u8], descriptor: MessageDescriptor) -> Result<Bytes, Status> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let message = DynamicMessage::deserialize(descriptor.clone(), &mut deserializer)
        .and_then(|message| deserializer.end().map(|()| message))
        .map_err(|error| {
            Status::invalid_argument(format!(
                "the body is not a {} in JSON: {}",
                descriptor.full_name(),
                serving::status::quote(&error.to_string())
            ))
        })?;
    Ok(message.encode_to_vec().into())
}

/// An upstream's protobuf message of `descriptor` as JSON (proto3 JSON
/// mapping), or `INTERNAL` when the bytes are not such a message. Public
/// for the fuzz targets.
pub fn proto_to_json(message: &[u8], descriptor: MessageDescriptor) -> Result<Bytes, Status> {
    let message = DynamicMessage::decode(descriptor, message)
        .map_err(|error| serving::status::internal(&error))?;
    serde_json::to_vec(&message)
        .map(Bytes::from)
        .map_err(|error| serving::status::internal(&error))
}

/// Headers that belong to the Connect hop, not to the call's metadata.
const CONNECT_HEADERS: [&str; 6] = [
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-content-encoding",
    "connect-accept-encoding",
    "content-encoding",
    "accept-encoding",
];

/// The gRPC call carrying `messages` (enveloped), with the client's
/// metadata.
fn grpc_request(mut parts: http::request::Parts, messages: Body) -> Request<Body> {
    let timeout = parts
        .headers
        .get("connect-timeout-ms")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    for name in CONNECT_HEADERS {
        parts.headers.remove(name);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if let Some(millis) = timeout {
        // gRPC allows at most eight digits per unit.
        let value = if millis < 100_000_000 {
            format!("{millis}m")
        } else {
            format!("{}S", (millis / 1000).min(99_999_999))
        };
        if let Ok(value) = HeaderValue::try_from(value) {
            parts.headers.insert("grpc-timeout", value);
        }
    }
    parts.method = Method::POST;
    // A gRPC call, whatever version the client spoke (the gRPC-Web layer
    // turns away HTTP/1.1 that is not gRPC-Web).
    parts.version = http::Version::HTTP_2;
    Request::from_parts(parts, messages)
}

/// The status of a gRPC answer: in the trailers, or in the headers of a
/// trailers-only answer; a missing one is an upstream fault.
fn status_of(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> Status {
    trailers
        .and_then(Status::from_header_map)
        .or_else(|| Status::from_header_map(headers))
        .unwrap_or_else(|| Status::internal("the upstream answer had no status"))
}

/// Whether `name` is gRPC's own, not the call's metadata.
fn is_grpc_header(name: &HeaderName) -> bool {
    let name = name.as_str();
    name.starts_with("grpc-")
        || matches!(
            name,
            "content-type" | "content-length" | "te" | "trailer" | "transfer-encoding"
        )
}

/// Copies metadata: every header of `from` but gRPC's own, each name
/// prefixed with `prefix`.
fn copy_metadata(from: &HeaderMap, to: &mut HeaderMap, prefix: &str) {
    for (name, value) in from {
        if is_grpc_header(name) {
            continue;
        }
        if let Ok(name) = HeaderName::try_from(format!("{prefix}{name}")) {
            to.append(name, value.clone());
        }
    }
}

async fn unary_response(
    response: Response<Body>,
    codec: Codec,
    output: Option<MessageDescriptor>,
) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let collected = match http_body_util::Limited::new(body, MAX_UNARY_RESPONSE_BYTES)
        .collect()
        .await
    {
        Ok(collected) => collected,
        Err(error) => {
            let status = Status::from_error(error);
            return unary_error(&status, &parts.headers, &HeaderMap::new());
        }
    };
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let status = status_of(&parts.headers, Some(&trailers));
    if status.code() != Code::Ok {
        return unary_error(&status, &parts.headers, &trailers);
    }
    let mut body = collected.to_bytes();
    let Some((flags, message)) = take_envelope(&mut body) else {
        let status = Status::internal("the upstream answer held no message");
        return unary_error(&status, &parts.headers, &trailers);
    };
    if flags & COMPRESSED != 0 {
        let status = Status::internal("the upstream answered compressed unasked");
        return unary_error(&status, &parts.headers, &trailers);
    }
    let (content_type, message) = match (codec, output) {
        (Codec::Proto, _) => ("application/proto", message),
        (Codec::Json, Some(output)) => match proto_to_json(&message, output) {
            Ok(json) => ("application/json", json),
            Err(status) => return unary_error(&status, &parts.headers, &trailers),
        },
        (Codec::Json, None) => {
            let status = Status::unimplemented("unknown service or method");
            return unary_error(&status, &parts.headers, &trailers);
        }
    };
    let mut response = Response::new(Body::new(http_body_util::Full::new(message)));
    copy_metadata(&parts.headers, response.headers_mut(), "");
    copy_metadata(&trailers, response.headers_mut(), "trailer-");
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Connect's name of a code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status of a unary Connect error.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Cancelled => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
            StatusCode::BAD_REQUEST
        }
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::Ok | Code::Unknown | Code::Internal | Code::DataLoss => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// The JSON of a Connect error: code, message, and the `google.rpc`
/// details as base64 protobuf.
fn error_json(status: &Status) -> serde_json::Value {
    let details: Vec<_> = tonic_types::pb::Status::decode(status.details())
        .map(|decoded| decoded.details)
        .unwrap_or_default()
        .into_iter()
        .map(|any| {
            json!({
                "type": any.type_url.rsplit('/').next().unwrap_or_default(),
                "value": STANDARD_NO_PAD.encode(&any.value),
            })
        })
        .collect();
    let mut error = json!({ "code": code_name(status.code()) });
    if !status.message().is_empty() {
        error["message"] = json!(status.message());
    }
    if !details.is_empty() {
        error["details"] = json!(details);
    }
    error
}

fn unary_error(status: &Status, headers: &HeaderMap, trailers: &HeaderMap) -> Response<Body> {
    let body = serde_json::to_vec(&error_json(status)).unwrap_or_default();
    let mut response = Response::new(Body::new(http_body_util::Full::new(Bytes::from(body))));
    *response.status_mut() = http_status(status.code());
    copy_metadata(headers, response.headers_mut(), "");
    copy_metadata(trailers, response.headers_mut(), "trailer-");
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn stream_content_type(codec: Codec) -> HeaderValue {
    HeaderValue::from_static(match codec {
        Codec::Proto => "application/connect+proto",
        Codec::Json => "application/connect+json",
    })
}

/// The end-of-stream envelope: the error, if any, and the trailers.
fn end_of_stream(status: &Status, trailers: &HeaderMap) -> Bytes {
    let mut end = json!({});
    if status.code() != Code::Ok {
        end["error"] = error_json(status);
    }
    let mut metadata = serde_json::Map::new();
    for (name, value) in trailers {
        if is_grpc_header(name) {
            continue;
        }
        let values = metadata
            .entry(name.as_str().to_owned())
            .or_insert_with(|| json!([]));
        if let (Some(values), Ok(value)) = (values.as_array_mut(), value.to_str()) {
            values.push(json!(value));
        }
    }
    if !metadata.is_empty() {
        end["metadata"] = serde_json::Value::Object(metadata);
    }
    envelope(END_STREAM, &serde_json::to_vec(&end).unwrap_or_default())
}

/// A stream that failed before it began: HTTP 200 and one end-of-stream.
fn stream_error(status: &Status, codec: Codec) -> Response<Body> {
    let mut response = Response::new(Body::new(http_body_util::Full::new(end_of_stream(
        status,
        &HeaderMap::new(),
    ))));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, stream_content_type(codec));
    response
}

fn stream_response(
    response: Response<Body>,
    codec: Codec,
    output: Option<MessageDescriptor>,
) -> Response<Body> {
    let (parts, body) = response.into_parts();
    let mut headers = HeaderMap::new();
    copy_metadata(&parts.headers, &mut headers, "");
    // A trailers-only answer: the call failed before its stream began.
    let trailers_only = parts.headers.contains_key("grpc-status");
    let body = if trailers_only {
        let status = status_of(&parts.headers, None);
        Body::new(http_body_util::Full::new(end_of_stream(
            &status,
            &HeaderMap::new(),
        )))
    } else {
        Body::new(Translated {
            upstream: body,
            headers: parts.headers,
            buffer: Bytes::new(),
            codec,
            output,
            done: false,
        })
    };
    let mut response = Response::new(body);
    *response.headers_mut() = headers;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, stream_content_type(codec));
    response
}

/// A client's Connect request stream as a gRPC one, message by message as
/// they arrive: each envelope checked against the size limit, inflated if
/// compressed, translated from JSON when the codec is JSON, and sent on
/// uncompressed. A malformed stream ends the upstream call with the status
/// (the client reads it in the end-of-stream envelope).
struct RequestStream {
    client: Body,
    /// Bytes of an envelope not yet complete.
    buffer: BytesMut,
    /// The request message type, for JSON.
    input: Option<MessageDescriptor>,
    codec: Codec,
    max_message_bytes: usize,
    /// The client's body has ended.
    ended: bool,
}

impl RequestStream {
    fn new(
        client: Body,
        codec: Codec,
        input: Option<MessageDescriptor>,
        max_message_bytes: usize,
    ) -> Self {
        Self {
            client,
            buffer: BytesMut::new(),
            input,
            codec,
            max_message_bytes,
            ended: false,
        }
    }

    /// The next complete envelope of the buffer as a gRPC message, `None`
    /// while it is incomplete, or why the stream is refused.
    fn next_message(&mut self) -> Option<Result<Bytes, Status>> {
        let (flags, length) = envelope_header(&self.buffer)?;
        if length > self.max_message_bytes {
            return Some(Err(Status::resource_exhausted(
                "request message too large for the gateway",
            )));
        }
        if flags & !COMPRESSED != 0 {
            return Some(Err(Status::invalid_argument(
                "a request envelope carries an unknown flag",
            )));
        }
        if self.buffer.len() < 5 + length {
            return None;
        }
        self.buffer.advance(5);
        let payload = self.buffer.split_to(length).freeze();
        let payload = if flags & COMPRESSED != 0 {
            match inflate(&payload, self.max_message_bytes) {
                Ok(payload) => payload,
                Err(status) => return Some(Err(status)),
            }
        } else {
            payload
        };
        Some(match (self.codec, &self.input) {
            (Codec::Proto, _) => Ok(envelope(0, &payload)),
            (Codec::Json, Some(input)) => {
                json_to_proto(&payload, input.clone()).map(|proto| envelope(0, &proto))
            }
            (Codec::Json, None) => Err(Status::unimplemented("unknown service or method")),
        })
    }
}

impl http_body::Body for RequestStream {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if let Some(message) = this.next_message() {
                return Poll::Ready(Some(message.map(Frame::data)));
            }
            if this.ended {
                return Poll::Ready(if this.buffer.is_empty() {
                    None
                } else {
                    Some(Err(Status::invalid_argument(
                        "the request ends inside an envelope",
                    )))
                });
            }
            match Pin::new(&mut this.client).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        this.buffer.extend_from_slice(&data);
                    }
                }
                Poll::Ready(Some(Err(_))) => {
                    return Poll::Ready(Some(Err(Status::cancelled(
                        "the client's request stream broke off",
                    ))));
                }
                Poll::Ready(None) => this.ended = true,
            }
        }
    }
}

/// A gRPC response stream as a Connect one: each message re-enveloped (and
/// translated to JSON when asked), the status and trailers as the
/// end-of-stream envelope.
struct Translated {
    upstream: Body,
    /// The upstream's response headers (for a status found there).
    headers: HeaderMap,
    /// Bytes of an envelope not yet complete.
    buffer: Bytes,
    codec: Codec,
    output: Option<MessageDescriptor>,
    done: bool,
}

impl Translated {
    /// The next complete message of the buffer, ready to send.
    fn next_message(&mut self) -> Option<Result<Bytes, Status>> {
        let (flags, message) = take_envelope(&mut self.buffer)?;
        if flags & COMPRESSED != 0 {
            return Some(Err(Status::internal(
                "the upstream answered compressed unasked",
            )));
        }
        Some(match (self.codec, &self.output) {
            (Codec::Proto, _) => Ok(envelope(0, &message)),
            (Codec::Json, Some(output)) => {
                proto_to_json(&message, output.clone()).map(|json| envelope(0, &json))
            }
            (Codec::Json, None) => Err(Status::unimplemented("unknown service or method")),
        })
    }

    fn end(&mut self, status: &Status, trailers: &HeaderMap) -> Frame<Bytes> {
        self.done = true;
        Frame::data(end_of_stream(status, trailers))
    }
}

impl http_body::Body for Translated {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            match this.next_message() {
                Some(Ok(message)) => return Poll::Ready(Some(Ok(Frame::data(message)))),
                Some(Err(status)) => {
                    return Poll::Ready(Some(Ok(this.end(&status, &HeaderMap::new()))));
                }
                None => {}
            }
            match Pin::new(&mut this.upstream).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        let mut buffer = BytesMut::from(std::mem::take(&mut this.buffer));
                        buffer.extend_from_slice(&data);
                        this.buffer = buffer.freeze();
                    }
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            let status = status_of(&this.headers, Some(&trailers));
                            return Poll::Ready(Some(Ok(this.end(&status, &trailers))));
                        }
                    }
                },
                Poll::Ready(Some(Err(status))) => {
                    return Poll::Ready(Some(Ok(this.end(&status, &HeaderMap::new()))));
                }
                Poll::Ready(None) => {
                    let status = status_of(&this.headers, None);
                    return Poll::Ready(Some(Ok(this.end(&status, &HeaderMap::new()))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content_type(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn the_protocol_comes_from_the_content_type() {
        assert_eq!(protocol(&content_type("application/grpc")), Protocol::Grpc);
        assert_eq!(
            protocol(&content_type("application/grpc-web-text")),
            Protocol::Grpc
        );
        assert_eq!(
            protocol(&content_type("application/json; charset=utf-8")),
            Protocol::Connect(Kind::Unary, Codec::Json)
        );
        assert_eq!(
            protocol(&content_type("application/proto")),
            Protocol::Connect(Kind::Unary, Codec::Proto)
        );
        assert_eq!(
            protocol(&content_type("application/connect+json")),
            Protocol::Connect(Kind::Stream, Codec::Json)
        );
        assert_eq!(protocol(&content_type("text/plain")), Protocol::Unsupported);
        assert_eq!(
            protocol(&content_type("application/grpc+json")),
            Protocol::Unsupported
        );
        assert_eq!(protocol(&HeaderMap::new()), Protocol::Unsupported);
    }

    #[test]
    fn envelopes_split_whole_messages_only() {
        let mut buffer = Bytes::from([envelope(0, b"one"), envelope(2, b"{}")].concat());
        assert_eq!(
            take_envelope(&mut buffer),
            Some((0, Bytes::from_static(b"one")))
        );
        let mut partial = buffer.slice(..4);
        assert_eq!(take_envelope(&mut partial), None);
        assert_eq!(
            take_envelope(&mut buffer),
            Some((2, Bytes::from_static(b"{}")))
        );
        assert!(buffer.is_empty());
    }

    #[test]
    fn an_error_carries_its_code_message_and_details() {
        let status = serving::status::invalid_argument(&[serving::status::Violation::new(
            "title",
            "must not be empty",
        )]);
        let json = error_json(&status);
        assert_eq!(json["code"], "invalid_argument");
        assert_eq!(json["message"], "title: must not be empty");
        assert_eq!(json["details"][0]["type"], "google.rpc.BadRequest");
        let value = STANDARD_NO_PAD
            .decode(json["details"][0]["value"].as_str().unwrap())
            .unwrap();
        let bad = tonic_types::pb::BadRequest::decode(&value[..]).unwrap();
        assert_eq!(bad.field_violations[0].field, "title");
        assert_eq!(http_status(status.code()), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn json_is_translated_with_the_descriptors() {
        let connect = Connect::new(
            &[todo_proto::FILE_DESCRIPTOR_SET],
            &serving::reflection::PUBLIC_SERVICES,
            1024,
        );
        let method = &connect.methods["/tasks.v1.TaskService/CreateTask"];
        let proto = json_to_proto(
            br#"{"title":"Buy milk","priority":"PRIORITY_HIGH","dueTime":"2030-01-02T03:04:05Z"}"#,
            method.input(),
        )
        .unwrap();
        let request = todo_proto::tasks::v1::CreateTaskRequest::decode(proto).unwrap();
        assert_eq!(request.title, "Buy milk");
        assert_eq!(
            request.priority,
            todo_proto::tasks::v1::Priority::High as i32
        );
        assert_eq!(request.due_time.unwrap().seconds, 1_893_553_445);
        let refused = json_to_proto(br#"{"nope": 1}"#, method.input()).unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(connect.methods["/tasks.v1.TaskService/WatchTasks"].is_server_streaming());
        assert!(
            !connect
                .methods
                .contains_key("/auth.internal.v1.SessionEventsService/Subscribe")
        );
    }
}
