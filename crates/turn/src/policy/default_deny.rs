//! The default deny list: the special-purpose ranges a relay refuses unless allowed.

use std::fmt;
use std::net::IpAddr;

use super::cidr::{mask_v4, mask_v6};
use super::normalize::NAT64_WKP;
use super::Cidr;

/// Why a range is on the default deny list (IANA IPv4/IPv6 Special-Purpose Address Registries,
/// RFC 6890, and RFC 8656 §21.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenyCategory {
    /// "This network" 0.0.0.0/8 and the unspecified `::` (RFC 791, RFC 1122 §3.2.1.3, RFC 4291).
    Unspecified,
    /// Loopback (RFC 1122 §3.2.1.3, RFC 4291 §2.5.3).
    Loopback,
    /// RFC 1918 private networks.
    Private,
    /// Shared address space for carrier-grade NAT (RFC 6598).
    SharedCgnat,
    /// Link-local (RFC 3927, RFC 4291 §2.5.6).
    LinkLocal,
    /// Multicast (RFC 5771, RFC 4291 §2.7).
    Multicast,
    /// Limited broadcast 255.255.255.255 (RFC 919, RFC 8190).
    Broadcast,
    /// Documentation ranges (RFC 5737, RFC 3849, RFC 9637).
    Documentation,
    /// Benchmarking (RFC 2544, RFC 5180).
    Benchmarking,
    /// IETF protocol assignments (RFC 6890 §2.2.1 192.0.0.0/24; RFC 2928 2001::/23 less Teredo):
    /// DS-Lite, PCP and TURN anycast, ORCHID and similar; no WebRTC peer lives there.
    IetfProtocol,
    /// Reserved for future use 240.0.0.0/4 (RFC 1112 §4).
    Reserved,
    /// Deprecated 6to4 relay anycast 192.88.99.0/24 (RFC 7526).
    Deprecated6to4Relay,
    /// Anycast infrastructure that is never a WebRTC peer: AS112 (RFC 7534, RFC 7535) and AMT
    /// relays (RFC 7450).
    InfrastructureAnycast,
    /// Unique local IPv6 (RFC 4193).
    UniqueLocal,
    /// Deprecated site-local IPv6 fec0::/10 (RFC 3879).
    SiteLocal,
    /// Discard-only prefix 100::/64 (RFC 6666).
    DiscardOnly,
    /// The IPv4-compatible form `::/96` (RFC 4291 §2.5.5.1, deprecated; nothing routes it).
    Ipv4Compatible,
    /// The NAT64 local-use prefix 64:ff9b:1::/48 (RFC 8215: not globally reachable).
    Nat64LocalUse,
    /// IPv6 outside global unicast 2000::/3 (RFC 4291 §2.4) not covered by a more specific entry:
    /// reserved space, IPv4-translated `::ffff:0:a.b.c.d`, SRv6 SIDs 5f00::/16 (RFC 9602) and
    /// whatever gets assigned there later.
    NotGlobalUnicast,
}

impl DenyCategory {
    /// A stable snake_case label for metrics (`floe_turn_peer_refused_total{reason}`).
    pub fn label(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::SharedCgnat => "shared_cgnat",
            Self::LinkLocal => "link_local",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking",
            Self::IetfProtocol => "ietf_protocol",
            Self::Reserved => "reserved",
            Self::Deprecated6to4Relay => "deprecated_6to4_relay",
            Self::InfrastructureAnycast => "infrastructure_anycast",
            Self::UniqueLocal => "unique_local",
            Self::SiteLocal => "site_local",
            Self::DiscardOnly => "discard_only",
            Self::Ipv4Compatible => "ipv4_compatible",
            Self::Nat64LocalUse => "nat64_local_use",
            Self::NotGlobalUnicast => "not_global_unicast",
        }
    }
}

impl fmt::Display for DenyCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Self::Unspecified => "unspecified / this network",
            Self::Loopback => "loopback",
            Self::Private => "private network",
            Self::SharedCgnat => "carrier-grade NAT shared space",
            Self::LinkLocal => "link-local",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking",
            Self::IetfProtocol => "IETF protocol assignments",
            Self::Reserved => "reserved",
            Self::Deprecated6to4Relay => "deprecated 6to4 relay anycast",
            Self::InfrastructureAnycast => "infrastructure anycast",
            Self::UniqueLocal => "unique local",
            Self::SiteLocal => "site-local",
            Self::DiscardOnly => "discard-only",
            Self::Ipv4Compatible => "IPv4-compatible IPv6",
            Self::Nat64LocalUse => "NAT64 local-use prefix",
            Self::NotGlobalUnicast => "not IPv6 global unicast",
        };
        f.write_str(s)
    }
}

/// One entry of the default deny list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultRange {
    /// The refused range.
    pub cidr: Cidr,
    /// Why it is refused.
    pub category: DenyCategory,
}

// The asserts run at compile time for the tables below: a range written with host bits set (a
// typo) fails the build instead of being silently masked.
const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8, category: DenyCategory) -> DefaultRange {
    let bits = u32::from_be_bytes([a, b, c, d]);
    assert!(len <= 32 && bits & !mask_v4(len) == 0);
    DefaultRange {
        cidr: Cidr::v4_const(bits, len),
        category,
    }
}

const fn v6(bits: u128, len: u8, category: DenyCategory) -> DefaultRange {
    assert!(len <= 128 && bits & !mask_v6(len) == 0);
    DefaultRange {
        cidr: Cidr::v6_const(bits, len),
        category,
    }
}

