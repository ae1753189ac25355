//! The client's IP address behind trusted reverse proxies.
//!
//! The socket peer address is the truth unless that peer is a proxy the operator listed with
//! `--trusted-proxy`: only then are `X-Forwarded-For` (or, without it, RFC 7239 `Forwarded:
//! for=`) read, walking the hops from the right (the ones appended by proxies closest to us)
//! and taking the first address that is not itself a trusted proxy. Everything to its left was
//! written by the client or by proxies we know nothing about, so it is never believed. A header
//! from an untrusted peer is ignored outright: anyone can send one.
//!
//! Proxy networks are [`floe_turn::policy::Cidr`]s, the type of the TURN peer rules, with its
//! rule: host bits below the prefix are refused (`10.0.0.1/8` asks "did you mean 10.0.0.0/8?").
//! A prefix matches its own family only; every address is canonicalised first, so an
//! IPv4-mapped IPv6 peer (`::ffff:10.0.0.9`) matches the IPv4 networks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use axum::http::{header, HeaderMap};
use floe_turn::policy::Cidr;

/// The client address for a request from socket peer `peer` (see the module docs).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let peer = peer.to_canonical();
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip.to_canonical()));
    if !is_trusted(peer) {
        return peer;
    }
    let hops = if headers.contains_key("x-forwarded-for") {
        forwarded_for_hops(headers)
    } else {
        forwarded_hops(headers)
    };
    // Right to left: the nearest hop first. An unparsable or obfuscated hop (`unknown`,
    // `_hidden`) stops the walk: the proxy that wrote it is the best we know.
    let mut client = peer;
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if is_trusted(*ip) => client = *ip,
            Some(ip) => return *ip,
            None => return client,
        }
    }
    client
}

/// The hops of every `X-Forwarded-For` header, in order (`None` for an unparsable one).
fn forwarded_for_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(s) => s.split(',').map(parse_node).collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect()
}

/// The `for=` nodes of every RFC 7239 `Forwarded` header, in order.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(header::FORWARDED)
        .iter()
        .flat_map(|v| match v.to_str() {
            Ok(s) => s
                .split(',')
                .map(|element| {
                    element.split(';').find_map(|pair| {
                        let (k, v) = pair.split_once('=')?;
                        k.trim().eq_ignore_ascii_case("for").then(|| parse_node(v))
                    })
                })
                // An element without `for=` says nothing about the client: a gap we cannot
                // see through, like an obfuscated node.
                .map(Option::flatten)
                .collect::<Vec<_>>(),
            Err(_) => vec![None],
        })
        .collect()
}

/// One node: `192.0.2.1`, `2001:db8::1`, `"[2001:db8::1]:4711"`, `"192.0.2.1:80"`.
fn parse_node(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"').trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (ip, _) = rest.split_once(']')?;
        return ip
            .parse::<Ipv6Addr>()
            .ok()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    let (ip, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    ip.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn cidrs_parse_and_match() {
        // One rule with the TURN peer ranges: host bits are a typo, not a network.
        let e = "10.1.2.3/8".parse::<Cidr>().unwrap_err().to_string();
        assert!(e.contains("did you mean 10.0.0.0/8?"), "{e}");
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/8");
        assert!(c.contains(ip("10.200.0.1")));
        let none = HeaderMap::new();
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.9"), &none, &[c]),
            ip("10.0.0.9"),
            "v4-mapped matches"
        );
        let h = headers(&[("x-forwarded-for", "192.0.2.1")]);
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.9"), &h, &[c]),
            ip("192.0.2.1"),
            "v4-mapped peer is trusted"
        );
        assert!(!c.contains(ip("11.0.0.1")));
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains(ip("2001:db8:1::5")));
        assert!(!c.contains(ip("10.0.0.1")));
        let one: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(one.to_string(), "127.0.0.1/32");
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        for bad in ["", "10.0.0.0/33", "::/129", "example.org/8", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let trusted = ["10.0.0.0/8".parse().unwrap()];
        let h = headers(&[
            ("x-forwarded-for", "127.0.0.1"),
            ("forwarded", "for=127.0.0.1"),
        ]);
        assert_eq!(client_ip(ip("192.0.2.7"), &h, &trusted), ip("192.0.2.7"));
        assert_eq!(client_ip(ip("192.0.2.7"), &h, &[]), ip("192.0.2.7"));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer = ip("10.0.0.1");
        // The client forged "1.1.1.1"; the proxy appended the address it saw.
        let h = headers(&[("x-forwarded-for", "1.1.1.1, 198.51.100.4, 10.0.0.2")]);
        assert_eq!(client_ip(peer, &h, &trusted), ip("198.51.100.4"));
        // Several headers are one list.
        let h = headers(&[
            ("x-forwarded-for", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.4"),
        ]);
        assert_eq!(client_ip(peer, &h, &trusted), ip("198.51.100.4"));
        // Only trusted hops: the left-most of them.
        let h = headers(&[("x-forwarded-for", "10.9.9.9, 10.0.0.2")]);
        assert_eq!(client_ip(peer, &h, &trusted), ip("10.9.9.9"));
        // Garbage stops the walk at the proxy that wrote it.
        let h = headers(&[("x-forwarded-for", "198.51.100.4, junk")]);
        assert_eq!(client_ip(peer, &h, &trusted), peer);
        // No header: the proxy itself.
        assert_eq!(client_ip(peer, &HeaderMap::new(), &trusted), peer);
    }

    #[test]
    fn rfc7239_forwarded_is_read_when_x_forwarded_for_is_absent() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let peer = ip("10.0.0.1");
        let h = headers(&[(
            "forwarded",
            "for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\";proto=https, for=10.0.0.3",
        )]);
        assert_eq!(client_ip(peer, &h, &trusted), ip("2001:db8:cafe::17"));
        let h = headers(&[("forwarded", "for=\"192.0.2.60:8080\";by=10.0.0.1")]);
        assert_eq!(client_ip(peer, &h, &trusted), ip("192.0.2.60"));
        let h = headers(&[("forwarded", "for=192.0.2.60, for=_hidden")]);
        assert_eq!(client_ip(peer, &h, &trusted), peer);
        let h = headers(&[("forwarded", "for=unknown")]);
        assert_eq!(client_ip(peer, &h, &trusted), peer);
    }
}
