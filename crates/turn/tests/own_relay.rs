//! Relaying between two allocations of one server (both peers relay-only), with the default
//! peer policy, and refusals counted by reason (RFC 8656 §9, §11; see `server/own_relay.rs`).

mod common;

use std::net::SocketAddr;

use common::*;
use floe_stun::attr::{ChannelNumber, Data, XorPeerAddress};
use floe_stun::{ChannelData, Class, Message, Method};
use floe_turn::policy::{Cidr, PeerPolicy};
use floe_turn::server::{
    DropReason, Event, PeerAddr, PeerRequest, RelayAddr, Transmit, TurnConfig, REFUSAL_LOG_BURST,
};

fn permit(h: &mut Harness, c: &mut TestClient, peer: SocketAddr) -> Vec<u8> {
    h.request(c, Method::CREATE_PERMISSION, |b| {
        b.add(&XorPeerAddress(peer)).expect("peer");
    })
}

/// Two clients with one allocation each on the same server.
fn two_allocations(
    config: TurnConfig,
) -> (Harness, TestClient, SocketAddr, TestClient, SocketAddr) {
    let mut h = Harness::with(config, floe_turn::quota::QuotaConfig::default());
    let mut a = TestClient::udp("203.0.113.5:40000");
    let mut b = TestClient::new(
        floe_turn::server::Transport::Tcp,
        "203.0.113.6:40001",
        "bob",
        "bob-pw",
    );
    let relay_a = h.allocate(&mut a);
    let relay_b = h.allocate(&mut b);
    (h, a, relay_a, b, relay_b)
}

fn data_indication_peer(bytes: &[u8]) -> (SocketAddr, Vec<u8>) {
    let m = Message::parse(bytes).expect("stun");
    assert_eq!((m.class(), m.method()), (Class::Indication, Method::DATA));
    let XorPeerAddress(p) = m.get::<XorPeerAddress>().expect("peer").expect("peer");
    let Data(d) = m.get::<Data<'_>>().expect("data").expect("data");
    (p, d.to_vec())
}

#[test]
fn own_relay_address_is_granted_and_relayed_inside_the_process() {
    let (mut h, mut a, relay_a, mut b, relay_b) = two_allocations(config());
    // The relay IP (192.0.2.1) is a documentation address the default policy refuses, and an
    // address of this server: still granted, because it is a relayed address of this server.
    assert_success(&permit(&mut h, &mut a, relay_b), &a);
    let (t, _) = h
        .client(a.tuple, &send_indication(relay_b, b"hello bob"))
        .expect("relayed");
    let Transmit::ToRelay {
        relay,
        worker,
        from,
        len,
    } = t
    else {
        panic!("expected an in-process handoff, got {t:?}");
    };
    assert_eq!((relay.0, from.0, len), (relay_b, relay_a, 9));
    assert_eq!(worker, h.server.worker_index());
    // B has no permission for A yet: dropped like any peer datagram (RFC 8656 §9).
    let mut out = vec![0u8; 1500];
    let none = h
        .server
        .handle_relay_datagram(h.now, relay, from, b"hello bob", &mut out);
    assert!(none.is_none());
    assert_eq!(h.server.stats().dropped.get(DropReason::NoPermission), 1);
    // With B's permission for A's relayed address, B's client gets a Data indication from it.
    assert_success(&permit(&mut h, &mut b, relay_a), &b);
    let t = h
        .server
        .handle_relay_datagram(h.now, relay, from, b"hello bob", &mut out)
        .expect("delivered");
    let Transmit::ToClient { client, len } = t else {
        panic!("expected a Data indication to B, got {t:?}");
    };
    assert_eq!(client, b.tuple);
    assert_eq!(
        data_indication_peer(&out[..len]),
        (relay_a, b"hello bob".to_vec())
    );
}

