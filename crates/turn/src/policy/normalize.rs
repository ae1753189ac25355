//! Normalisation of a peer address: its canonical form and every IPv4 address embedded in it.

use std::net::{IpAddr, Ipv4Addr};

use super::Cidr;

/// The normalised view of a peer address: its canonical form plus every IPv4 address embedded in
/// it (RFC 4291 §2.5.5, RFC 6052, RFC 8215, RFC 3056, RFC 4380, RFC 5214).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normalized {
    canonical: IpAddr,
    embedded: [Option<Embedding>; MAX_EMBEDDED],
}

const MAX_EMBEDDED: usize = 8;

impl Normalized {
    /// The address as the relay will use it: IPv4-mapped `::ffff:a.b.c.d` becomes `a.b.c.d`
    /// (RFC 4291 §2.5.5.2: it *is* that IPv4 address); everything else is unchanged.
    pub fn canonical(&self) -> IpAddr {
        self.canonical
    }

    /// The IPv4 addresses embedded in the canonical address, with the form that embeds them.
    pub fn embedded(&self) -> impl Iterator<Item = Embedding> + '_ {
        self.embedded.iter().flatten().copied()
    }

    /// Every address the policy checks: the canonical address, then the embedded ones.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        std::iter::once(self.canonical).chain(self.embedded().map(|e| IpAddr::V4(e.addr)))
    }

    /// At most 5 embeddings exist (the prefixes are disjoint: NAT64 local-use gives 4, Teredo 2,
    /// the others 1, plus 1 for an ISATAP identifier), so the 8 slots never run out.
    fn push(&mut self, kind: EmbeddingKind, addr: Ipv4Addr) {
        let slot = self.embedded.iter_mut().find(|s| s.is_none());
        debug_assert!(slot.is_some(), "embedding slots exhausted");
        if let Some(slot) = slot {
            *slot = Some(Embedding { kind, addr });
        }
    }
}

/// An IPv4 address found inside an IPv6 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Embedding {
    /// The IPv6 form that carries it.
    pub kind: EmbeddingKind,
    /// The embedded IPv4 address.
    pub addr: Ipv4Addr,
}

/// The IPv6 forms that carry an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EmbeddingKind {
    /// `::a.b.c.d`, IPv4-compatible (RFC 4291 §2.5.5.1, deprecated).
    Ipv4Compatible,
    /// `64:ff9b::a.b.c.d`, the NAT64 well-known prefix (RFC 6052 §2.1, always a /96).
    Nat64WellKnown,
    /// `64:ff9b:1::/48`, the NAT64 local-use prefix (RFC 8215); the operator may use any RFC 6052
    /// prefix length inside it, so every possible position is decoded.
    Nat64LocalUse {
        /// The RFC 6052 prefix length this candidate assumes (48, 56, 64 or 96).
        prefix_len: u8,
    },
    /// `2002:AABB:CCDD::/48`, 6to4 (RFC 3056 §2).
    SixToFour,
    /// The Teredo server address in `2001:0:SSSS:SSSS::/64` (RFC 4380 §4).
    TeredoServer,
    /// The Teredo client's mapped address, stored bit-inverted in the last 32 bits (RFC 4380 §4).
    TeredoClient,
    /// An ISATAP interface identifier `[02]00:5efe:a.b.c.d` under any /64 (RFC 5214 §6.1).
    Isatap,
}

/// Normalises an address for the policy check (RFC 8656 §21.2.2): maps IPv4-mapped IPv6 to IPv4
/// and extracts every IPv4 address embedded by the IPv4-compatible, NAT64 well-known and
/// local-use, 6to4, Teredo (server and obfuscated client) and ISATAP forms.
///
/// Decoding is deliberately generous: where an address could be read as several forms, every
/// reading is returned, so a bypass needs an address that is harmless under all of them.
pub fn normalize(ip: IpAddr) -> Normalized {
    let canonical = canonical_ip(ip);
    let mut out = Normalized {
        canonical,
        embedded: [None; MAX_EMBEDDED],
    };
    if let IpAddr::V6(v6) = canonical {
        extract_embedded(u128::from(v6), &mut out);
    }
    out
}

/// Maps `::ffff:a.b.c.d` to `a.b.c.d` (RFC 4291 §2.5.5.2) and leaves other addresses alone.
pub(super) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 @ IpAddr::V4(_) => v4,
    }
}

const COMPATIBLE: Cidr = Cidr::v6_const(0, 96);
pub(super) const NAT64_WKP: Cidr = Cidr::v6_const(0x0064_ff9b_u128 << 96, 96);
const NAT64_LOCAL: Cidr = Cidr::v6_const((0x0064_ff9b_u128 << 96) | (1_u128 << 80), 48);
const SIX_TO_FOUR: Cidr = Cidr::v6_const(0x2002_u128 << 112, 16);
const TEREDO: Cidr = Cidr::v6_const(0x2001_0000_u128 << 96, 32);

