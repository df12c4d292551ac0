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
//! middle of a message, and only while the service has nothing to send, so
//! the client parses everything it received and a real status that is
//! ready is never replaced. A call still waiting for its response headers
//! then is answered `UNAVAILABLE` by the router.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame};
use serving::CancellationToken;
use tonic::Status;

/// The status of a call the gateway ends because it is shutting down.
pub fn shutting_down() -> Status {
    Status::unavailable("the gateway is shutting down; reconnect")
}

/// A response body that ends with `UNAVAILABLE` once `closing` fires, at a
/// message boundary while the body below has nothing to send. Whatever the
/// body below has ready (a message, its real status) still goes first.
pub struct Closing<B> {
    inner: B,
    closing: Arc<CancellationToken>,
    /// Resolves when the grace has run out; made the first time the body
    /// below has nothing ready, so a call that never waits pays nothing.
    wait: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    framing: Framing,
    ended: bool,
}

impl<B> Closing<B> {
    pub fn new(inner: B, closing: Arc<CancellationToken>) -> Self {
        Self {
            inner,
            closing,
            wait: None,
            framing: Framing::default(),
            ended: false,
        }
    }

    /// Whether the grace has run out, registering `cx` to be woken when it
    /// does.
    fn closed(&mut self, cx: &mut Context<'_>) -> bool {
        let closing = &self.closing;
        self.wait
            .get_or_insert_with(|| Box::pin(CancellationToken::clone(closing).cancelled_owned()))
            .as_mut()
            .poll(cx)
            .is_ready()
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
            Poll::Pending => {
                if this.framing.at_boundary() && this.closed(cx) {
                    this.ended = true;
                    return Poll::Ready(Some(Ok(Frame::trailers(unavailable()))));
                }
            }
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
    let status = shutting_down();
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

    /// A body that plays a script: each entry is one poll's answer.
    struct Scripted(std::collections::VecDeque<Poll<Option<Frame<Bytes>>>>);

    impl Body for Scripted {
        type Data = Bytes;
        type Error = Status;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
            match self.0.pop_front() {
                Some(Poll::Ready(frame)) => Poll::Ready(frame.map(Ok)),
                Some(Poll::Pending) => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn ok_trailers() -> HeaderMap {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers
    }

    /// Polls `body` once per scripted step, returning the grpc-status of
    /// every trailers frame and the number of data frames seen.
    fn drive(mut body: Closing<Scripted>, polls: usize) -> (Vec<String>, usize) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let (mut statuses, mut data) = (Vec::new(), 0);
        for _ in 0..polls {
            match Pin::new(&mut body).poll_frame(&mut cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_trailers() {
                    Ok(trailers) => statuses.push(trailers["grpc-status"].to_str().unwrap().into()),
                    Err(_) => data += 1,
                },
                Poll::Ready(None) => break,
                Poll::Ready(Some(Err(status))) => panic!("{status:?}"),
                Poll::Pending => {}
            }
        }
        (statuses, data)
    }

    fn closed() -> Arc<CancellationToken> {
        let token = CancellationToken::new();
        token.cancel();
        Arc::new(token)
    }

    #[test]
    fn what_the_service_has_ready_goes_first_and_its_status_is_kept() {
        let script = [
            Poll::Ready(Some(Frame::data(Bytes::from(message(b"answer"))))),
            Poll::Ready(Some(Frame::trailers(ok_trailers()))),
        ];
        let body = Closing::new(Scripted(script.into()), closed());
        assert_eq!(drive(body, 5), (vec!["0".to_owned()], 1));
    }

    #[test]
    fn a_waiting_stream_ends_with_unavailable_only_between_messages() {
        let framed = message(b"event");
        let (head, tail) = framed.split_at(7);
        let script = [
            Poll::Ready(Some(Frame::data(Bytes::copy_from_slice(head)))),
            // Mid-message: the rest must come before any status.
            Poll::Pending,
            Poll::Ready(Some(Frame::data(Bytes::copy_from_slice(tail)))),
            Poll::Pending,
        ];
        let body = Closing::new(Scripted(script.into()), closed());
        assert_eq!(drive(body, 10), (vec!["14".to_owned()], 2));

        let open = Arc::new(CancellationToken::new());
        let body = Closing::new(Scripted([Poll::Pending].into()), open);
        assert_eq!(
            drive(body, 3),
            (Vec::new(), 0),
            "nothing ends before the grace"
        );
    }

    #[test]
    fn the_shutdown_status_is_unavailable() {
        let trailers = unavailable();
        assert_eq!(trailers["grpc-status"], "14");
        assert!(trailers.contains_key("grpc-message"));
    }
}
