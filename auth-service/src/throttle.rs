//! Brute-force defences: a per-address rate limit on the unauthenticated
//! RPCs that cost the most (Register, Login, Refresh), and the per-account
//! failed-login window (kept in the database, see `AuthStore::
//! record_login_attempt`, so it holds across replicas).
//!
//! The client address is the TCP peer, except when the peer is a trusted
//! proxy (the gateway): then it is the last `x-forwarded-for` entry, which
//! the gateway writes itself and a client cannot forge through it.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};
use ipnet::IpNet;
use tonic::Request;

/// A keyed token bucket per client address. In memory, per replica: an
/// attacker spread over replicas gets `replicas x` the rate, which the
/// per-account window (shared) still bounds where it matters.
#[derive(Clone)]
pub struct AddressLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    trusted_proxies: Arc<[IpNet]>,
}

impl AddressLimiter {
    pub fn new(per_minute: u32, burst: u32, trusted_proxies: Vec<IpNet>) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        Self {
            limiter: Arc::new(RateLimiter::keyed(quota)),
            trusted_proxies: trusted_proxies.into(),
        }
    }

    /// The address a request comes from, as far as we can trust it.
    pub fn client_address<T>(&self, request: &Request<T>) -> Option<IpAddr> {
        let peer = request.remote_addr()?.ip();
        if !self.trusted_proxies.iter().any(|net| net.contains(&peer)) {
            return Some(peer);
        }
        let forwarded = request
            .metadata()
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok());
        forwarded
            .and_then(|list| list.rsplit(',').next())
            .and_then(|last| last.trim().parse().ok())
            .or(Some(peer))
    }

    /// `Err(wait)` if this request's address is over its rate.
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Duration> {
        let Some(address) = self.client_address(request) else {
            return Ok(());
        };
        self.limiter
            .check_key(&address)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets addresses whose bucket is full again, bounding memory.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}
