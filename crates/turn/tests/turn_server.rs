//! The TURN server state machine in virtual time: the happy path, relaying both ways, expiry,
//! retransmissions, and every error path (RFC 8656, RFC 8489 §9.2).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use floe_stun::attr::{
    ChannelNumber, Data, DontFragment, Lifetime, Nonce, PasswordAlgorithms, Realm,
    RequestedTransport, XorMappedAddress, XorPeerAddress,
};
use floe_stun::{AttrType, ChannelData, Class, Message, Method};
use floe_turn::quota::QuotaConfig;
use floe_turn::server::{
    DeleteReason, DropReason, Event, PeerAddr, RelayAddr, Shared, Transmit, Transport,
};

fn permit(h: &mut Harness, c: &mut TestClient, peer: &str) -> Vec<u8> {
    h.request(c, Method::CREATE_PERMISSION, |b| {
        b.add(&XorPeerAddress(addr(peer))).expect("peer");
    })
}

fn bind_channel(h: &mut Harness, c: &mut TestClient, ch: u16, peer: &str) -> Vec<u8> {
    h.request(c, Method::CHANNEL_BIND, |b| {
        b.add(&ChannelNumber(ch)).expect("ch");
        b.add(&XorPeerAddress(addr(peer))).expect("peer");
    })
}

fn refresh(h: &mut Harness, c: &mut TestClient, secs: u32) -> Vec<u8> {
    h.request(c, Method::REFRESH, |b| {
        b.add(&Lifetime(secs)).expect("lifetime");
    })
}

