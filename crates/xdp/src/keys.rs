//! The byte layout of the program's map keys and values (the structs in `bpf/turn_relay.c`).
//! Addresses and ports are in network byte order; counters are host-order u64.

use std::net::{SocketAddr, SocketAddrV4};

use crate::v4;

/// `struct chan_key`: client IP, server IP, client port, server port, channel, padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelKey(pub [u8; 16]);

/// `struct peer_key`: peer IP, relay IP, peer port, relay port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerKey(pub [u8; 12]);

fn put_addr(buf: &mut [u8], ip_at: usize, port_at: usize, a: SocketAddrV4) {
    buf[ip_at..ip_at + 4].copy_from_slice(&a.ip().octets());
    buf[port_at..port_at + 2].copy_from_slice(&a.port().to_be_bytes());
}

/// Keys and values of a channel's two entries; `None` unless every address is IPv4.
pub(crate) fn entries(
    client: SocketAddr,
    server: SocketAddr,
    relay: SocketAddr,
    peer: SocketAddr,
    channel: u16,
) -> Option<(ChannelKey, [u8; 32], PeerKey, [u8; 32])> {
    let (client, server, relay, peer) = (v4(client)?, v4(server)?, v4(relay)?, v4(peer)?);
    // A wildcard listener or relay socket (0.0.0.0) names no source address to write into a
    // packet: such channels stay on the user-space relay.
    if server.ip().is_unspecified() || relay.ip().is_unspecified() {
        return None;
    }
    let mut ck = [0u8; 16];
    put_addr(&mut ck, 0, 8, client);
    put_addr(&mut ck, 4, 10, server);
    ck[12..14].copy_from_slice(&channel.to_be_bytes());
    // struct chan_val: relay IP, peer IP, relay port, peer port, pad, packets, bytes.
    let mut cv = [0u8; 32];
    put_addr(&mut cv, 0, 8, relay);
    put_addr(&mut cv, 4, 10, peer);
    let mut pk = [0u8; 12];
    put_addr(&mut pk, 0, 8, peer);
    put_addr(&mut pk, 4, 10, relay);
    // struct peer_val: client IP, server IP, client port, server port, channel, pad, packets,
    // bytes.
    let mut pv = [0u8; 32];
    put_addr(&mut pv, 0, 8, client);
    put_addr(&mut pv, 4, 10, server);
    pv[12..14].copy_from_slice(&channel.to_be_bytes());
    Some((ChannelKey(ck), cv, PeerKey(pk), pv))
}

/// `perm_key`, `perm_val`, `dperm_key`, `dperm_val` bytes.
pub(crate) type PermissionEntries = ([u8; 16], [u8; 24], [u8; 12], [u8; 32]);

/// Keys and values of a permission's two entries (`struct perm_key`/`perm_val` for Send
/// indications, `struct dperm_key`/`dperm_val` for Data indications); `None` unless every
/// address is IPv4 and the listening and relay addresses are not wildcards.
pub(crate) fn permission_entries(
    client: SocketAddr,
    server: SocketAddr,
    relay: SocketAddr,
    peer: std::net::IpAddr,
) -> Option<PermissionEntries> {
    let (client, server, relay) = (v4(client)?, v4(server)?, v4(relay)?);
    let peer = ip_of(SocketAddr::new(peer, 0))?;
    if server.ip().is_unspecified() || relay.ip().is_unspecified() {
        return None;
    }
    // struct perm_key: client IP, server IP, client port, server port, peer IP.
    let mut k = [0u8; 16];
    put_addr(&mut k, 0, 8, client);
    put_addr(&mut k, 4, 10, server);
    k[12..16].copy_from_slice(&peer.octets());
    // struct perm_val: relay IP, relay port, pad, packets, bytes.
    let mut v = [0u8; 24];
    put_addr(&mut v, 0, 4, relay);
    // struct dperm_key: peer IP, relay IP, relay port, pad.
    let mut dk = [0u8; 12];
    dk[0..4].copy_from_slice(&peer.octets());
    put_addr(&mut dk, 4, 8, relay);
    // struct dperm_val: client IP, server IP, client port, server port, pad, packets, bytes.
    let mut dv = [0u8; 32];
    put_addr(&mut dv, 0, 8, client);
    put_addr(&mut dv, 4, 10, server);
    Some((k, v, dk, dv))
}