#[test]
fn channel_data_between_two_allocations() {
    let (mut h, mut a, relay_a, mut b, relay_b) = two_allocations(config());
    let bind = |h: &mut Harness, c: &mut TestClient, peer: SocketAddr| {
        h.request(c, Method::CHANNEL_BIND, |m| {
            m.add(&ChannelNumber(0x4001)).expect("ch");
            m.add(&XorPeerAddress(peer)).expect("peer");
        })
    };
    assert_success(&bind(&mut h, &mut a, relay_b), &a);
    assert_success(&bind(&mut h, &mut b, relay_a), &b);
    let (t, _) = h
        .client(a.tuple, &channel_data(0x4001, b"ping"))
        .expect("relayed");
    let Transmit::ToRelay { relay, from, .. } = t else {
        panic!("expected an in-process handoff, got {t:?}");
    };
    let mut out = vec![0u8; 1500];
    let t = h
        .server
        .handle_relay_datagram(h.now, relay, from, b"ping", &mut out)
        .expect("delivered");
    let Transmit::ToClient { client, len } = t else {
        panic!("expected ChannelData to B, got {t:?}");
    };
    assert_eq!(client, b.tuple);
    // B is a TCP client: ChannelData padded to 4 bytes (RFC 8656 §12.5).
    let cd = ChannelData::parse(&out[..len]).expect("channel data");
    assert_eq!((cd.channel, cd.data), (0x4001, &b"ping"[..]));
}

#[test]
fn a_port_without_a_live_allocation_receives_nothing() {
    let (mut h, mut a, _relay_a, _b, relay_b) = two_allocations(config());
    // The listening port and a free relay port of the server's own relay IP.
    for port in [3478, relay_b.port().wrapping_add(1)] {
        let target = SocketAddr::new(relay_b.ip(), port);
        assert_success(&permit(&mut h, &mut a, target), &a);
        assert!(
            h.client(a.tuple, &send_indication(target, b"x")).is_none(),
            "data for {target} must go nowhere"
        );
    }
    assert_eq!(h.server.stats().dropped.get(DropReason::NoSuchRelay), 2);
    // A relay socket released after the handoff was produced: the owner drops it too.
    let mut out = vec![0u8; 1500];
    let gone = SocketAddr::new(relay_b.ip(), relay_b.port().wrapping_add(1));
    assert!(h
        .server
        .handle_relay_datagram(h.now, RelayAddr(gone), PeerAddr(relay_b), b"x", &mut out)
        .is_none());
    assert_eq!(h.server.stats().dropped.get(DropReason::NoSuchRelay), 3);
}

#[test]
fn an_allow_peer_range_over_the_relay_ip_still_reaches_other_ports_through_the_network() {
    // As an operator who runs a peer on the relay host and opened it (coturn's interop tests
    // do this on loopback): ports without an allocation go to the network, allocations are
    // still reached inside the process.
    let mut cfg = config();
    cfg.policy = PeerPolicy::new()
        .with_own_addresses([ip(RELAY_V4)])
        .with_allow(["192.0.2.0/24".parse::<Cidr>().expect("cidr")]);
    let (mut h, mut a, _relay_a, _b, relay_b) = two_allocations(cfg);
    let service = SocketAddr::new(relay_b.ip(), 9);
    assert_success(&permit(&mut h, &mut a, service), &a);
    let (t, _) = h
        .client(a.tuple, &send_indication(service, b"x"))
        .expect("sent");
    assert!(
        matches!(t, Transmit::ToPeer { peer, .. } if peer.0 == service),
        "{t:?}"
    );
    let (t, _) = h
        .client(a.tuple, &send_indication(relay_b, b"x"))
        .expect("sent");
    assert!(
        matches!(t, Transmit::ToRelay { relay, .. } if relay.0 == relay_b),
        "{t:?}"
    );
}

#[test]
fn behind_one_to_one_nat_the_external_address_names_the_relay() {
    let mut cfg = config();
    cfg.external_ips = vec![ip("11.0.0.10")];
    let (mut h, mut a, relay_a, mut b, relay_b) = two_allocations(cfg);
    assert_eq!(relay_a.ip(), ip("11.0.0.10"));
    assert_success(&permit(&mut h, &mut a, relay_b), &a);
    assert_success(&permit(&mut h, &mut b, relay_a), &b);
    let (t, _) = h
        .client(a.tuple, &send_indication(relay_b, b"via nat"))
        .expect("relayed");
    let Transmit::ToRelay { relay, from, .. } = t else {
        panic!("expected an in-process handoff, got {t:?}");
    };
    // The handoff names B's local socket; the source is A's advertised address.
    assert_eq!(relay.0, SocketAddr::new(ip(RELAY_V4), relay_b.port()));
    assert_eq!(from.0, relay_a);
    let mut out = vec![0u8; 1500];
    let Some(Transmit::ToClient { client, len }) = h
        .server
        .handle_relay_datagram(h.now, relay, from, b"via nat", &mut out)
    else {
        panic!("not delivered");
    };
    assert_eq!(client, b.tuple);
    assert_eq!(data_indication_peer(&out[..len]).0, relay_a);
}