#[test]
fn happy_path_udp() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");

    // 401 with REALM, NONCE (nonce cookie), PASSWORD-ALGORITHMS, SOFTWARE, FINGERPRINT, no MI.
    let challenge = h.request(&mut c, Method::ALLOCATE, |b| {
        b.add(&RequestedTransport(RequestedTransport::UDP))
            .expect("rt");
    });
    assert_eq!(error_code(&challenge), Some(401));
    let m = parse(&challenge);
    assert_eq!(
        m.get::<Realm<'_>>().expect("realm").expect("realm").0,
        REALM
    );
    let nonce = m.get::<Nonce<'_>>().expect("nonce").expect("nonce").0;
    assert!(nonce.starts_with("obMatJos2"), "nonce cookie: {nonce}");
    let pas = m
        .get::<PasswordAlgorithms<'_>>()
        .expect("pas")
        .expect("pas");
    let algs: Vec<u16> = pas.iter().map(|a| a.algorithm).collect();
    assert_eq!(algs, vec![2, 1]);
    assert!(!m.has_integrity() && !m.has_integrity_sha256());
    assert!(m.verify_fingerprint());
    assert!(m.raw(AttrType::SOFTWARE).is_some());
    assert_eq!(
        h.server.allocation_count(),
        0,
        "no state for the unauthenticated request"
    );

    // Allocate.
    let resp = h.allocate_with(&mut c, |_| {});
    assert_success(&resp, &c);
    let m = parse(&resp);
    let relay = relayed(&resp)[0];
    assert_eq!(relay.ip(), ip(RELAY_V4));
    assert!((49152..=65535).contains(&relay.port()));
    assert_eq!(m.get::<Lifetime>().expect("lt").expect("lt").0, 600);
    assert_eq!(
        m.get::<XorMappedAddress>().expect("xma").expect("xma").0,
        c.tuple.remote
    );
    assert!(h
        .binder
        .bound
        .contains(&(relay, floe_turn::server::RelayTransport::Udp)));
    assert!(matches!(
        h.take_events().as_slice(),
        [Event::AllocationCreated { username, .. }] if &**username == "alice"
    ));

    // Without a permission, nothing is relayed either way.
    assert!(h
        .client(c.tuple, &send_indication(addr(PEER), b"early"))
        .is_none());
    assert!(h.peer(relay, addr(PEER), b"early").is_none());
    assert_eq!(h.server.stats().dropped.get(DropReason::NoPermission), 2);

    // CreatePermission, Send -> peer, peer -> Data indication.
    assert_success(&permit(&mut h, &mut c, PEER), &c);
    let (t, bytes) = h
        .client(c.tuple, &send_indication(addr(PEER), b"hello peer"))
        .expect("relayed");
    assert_eq!(
        t,
        Transmit::ToPeer {
            relay: RelayAddr(relay),
            peer: PeerAddr(addr(PEER)),
            len: 10,
            dont_fragment: false
        }
    );
    assert_eq!(bytes, b"hello peer");
    let (t, bytes) = h.peer(relay, addr(PEER), b"hello client").expect("data");
    assert!(matches!(t, Transmit::ToClient { client, .. } if client == c.tuple));
    let m = parse(&bytes);
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::DATA));
    assert_eq!(
        m.get::<XorPeerAddress>().expect("p").expect("p").0,
        addr(PEER)
    );
    assert_eq!(
        m.get::<Data<'_>>().expect("d").expect("d").0,
        b"hello client"
    );
    // Another port of the same IP is covered by the IP permission (RFC 8656 §9).
    assert!(h.peer(relay, addr("8.8.8.8:9999"), b"x").is_some());

    // ChannelBind, ChannelData both ways (unpadded over UDP).
    assert_success(&bind_channel(&mut h, &mut c, 0x4001, PEER), &c);
    let (t, bytes) = h
        .client(c.tuple, &channel_data(0x4001, b"abcde"))
        .expect("cd");
    assert!(matches!(t, Transmit::ToPeer { peer, len: 5, .. } if peer == PeerAddr(addr(PEER))));
    assert_eq!(bytes, b"abcde");
    let (_, bytes) = h.peer(relay, addr(PEER), b"fghij").expect("cd back");
    assert_eq!(bytes.len(), 9);
    let cd = ChannelData::parse(&bytes).expect("channel data");
    assert_eq!((cd.channel, cd.data), (0x4001, &b"fghij"[..]));
    // Unbound channel: dropped.
    assert!(h.client(c.tuple, &channel_data(0x4002, b"x")).is_none());

    // Refresh, then delete.
    let resp = refresh(&mut h, &mut c, 1200);
    assert_success(&resp, &c);
    assert_eq!(
        parse(&resp).get::<Lifetime>().expect("lt").expect("lt").0,
        1200
    );
    let resp = refresh(&mut h, &mut c, 0);
    assert_success(&resp, &c);
    assert_eq!(
        parse(&resp).get::<Lifetime>().expect("lt").expect("lt").0,
        0
    );
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.binder.bound.is_empty());
    assert_eq!(h.shared.total_allocations(), 0);
    assert!(h.take_events().iter().any(|e| matches!(
        e,
        Event::AllocationDeleted {
            reason: DeleteReason::Refresh,
            ..
        }
    )));
    assert_eq!(h.server.timer_count(), 0, "every timer disarmed");
    let s = h.server.stats();
    assert_eq!(
        (
            s.allocations_created,
            s.allocations_deleted,
            s.allocations_active
        ),
        (1, 1, 0)
    );
    assert_eq!((s.packets_to_peer, s.packets_to_client), (2, 3));
    assert_eq!((s.permissions_active, s.channels_active), (0, 0));
}

#[test]
fn channel_data_is_padded_over_tcp_and_tls() {
    for transport in [Transport::Tcp, Transport::Tls] {
        let mut h = Harness::new();
        let mut c = TestClient::new(transport, "203.0.113.5:40000", "alice", "alice-pw");
        let relay = h.allocate(&mut c);
        assert_success(&bind_channel(&mut h, &mut c, 0x4000, PEER), &c);
        let (_, bytes) = h.peer(relay, addr(PEER), b"12345").expect("cd");
        assert_eq!(bytes.len(), 12, "4 header + 5 data + 3 padding");
        assert_eq!(ChannelData::frame_len(&bytes), Some(12));
        // Padded ChannelData from the client is accepted too.
        let mut padded = channel_data(0x4000, b"12345");
        padded.extend_from_slice(&[0, 0, 0]);
        let (_, bytes) = h.client(c.tuple, &padded).expect("to peer");
        assert_eq!(bytes, b"12345");
        // Counted under the client's transport, and only there.
        for (t, traffic) in h.server.stats().by_transport.iter() {
            let want = if t == transport {
                (1, 5, 1, 5)
            } else {
                (0, 0, 0, 0)
            };
            assert_eq!(
                (
                    traffic.packets_to_peer,
                    traffic.bytes_to_peer,
                    traffic.packets_to_client,
                    traffic.bytes_to_client
                ),
                want,
                "{t:?}"
            );
        }
        // The client's connection closes: the allocation goes (RFC 8656 §3.1).
        h.server.handle_client_closed(h.now, c.tuple, &mut h.binder);
        assert_eq!(h.server.allocation_count(), 0);
        assert!(h.binder.bound.is_empty());
    }
}

