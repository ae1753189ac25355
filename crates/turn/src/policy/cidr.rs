//! [`Cidr`], an IPv4 or IPv6 prefix matched with integer masks, and [`CidrError`].

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An IPv4 or IPv6 prefix such as `10.0.0.0/8` or `fc00::/7`, matched with integer masks.
///
/// Used for `--allow-peer` / `--deny-peer` (RFC 8656 §21.2.2 peer restrictions). Parsing rejects
/// host bits below the prefix (`10.0.0.1/8`) so a typo cannot silently widen or narrow a rule; a
/// bare address means a single host (/32 or /128). An IPv4 prefix only matches IPv4 addresses and
/// an IPv6 prefix only IPv6 ones; [`PeerPolicy`] normalises addresses before matching.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub(super) net: Net,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) enum Net {
    V4 { bits: u32, len: u8 },
    V6 { bits: u128, len: u8 },
}

impl Cidr {
    /// Builds a prefix; fails if `len` is too long for the family or host bits are set.
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, CidrError> {
        let cidr = match addr {
            IpAddr::V4(a) => {
                if len > 32 {
                    return Err(CidrError::PrefixTooLong { len, max: 32 });
                }
                Self::v4_const(u32::from(a), len)
            }
            IpAddr::V6(a) => {
                if len > 128 {
                    return Err(CidrError::PrefixTooLong { len, max: 128 });
                }
                Self::v6_const(u128::from(a), len)
            }
        };
        if cidr.network() != addr {
            return Err(CidrError::HostBitsSet {
                addr,
                len,
                network: cidr.network(),
            });
        }
        Ok(cidr)
    }

    /// A single address as a /32 or /128.
    pub fn host(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(a) => Self::v4_const(u32::from(a), 32),
            IpAddr::V6(a) => Self::v6_const(u128::from(a), 128),
        }
    }

    /// Masked constructor for tables; `len` must be at most 32.
    pub(super) const fn v4_const(bits: u32, len: u8) -> Self {
        let len = if len > 32 { 32 } else { len };
        Self {
            net: Net::V4 {
                bits: bits & mask_v4(len),
                len,
            },
        }
    }

    /// Masked constructor for tables; `len` must be at most 128.
    pub(super) const fn v6_const(bits: u128, len: u8) -> Self {
        let len = if len > 128 { 128 } else { len };
        Self {
            net: Net::V6 {
                bits: bits & mask_v6(len),
                len,
            },
        }
    }

    /// The network address (host bits zero).
    pub fn network(&self) -> IpAddr {
        match self.net {
            Net::V4 { bits, .. } => IpAddr::V4(Ipv4Addr::from(bits)),
            Net::V6 { bits, .. } => IpAddr::V6(Ipv6Addr::from(bits)),
        }
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        match self.net {
            Net::V4 { len, .. } | Net::V6 { len, .. } => len,
        }
    }

    /// Whether `ip` is inside the prefix; an address of the other family never is.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (Net::V4 { bits, len }, IpAddr::V4(a)) => u32::from(a) & mask_v4(len) == bits,
            (Net::V6 { .. }, IpAddr::V6(a)) => self.contains_bits(u128::from(a)),
            _ => false,
        }
    }

    pub(super) const fn contains_bits(&self, a: u128) -> bool {
        match self.net {
            Net::V6 { bits, len } => a & mask_v6(len) == bits,
            Net::V4 { .. } => false,
        }
    }
}

pub(super) const fn mask_v4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

pub(super) const fn mask_v6(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - len as u32)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.prefix_len())
    }
}

