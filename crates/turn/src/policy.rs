//! Peer address policy: which peers a TURN allocation may relay to.
//!
//! RFC 8656 §21.2.2 ("Blacklisted IP Addresses") and §10.2/§12.2 let a server refuse a
//! XOR-PEER-ADDRESS with 403 (Forbidden); §21.4 ("Tunnel Amplification Attack") recommends not
//! forwarding to addresses known to be tunnelled. A relay that forwards to loopback, private or
//! link-local addresses hands every client a foothold inside the server's network, so this
//! module refuses those by default.
//!
//! The one rule that makes the filter hard to bypass: every address goes through [`normalize`]
//! first. IPv4-mapped, IPv4-compatible, NAT64 (RFC 6052 / RFC 8215), 6to4 (RFC 3056), Teredo
//! (RFC 4380) and ISATAP (RFC 5214) forms are decoded and *every* IPv4 address embedded in them is
//! checked as well as the IPv6 address itself. All range arithmetic is done on integers with
//! prefix masks ([`Cidr`]), never on strings or bytes.
//!
//! Precedence, highest first: explicit deny > explicit allow > the default deny list (including
//! the server's own addresses) > allow. An address is allowed only when *every* address it
//! normalises to is allowed under that rule.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

// ---------------------------------------------------------------------------------------------
// Public entry points
// ---------------------------------------------------------------------------------------------

/// The peer address policy of a TURN server (RFC 8656 §21.2.2: the server decides which peers a
/// client may reach; a refused XOR-PEER-ADDRESS gets 403 per RFC 8656 §10.2 and §12.2).
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    own: BTreeSet<IpAddr>,
    nat64: Vec<Cidr>,
}

impl PeerPolicy {
    /// A policy with the default deny list only (RFC 8656 §21.2.2).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds ranges that open parts of the default deny list (the `--allow-peer` option).
    ///
    /// An allow range never overrides an explicit deny range (RFC 8656 §21.2.2 leaves the policy
    /// to the server; floe's precedence is deny > allow > default list).
    pub fn with_allow(mut self, ranges: impl IntoIterator<Item = Cidr>) -> Self {
        self.allow.extend(ranges);
        self
    }

    /// Adds ranges that are always refused (the `--deny-peer` option); they win over everything.
    pub fn with_deny(mut self, ranges: impl IntoIterator<Item = Cidr>) -> Self {
        self.deny.extend(ranges);
        self
    }

    /// Adds the server's own addresses (listening, relay and external addresses), which are
    /// refused like the default deny list (RFC 8656 §21.1.7, TURN loop attack: relaying to the
    /// server itself lets a client reach services bound there and build forwarding loops).
    ///
    /// IPv4-mapped addresses are stored as their IPv4 form.
    pub fn with_own_addresses(mut self, addrs: impl IntoIterator<Item = IpAddr>) -> Self {
        self.own.extend(addrs.into_iter().map(canonical_ip));
        self
    }

    /// Declares NAT64 network-specific prefixes in use on the server's network (RFC 6052 §2.2,
    /// e.g. `2001:db8:64::/96`): addresses inside them are decoded like the well-known prefix and
    /// the embedded IPv4 address is checked too (RFC 8656 §21.4). Without this, a relay whose
    /// network has its own NAT64 would reach `PREFIX::10.0.0.1`. The prefix length must be one of
    /// RFC 6052's 32, 40, 48, 56, 64 or 96.
    pub fn with_nat64_prefixes(
        mut self,
        prefixes: impl IntoIterator<Item = Cidr>,
    ) -> Result<Self, CidrError> {
        for p in prefixes {
            let ok = matches!(p.net, Net::V6 { .. })
                && matches!(p.prefix_len(), 32 | 40 | 48 | 56 | 64 | 96);
            if !ok {
                return Err(CidrError::NotNat64Prefix { prefix: p });
            }
            self.nat64.push(p);
        }
        Ok(self)
    }

    /// The configured allow ranges.
    pub fn allow_ranges(&self) -> &[Cidr] {
        &self.allow
    }