#[test]
fn dont_fragment_is_passed_to_the_shell() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    let resp = h.allocate_with(&mut c, |b| b.add(&DontFragment).expect("df"));
    assert_success(&resp, &c);
    let relay = relayed(&resp)[0];
    assert_success(&permit(&mut h, &mut c, PEER), &c);
    let (t, _) = h
        .client(c.tuple, &send_indication(addr(PEER), b"x"))
        .expect("sent");
    assert_eq!(
        t,
        Transmit::ToPeer {
            relay: RelayAddr(relay),
            peer: PeerAddr(addr(PEER)),
            len: 1,
            dont_fragment: true
        }
    );
}

#[test]
fn external_ip_is_advertised() {
    let mut cfg = config();
    cfg.external_ips = vec![ip("198.51.100.77")];
    let mut h = Harness::with(cfg, Default::default());
    let mut c = TestClient::udp("203.0.113.5:40000");
    let resp = h.allocate_with(&mut c, |_| {});
    assert_success(&resp, &c);
    let advertised = relayed(&resp)[0];
    assert_eq!(advertised.ip(), ip("198.51.100.77"));
    // The relay socket itself is on the local relay IP, same port.
    let (bound, _) = *h.binder.bound.iter().next().expect("bound");
    assert_eq!(bound.ip(), ip(RELAY_V4));
    assert_eq!(bound.port(), advertised.port());
}

#[test]
fn retransmitted_requests_get_the_identical_answer() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    let _ = h.request(&mut c, Method::ALLOCATE, |b| {
        b.add(&RequestedTransport(RequestedTransport::UDP))
            .expect("rt");
    });
    let req = c.request(Method::ALLOCATE, |b| {
        b.add(&RequestedTransport(RequestedTransport::UDP))
            .expect("rt");
    });
    let (_, first) = h.client(c.tuple, &req).expect("answer");
    h.advance(Duration::from_secs(5));
    let (_, second) = h.client(c.tuple, &req).expect("answer");
    assert_eq!(first, second);
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.server.stats().retransmissions, 1);

    // A new transaction on the same 5-tuple is a 437.
    let resp = h.allocate_with(&mut c, |_| {});
    assert_error(&resp, 437, &c);

    // Refresh(0) retransmitted after the deletion still gets its success, not 437.
    let req = c.request(Method::REFRESH, |b| b.add(&Lifetime(0)).expect("lt"));
    let (_, first) = h.client(c.tuple, &req).expect("answer");
    assert_success(&first, &c);
    let (_, second) = h.client(c.tuple, &req).expect("answer");
    assert_eq!(first, second);

    // After 40 s the cache has forgotten: the same Refresh is now a 437.
    h.advance(Duration::from_secs(41));
    let (_, third) = h.client(c.tuple, &req).expect("answer");
    assert_error(&third, 437, &c);
}

#[test]
fn allocate_retransmission_is_recognised_after_cache_eviction() {
    let mut cfg = config();
    cfg.transaction_cache_entries = 0;
    let mut h = Harness::with(cfg, Default::default());
    let mut c = TestClient::udp("203.0.113.5:40000");
    let _ = h.request(&mut c, Method::ALLOCATE, |b| {
        b.add(&RequestedTransport(RequestedTransport::UDP))
            .expect("rt");
    });
    let req = c.request(Method::ALLOCATE, |b| {
        b.add(&RequestedTransport(RequestedTransport::UDP))
            .expect("rt");
    });
    let (_, first) = h.client(c.tuple, &req).expect("answer");
    let (_, second) = h.client(c.tuple, &req).expect("answer");
    assert_success(&second, &c);
    assert_eq!(relayed(&first), relayed(&second));
    assert_eq!(h.server.cached_transactions(), 0);
}

