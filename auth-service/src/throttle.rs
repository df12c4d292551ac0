//! Brute-force defences: a per-address rate limit on the unauthenticated
//! RPCs (Register, Login, Refresh, Logout, and the recovery RPCs), and the
//! failed-login windows (kept in the database, see `AuthStore::
//! record_login_attempt`, so they hold across replicas).
//!
//! The client address is the TCP peer, except when the peer is a trusted
//! proxy (the gateway): then it is the last `x-forwarded-for` entry, which
//! the gateway writes itself and a client cannot forge through it. Both
//! are made canonical first (an IPv4-mapped IPv6 peer is its IPv4
//! address), and limits count per [`AddressKey`]: an IPv4 address or an
//! IPv6 /64.

use std::{net::IpAddr, num::NonZeroU32, sync::Arc, time::Duration};

use governor::{
    DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};
use ipnet::IpNet;
use serving::address::AddressKey;
use tonic::Request;

/// A keyed token bucket per client address. In memory, per replica: an
/// attacker spread over replicas gets `replicas x` the rate, which the
/// per-account window (shared) still bounds where it matters.
#[derive(Clone)]
pub struct AddressLimiter {
    limiter: Arc<DefaultKeyedRateLimiter<AddressKey>>,
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
        let forwarded = request
            .metadata()
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok());
        Some(self.believed_address(peer, forwarded))
    }

    /// The client behind `peer`: `peer` itself, or, when `peer` is a
    /// trusted proxy, the last `x-forwarded-for` entry (the one that proxy
    /// wrote). Both canonical.
    fn believed_address(&self, peer: IpAddr, forwarded: Option<&str>) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusted_proxies.iter().any(|net| net.contains(&peer)) {
            return peer;
        }
        forwarded
            .and_then(|list| list.rsplit(',').next())
            .and_then(|last| last.trim().parse::<IpAddr>().ok())
            .map_or(peer, |address| address.to_canonical())
    }

    /// `Err(wait)` if this request's address is over its rate.
    pub fn check<T>(&self, request: &Request<T>) -> Result<(), Duration> {
        let Some(address) = self.client_address(request) else {
            return Ok(());
        };
        self.limiter
            .check_key(&AddressKey::of(address))
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets addresses whose bucket is full again, bounding memory.
    pub fn forget_idle(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(trusted: &[&str]) -> AddressLimiter {
        AddressLimiter::new(
            60,
            1,
            trusted.iter().map(|net| net.parse().unwrap()).collect(),
        )
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn an_ipv4_mapped_proxy_is_trusted_like_its_ipv4_address() {
        let limiter = limiter(&["127.0.0.1/32"]);
        for peer in ["127.0.0.1", "::ffff:127.0.0.1"] {
            assert_eq!(
                limiter.believed_address(ip(peer), Some("203.0.113.9")),
                ip("203.0.113.9"),
                "{peer}"
            );
        }
        // A peer that is not the proxy is believed about nothing.
        assert_eq!(
            limiter.believed_address(ip("::ffff:192.0.2.1"), Some("203.0.113.9")),
            ip("192.0.2.1")
        );
        // The forwarded address is canonical too.
        assert_eq!(
            limiter.believed_address(ip("127.0.0.1"), Some("::ffff:203.0.113.9")),
            ip("203.0.113.9")
        );
    }
}
