//! Client addresses as limits count them.
//!
//! A per-address limit is only as good as its notion of "one address".
//! Two rules make it hold:
//!
//! - **IPv4-mapped IPv6 addresses are IPv4.** `::ffff:192.0.2.7` and
//!   `192.0.2.7` are the same client; a dual-stack listener reports the
//!   first form, so every comparison (a limit's key, a trusted-proxy check)
//!   uses the canonical one.
//! - **IPv6 is counted per /64.** One host is routinely given a whole /64
//!   (SLAAC, privacy addresses), so a limit keyed by the full /128 would
//!   hand a single machine 2^64 fresh budgets.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
};

/// The unit a per-address limit counts: one IPv4 address, or one IPv6 /64.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddressKey(IpAddr);

impl AddressKey {
    /// The key of a client address (see the module doc).
    pub fn of(address: IpAddr) -> Self {
        match address.to_canonical() {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                Self(IpAddr::V6(Ipv6Addr::from(prefix)))
            }
        }
    }
}

impl fmt::Display for AddressKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> AddressKey {
        AddressKey::of(text.parse().unwrap())
    }

    #[test]
    fn an_ipv4_mapped_address_is_its_ipv4_address() {
        assert_eq!(key("::ffff:192.0.2.7"), key("192.0.2.7"));
        assert_eq!(key("::ffff:192.0.2.7").to_string(), "192.0.2.7");
        assert_ne!(key("192.0.2.7"), key("192.0.2.8"));
    }

    #[test]
    fn ipv6_addresses_count_per_64() {
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2:aaaa::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("::1"), key("::2"));
    }
}