#[test]
fn transaction_cache_is_bounded() {
    let mut cfg = config();
    cfg.transaction_cache_entries = 3;
    let mut h = Harness::with(cfg, Default::default());
    let mut c = TestClient::udp("203.0.113.5:40000");
    h.allocate(&mut c);
    for _ in 0..10 {
        assert_success(&permit(&mut h, &mut c, PEER), &c);
    }
    assert_eq!(h.server.cached_transactions(), 3);
}

#[test]
fn permissions_channels_and_allocations_expire() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    let relay = h.allocate(&mut c);
    assert_success(&refresh(&mut h, &mut c, 3600), &c);
    assert_success(&permit(&mut h, &mut c, PEER2), &c);
    assert_success(&bind_channel(&mut h, &mut c, 0x4000, PEER), &c);
    assert_eq!(h.server.stats().permissions_active, 2);

    // 299 s: both permissions alive.
    h.advance(Duration::from_secs(299));
    assert!(h.peer(relay, addr(PEER2), b"x").is_some());
    // 300 s: RFC 8656 §9 permissions last 300 s.
    h.advance(Duration::from_secs(1));
    assert!(h.peer(relay, addr(PEER2), b"x").is_none());
    assert!(h.peer(relay, addr(PEER), b"x").is_none());
    assert_eq!(h.server.stats().permissions_active, 0);
    // The channel is still bound but without a permission nothing flows.
    assert!(h.client(c.tuple, &channel_data(0x4000, b"x")).is_none());
    // Refreshing the permission alone revives the channel.
    assert_success(&permit(&mut h, &mut c, PEER), &c);
    assert!(h.client(c.tuple, &channel_data(0x4000, b"x")).is_some());
    h.advance(Duration::from_secs(200));
    assert_success(&permit(&mut h, &mut c, PEER), &c);
    // 600 s after the bind the channel is gone (§12) though the permission is alive.
    h.advance(Duration::from_secs(100));
    assert!(h.client(c.tuple, &channel_data(0x4000, b"x")).is_none());
    assert_eq!(h.server.stats().channels_active, 0);
    let (_, bytes) = h.peer(relay, addr(PEER), b"x").expect("data indication");
    assert_eq!(parse(&bytes).method(), Method::DATA);
    // The number can be bound to another peer now.
    assert_success(&bind_channel(&mut h, &mut c, 0x4000, PEER2), &c);

    // Allocation expiry at 3600 s.
    h.advance(Duration::from_secs(2999));
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.binder.bound.is_empty());
    assert!(h.take_events().iter().any(|e| matches!(
        e,
        Event::AllocationDeleted {
            reason: DeleteReason::Expired,
            ..
        }
    )));
    assert_eq!(h.server.timer_count(), 0);
    assert_eq!(h.shared.total_allocations(), 0);
}

#[test]
fn lifetime_is_negotiated_within_bounds() {
    let mut h = Harness::new();
    for (asked, granted) in [
        (Some(30), 600),
        (Some(900), 900),
        (Some(100_000), 3600),
        (None, 600),
    ] {
        let mut c = TestClient::udp(&format!("203.0.113.5:{}", 41000 + granted));
        let resp = h.allocate_with(&mut c, |b| {
            if let Some(s) = asked {
                b.add(&Lifetime(s)).expect("lt");
            }
        });
        assert_success(&resp, &c);
        assert_eq!(
            parse(&resp).get::<Lifetime>().expect("lt").expect("lt").0,
            granted
        );
    }
}