    /// The configured deny ranges.
    pub fn deny_ranges(&self) -> &[Cidr] {
        &self.deny
    }

    /// Decides whether a client may relay to `peer` (RFC 8656 §10.2 CreatePermission, §12.2
    /// ChannelBind, §11.2 Send): `Err` means answer 403 (Forbidden) or drop the indication.
    ///
    /// Port 0 is refused: it is not a valid destination (RFC 8656 §18.3 XOR-PEER-ADDRESS names a
    /// transport address).
    pub fn check(&self, peer: SocketAddr) -> Result<(), PeerDenied> {
        if peer.port() == 0 {
            return Err(PeerDenied::PortZero { peer });
        }
        self.check_ip(peer.ip())
    }

    /// Decides whether a client may install a permission for `ip` (RFC 8656 §9: permissions are
    /// per IP address, the port is ignored).
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), PeerDenied> {
        self.check_explicit_deny(ip)?;
        let normalized = normalize(ip);
        let nsp = self.nat64_embedded(normalized.canonical());
        for addr in normalized.addresses().chain(nsp) {
            self.check_form(ip, addr)?;
        }
        Ok(())
    }

    /// Only the operator's `--deny-peer` ranges, checked against every form of `ip` (including
    /// the IPv6 spelling of a mapped address, so `--deny-peer ::ffff:0:0/96` works as written).
    /// The server's own relayed addresses are checked with this alone: they are relayed inside
    /// the process, never through the network (see `floe_turn::server`'s own-relay rule).
    pub fn check_explicit_deny(&self, ip: IpAddr) -> Result<(), PeerDenied> {
        let normalized = normalize(ip);
        let nsp = self.nat64_embedded(normalized.canonical());
        for addr in std::iter::once(ip).chain(normalized.addresses()).chain(nsp) {
            if let Some(rule) = self.deny.iter().find(|c| c.contains(addr)) {
                return Err(PeerDenied::ExplicitDeny {
                    peer: ip,
                    matched: addr,
                    rule: *rule,
                });
            }
        }
        Ok(())
    }

    /// IPv4 addresses embedded under the configured network-specific NAT64 prefixes.
    fn nat64_embedded(&self, canonical: IpAddr) -> impl Iterator<Item = IpAddr> + Clone + '_ {
        let bits = match canonical {
            IpAddr::V6(a) => Some(u128::from(a)),
            IpAddr::V4(_) => None,
        };
        self.nat64.iter().filter_map(move |p| {
            let a = bits?;
            p.contains_bits(a)
                .then(|| IpAddr::V4(rfc6052_extract(a, u32::from(p.prefix_len()))))
        })
    }

    fn check_form(&self, peer: IpAddr, addr: IpAddr) -> Result<(), PeerDenied> {
        if self.allow.iter().any(|c| c.contains(addr)) {
            return Ok(());
        }
        if self.own.contains(&addr) {
            return Err(PeerDenied::OwnAddress {
                peer,
                matched: addr,
            });
        }
        match default_deny(addr) {
            Some(range) => Err(PeerDenied::DefaultDeny {
                peer,
                matched: addr,
                range: range.cidr,
                category: range.category,
            }),
            None => Ok(()),
        }
    }
}

/// Why a peer address was refused (RFC 8656 §10.2 / §12.2: answered with 403 Forbidden).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerDenied {
    /// Port 0 is not a usable peer transport address (RFC 8656 §18.3).
    #[error("peer {peer}: port 0 is not a valid peer port")]
    PortZero {
        /// The refused peer.
        peer: SocketAddr,
    },
    /// An operator-configured deny range matched the peer or one of its embedded addresses.
    #[error("peer {peer}: {matched} is in denied range {rule}")]
    ExplicitDeny {
        /// The refused peer address as the client sent it.
        peer: IpAddr,
        /// The normalised or embedded address that matched.
        matched: IpAddr,
        /// The deny range that matched.
        rule: Cidr,
    },
    /// The default deny list matched (RFC 8656 §21.2.2) and no allow range opened it.
    #[error("peer {peer}: {matched} is in {range} ({category})")]
    DefaultDeny {
        /// The refused peer address as the client sent it.
        peer: IpAddr,
        /// The normalised or embedded address that matched.
        matched: IpAddr,
        /// The default range that matched.
        range: Cidr,
        /// Why the range is refused.
        category: DenyCategory,
    },
    /// The peer (or an address embedded in it) is one of the server's own addresses.
    #[error("peer {peer}: {matched} is an address of this server")]
    OwnAddress {
        /// The refused peer address as the client sent it.
        peer: IpAddr,
        /// The normalised or embedded address that matched.
        matched: IpAddr,
    },
}