fn extract_embedded(a: u128, out: &mut Normalized) {
    // RFC 4291 §2.5.5.1: `::` and `::1` are the unspecified and loopback addresses, not
    // IPv4-compatible ones (both stay denied by the IPv6 list; `--allow-peer ::1/128` opens `::1`).
    if COMPATIBLE.contains_bits(a) && a > 1 {
        out.push(EmbeddingKind::Ipv4Compatible, bits_v4(a, 96));
    }
    if NAT64_WKP.contains_bits(a) {
        out.push(EmbeddingKind::Nat64WellKnown, bits_v4(a, 96));
    }
    if NAT64_LOCAL.contains_bits(a) {
        for prefix_len in [48, 56, 64, 96] {
            out.push(
                EmbeddingKind::Nat64LocalUse { prefix_len },
                rfc6052_extract(a, u32::from(prefix_len)),
            );
        }
    }
    if SIX_TO_FOUR.contains_bits(a) {
        out.push(EmbeddingKind::SixToFour, bits_v4(a, 16));
    }
    if TEREDO.contains_bits(a) {
        out.push(EmbeddingKind::TeredoServer, bits_v4(a, 32));
        out.push(
            EmbeddingKind::TeredoClient,
            Ipv4Addr::from(!bits_u32(a, 96)),
        );
    }
    // ISATAP: the interface identifier is 0000:5efe or 0200:5efe (u/g bits may vary) followed by
    // the IPv4 address, under any prefix.
    if bits_u32(a, 64) & 0xfcff_ffff == 0x0000_5efe {
        out.push(EmbeddingKind::Isatap, bits_v4(a, 96));
    }
}

/// The 32 bits of `a` starting at bit `start` (bit 0 is the most significant).
pub(super) fn bits_u32(a: u128, start: u32) -> u32 {
    // Truncation to the low 32 bits is the point of this helper.
    (a >> (96 - start)) as u32
}

fn bits_v4(a: u128, start: u32) -> Ipv4Addr {
    Ipv4Addr::from(bits_u32(a, start))
}

/// RFC 6052 §2.2: the IPv4 address sits after the prefix and skips bits 64..72 (the "u" octet).
pub(super) fn rfc6052_extract(a: u128, prefix_len: u32) -> Ipv4Addr {
    if prefix_len >= 64 {
        let start = if prefix_len == 64 { 72 } else { prefix_len };
        return bits_v4(a, start);
    }
    // The address is split around the u octet: (64 - prefix_len) bits before it, the rest after.
    let before = 64 - prefix_len;
    let after = 32 - before;
    let hi = ((a >> 64) as u64) & ((1_u64 << before) - 1);
    let lo = ((a >> (56 - after)) as u64) & ((1_u64 << after) - 1);
    // `hi` has `before` bits and `lo` has `after` bits; together exactly 32.
    Ipv4Addr::from(((hi << after) | lo) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::tests::ip;

    #[test]
    fn normalize_maps_and_extracts() {
        let n = normalize(ip("::ffff:1.2.3.4"));
        assert_eq!(n.canonical(), ip("1.2.3.4"));
        assert_eq!(n.embedded().count(), 0);

        let n = normalize(ip("2001:0:102:304:8000:ffff:f7f7:f7f7"));
        let e: Vec<_> = n.embedded().collect();
        assert_eq!(
            e,
            vec![
                Embedding {
                    kind: EmbeddingKind::TeredoServer,
                    addr: "1.2.3.4".parse().expect("v4")
                },
                Embedding {
                    kind: EmbeddingKind::TeredoClient,
                    addr: "8.8.8.8".parse().expect("v4")
                },
            ]
        );
    }

    #[test]
    fn rfc6052_positions_match_the_rfc_examples() {
        // RFC 6052 §2.4 table, IPv4 192.0.2.33 under 2001:db8::/32 .. /96.
        let cases = [
            ("2001:db8:c000:221::", 32),
            ("2001:db8:1c0:2:21::", 40),
            ("2001:db8:122:c000:2:2100::", 48),
            ("2001:db8:122:3c0:0:221::", 56),
            ("2001:db8:122:344:c0:2:2100:0", 64),
            ("2001:db8:122:344::192.0.2.33", 96),
        ];
        for (s, len) in cases {
            let a = match ip(s) {
                IpAddr::V6(a) => u128::from(a),
                IpAddr::V4(_) => unreachable!(),
            };
            assert_eq!(
                rfc6052_extract(a, len),
                "192.0.2.33".parse::<Ipv4Addr>().expect("v4"),
                "prefix /{len}"
            );
        }
    }
}
