//! gRPC written by hand, for what a client library never sends: request
//! bodies that are not well-formed gRPC ([`grpc_raw`]: a frame flagged
//! compressed that is not gzip, a compression flag of 2, no frame at all),
//! a request body that never ends ([`hold_grpc_call`]), and header values no HTTP library lets through ([`h2_with_raw_header`]:
//! CR, LF or an escape character, written into an HTTP/2 HEADERS frame
//! byte by byte).

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, request};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::mpsc,
    task::JoinHandle,
    time::timeout,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use crate::{STEP, raw_client};

/// One gRPC message frame with an explicit flag byte (0: plain, 1:
/// compressed with the call's `grpc-encoding`; anything else is invalid).
pub fn flagged_frame(flag: u8, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![flag];
    frame.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// The head of a plain gRPC call to `path` at `address`, with `extra`
/// headers.
fn grpc_request(address: SocketAddr, path: &str, extra: &[(&str, &str)]) -> request::Builder {
    let mut request = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{address}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request
}

/// POSTs `body` as a plain gRPC call (HTTP/2 with prior knowledge) to
/// `path` at `address`, with `extra` headers; returns the status of the
/// answer, read from its headers (a trailers-only answer) or its trailers.
pub async fn grpc_raw(
    address: SocketAddr,
    path: &str,
    body: Vec<u8>,
    extra: &[(&str, &str)],
) -> Status {
    let request = grpc_request(address, path, extra)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid request");
    let response = timeout(STEP, raw_client(true).request(request))
        .await
        .expect("no hang")
        .expect("HTTP/2 works");
    let (parts, body) = response.into_parts();
    let collected = timeout(STEP, body.collect())
        .await
        .expect("no hang")
        .expect("a body");
    let trailers = collected.trailers().cloned().unwrap_or_default();
    status_of(&parts.headers)
        .or_else(|| status_of(&trailers))
        .unwrap_or_else(|| Status::new(Code::Unknown, "the answer carried no grpc-status"))
}

/// A call opened by [`hold_grpc_call`]; dropping it ends the call's body
/// before a whole message was sent.
pub struct HeldCall {
    _body: mpsc::Sender<Result<Frame<Bytes>, Infallible>>,
    call: JoinHandle<()>,
}

impl HeldCall {
    /// Whether no answer has come yet.
    pub fn unanswered(&self) -> bool {
        !self.call.is_finished()
    }
}

/// Opens a gRPC call to `path` at `address`, with `extra` headers, whose
/// request body never ends: the server holds it in flight (or refuses it)
/// until the [`HeldCall`] is dropped.
pub fn hold_grpc_call(address: SocketAddr, path: &str, extra: &[(&str, &str)]) -> HeldCall {
    let (body, frames) = mpsc::channel(1);
    let request = grpc_request(address, path, extra)
        .body(StreamBody::new(ReceiverStream::new(frames)))
        .expect("a valid request");
    let call = tokio::spawn(async move {
        // Answered only once the body ends (a client error), or at once if
        // the server refuses the call.
        let _ = raw_client(true).request(request).await;
    });
    HeldCall { _body: body, call }
}

fn status_of(headers: &HeaderMap) -> Option<Status> {
    headers.get("grpc-status")?;
    Status::from_header_map(headers)
}

/// What the server did with a hand-written HTTP/2 request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H2Outcome {
    /// It answered the stream (a HEADERS frame on it).
    Answered,
    /// It reset the stream, or closed the connection with GOAWAY.
    Refused,
    /// The connection closed without either.
    Closed,
}

/// Sends one gRPC call (`message` as its single frame) over a hand-written
/// HTTP/2 connection, with one more header `name: value` whose value may
/// hold any bytes, and reads until the server answers or refuses it.
pub async fn h2_with_raw_header(
    address: SocketAddr,
    path: &str,
    name: &str,
    value: &[u8],
    message: &[u8],
) -> H2Outcome {
    let mut block = Vec::new();
    for (field, content) in [
        (":method", "POST".as_bytes()),
        (":scheme", b"http"),
        (":path", path.as_bytes()),
        (":authority", address.to_string().as_bytes()),
        ("content-type", b"application/grpc"),
        ("te", b"trailers"),
        (name, value),
    ] {
        literal_header(&mut block, field.as_bytes(), content);
    }
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    write_frame(&mut out, SETTINGS, 0, 0, &[]);
    write_frame(&mut out, HEADERS, END_HEADERS, 1, &block);
    write_frame(&mut out, DATA, END_STREAM, 1, &flagged_frame(0, message));

    let mut stream = TcpStream::connect(address).await.expect("connects");
    stream.write_all(&out).await.expect("sends");
    let read = async {
        loop {
            let mut head = [0u8; 9];
            if stream.read_exact(&mut head).await.is_err() {
                return H2Outcome::Closed;
            }
            let length = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
            let (kind, flags) = (head[3], head[4]);
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; length];
            if stream.read_exact(&mut payload).await.is_err() {
                return H2Outcome::Closed;
            }
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    let mut ack = Vec::new();
                    write_frame(&mut ack, SETTINGS, ACK, 0, &[]);
                    if stream.write_all(&ack).await.is_err() {
                        return H2Outcome::Closed;
                    }
                }
                HEADERS if id == 1 => return H2Outcome::Answered,
                RST_STREAM if id == 1 => return H2Outcome::Refused,
                GOAWAY => return H2Outcome::Refused,
                _ => {}
            }
        }
    };
    timeout(Duration::from_secs(10), read)
        .await
        .expect("the server answers, refuses or closes")
}

const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn write_frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    let length = u32::try_from(payload.len()).expect("small").to_be_bytes();
    out.extend_from_slice(&length[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An HPACK "literal header field without indexing, new name" (RFC 7541
/// 6.2.2), both strings raw (no Huffman coding): the bytes go on the wire
/// exactly as given.
fn literal_header(block: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    block.push(0);
    for string in [name, value] {
        hpack_integer(block, string.len(), 7, 0);
        block.extend_from_slice(string);
    }
}

/// An HPACK integer with an `prefix`-bit prefix (RFC 7541 5.1).
#[allow(
    clippy::cast_possible_truncation,
    reason = "every value cast is below 256 by construction"
)]
fn hpack_integer(block: &mut Vec<u8>, value: usize, prefix: u32, high_bits: u8) {
    let max = (1usize << prefix) - 1;
    if value < max {
        block.push(high_bits | value as u8);
        return;
    }
    block.push(high_bits | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        block.push((rest % 128) as u8 | 0x80);
        rest /= 128;
    }
    block.push(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::hpack_integer;

    #[test]
    fn hpack_integers_follow_the_rfc_examples() {
        let mut block = Vec::new();
        hpack_integer(&mut block, 10, 5, 0);
        assert_eq!(block, [10]);
        block.clear();
        hpack_integer(&mut block, 1337, 5, 0);
        assert_eq!(block, [31, 154, 10]);
    }
}
