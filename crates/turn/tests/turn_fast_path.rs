//! The fast-path events (`TurnConfig::fast_path_events`, docs/xdp.md): a kernel fast path
//! mirrors exactly the channels the state machine would relay, and learns at once, in virtual
//! time, when a channel, its peer's permission or the allocation ends.

mod common;

use std::time::Duration;

use common::*;
use floe_stun::attr::{ChannelNumber, Lifetime, XorPeerAddress};
use floe_stun::Method;
use floe_turn::server::{ChannelRelay, Event, PermissionRelay, Transport};

fn fast_harness() -> Harness {
    let mut config = config();
    config.fast_path_events = true;
    Harness::with(config, Default::default())
}

fn bind_channel(h: &mut Harness, c: &mut TestClient, ch: u16, peer: &str) -> Vec<u8> {
    h.request(c, Method::CHANNEL_BIND, |b| {
        b.add(&ChannelNumber(ch)).expect("ch");
        b.add(&XorPeerAddress(addr(peer))).expect("peer");
    })
}

/// The channel events among `events`: (up?, channel).
fn channel_events(events: Vec<Event>) -> Vec<(bool, ChannelRelay)> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::ChannelRelayUp(c) => Some((true, c)),
            Event::ChannelRelayDown(c) => Some((false, c)),
            _ => None,
        })
        .collect()
}

#[test]
fn channel_up_on_bind_down_on_permission_expiry_up_again_down_on_channel_expiry() {
    let mut h = fast_harness();
    let mut c = TestClient::udp("203.0.113.5:40000");
    let relay = h.allocate(&mut c);
    assert_success(
        &h.request(&mut c, Method::REFRESH, |b| {
            b.add(&Lifetime(3600)).expect("lt")
        }),
        &c,
    );
    h.take_events();
    assert_success(&bind_channel(&mut h, &mut c, 0x4000, PEER), &c);
    let ev = channel_events(h.take_events());
    let expected = ChannelRelay {
        client: c.tuple,
        relay,
        peer: addr(PEER),
        channel: 0x4000,
    };
    assert_eq!(ev, vec![(true, expected)]);

    // RFC 8656 §9: the permission lapses at 300 s: the channel must stop at once.
    h.advance(Duration::from_secs(300));
    assert_eq!(channel_events(h.take_events()), vec![(false, expected)]);
    // A CreatePermission revives it (the state machine relays it again).
    assert_success(
        &h.request(&mut c, Method::CREATE_PERMISSION, |b| {
            b.add(&XorPeerAddress(addr(PEER))).expect("peer")
        }),
        &c,
    );
    assert_eq!(channel_events(h.take_events()), vec![(true, expected)]);
    // §12: the channel ends 600 s after its bind (its permission, refreshed at 300 s, ends at
    // the same instant: both report it down; downs are idempotent).
    h.advance(Duration::from_secs(299));
    assert!(channel_events(h.take_events()).is_empty());
    h.advance(Duration::from_secs(1));
    let mut ev = channel_events(h.take_events());
    ev.dedup();
    assert_eq!(ev, vec![(false, expected)]);
}

#[test]
fn allocation_delete_takes_every_channel_down() {
    let mut h = fast_harness();
    let mut c = TestClient::udp("203.0.113.5:40000");
    h.allocate(&mut c);
    assert_success(&bind_channel(&mut h, &mut c, 0x4000, PEER), &c);
    assert_success(&bind_channel(&mut h, &mut c, 0x4001, PEER2), &c);
    // A refresh of a bound channel repeats "up" (the shell mirrors it idempotently).
    assert_success(&bind_channel(&mut h, &mut c, 0x4000, PEER), &c);
    let ups = channel_events(h.take_events());
    assert!(ups.iter().all(|(up, _)| *up) && ups.len() == 3, "{ups:?}");
    assert_success(
        &h.request(&mut c, Method::REFRESH, |b| {
            b.add(&Lifetime(0)).expect("lt")
        }),
        &c,
    );
    let mut downs: Vec<u16> = channel_events(h.take_events())
        .into_iter()
        .map(|(up, ch)| {
            assert!(!up);
            ch.channel
        })
        .collect();
    downs.sort_unstable();
    assert_eq!(downs, vec![0x4000, 0x4001]);
}