#[test]
fn channel_bind_rebinding_rules() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    h.allocate(&mut c);
    assert_success(&bind_channel(&mut h, &mut c, 0x4000, PEER), &c);
    // Same channel, same peer: a refresh.
    assert_success(&bind_channel(&mut h, &mut c, 0x4000, PEER), &c);
    // Same channel, another peer (even the same IP, another port): 400.
    assert_error(
        &bind_channel(&mut h, &mut c, 0x4000, "8.8.8.8:5001"),
        400,
        &c,
    );
    // Same peer, another channel: 400.
    assert_error(&bind_channel(&mut h, &mut c, 0x4001, PEER), 400, &c);
    // Invalid channel numbers: 400.
    assert_error(&bind_channel(&mut h, &mut c, 0x3FFF, PEER2), 400, &c);
    assert_error(&bind_channel(&mut h, &mut c, 0x8000, PEER2), 400, &c);
    // Missing attributes: 400.
    let r = h.request(&mut c, Method::CHANNEL_BIND, |b| {
        b.add(&ChannelNumber(0x4002)).expect("c")
    });
    assert_error(&r, 400, &c);
    let r = h.request(&mut c, Method::CHANNEL_BIND, |b| {
        b.add(&XorPeerAddress(addr(PEER2))).expect("p")
    });
    assert_error(&r, 400, &c);
    assert_eq!(h.server.stats().channels_active, 1);
}

#[test]
fn create_permission_is_all_or_nothing() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    let relay = h.allocate(&mut c);
    let r = h.request(&mut c, Method::CREATE_PERMISSION, |b| {
        b.add(&XorPeerAddress(addr(PEER))).expect("p");
        b.add(&XorPeerAddress(addr("127.0.0.1:80"))).expect("p");
    });
    assert_error(&r, 403, &c);
    assert!(
        h.peer(relay, addr(PEER), b"x").is_none(),
        "nothing installed"
    );
    let r = h.request(&mut c, Method::CREATE_PERMISSION, |b| {
        b.add(&XorPeerAddress(addr(PEER))).expect("p");
        b.add(&XorPeerAddress(addr(PEER2))).expect("p");
    });
    assert_success(&r, &c);
    assert!(h.peer(relay, addr(PEER), b"x").is_some());
    assert!(h.peer(relay, addr(PEER2), b"x").is_some());
    // No XOR-PEER-ADDRESS: 400.
    let r = h.request(&mut c, Method::CREATE_PERMISSION, |_| {});
    assert_error(&r, 400, &c);
}

#[test]
fn peer_policy_forbids_internal_addresses() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    let resp = h.allocate_with(&mut c, |b| {
        b.add(&floe_stun::attr::AdditionalAddressFamily(
            floe_stun::attr::Family::V6,
        ))
        .expect("aaf");
    });
    assert_success(&resp, &c);
    for peer in [
        "127.0.0.1:80",
        "10.0.0.1:80",
        "0.0.0.0:80",
        "[::ffff:10.0.0.1]:80",
        "[::ffff:127.0.0.1]:80",
        "[::1]:80",
        // The relay IP itself is granted since relay-to-relay landed: it is relayed inside the
        // process, never through the host (tests/own_relay.rs).
    ] {
        assert_error(&permit(&mut h, &mut c, peer), 403, &c);
        assert_error(&bind_channel(&mut h, &mut c, 0x4000, peer), 403, &c);
    }
    assert_eq!(h.server.stats().errors.get(403), 12);
    assert_eq!(h.server.stats().permissions_active, 0);
}

#[test]
fn family_errors_440_and_443() {
    let mut cfg = config();
    cfg.relay_ips = vec![ip(RELAY_V4)];
    let mut h = Harness::with(cfg, Default::default());
    let mut c = TestClient::udp("203.0.113.5:40000");
    // REQUESTED-ADDRESS-FAMILY IPv6 without an IPv6 relay: 440.
    let r = h.allocate_with(&mut c, |b| {
        b.add(&floe_stun::attr::RequestedAddressFamily(
            floe_stun::attr::Family::V6,
        ))
        .expect("raf");
    });
    assert_error(&r, 440, &c);
    // An unknown family value: 440.
    let r = h.request(&mut c, Method::ALLOCATE, |b| {
        b.add(&RequestedTransport(RequestedTransport::UDP))
            .expect("rt");
        b.add_raw(AttrType::REQUESTED_ADDRESS_FAMILY, &[3, 0, 0, 0])
            .expect("raw");
    });
    assert_error(&r, 440, &c);
    h.allocate(&mut c);
    // An IPv6 peer on an IPv4 allocation: 443 for CreatePermission and ChannelBind.
    assert_error(&permit(&mut h, &mut c, PEER_V6), 443, &c);
    assert_error(&bind_channel(&mut h, &mut c, 0x4000, PEER_V6), 443, &c);
    // Refresh with a family the allocation does not have: 443.
    let r = h.request(&mut c, Method::REFRESH, |b| {
        b.add(&floe_stun::attr::RequestedAddressFamily(
            floe_stun::attr::Family::V6,
        ))
        .expect("raf");
    });
    assert_error(&r, 443, &c);
    // A Send indication to an IPv6 peer is dropped.
    assert!(h
        .client(c.tuple, &send_indication(addr(PEER_V6), b"x"))
        .is_none());
}

