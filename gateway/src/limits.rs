//! The bounds on one call: how large its request body may grow, and how
//! many calls may be open at once, in all and from one client address.
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
//! - [`PerAddress`] counts the calls in flight from each client address
//!   (`--max-concurrent-requests-per-address`), its [`AddressPermit`] held
//!   by [`Guarded`] beside the global one: without it, one client opening
//!   streams that never end (`WatchTasks`) on a few connections could take
//!   every global permit. Addresses are counted as
//!   [`serving::address::AddressKey`]s: an IPv4 address, or an IPv6 /64 (one
//!   host owns a whole /64). An address's entry is removed when its last
//!   call ends, so the table holds only addresses with calls open.
//! - A [`Budget`] is one global semaphore and one [`PerAddress`] count. The
//!   gateway has two: one for calls, and a much smaller one for the
//!   streams anybody may open without an account (health `Watch`,
//!   reflection), so strangers holding those open cannot take a single
//!   permit that signed-in users' calls need.

use std::{
    collections::HashMap,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use serving::address::AddressKey;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
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

/// What a [`Budget`] refused, for the caller's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The client's address has its share in flight.
    Address,
    /// The whole budget is in use.
    Global,
}

/// A number of permits in all, and a share per client address.
#[derive(Debug, Clone)]
pub struct Budget {
    permits: Arc<Semaphore>,
    per_address: PerAddress,
}

impl Budget {
    pub fn new(total: usize, per_address: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(total)),
            per_address: PerAddress::new(per_address),
        }
    }

    /// Permits for one more call from `peer`, or what refused it. The
    /// address's share is taken first, so a client over it never holds a
    /// global permit, even for a moment.
    pub fn try_acquire(&self, peer: Option<IpAddr>) -> Result<CallPermits, Refused> {
        let address = match peer {
            Some(peer) => Some(self.per_address.try_acquire(peer).ok_or(Refused::Address)?),
            None => None,
        };
        let global = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Global)?;
        Ok(CallPermits { global, address })
    }
}

/// Calls in flight per client address, each address capped at `limit`.
#[derive(Debug, Clone)]
pub struct PerAddress {
    limit: usize,
    /// Only addresses with at least one call open have an entry.
    counts: Arc<Mutex<HashMap<AddressKey, usize>>>,
}

impl PerAddress {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            counts: Arc::default(),
        }
    }

    /// A place for one more call from `address`, or `None` when it already
    /// has `limit` calls in flight.
    pub fn try_acquire(&self, address: IpAddr) -> Option<AddressPermit> {
        let address = AddressKey::of(address);
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let count = counts.entry(address).or_insert(0);
        if *count >= self.limit {
            if *count == 0 {
                // A limit of 0: leave no empty entry behind.
                counts.remove(&address);
            }
            return None;
        }
        *count += 1;
        Some(AddressPermit {
            counts: self.counts.clone(),
            address,
        })
    }

    /// How many addresses have calls in flight.
    pub fn addresses(&self) -> usize {
        self.counts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One call's place in its address's count, given back when dropped.
#[derive(Debug)]
pub struct AddressPermit {
    counts: Arc<Mutex<HashMap<AddressKey, usize>>>,
    address: AddressKey,
}

impl Drop for AddressPermit {
    fn drop(&mut self) {
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = counts.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

/// What a call holds while it is in flight: a global permit and, when the
/// client's address is known, its place in that address's count.
pub struct CallPermits {
    pub global: OwnedSemaphorePermit,
    pub address: Option<AddressPermit>,
}

/// A response body that holds a call's permits until it is dropped.
pub struct Guarded<B> {
    inner: B,
    _permits: CallPermits,
}

impl<B> Guarded<B> {
    pub fn new(inner: B, permits: CallPermits) -> Self {
        Self {
            inner,
            _permits: permits,
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

    #[test]
    fn each_address_is_capped_and_forgotten_when_its_calls_end() {
        let per_address = PerAddress::new(2);
        let one: IpAddr = [192, 0, 2, 1].into();
        let other: IpAddr = [192, 0, 2, 2].into();
        let first = per_address.try_acquire(one).expect("under the cap");
        let second = per_address.try_acquire(one).expect("at the cap");
        assert!(per_address.try_acquire(one).is_none(), "over the cap");
        // Another address has its own count.
        let elsewhere = per_address.try_acquire(other).expect("its own cap");
        assert_eq!(per_address.addresses(), 2);
        drop(first);
        let third = per_address.try_acquire(one).expect("a place was freed");
        drop((second, third, elsewhere));
        assert_eq!(per_address.addresses(), 0, "no entry outlives its calls");
        let none = PerAddress::new(0);
        assert!(none.try_acquire(one).is_none());
        assert_eq!(none.addresses(), 0);
    }

    #[test]
    fn an_ipv6_host_has_one_share_for_its_whole_64() {
        let per_address = PerAddress::new(1);
        let first: IpAddr = "2001:db8:0:1::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:0:1:dead:beef:0:2".parse().unwrap();
        let other_64: IpAddr = "2001:db8:0:2::1".parse().unwrap();
        let _held = per_address.try_acquire(first).expect("its share");
        assert!(per_address.try_acquire(same_64).is_none());
        assert!(per_address.try_acquire(other_64).is_some());
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let _v4 = per_address.try_acquire(mapped).expect("its share");
        assert!(per_address.try_acquire([192, 0, 2, 1].into()).is_none());
    }

    #[test]
    fn a_budget_refuses_over_the_share_first_then_over_the_total() {
        let budget = Budget::new(2, 1);
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        let c: IpAddr = [192, 0, 2, 3].into();
        let _first = budget.try_acquire(Some(a)).unwrap();
        assert_eq!(budget.try_acquire(Some(a)).err(), Some(Refused::Address));
        let _second = budget.try_acquire(Some(b)).unwrap();
        assert_eq!(budget.try_acquire(Some(c)).err(), Some(Refused::Global));
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