impl fmt::Debug for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cidr({self})")
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    /// Parses `a.b.c.d/n`, `x::/n` or a bare address (a single host).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (addr_s, len_s) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr_s.parse().map_err(|_| CidrError::InvalidAddress {
            input: s.to_owned(),
        })?;
        let Some(len_s) = len_s else {
            return Ok(Self::host(addr));
        };
        // Only plain decimal digits: no sign, no whitespace, no leading zeros beyond "0".
        let well_formed = !len_s.is_empty()
            && len_s.len() <= 3
            && len_s.bytes().all(|b| b.is_ascii_digit())
            && !(len_s.len() > 1 && len_s.starts_with('0'));
        let len: u8 = match len_s.parse() {
            Ok(len) if well_formed => len,
            _ => {
                return Err(CidrError::InvalidPrefixLen {
                    input: s.to_owned(),
                })
            }
        };
        Self::new(addr, len)
    }
}

/// Why a CIDR string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// The address part is not an IPv4 or IPv6 address.
    #[error("{input:?}: not an IP address or prefix")]
    InvalidAddress {
        /// The rejected input.
        input: String,
    },
    /// The prefix length is not a decimal number.
    #[error("{input:?}: prefix length is not a number")]
    InvalidPrefixLen {
        /// The rejected input.
        input: String,
    },
    /// The prefix length exceeds 32 (IPv4) or 128 (IPv6).
    #[error("prefix length /{len} is longer than /{max}")]
    PrefixTooLong {
        /// The given length.
        len: u8,
        /// The maximum for the family.
        max: u8,
    },
    /// A NAT64 prefix that is not IPv6 with an RFC 6052 length (32, 40, 48, 56, 64, 96).
    #[error("{prefix} is not a NAT64 prefix (IPv6 /32, /40, /48, /56, /64 or /96)")]
    NotNat64Prefix {
        /// The rejected prefix.
        prefix: Cidr,
    },
    /// Bits below the prefix are set, e.g. `10.0.0.1/8`.
    #[error("{addr}/{len} has host bits set; did you mean {network}/{len}?")]
    HostBitsSet {
        /// The given address.
        addr: IpAddr,
        /// The given length.
        len: u8,
        /// The network address the prefix would have.
        network: IpAddr,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::{cidr, ip};

    #[test]
    fn cidr_parses_and_displays() {
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(cidr("fc00::/7").to_string(), "fc00::/7");
        assert_eq!(cidr("1.2.3.4").to_string(), "1.2.3.4/32");
        assert_eq!(cidr("::1").to_string(), "::1/128");
        assert_eq!(cidr(" 0.0.0.0/0 ").to_string(), "0.0.0.0/0");
    }

    #[test]
    fn cidr_rejects_bad_input() {
        assert!(matches!(
            "10.0.0.1/8".parse::<Cidr>(),
            Err(CidrError::HostBitsSet { .. })
        ));
        assert!(matches!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { len: 33, max: 32 })
        ));
        assert!(matches!(
            "::/129".parse::<Cidr>(),
            Err(CidrError::PrefixTooLong { len: 129, max: 128 })
        ));
        for bad in [
            "10.0.0.0/",
            "10.0.0.0/+8",
            "10.0.0.0/08",
            "10.0.0.0/ 8",
            "10.0.0.0/x",
        ] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(CidrError::InvalidPrefixLen { .. })),
                "{bad}"
            );
        }
        for bad in ["", "10.0.0/8", "10.0.0.256/32", "example.com/8", "::g/64"] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(CidrError::InvalidAddress { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn cidr_contains_respects_boundaries_and_family() {
        let c = cidr("172.16.0.0/12");
        assert!(c.contains(ip("172.16.0.0")));
        assert!(c.contains(ip("172.31.255.255")));
        assert!(!c.contains(ip("172.32.0.0")));
        assert!(!c.contains(ip("172.15.255.255")));
        assert!(!c.contains(ip("::ffff:172.16.0.1")));
        // The classic byte-wise compare bug: "172.2.0.0" sorts between the bounds as a string.
        assert!(!c.contains(ip("172.2.0.0")));
        assert!(cidr("0.0.0.0/0").contains(ip("255.255.255.255")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::")));
        assert!(cidr("::/0").contains(ip("ffff::")));
    }
}