#[test]
fn allocate_validation_errors() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    let _ = h.request(&mut c, Method::ALLOCATE, |_| {});
    // No REQUESTED-TRANSPORT: 400.
    assert_error(&h.request(&mut c, Method::ALLOCATE, |_| {}), 400, &c);
    // An unsupported protocol: 442.
    let r = h.request(&mut c, Method::ALLOCATE, |b| {
        b.add(&RequestedTransport(99)).expect("rt")
    });
    assert_error(&r, 442, &c);
    // TCP relaying over a UDP client connection: 400 (RFC 6062 §5.1).
    let r = h.request(&mut c, Method::ALLOCATE, |b| {
        b.add(&RequestedTransport(RequestedTransport::TCP))
            .expect("rt")
    });
    assert_error(&r, 400, &c);
    // REQUESTED-ADDRESS-FAMILY with ADDITIONAL-ADDRESS-FAMILY: 400.
    let r = h.allocate_with(&mut c, |b| {
        b.add(&floe_stun::attr::RequestedAddressFamily(
            floe_stun::attr::Family::V4,
        ))
        .expect("r");
        b.add(&floe_stun::attr::AdditionalAddressFamily(
            floe_stun::attr::Family::V6,
        ))
        .expect("a");
    });
    assert_error(&r, 400, &c);
    // ADDITIONAL-ADDRESS-FAMILY IPv4: 400.
    let r = h.allocate_with(&mut c, |b| {
        b.add(&floe_stun::attr::AdditionalAddressFamily(
            floe_stun::attr::Family::V4,
        ))
        .expect("a");
    });
    assert_error(&r, 400, &c);
    // EVEN-PORT with R and ADDITIONAL-ADDRESS-FAMILY: 400.
    let r = h.allocate_with(&mut c, |b| {
        b.add(&floe_stun::attr::EvenPort { reserve_next: true })
            .expect("e");
        b.add(&floe_stun::attr::AdditionalAddressFamily(
            floe_stun::attr::Family::V6,
        ))
        .expect("a");
    });
    assert_error(&r, 400, &c);
    // RESERVATION-TOKEN with EVEN-PORT: 400.
    let r = h.allocate_with(&mut c, |b| {
        b.add(&floe_stun::attr::EvenPort {
            reserve_next: false,
        })
        .expect("e");
        b.add(&floe_stun::attr::ReservationToken([1; 8]))
            .expect("t");
    });
    assert_error(&r, 400, &c);
    // An unknown comprehension-required attribute: 420 listing it.
    let r = h.allocate_with(&mut c, |b| {
        b.add_raw(AttrType(0x7F01), &[0; 4]).expect("raw")
    });
    assert_error(&r, 420, &c);
    let m = parse(&r);
    let listed = m
        .raw(AttrType::UNKNOWN_ATTRIBUTES)
        .expect("UNKNOWN-ATTRIBUTES");
    assert_eq!(listed.value, &[0x7F, 0x01]);
    // A comprehension-optional unknown attribute is ignored.
    let r = h.allocate_with(&mut c, |b| {
        b.add_raw(AttrType(0xC001), &[0; 4]).expect("raw")
    });
    assert_success(&r, &c);
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(
        h.shared.total_allocations(),
        1,
        "failed requests released their quota"
    );
}

