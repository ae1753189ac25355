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
//!
//! Files: this one the policy itself ([`PeerPolicy`], [`PeerDenied`]); `normalize` the decoding of
//! embedded IPv4 forms; `default_deny` the special-purpose tables and [`DenyCategory`]; `cidr`
//! [`Cidr`] and [`CidrError`].

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use cidr::Net;
use normalize::{canonical_ip, rfc6052_extract};

mod cidr;
mod default_deny;
mod normalize;

pub use cidr::{Cidr, CidrError};
pub use default_deny::{
    default_deny, DefaultRange, DenyCategory, DEFAULT_DENY_V4, DEFAULT_DENY_V6,
};
pub use normalize::{normalize, Embedding, EmbeddingKind, Normalized};

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
// Tests
// ---------------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::cidr::mask_v4;
    use super::normalize::bits_u32;
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn ipv6_loopback_is_denied_by_default_and_opened_by_allow() {
        let lo: IpAddr = "::1".parse().unwrap();
        assert!(PeerPolicy::new().check_ip(lo).is_err());
        assert!(PeerPolicy::new().check_ip("::".parse().unwrap()).is_err());
        let open = PeerPolicy::new().with_allow(["::1/128".parse::<Cidr>().unwrap()]);
        assert!(open.check_ip(lo).is_ok());
    }

    pub(super) fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test socket address")
    }

    pub(super) fn cidr(s: &str) -> Cidr {
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