impl PeerDenied {
    /// The STUN error code to answer with: 403 Forbidden (RFC 8656 §10.2, §12.2).
    pub const fn error_code(&self) -> u16 {
        403
    }
}

// ---------------------------------------------------------------------------------------------
// Normalisation
// ---------------------------------------------------------------------------------------------

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
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 @ IpAddr::V4(_) => v4,
    }
}

const COMPATIBLE: Cidr = Cidr::v6_const(0, 96);
const NAT64_WKP: Cidr = Cidr::v6_const(0x0064_ff9b_u128 << 96, 96);
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
fn bits_u32(a: u128, start: u32) -> u32 {
    // Truncation to the low 32 bits is the point of this helper.
    (a >> (96 - start)) as u32
}

fn bits_v4(a: u128, start: u32) -> Ipv4Addr {
    Ipv4Addr::from(bits_u32(a, start))
}

/// RFC 6052 §2.2: the IPv4 address sits after the prefix and skips bits 64..72 (the "u" octet).
fn rfc6052_extract(a: u128, prefix_len: u32) -> Ipv4Addr {
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

// ---------------------------------------------------------------------------------------------
// The default deny list
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Cidr
// ---------------------------------------------------------------------------------------------

/// An IPv4 or IPv6 prefix such as `10.0.0.0/8` or `fc00::/7`, matched with integer masks.
///
/// Used for `--allow-peer` / `--deny-peer` (RFC 8656 §21.2.2 peer restrictions). Parsing rejects
/// host bits below the prefix (`10.0.0.1/8`) so a typo cannot silently widen or narrow a rule; a
/// bare address means a single host (/32 or /128). An IPv4 prefix only matches IPv4 addresses and
/// an IPv6 prefix only IPv6 ones; [`PeerPolicy`] normalises addresses before matching.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    net: Net,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Net {
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
    const fn v4_const(bits: u32, len: u8) -> Self {
        let len = if len > 32 { 32 } else { len };
        Self {
            net: Net::V4 {
                bits: bits & mask_v4(len),
                len,
            },
        }
    }

    /// Masked constructor for tables; `len` must be at most 128.
    const fn v6_const(bits: u128, len: u8) -> Self {
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

    const fn contains_bits(&self, a: u128) -> bool {
        match self.net {
            Net::V6 { bits, len } => a & mask_v6(len) == bits,
            Net::V4 { .. } => false,
        }
    }
}

const fn mask_v4(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

const fn mask_v6(len: u8) -> u128 {
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

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_loopback_is_denied_by_default_and_opened_by_allow() {
        let lo: IpAddr = "::1".parse().unwrap();
        assert!(PeerPolicy::new().check_ip(lo).is_err());
        assert!(PeerPolicy::new().check_ip("::".parse().unwrap()).is_err());
        let open = PeerPolicy::new().with_allow(["::1/128".parse::<Cidr>().unwrap()]);
        assert!(open.check_ip(lo).is_ok());
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test socket address")
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().expect("test cidr")
    }

    fn denied(p: &PeerPolicy, s: &str) -> bool {
        p.check_ip(ip(s)).is_err()
    }

    // --- Known coturn bypasses and friends -------------------------------------------------

    #[test]
    fn coturn_bypass_forms_are_denied() {
        let p = PeerPolicy::new();
        for s in [
            "0.0.0.0",
            "0.1.2.3",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:0.0.0.0",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "::10.0.0.1",
            "2002:7f00:1::",
            "2002:7f00:0001:abcd::1",
            "2002:a00:1::",
            "2002:c0a8:0101::1",
            "64:ff9b::7f00:1",
            "64:ff9b::10.0.0.1",
            "64:ff9b::169.254.169.254",
            // Teredo with server 127.0.0.1, client 8.8.8.8 (stored inverted: f7f7:f7f7).
            "2001:0:7f00:1:0:0:f7f7:f7f7",
            // Teredo with server 8.8.8.8, client 127.0.0.1 (inverted: 80ff:fffe).
            "2001:0:808:808:0:0:80ff:fffe",
            // Teredo with client 10.0.0.1 (inverted f5ff:fffe).
            "2001:0:808:808:8000:ffff:f5ff:fffe",
            // ISATAP IID carrying 192.168.1.1 under a public prefix.
            "2a00:1450:4001::200:5efe:c0a8:101",
        ] {
            assert!(denied(&p, s), "{s} must be denied");
        }
    }

    #[test]
    fn cloud_metadata_and_common_private_targets_are_denied() {
        let p = PeerPolicy::new();
        for s in [
            "169.254.169.254",
            "fd00:ec2::254",
            "127.0.0.53",
            "172.31.255.255",
            "100.100.100.200",
            "192.0.0.10",
            "255.255.255.255",
            "224.0.0.251",
            "ff02::1",
            "fe80::1",
            "fec0::1",
            "100::1",
            "2001:db8::1",
            "3fff::1",
            "2001:2::1",
            "2001:20::1",
            "2001:1::2",
            "198.19.0.1",
            "240.0.0.1",
            "::ffff:0:7f00:1",
            "5f00::1",
            "64:ff9b:1::8.8.8.8",
        ] {
            assert!(denied(&p, s), "{s} must be denied");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let p = PeerPolicy::new();
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:808:808::1",
            "2001:0:808:808:0:0:f7f7:f7f7",
            "2a00:1450:4001:82a::200e",
            "2001:4860:4860::8888",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.255",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
        ] {
            assert!(p.check_ip(ip(s)).is_ok(), "{s} must be allowed");
        }
    }

    #[test]
    fn port_zero_is_refused_even_for_public_peers() {
        let p = PeerPolicy::new();

        let r = p.check(sa("8.8.8.8:0"));

        assert!(matches!(r, Err(PeerDenied::PortZero { .. })));
        assert!(p.check(sa("8.8.8.8:3478")).is_ok());
    }

    #[test]
    fn denial_reports_the_embedded_address_and_category() {
        let p = PeerPolicy::new();

        let r = p.check(sa("[2002:7f00:1::]:9"));

        assert_eq!(
            r,
            Err(PeerDenied::DefaultDeny {
                peer: ip("2002:7f00:1::"),
                matched: ip("127.0.0.1"),
                range: cidr("127.0.0.0/8"),
                category: DenyCategory::Loopback,
            })
        );
        assert_eq!(r.map_err(|e| e.error_code()), Err(403));
    }

    // --- Precedence -----------------------------------------------------------------------

    #[test]
    fn allow_opens_a_default_range_in_every_form() {
        let p = PeerPolicy::new().with_allow([cidr("10.0.0.0/8")]);

        assert!(p.check_ip(ip("10.1.2.3")).is_ok());
        assert!(p.check_ip(ip("::ffff:10.1.2.3")).is_ok());
        assert!(p.check_ip(ip("64:ff9b::10.1.2.3")).is_ok());
        assert!(p.check_ip(ip("2002:a01:203::1")).is_ok());
        assert!(p.check_ip(ip("11.0.0.0")).is_ok());
        assert!(denied(&p, "192.168.0.1"));
        // The IPv4-compatible form stays refused: the form itself is on the list.
        assert!(denied(&p, "::10.1.2.3"));
    }

    #[test]
    fn allowing_an_embedding_prefix_does_not_open_its_embedded_addresses() {
        let p = PeerPolicy::new().with_allow([cidr("2002::/16"), cidr("::/96")]);

        assert!(denied(&p, "2002:7f00:1::"));
        assert!(denied(&p, "::127.0.0.1"));
        assert!(p.check_ip(ip("::8.8.8.8")).is_ok());
    }

    #[test]
    fn deny_beats_allow() {
        let p = PeerPolicy::new()
            .with_allow([cidr("0.0.0.0/0"), cidr("::/0")])
            .with_deny([cidr("8.8.8.0/24")]);

        assert!(p.check_ip(ip("127.0.0.1")).is_ok());
        assert!(denied(&p, "8.8.8.8"));
        assert!(denied(&p, "::ffff:8.8.8.8"));
        assert!(denied(&p, "2002:808:808::1"));
        assert!(denied(&p, "64:ff9b::808:808"));
    }

    #[test]
    fn explicit_deny_of_the_mapped_prefix_matches_the_original_spelling() {
        let p = PeerPolicy::new().with_deny([cidr("::ffff:0:0/96")]);

        assert!(denied(&p, "::ffff:8.8.8.8"));
        assert!(p.check_ip(ip("8.8.8.8")).is_ok());
    }

    #[test]
    fn own_addresses_are_denied_in_every_form_unless_allowed() {
        let p = PeerPolicy::new().with_own_addresses([ip("::ffff:8.8.4.4"), ip("2a01:4f8::1")]);

        assert!(denied(&p, "8.8.4.4"));
        assert!(denied(&p, "::ffff:8.8.4.4"));
        assert!(denied(&p, "2002:808:404::"));
        assert!(denied(&p, "2a01:4f8::1"));
        assert!(p.check_ip(ip("8.8.4.5")).is_ok());

        let opened = p.with_allow([cidr("8.8.4.4/32")]);
        assert!(opened.check_ip(ip("8.8.4.4")).is_ok());
    }

    #[test]
    fn network_specific_nat64_prefixes_are_decoded() {
        let p = PeerPolicy::new()
            .with_nat64_prefixes([cidr("2a01:db8:64::/96"), cidr("2a02:db8::/40")])
            .expect("valid prefixes");

        assert!(denied(&p, "2a01:db8:64::10.0.0.1"));
        assert!(denied(&p, "2a01:db8:64::127.0.0.1"));
        assert!(p.check_ip(ip("2a01:db8:64::8.8.8.8")).is_ok());
        // /40: 10.0.0.1 is split around the u octet: 2a02:0db8:00|0a:0000|00|01::.
        assert!(denied(&p, "2a02:db8:a:0:1::"));
        assert!(p.check_ip(ip("2a02:db8:8:808:8::")).is_ok());
        // Without the declaration the same address is an ordinary global IPv6 address.
        assert!(PeerPolicy::new()
            .check_ip(ip("2a01:db8:64::10.0.0.1"))
            .is_ok());
        // An allow for the embedded IPv4 opens it; a deny closes it.
        let opened = p.clone().with_allow([cidr("10.0.0.0/8")]);
        assert!(opened.check_ip(ip("2a01:db8:64::10.0.0.1")).is_ok());
        let closed = p.with_deny([cidr("8.8.8.8/32")]);
        assert!(denied(&closed, "2a01:db8:64::8.8.8.8"));
    }

    #[test]
    fn nat64_prefix_lengths_are_validated() {
        for bad in ["2a01:db8::/33", "10.0.0.0/8", "2a01:db8::/128"] {
            let r = PeerPolicy::new().with_nat64_prefixes([cidr(bad)]);
            assert!(matches!(r, Err(CidrError::NotNat64Prefix { .. })), "{bad}");
        }
    }

    // --- Normalisation --------------------------------------------------------------------

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

    #[test]
    fn nat64_local_use_checks_every_position() {
        let n = normalize(ip("64:ff9b:1::8.8.8.8"));
        let kinds: Vec<_> = n.embedded().map(|e| e.kind).collect();
        assert_eq!(kinds.len(), 4);
        let p = PeerPolicy::new().with_allow([cidr("64:ff9b:1::/48")]);
        // 64:ff9b:1:0:0:... read as a /48 prefix embeds 0.0.x.x, which is refused.
        assert!(denied(&p, "64:ff9b:1::8.8.8.8"));
        // Every reading of this one is public: /48 → 8.8.8.8 (bits 48..63, 72..87) and so on.
        assert!(p.check_ip(ip("64:ff9b:1:808:8:808:808:808")).is_ok());
    }

    // --- Cidr -----------------------------------------------------------------------------

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

    // --- Property tests -------------------------------------------------------------------

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn v6(bits: u128) -> IpAddr {
            IpAddr::V6(Ipv6Addr::from(bits))
        }

        /// Every IPv6 form that embeds `v`. `other` fills the other Teredo address and `r` supplies
        /// random filler for the remaining fields (6to4 subnet and interface id, Teredo flags and
        /// port, NAT64 local-use bits, ISATAP prefix under 2a00::/12).
        fn embeddings(v: Ipv4Addr, other: Ipv4Addr, r: u128) -> Vec<(EmbeddingKind, IpAddr)> {
            let v = u128::from(u32::from(v));
            let o = u128::from(u32::from(other));
            let teredo = 0x2001_0000_u128 << 96;
            let flags_port = (r & 0xffff_ffff) << 32;
            vec![
                (EmbeddingKind::Ipv4Compatible, v6(v)),
                (
                    EmbeddingKind::Nat64WellKnown,
                    v6((0x64_ff9b_u128 << 96) | v),
                ),
                (
                    EmbeddingKind::Nat64LocalUse { prefix_len: 96 },
                    v6((0x64_ff9b_0001_u128 << 80) | (r & (0xffff_ffff_ffff_u128 << 32)) | v),
                ),
                (
                    EmbeddingKind::SixToFour,
                    v6((0x2002_u128 << 112) | (v << 80) | (r & ((1_u128 << 80) - 1))),
                ),
                (
                    EmbeddingKind::TeredoServer,
                    v6(teredo | (v << 64) | flags_port | (!o & 0xffff_ffff)),
                ),
                (
                    EmbeddingKind::TeredoClient,
                    v6(teredo | (o << 64) | flags_port | (!v & 0xffff_ffff)),
                ),
                (
                    EmbeddingKind::Isatap,
                    v6((0x2a00_u128 << 112)
                        | (r & (0x000f_ffff_ffff_ffff_u128 << 64))
                        | (0x0200_5efe_u128 << 32)
                        | v),
                ),
            ]
        }

        fn denied_v4() -> impl Strategy<Value = Ipv4Addr> {
            (0..DEFAULT_DENY_V4.len(), any::<u32>()).prop_map(|(i, host)| {
                let c = DEFAULT_DENY_V4[i].cidr;
                let (net, len) = match c.net {
                    Net::V4 { bits, len } => (bits, len),
                    Net::V6 { .. } => unreachable!(),
                };
                Ipv4Addr::from(net | (host & !mask_v4(len)))
            })
        }

        fn public_v4() -> impl Strategy<Value = Ipv4Addr> {
            any::<u32>()
                .prop_map(Ipv4Addr::from)
                .prop_filter("public", |a| default_deny(IpAddr::V4(*a)).is_none())
        }

        fn is_isatap(a: IpAddr) -> bool {
            match a {
                IpAddr::V6(a) => bits_u32(u128::from(a), 64) & 0xfcff_ffff == 0x0000_5efe,
                IpAddr::V4(_) => false,
            }
        }

        proptest! {
            #[test]
            fn every_embedding_of_a_denied_v4_is_denied(
                v in denied_v4(), other in any::<u32>(), r in any::<u128>(),
            ) {
                let p = PeerPolicy::new();
                // Opening every embedding prefix must not open the embedded address.
                let opened = PeerPolicy::new().with_allow([
                    "::/96".parse::<Cidr>().expect("c"),
                    "64:ff9b:1::/48".parse::<Cidr>().expect("c"),
                    "2000::/3".parse::<Cidr>().expect("c"),
                ]);
                prop_assert!(p.check_ip(IpAddr::V4(v)).is_err());
                prop_assert!(p.check_ip(v6(u128::from(v.to_ipv6_mapped()))).is_err());
                for (kind, addr) in embeddings(v, Ipv4Addr::from(other), r) {
                    prop_assert!(p.check_ip(addr).is_err(), "{:?} {} allowed", kind, addr);
                    prop_assert!(opened.check_ip(addr).is_err(), "{:?} {} allowed when opened", kind, addr);
                }
            }

            #[test]
            fn public_v4_is_allowed_in_every_form_not_itself_denied(
                v in public_v4(), other in public_v4(), r in any::<u128>(),
            ) {
                let p = PeerPolicy::new();
                prop_assert!(p.check_ip(IpAddr::V4(v)).is_ok());
                prop_assert!(p.check_ip(v6(u128::from(v.to_ipv6_mapped()))).is_ok());
                for (kind, addr) in embeddings(v, other, r) {
                    let form_denied = matches!(kind,
                        EmbeddingKind::Ipv4Compatible | EmbeddingKind::Nat64LocalUse { .. });
                    if form_denied {
                        prop_assert!(p.check_ip(addr).is_err(), "{:?} {} allowed", kind, addr);
                    } else if kind == EmbeddingKind::Isatap || !is_isatap(addr) {
                        // (Random filler that happens to spell an ISATAP identifier embeds a
                        // random IPv4 address, which may be denied; about 1 case in 2^30.)
                        prop_assert!(p.check_ip(addr).is_ok(), "{:?} {} denied", kind, addr);
                    }
                }
            }

            #[test]
            fn explicit_deny_wins_over_any_allow(a in any::<u128>(), len in 0_u8..=128, v4 in any::<bool>()) {
                let (addr, rule) = if v4 {
                    let a = Ipv4Addr::from(a as u32);
                    let len = len % 33;
                    (IpAddr::V4(a), Cidr::v4_const(u32::from(a), len))
                } else {
                    (v6(a), Cidr::v6_const(a, len))
                };
                let p = PeerPolicy::new()
                    .with_allow([rule, Cidr::v4_const(0, 0), Cidr::v6_const(0, 0)])
                    .with_deny([rule]);
                prop_assert!(p.check_ip(addr).is_err());
            }

            #[test]
            fn allow_all_opens_everything_and_empty_lists_match_defaults(a in any::<u128>(), v4 in any::<bool>()) {
                let addr = if v4 { IpAddr::V4(Ipv4Addr::from(a as u32)) } else { v6(a) };
                let open = PeerPolicy::new().with_allow([Cidr::v4_const(0, 0), Cidr::v6_const(0, 0)]);
                prop_assert!(open.check_ip(addr).is_ok());
                let defaults_only = PeerPolicy::new();
                let expected = normalize(addr).addresses().all(|x| default_deny(x).is_none());
                prop_assert_eq!(defaults_only.check_ip(addr).is_ok(), expected);
            }

            #[test]
            fn cidr_contains_matches_shift_compare(a in any::<u128>(), b in any::<u128>(), len in 0_u8..=128) {
                let c = Cidr::v6_const(a, len);
                let expected = len == 0 || (a >> (128 - u32::from(len))) == (b >> (128 - u32::from(len)));
                prop_assert_eq!(c.contains(v6(b)), expected);
                let (a4, b4, len4) = (a as u32, b as u32, len % 33);
                let c4 = Cidr::v4_const(a4, len4);
                let expected4 = len4 == 0 || (a4 >> (32 - u32::from(len4))) == (b4 >> (32 - u32::from(len4)));
                prop_assert_eq!(c4.contains(IpAddr::V4(Ipv4Addr::from(b4))), expected4);
            }

            #[test]
            fn cidr_display_parse_round_trip(a in any::<u128>(), len in 0_u8..=128, v4 in any::<bool>()) {
                let c = if v4 { Cidr::v4_const(a as u32, len % 33) } else { Cidr::v6_const(a, len) };
                prop_assert_eq!(c.to_string().parse::<Cidr>(), Ok(c));
            }
        }
    }
}