#[test]
fn requests_without_allocation_get_437_and_other_users_441() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    let _ = h.request(&mut c, Method::ALLOCATE, |_| {});
    assert_error(&refresh(&mut h, &mut c, 600), 437, &c);
    assert_error(&permit(&mut h, &mut c, PEER), 437, &c);
    assert_error(&bind_channel(&mut h, &mut c, 0x4000, PEER), 437, &c);
    h.allocate(&mut c);
    // Bob on alice's 5-tuple: 441 (RFC 8656 §7).
    let mut bob = TestClient::new(Transport::Udp, "203.0.113.5:40000", "bob", "bob-pw");
    bob.nonce = c.nonce.clone();
    assert_error(&refresh(&mut h, &mut bob, 600), 441, &bob);
    assert_error(&permit(&mut h, &mut bob, PEER), 441, &bob);
}

#[test]
fn authentication_failures() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    c.retry_stale = false;
    let _ = h.request(&mut c, Method::ALLOCATE, |_| {});
    let nonce = c.nonce.clone().expect("nonce");

    // Wrong password: 401 with a fresh challenge, unsigned.
    let mut wrong = TestClient::udp("203.0.113.5:40000");
    wrong.password = "nope".into();
    wrong.nonce = Some(nonce.clone());
    let r = h.allocate_with(&mut wrong, |_| {});
    assert_eq!(error_code(&r), Some(401));
    let m = parse(&r);
    assert!(!m.has_integrity() && m.get::<Nonce<'_>>().is_some() && m.get::<Realm<'_>>().is_some());

    // Unknown user: 401.
    let mut ghost = TestClient::new(Transport::Udp, "203.0.113.5:40000", "ghost", "x");
    ghost.nonce = Some(nonce.clone());
    assert_eq!(error_code(&h.allocate_with(&mut ghost, |_| {})), Some(401));

    // A nonce issued to another client address: 401.
    let mut elsewhere = TestClient::udp("203.0.113.6:40000");
    elsewhere.nonce = Some(nonce.clone());
    assert_eq!(
        error_code(&h.allocate_with(&mut elsewhere, |_| {})),
        Some(401)
    );

    // Integrity present but REALM missing: 400.
    let req = {
        let mut buf = vec![0u8; 512];
        let mut b =
            floe_stun::MessageBuilder::new(&mut buf, Class::Request, Method::ALLOCATE, c.tid())
                .expect("b");
        b.add(&RequestedTransport(17)).expect("rt");
        b.add(&floe_stun::attr::Username("alice")).expect("u");
        b.add(&Nonce(&nonce)).expect("n");
        b.add_message_integrity(&c.key()).expect("mi");
        let n = b.finish();
        buf.truncate(n);
        buf
    };
    let (_, r) = h.client(c.tuple, &req).expect("answer");
    assert_eq!(error_code(&r), Some(400));

    // A stale nonce: 438 with a new nonce; the client retries and succeeds.
    h.advance(Duration::from_secs(601));
    let r = h.allocate_with(&mut c, |_| {});
    assert_eq!(error_code(&r), Some(438));
    assert_ne!(c.nonce.as_deref(), Some(nonce.as_str()));
    let r = h.allocate_with(&mut c, |_| {});
    assert_success(&r, &c);

    let s = h.server.stats();
    assert_eq!(s.auth_failures, 5);
    assert_eq!(s.errors.get(438), 1);
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn unknown_methods_and_stray_messages() {
    let mut h = Harness::new();
    let c = TestClient::udp("203.0.113.5:40000");
    let req = c.build(
        floe_stun::Method::new(0x0FF).expect("m"),
        floe_stun::TransactionId([1; 12]),
        |_| {},
    );
    let (_, r) = h.client(c.tuple, &req).expect("answer");
    assert_eq!(error_code(&r), Some(400));
    // A response from a client is dropped; so is a bad FINGERPRINT.
    let mut resp = r.clone();
    resp[0] |= 0x01;
    assert!(h.client(c.tuple, &resp).is_none());
    let mut bad = c.build(Method::ALLOCATE, floe_stun::TransactionId([2; 12]), |_| {});
    let n = bad.len();
    bad[n - 1] ^= 0xFF;
    assert!(h.client(c.tuple, &bad).is_none());
    assert_eq!(h.server.stats().dropped.get(DropReason::BadFingerprint), 1);
    // Binding requests are answered without authentication.
    let req = c.build(Method::BINDING, floe_stun::TransactionId([3; 12]), |_| {});
    let (_, r) = h.client(c.tuple, &req).expect("binding");
    let m = Message::parse(&r).expect("parse");
    assert_eq!(m.class(), Class::SuccessResponse);
    assert_eq!(
        m.get::<XorMappedAddress>().expect("x").expect("x").0,
        c.tuple.remote
    );
}