/// The IPv4 part of the default deny list (IANA IPv4 Special-Purpose Address Registry; RFC 8656
/// §21.2). Checked against the canonical address and every embedded IPv4 address.
pub const DEFAULT_DENY_V4: &[DefaultRange] = {
    use DenyCategory::*;
    &[
        v4(0, 0, 0, 0, 8, Unspecified),
        v4(10, 0, 0, 0, 8, Private),
        v4(100, 64, 0, 0, 10, SharedCgnat),
        v4(127, 0, 0, 0, 8, Loopback),
        v4(169, 254, 0, 0, 16, LinkLocal),
        v4(172, 16, 0, 0, 12, Private),
        v4(192, 0, 0, 0, 24, IetfProtocol),
        v4(192, 0, 2, 0, 24, Documentation),
        v4(192, 31, 196, 0, 24, InfrastructureAnycast),
        v4(192, 52, 193, 0, 24, InfrastructureAnycast),
        v4(192, 88, 99, 0, 24, Deprecated6to4Relay),
        v4(192, 168, 0, 0, 16, Private),
        v4(192, 175, 48, 0, 24, InfrastructureAnycast),
        v4(198, 18, 0, 0, 15, Benchmarking),
        v4(198, 51, 100, 0, 24, Documentation),
        v4(203, 0, 113, 0, 24, Documentation),
        v4(224, 0, 0, 0, 4, Multicast),
        v4(255, 255, 255, 255, 32, Broadcast),
        v4(240, 0, 0, 0, 4, Reserved),
    ]
};

/// The IPv6 part of the default deny list (IANA IPv6 Special-Purpose Address Registry; RFC 8656
/// §21.2). Anything outside 2000::/3 that is not listed here is refused as
/// [`DenyCategory::NotGlobalUnicast`], except the NAT64 well-known prefix 64:ff9b::/96, which is
/// judged by its embedded IPv4 address.
pub const DEFAULT_DENY_V6: &[DefaultRange] = {
    use DenyCategory::*;
    &[
        v6(0, 128, Unspecified),
        v6(1, 128, Loopback),
        v6(0, 96, Ipv4Compatible),
        v6((0x0064_ff9b_u128 << 96) | (1_u128 << 80), 48, Nat64LocalUse),
        v6(0x0100_u128 << 112, 64, DiscardOnly),
        // 2001::/23 (IETF protocol assignments) less Teredo 2001::/32, as nine prefixes.
        v6(0x2001_0001_u128 << 96, 32, IetfProtocol),
        v6(0x2001_0002_u128 << 96, 31, IetfProtocol),
        v6(0x2001_0004_u128 << 96, 30, IetfProtocol),
        v6(0x2001_0008_u128 << 96, 29, IetfProtocol),
        v6(0x2001_0010_u128 << 96, 28, IetfProtocol),
        v6(0x2001_0020_u128 << 96, 27, IetfProtocol),
        v6(0x2001_0040_u128 << 96, 26, IetfProtocol),
        v6(0x2001_0080_u128 << 96, 25, IetfProtocol),
        v6(0x2001_0100_u128 << 96, 24, IetfProtocol),
        v6(0x2001_0db8_u128 << 96, 32, Documentation),
        v6(0x2620_004f_8000_u128 << 80, 48, InfrastructureAnycast),
        v6(0x3fff_u128 << 112, 20, Documentation),
        v6(0xfc00_u128 << 112, 7, UniqueLocal),
        v6(0xfe80_u128 << 112, 10, LinkLocal),
        v6(0xfec0_u128 << 112, 10, SiteLocal),
        v6(0xff00_u128 << 112, 8, Multicast),
    ]
};

const GLOBAL_UNICAST: Cidr = Cidr::v6_const(0x2000_u128 << 112, 3);
const NOT_GLOBAL_UNICAST: DefaultRange = DefaultRange {
    cidr: Cidr::v6_const(0, 0),
    category: DenyCategory::NotGlobalUnicast,
};

/// Looks `ip` up in the default deny list (RFC 8656 §21.2.2). Does not normalise: callers check
/// each address of [`normalize`]'s output, as [`PeerPolicy::check`] does.
pub fn default_deny(ip: IpAddr) -> Option<DefaultRange> {
    let table = match ip {
        IpAddr::V4(_) => DEFAULT_DENY_V4,
        IpAddr::V6(_) => DEFAULT_DENY_V6,
    };
    if let Some(range) = table.iter().find(|r| r.cidr.contains(ip)) {
        return Some(*range);
    }
    match ip {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let allowed = GLOBAL_UNICAST.contains_bits(bits) || NAT64_WKP.contains_bits(bits);
            (!allowed).then_some(NOT_GLOBAL_UNICAST)
        }
        IpAddr::V4(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::ip;

    #[test]
    fn default_tables_are_canonical() {
        for r in DEFAULT_DENY_V4.iter().chain(DEFAULT_DENY_V6) {
            let again = Cidr::new(r.cidr.network(), r.cidr.prefix_len());
            assert_eq!(again, Ok(r.cidr), "{}", r.cidr);
        }
        // 2001::/23 is covered except Teredo.
        assert!(default_deny(ip("2001::1")).is_none());
        assert!(default_deny(ip("2001:0:ffff:ffff:ffff:ffff:ffff:ffff")).is_none());
        assert!(default_deny(ip("2001:1::")).is_some());
        assert!(default_deny(ip("2001:1ff:ffff::")).is_some());
        assert!(default_deny(ip("2001:200::")).is_none());
    }
}
