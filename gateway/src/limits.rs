//! The bounds on one call: how large its request body may grow, and how
//! many calls may be open at once.
//!
//! Both work on the body *stream*, so the gateway never buffers a request
//! or decodes a message:
//!
//! - [`LimitedBody`] counts request bytes as they flow upstream and, once
//!   the limit is passed, fails the stream and raises a flag. The forwarder
//!   sees the flag and answers `RESOURCE_EXHAUSTED` itself, whatever the
//!   upstream made of the cut-off stream. Counting the stream rather than
//!   trusting `content-length` also covers HTTP/2 and chunked bodies, which
//!   have none.
//! - [`Guarded`] holds a concurrency permit inside the *response* body, so
//!   a call counts against `--max-concurrent-requests` until its last byte
//!   is sent or the client goes away: a long `WatchTasks` stream is a call
//!   in flight, not only the moment it opened. When no permit is left the
//!   call is refused at once (`RESOURCE_EXHAUSTED`) rather than queued, so
//!   an overloaded gateway answers fast instead of hanging.

use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

/// Whether a request body went over its limit; shared between the body
/// (which sets it) and the forwarder (which answers for it).
#[derive(Debug, Clone, Default)]
pub struct Exceeded(Arc<AtomicBool>);

impl Exceeded {
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// A request body that fails once more than `limit` bytes have passed.
pub struct LimitedBody<B> {
    inner: B,
    remaining: usize,
    exceeded: Exceeded,
}

impl<B> LimitedBody<B> {
    pub fn new(inner: B, limit: usize, exceeded: Exceeded) -> Self {
        Self {
            inner,
            remaining: limit,
            exceeded,
        }
    }
}

/// The status of a call whose request body was too large.
pub fn body_too_large() -> Status {
    Status::resource_exhausted("request message too large for the gateway")
}

impl<B> Body for LimitedBody<B>
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
        if this.exceeded.get() {
            return Poll::Ready(Some(Err(body_too_large())));
        }
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            match this.remaining.checked_sub(data.len()) {
                Some(remaining) => this.remaining = remaining,
                None => {
                    this.exceeded.set();
                    return Poll::Ready(Some(Err(body_too_large())));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    /// Unknown, on purpose: below the gRPC-Web layer the inner body's hint
    /// can be the size of the *base64* text it decodes, and hyper would
    /// send that as the upstream's `content-length`.
    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

/// A response body that holds a concurrency permit until it is dropped.
pub struct Guarded<B> {
    inner: B,
    _permit: OwnedSemaphorePermit,
}

impl<B> Guarded<B> {
    pub fn new(inner: B, permit: OwnedSemaphorePermit) -> Self {
        Self {
            inner,
            _permit: permit,
        }
    }
}

impl<B> Body for Guarded<B>
where
    B: Body + Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn body(chunks: &[&'static [u8]]) -> tonic::body::Body {
        let frames: Vec<Result<Frame<Bytes>, Status>> = chunks
            .iter()
            .map(|chunk| Ok(Frame::data(Bytes::from_static(chunk))))
            .collect();
        tonic::body::Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
    }

    #[tokio::test]
    async fn a_body_within_the_limit_passes_whole() {
        let exceeded = Exceeded::default();
        let limited = LimitedBody::new(body(&[b"abc", b"de"]), 5, exceeded.clone());
        let collected = limited
            .collect()
            .await
            .expect("within the limit")
            .to_bytes();
        assert_eq!(&collected[..], b"abcde");
        assert!(!exceeded.get());
    }

    #[tokio::test]
    async fn a_body_over_the_limit_fails_and_raises_the_flag() {
        let exceeded = Exceeded::default();
        let limited = LimitedBody::new(body(&[b"abc", b"def"]), 5, exceeded.clone());
        let error = limited.collect().await.expect_err("over the limit");
        assert_eq!(error.code(), tonic::Code::ResourceExhausted);
        assert!(exceeded.get());
    }
}