#[test]
fn no_events_without_the_option_or_over_tcp() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    h.allocate(&mut c);
    assert_success(&bind_channel(&mut h, &mut c, 0x4000, PEER), &c);
    assert!(channel_events(h.take_events()).is_empty());

    // TCP clients stay in user space (ChannelData over TCP is framed in a stream).
    let mut h = fast_harness();
    let mut c = TestClient::new(Transport::Tcp, "203.0.113.5:40001", "alice", "alice-pw");
    h.allocate(&mut c);
    assert_success(&bind_channel(&mut h, &mut c, 0x4000, PEER), &c);
    assert!(channel_events(h.take_events()).is_empty());
}

/// The permission events among `events`: (up?, permission).
fn permission_events(events: Vec<Event>) -> Vec<(bool, PermissionRelay)> {
    events
        .into_iter()
        .filter_map(|e| match e {
            Event::PermissionRelayUp(p) => Some((true, p)),
            Event::PermissionRelayDown(p) => Some((false, p)),
            _ => None,
        })
        .collect()
}

fn create_permission(h: &mut Harness, c: &mut TestClient, peer: &str) {
    let resp = h.request(c, Method::CREATE_PERMISSION, |b| {
        b.add(&XorPeerAddress(addr(peer))).expect("peer")
    });
    assert_success(&resp, c);
}

#[test]
fn permission_up_on_create_and_refresh_down_on_expiry_and_on_delete() {
    let mut h = fast_harness();
    let mut c = TestClient::udp("203.0.113.5:40000");
    let relay = h.allocate(&mut c);
    assert_success(
        &h.request(&mut c, Method::REFRESH, |b| {
            b.add(&Lifetime(3600)).expect("lt")
        }),
        &c,
    );
    h.take_events();
    create_permission(&mut h, &mut c, PEER);
    let expected = PermissionRelay {
        client: c.tuple,
        relay,
        peer: addr(PEER).ip(),
    };
    assert_eq!(permission_events(h.take_events()), vec![(true, expected)]);
    // A refresh repeats "up".
    h.advance(Duration::from_secs(200));
    create_permission(&mut h, &mut c, PEER);
    assert_eq!(permission_events(h.take_events()), vec![(true, expected)]);
    // RFC 8656 §9: 300 s after the refresh it lapses: down at once, not a second later.
    h.advance(Duration::from_secs(299));
    assert!(permission_events(h.take_events()).is_empty());
    h.advance(Duration::from_secs(1));
    assert_eq!(permission_events(h.take_events()), vec![(false, expected)]);

    // A ChannelBind installs the permission too; deleting the allocation takes it down.
    assert_success(&bind_channel(&mut h, &mut c, 0x4000, PEER2), &c);
    let p2 = PermissionRelay {
        peer: addr(PEER2).ip(),
        ..expected
    };
    assert_eq!(permission_events(h.take_events()), vec![(true, p2)]);
    assert_success(
        &h.request(&mut c, Method::REFRESH, |b| {
            b.add(&Lifetime(0)).expect("lt")
        }),
        &c,
    );
    assert_eq!(permission_events(h.take_events()), vec![(false, p2)]);
}

/// Relay-to-relay (the peer is another allocation of this server): mirrored like any peer, so
/// that the kernel hands the data over directly; behind 1:1 NAT (external IPs) the addresses
/// clients use are not the local ones, and it stays in the process (only "down" is reported).
#[test]
fn own_relay_peers_are_mirrored_except_behind_one_to_one_nat() {
    for external in [false, true] {
        let mut config = config();
        config.fast_path_events = true;
        if external {
            config.external_ips = vec!["11.0.0.10".parse().expect("ip")];
        }
        let mut h = Harness::with(config, Default::default());
        let mut a = TestClient::udp("203.0.113.5:40000");
        let mut b = TestClient::udp("203.0.113.6:40000");
        h.allocate(&mut a);
        let relay_b = h.allocate(&mut b);
        h.take_events();
        assert_success(
            &bind_channel(&mut h, &mut a, 0x4000, &relay_b.to_string()),
            &a,
        );
        let events = h.take_events();
        let perms = permission_events(events.clone());
        let chans = channel_events(events);
        assert_eq!(perms.len(), 1);
        assert_eq!(chans.len(), 1);
        assert_eq!(perms[0].0, !external, "permission up? external={external}");
        assert_eq!(chans[0].0, !external, "channel up? external={external}");
    }
}