#[test]
fn an_explicit_deny_still_wins_over_the_own_relay_rule() {
    let mut cfg = config();
    cfg.policy = PeerPolicy::new()
        .with_own_addresses([ip(RELAY_V4)])
        .with_deny(["192.0.2.0/24".parse::<Cidr>().expect("cidr")]);
    let (mut h, mut a, _relay_a, _b, relay_b) = two_allocations(cfg);
    assert_error(&permit(&mut h, &mut a, relay_b), 403, &a);
    assert_eq!(h.server.stats().peer_refused.get("denied_range"), 1);
}

#[test]
fn refusals_are_counted_by_reason_and_reported_within_a_budget() {
    let (mut h, mut a, _relay_a, _b, _relay_b) = two_allocations(config());
    assert_error(&permit(&mut h, &mut a, addr("10.1.2.3:5000")), 403, &a);
    assert_error(&permit(&mut h, &mut a, addr("127.0.0.1:5000")), 403, &a);
    let stats = h.server.stats();
    assert_eq!(stats.peer_refused.get("private"), 1);
    assert_eq!(stats.peer_refused.get("loopback"), 1);
    let refused: Vec<Event> = h
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::PeerRefused { .. }))
        .collect();
    assert_eq!(refused.len(), 2);
    let Event::PeerRefused {
        client,
        username,
        request,
        peer,
        reason,
    } = &refused[0]
    else {
        unreachable!()
    };
    assert_eq!(
        (*client, &**username, *request, *peer, *reason),
        (
            a.tuple,
            "alice",
            PeerRequest::CreatePermission,
            addr("10.1.2.3:5000"),
            "private"
        )
    );
    // A flood of Send indications without permission: every one counted, few reported.
    for _ in 0..200 {
        assert!(h
            .client(
                a.tuple,
                &send_indication(PEER_FLOOD.parse().expect("addr"), b"x")
            )
            .is_none());
    }
    assert_eq!(h.server.stats().peer_refused.get("no_permission"), 200);
    let reported = h
        .take_events()
        .into_iter()
        .filter(|e| matches!(e, Event::PeerRefused { .. }))
        .count();
    assert_eq!(reported, REFUSAL_LOG_BURST as usize - 2);
}

const PEER_FLOOD: &str = "8.8.4.4:9";

#[test]
fn the_handoff_names_the_worker_that_owns_the_destination() {
    let shared = std::sync::Arc::new(floe_turn::server::Shared::new(
        floe_turn::quota::QuotaConfig::default(),
    ));
    let mut w0 = Harness::sharing(config(), shared.clone());
    let mut w1 = Harness::sharing(config(), shared);
    let mut a = TestClient::udp("203.0.113.5:40000");
    let mut b = TestClient::udp("203.0.113.6:40000");
    let relay_a = w0.allocate(&mut a);
    // One host: the port worker 0 bound is busy for worker 1 (the fake binders are separate).
    w1.binder.busy.insert(relay_a);
    let relay_b = w1.allocate(&mut b);
    assert_success(&permit(&mut w0, &mut a, relay_b), &a);
    assert_success(&permit(&mut w1, &mut b, relay_a), &b);
    let (t, _) = w0
        .client(a.tuple, &send_indication(relay_b, b"hi"))
        .expect("relayed");
    let Transmit::ToRelay {
        relay,
        worker,
        from,
        ..
    } = t
    else {
        panic!("expected an in-process handoff, got {t:?}");
    };
    assert_eq!(worker, w1.server.worker_index());
    assert_ne!(worker, w0.server.worker_index());
    let mut out = vec![0u8; 1500];
    let t = w1
        .server
        .handle_relay_datagram(w1.now, relay, from, b"hi", &mut out);
    assert!(matches!(t, Some(Transmit::ToClient { client, .. }) if client == b.tuple));
}