/// The packets and bytes counters (two u64) at the end of a map value: `chan_val`, `peer_val`,
/// `perm_val`, `dperm_val`.
pub(crate) fn tail_counts<const N: usize>(v: &[u8; N]) -> (u64, u64) {
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&v[at..at + 8]);
        u64::from_ne_bytes(b)
    };
    (word(N - 16), word(N - 8))
}

/// The IPv4 address of `a`, if it is one (IPv4-mapped IPv6 counts).
pub(crate) fn ip_of(a: SocketAddr) -> Option<std::net::Ipv4Addr> {
    v4(a).map(|v| *v.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_c_structs() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let (ck, cv, pk, pv) = entries(
            a("11.0.0.1:1000"),
            a("11.0.1.1:3478"),
            a("11.0.2.1:50000"),
            a("11.0.3.1:2000"),
            0x4001,
        )
        .unwrap();
        assert_eq!(
            ck.0,
            [11, 0, 0, 1, 11, 0, 1, 1, 0x03, 0xe8, 0x0d, 0x96, 0x40, 0x01, 0, 0]
        );
        assert_eq!(
            &cv[..12],
            &[11, 0, 2, 1, 11, 0, 3, 1, 0xc3, 0x50, 0x07, 0xd0]
        );
        assert_eq!(pk.0, [11, 0, 3, 1, 11, 0, 2, 1, 0x07, 0xd0, 0xc3, 0x50]);
        assert_eq!(
            &pv[..14],
            &[11, 0, 0, 1, 11, 0, 1, 1, 0x03, 0xe8, 0x0d, 0x96, 0x40, 0x01]
        );
        assert_eq!(tail_counts(&pv), (0, 0));
    }

    #[test]
    fn permission_layout_matches_the_c_structs() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let (k, v, dk, dv) = permission_entries(
            a("11.0.0.1:1000"),
            a("11.0.1.1:3478"),
            a("11.0.2.1:50000"),
            "11.0.3.1".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            k,
            [11, 0, 0, 1, 11, 0, 1, 1, 0x03, 0xe8, 0x0d, 0x96, 11, 0, 3, 1]
        );
        assert_eq!(&v[..8], &[11, 0, 2, 1, 0xc3, 0x50, 0, 0]);
        assert_eq!(dk, [11, 0, 3, 1, 11, 0, 2, 1, 0xc3, 0x50, 0, 0]);
        assert_eq!(
            &dv[..16],
            &[11, 0, 0, 1, 11, 0, 1, 1, 0x03, 0xe8, 0x0d, 0x96, 0, 0, 0, 0]
        );
        assert_eq!(tail_counts(&v), (0, 0));
        assert_eq!(tail_counts(&dv), (0, 0));
        assert!(permission_entries(
            a("11.0.0.1:1000"),
            a("11.0.1.1:3478"),
            a("11.0.2.1:50000"),
            "2011::1".parse().unwrap(),
        )
        .is_none());
    }

    #[test]
    fn ipv6_is_left_to_user_space() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(entries(
            a("[2001::1]:1"),
            a("[2001::2]:2"),
            a("[2001::3]:3"),
            a("[2001::4]:4"),
            0x4000
        )
        .is_none());
        // A wildcard listening address cannot be a packet's source.
        assert!(entries(
            a("11.0.0.1:1"),
            a("0.0.0.0:3478"),
            a("11.0.0.3:3"),
            a("11.0.0.4:4"),
            0x4000
        )
        .is_none());
        // IPv4-mapped addresses (a dual-stack listener) are IPv4 on the wire.
        assert!(entries(
            a("[::ffff:11.0.0.1]:1"),
            a("11.0.0.2:2"),
            a("11.0.0.3:3"),
            a("11.0.0.4:4"),
            0x4000
        )
        .is_some());
    }
}
