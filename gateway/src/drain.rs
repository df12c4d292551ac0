//! Ending, with a status, the calls still open when the shutdown grace runs
//! out.
//!
//! At shutdown the gateway stops accepting and asks every connection to
//! finish; calls in flight get `--shutdown-grace` to end on their own. A
//! server stream such as `WatchTasks` never ends on its own, and dropping
//! its connection would leave the client with a transport error and no
//! status. So when the grace runs out, every response still open is ended
//! by the gateway itself with `UNAVAILABLE`, the status clients reconnect
//! on, and the server gives the connections a moment to deliver it (see
//! server.rs). The status goes out at a gRPC message boundary, never in the
//! middle of a message, so the client parses everything it received.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame};
use serving::CancellationToken;
use tonic::Status;

/// A response body that ends with `UNAVAILABLE` once `closing` fires.
pub struct Closing<B> {
    inner: B,
    /// Resolves when the grace has run out; `None` once it has.
    closing: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    framing: Framing,
    ended: bool,
}

impl<B> Closing<B> {
    pub fn new(inner: B, closing: &CancellationToken) -> Self {
        Self {
            inner,
            closing: Some(Box::pin(closing.clone().cancelled_owned())),
            framing: Framing::default(),
            ended: false,
        }
    }

    /// Whether the grace has run out (and, if `cx` is given, a wake-up
    /// registered for when it does).
    fn poll_closing(&mut self, cx: &mut Context<'_>) -> bool {
        match &mut self.closing {
            None => true,
            Some(closing) => {
                let closed = closing.as_mut().poll(cx).is_ready();
                if closed {
                    self.closing = None;
                }
                closed
            }
        }
    }
}

impl<B> Body for Closing<B>
where
    B: Body<Data = Bytes, Error = Status> + Unpin,
{
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(None);
        }
        if this.poll_closing(cx) && this.framing.at_boundary() {
            this.ended = true;
            return Poll::Ready(Some(Ok(Frame::trailers(unavailable()))));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.framing.advance(data.chunk());
                } else if frame.is_trailers() {
                    this.ended = true;
                }
            }
            Poll::Ready(None | Some(Err(_))) => this.ended = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }
    // The size hint stays unknown: this body may add a trailers frame.
}

/// The trailers that end a call cut short by shutdown.
fn unavailable() -> HeaderMap {
    let status = Status::unavailable("the gateway is shutting down; reconnect");
    let mut trailers = HeaderMap::new();
    // A status built here always encodes; an empty map would still end the
    // stream, only without its reason.
    let _ = status.add_header(&mut trailers);
    trailers
}

/// Where a stream of length-prefixed gRPC messages stands: each message is
/// a 1-byte flag, a 4-byte big-endian length, then that many bytes.
#[derive(Debug, Default)]
struct Framing {
    /// Prefix bytes of the current message seen so far (0..5).
    prefix: [u8; 5],
    prefix_seen: usize,
    /// Payload bytes of the current message still to come.
    payload_left: u64,
}

impl Framing {
    fn at_boundary(&self) -> bool {
        self.prefix_seen == 0 && self.payload_left == 0
    }

    fn advance(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.payload_left > 0 {
                let taken = data
                    .len()
                    .min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                self.payload_left -= taken as u64;
                data = &data[taken..];
                continue;
            }
            let taken = data.len().min(self.prefix.len() - self.prefix_seen);
            self.prefix[self.prefix_seen..self.prefix_seen + taken].copy_from_slice(&data[..taken]);
            self.prefix_seen += taken;
            data = &data[taken..];
            if self.prefix_seen == self.prefix.len() {
                let [_, length @ ..] = self.prefix;
                self.payload_left = u64::from(u32::from_be_bytes(length));
                self.prefix_seen = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(payload: &[u8]) -> Vec<u8> {
        let mut framed = vec![0];
        framed.extend_from_slice(&u32::try_from(payload.len()).unwrap().to_be_bytes());
        framed.extend_from_slice(payload);
        framed
    }

    #[test]
    fn boundaries_are_found_however_messages_are_split() {
        let stream: Vec<u8> = [message(b"hello"), message(b""), message(&[7; 300])].concat();
        let ends = [10, 15, 320];
        for split in 1..=stream.len() {
            let mut framing = Framing::default();
            let mut seen = 0;
            for chunk in stream.chunks(split) {
                framing.advance(chunk);
                seen += chunk.len();
                let expected = ends.contains(&seen);
                assert_eq!(framing.at_boundary(), expected, "split {split}, at {seen}");
            }
            assert!(framing.at_boundary());
        }
    }

    #[test]
    fn a_partial_prefix_is_not_a_boundary() {
        let mut framing = Framing::default();
        framing.advance(&[0, 0, 0]);
        assert!(!framing.at_boundary());
        framing.advance(&[0, 0]);
        assert!(
            framing.at_boundary(),
            "an empty message ends where its prefix does"
        );
    }

    #[test]
    fn the_shutdown_status_is_unavailable() {
        let trailers = unavailable();
        assert_eq!(trailers["grpc-status"], "14");
        assert!(trailers.contains_key("grpc-message"));
    }
}
