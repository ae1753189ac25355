//! Zero-config relay addresses: which of the host's addresses to relay from when floe listens
//! on a wildcard address (`--listen 0.0.0.0:3478`) and no `--relay-ip` is given.
//!
//! A relayed transport address (RFC 8656 §2) must be an address peers can send to, so floe
//! picks, for each address family it listens on, one of the host's own addresses:
//!
//! 1. a globally reachable one (not on the default deny list of RFC 8656 §21.2.2: the IANA
//!    special-purpose registries), in interface order;
//! 2. else a private one (RFC 1918, RFC 6598 shared space, RFC 4193 unique local): the usual
//!    cloud VM behind a 1:1 NAT, which also needs `--external-ip` to advertise the public
//!    address ([`RelayChoice::behind_nat`] says so at start);
//! 3. never loopback, link-local or any other special range: peers could not reach it.
//!
//! The choice is a pure function of the address list ([`choose`]) so that it is tested without
//! the host's interfaces; [`host_addresses`] reads them.

use std::io;
use std::net::IpAddr;

use floe_turn::policy::{default_deny, DenyCategory};

/// One of the host's addresses and the interface that has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostAddress {
    /// Interface name (`eth0`).
    pub interface: String,
    /// The address.
    pub ip: IpAddr,
}

/// The relay address chosen for one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayChoice {
    /// The chosen address.
    pub address: HostAddress,
    /// The address is private (RFC 1918, RFC 6598, RFC 4193): peers on the internet reach it
    /// only through a 1:1 NAT, so the operator should give `--external-ip`.
    pub behind_nat: bool,
}

/// How usable `ip` is as a relay address: `Some(false)` globally reachable, `Some(true)`
/// private (reachable through a 1:1 NAT), `None` not at all.
fn private_rank(ip: IpAddr) -> Option<bool> {
    match default_deny(ip) {
        None => Some(false),
        Some(range) => match range.category {
            DenyCategory::Private | DenyCategory::SharedCgnat | DenyCategory::UniqueLocal => {
                Some(true)
            }
            _ => None,
        },
    }
}

/// Chooses one relay address of each family in `families` (IPv4 before IPv6 in the result)
/// from `host`, by the rules of the module documentation. A family with no usable address is
/// left out.
pub fn choose(host: &[HostAddress], families: &[IpFamily]) -> Vec<RelayChoice> {
    let mut out = Vec::new();
    for family in [IpFamily::V4, IpFamily::V6] {
        if !families.contains(&family) {
            continue;
        }
        let usable = host
            .iter()
            .filter(|a| IpFamily::of(a.ip) == family)
            .filter_map(|a| private_rank(a.ip).map(|private| (private, a)));
        // `min_by_key` keeps the first of equal keys: interface order breaks ties.
        if let Some((behind_nat, address)) = usable.min_by_key(|(private, _)| *private) {
            out.push(RelayChoice {
                address: address.clone(),
                behind_nat,
            });
        }
    }
    out
}

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpFamily {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl IpFamily {
    /// The family of `ip`.
    pub fn of(ip: IpAddr) -> IpFamily {
        match ip {
            IpAddr::V4(_) => IpFamily::V4,
            IpAddr::V6(_) => IpFamily::V6,
        }
    }
}

/// The host's interface addresses, in the order the kernel lists them (getifaddrs(3)).
pub fn host_addresses() -> io::Result<Vec<HostAddress>> {
    Ok(if_addrs::get_if_addrs()?
        .into_iter()
        .map(|i| HostAddress {
            ip: i.ip(),
            interface: i.name,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(list: &[(&str, &str)]) -> Vec<HostAddress> {
        list.iter()
            .map(|(i, ip)| HostAddress {
                interface: (*i).to_owned(),
                ip: ip.parse().expect("test address"),
            })
            .collect()
    }

    fn chosen(c: &[RelayChoice]) -> Vec<(String, bool)> {
        c.iter()
            .map(|c| (c.address.ip.to_string(), c.behind_nat))
            .collect()
    }

    #[test]
    fn prefers_a_global_address_over_private_ones() {
        let h = host(&[
            ("lo", "127.0.0.1"),
            ("docker0", "172.17.0.1"),
            ("eth0", "11.0.0.1"),
            ("eth1", "11.0.0.9"),
        ]);
        assert_eq!(
            chosen(&choose(&h, &[IpFamily::V4])),
            [("11.0.0.1".to_owned(), false)]
        );
    }

    #[test]
    fn falls_back_to_a_private_address_and_flags_the_nat() {
        let h = host(&[("lo", "127.0.0.1"), ("ens5", "10.0.3.7")]);
        assert_eq!(
            chosen(&choose(&h, &[IpFamily::V4])),
            [("10.0.3.7".to_owned(), true)]
        );
    }

    #[test]
    fn never_loopback_link_local_or_documentation() {
        let h = host(&[
            ("lo", "127.0.0.1"),
            ("eth0", "169.254.10.1"),
            ("lo", "::1"),
            ("eth0", "fe80::1"),
            ("eth0", "2001:db8::1"),
        ]);
        assert!(choose(&h, &[IpFamily::V4, IpFamily::V6]).is_empty());
    }

    #[test]
    fn one_per_listened_family_ipv4_first() {
        let h = host(&[
            ("eth0", "2a01:4f8::5"),
            ("eth0", "fd00::5"),
            ("eth0", "11.0.0.1"),
        ]);
        assert_eq!(
            chosen(&choose(&h, &[IpFamily::V6, IpFamily::V4])),
            [
                ("11.0.0.1".to_owned(), false),
                ("2a01:4f8::5".to_owned(), false)
            ]
        );
        assert_eq!(
            chosen(&choose(&h, &[IpFamily::V6])),
            [("2a01:4f8::5".to_owned(), false)]
        );
    }

    #[test]
    fn reads_the_hosts_addresses() {
        // Every Linux host has loopback.
        let addrs = host_addresses().expect("getifaddrs");
        assert!(addrs.iter().any(|a| a.ip.is_loopback()), "{addrs:?}");
    }
}