/// Issue 14 item 2: what the kernel relayed counts on the allocation and is charged to its
/// bandwidth bucket; over the cap the allocation's channels and permissions leave the fast path
/// (down events), and come back once the bucket holds half its burst again.
#[test]
fn fast_path_usage_is_counted_and_charged_and_over_the_cap_withdraws_until_recovered() {
    use floe_turn::server::{FastPathCharge, FastPathUsage};
    let mut q = floe_turn::quota::QuotaConfig::default();
    q.allocation_bandwidth = Some(floe_turn::quota::Bandwidth {
        bytes_per_sec: 100_000,
        burst_bytes: 100_000,
    });
    let mut config = config();
    config.fast_path_events = true;
    let mut h = Harness::with(config, q);
    let mut c = TestClient::udp("203.0.113.5:40000");
    let relay = h.allocate(&mut c);
    assert_success(&bind_channel(&mut h, &mut c, 0x4000, PEER), &c);
    h.take_events();
    let usage = FastPathUsage {
        to_peer_packets: 40,
        to_peer_bytes: 40_000,
        to_client_packets: 10,
        to_client_bytes: 10_000,
    };
    let now = h.now;
    assert_eq!(
        h.server.fast_path_relayed(now, relay, usage),
        FastPathCharge::Charged
    );
    assert!(h.take_events().is_empty());
    let info = &h.server.allocations(now)[0];
    assert_eq!((info.bytes_to_peer, info.packets_to_peer), (40_000, 40));
    assert_eq!((info.bytes_to_client, info.packets_to_client), (10_000, 10));
    // 50 000 of the 100 000-byte burst are left: another 60 000 go over the cap.
    assert_eq!(
        h.server.fast_path_relayed(
            now,
            relay,
            FastPathUsage {
                to_peer_packets: 60,
                to_peer_bytes: 60_000,
                ..FastPathUsage::default()
            }
        ),
        FastPathCharge::Withdrawn
    );
    let ev = h.take_events();
    assert_eq!(
        channel_events(ev.clone()),
        vec![(false, channel(&c, relay))]
    );
    assert_eq!(permission_events(ev).len(), 1);
    // A refresh of the permission while held does not put it back.
    create_permission(&mut h, &mut c, PEER);
    assert!(channel_events(h.take_events()).iter().all(|(up, _)| !up));
    // Not recovered yet after 0.4 s (40 000 tokens < half the burst), recovered at 0.5 s.
    h.advance(Duration::from_millis(400));
    assert_eq!(h.server.fast_path_recheck(h.now), 0);
    h.advance(Duration::from_millis(100));
    assert_eq!(h.server.fast_path_recheck(h.now), 1);
    assert_eq!(
        channel_events(h.take_events()),
        vec![(true, channel(&c, relay))]
    );
    // Unknown relayed addresses are reported as such.
    let now = h.now;
    assert_eq!(
        h.server.fast_path_relayed(now, addr("192.0.2.1:9"), usage),
        FastPathCharge::Unknown
    );
}

fn channel(c: &TestClient, relay: std::net::SocketAddr) -> ChannelRelay {
    ChannelRelay {
        client: c.tuple,
        relay,
        peer: addr(PEER),
        channel: 0x4000,
    }
}

/// The per-user cap (`--user-max-bps`) counts the fast path too: two allocations of one user
/// share its bucket, and the one whose usage no longer fits is withdrawn.
#[test]
fn fast_path_usage_is_charged_to_the_users_bucket() {
    use floe_turn::server::{FastPathCharge, FastPathUsage};
    let mut q = floe_turn::quota::QuotaConfig::default();
    q.user_bandwidth = Some(floe_turn::quota::Bandwidth {
        bytes_per_sec: 100_000,
        burst_bytes: 100_000,
    });
    let mut config = config();
    config.fast_path_events = true;
    let mut h = Harness::with(config, q);
    let mut a = TestClient::udp("203.0.113.5:40000");
    let mut b = TestClient::udp("203.0.113.6:40000");
    let relay_a = h.allocate(&mut a);
    let relay_b = h.allocate(&mut b);
    create_permission(&mut h, &mut a, PEER);
    create_permission(&mut h, &mut b, PEER);
    h.take_events();
    let usage = |bytes| FastPathUsage {
        to_peer_packets: 1,
        to_peer_bytes: bytes,
        ..FastPathUsage::default()
    };
    let now = h.now;
    assert_eq!(
        h.server.fast_path_relayed(now, relay_a, usage(80_000)),
        FastPathCharge::Charged
    );
    assert_eq!(
        h.server.fast_path_relayed(now, relay_b, usage(40_000)),
        FastPathCharge::Withdrawn
    );
    let ev = permission_events(h.take_events());
    assert_eq!(ev.len(), 1);
    assert!(!ev[0].0);
    assert_eq!(ev[0].1.relay, relay_b);
}