#[test]
fn unauthenticated_answers_over_tcp_are_not_rate_limited() {
    // The handshake proved the source; a dropped 401 would leave the client waiting 39.5 s.
    let mut cfg = config();
    cfg.rate_limit.per_source_burst = 3;
    cfg.rate_limit.per_source_per_sec = 1;
    let mut h = Harness::with(cfg, Default::default());
    for transport in [Transport::Tcp, Transport::Tls] {
        let mut c = TestClient::new(transport, "203.0.113.5:40000", "alice", "alice-pw");
        for _ in 0..10 {
            let req = c.request(Method::ALLOCATE, |_| {});
            assert!(h.client(c.tuple, &req).is_some(), "{transport:?}");
        }
    }
    assert_eq!(h.server.stats().dropped.get(DropReason::RateLimited), 0);
}

#[test]
fn unauthenticated_answers_are_rate_limited_per_source() {
    let mut cfg = config();
    cfg.rate_limit.per_source_burst = 3;
    cfg.rate_limit.per_source_per_sec = 1;
    let mut h = Harness::with(cfg, Default::default());
    let mut c = TestClient::udp("203.0.113.5:40000");
    let mut answered = 0;
    for _ in 0..10 {
        let req = c.request(Method::ALLOCATE, |_| {});
        if h.client(c.tuple, &req).is_some() {
            answered += 1;
        }
    }
    assert_eq!(answered, 3);
    assert_eq!(h.server.stats().dropped.get(DropReason::RateLimited), 7);
    // Another source is not affected.
    let mut other = TestClient::udp("198.51.100.9:1000");
    let req = other.request(Method::ALLOCATE, |_| {});
    assert!(h.client(other.tuple, &req).is_some());
    // Tokens come back with time.
    h.advance(Duration::from_secs(2));
    let req = c.request(Method::ALLOCATE, |_| {});
    assert!(h.client(c.tuple, &req).is_some());
}

/// Issue 12 item 5: the budgets hold across workers. Four workers sharing one `Shared`, one
/// source IP spread over them by source port (as SO_REUSEPORT spreads it): 3 answers in all per
/// source, and the global budget of 5 for everyone. Fails on the old code, where each worker
/// had its own limiter (12 and 20 answers).
#[test]
fn unauthenticated_answer_budgets_hold_across_workers() {
    let mut cfg = config();
    cfg.rate_limit.per_source_burst = 3;
    cfg.rate_limit.per_source_per_sec = 1;
    cfg.rate_limit.global_burst = 5;
    cfg.rate_limit.global_per_sec = 1;
    let shared = Arc::new(Shared::new(QuotaConfig::default()));
    let mut workers: Vec<Harness> = (0..4)
        .map(|_| Harness::sharing(cfg.clone(), shared.clone()))
        .collect();
    let mut answered = |source: &str| {
        let mut n = 0;
        for port in 0..40_u16 {
            let mut c = TestClient::udp(&format!("{source}:{}", 40_000 + port));
            let req = c.request(Method::ALLOCATE, |_| {});
            if workers[usize::from(port) % 4]
                .client(c.tuple, &req)
                .is_some()
            {
                n += 1;
            }
        }
        n
    };

    assert_eq!(answered("203.0.113.5"), 3, "one source");
    let others: usize = ["198.51.100.1", "198.51.100.2", "198.51.100.3"]
        .iter()
        .map(|s| answered(s))
        .sum();
    assert_eq!(others, 2, "what is left of the global budget of 5");
}
