//! Property tests: any bytes fed as a client or peer packet never panic, and unauthenticated
//! traffic leaves no state behind (no allocation, no cached transaction, no timer).

mod common;

use std::time::Duration;

use common::*;
use floe_stun::attr::{Lifetime, RequestedTransport, XorPeerAddress};
use floe_stun::{Class, MessageBuilder, Method, TransactionId};
use floe_turn::server::{ClientTuple, Transport};
use proptest::prelude::*;

fn tuple(transport: u8, port: u16) -> ClientTuple {
    ClientTuple {
        transport: match transport % 3 {
            0 => Transport::Udp,
            1 => Transport::Tcp,
            _ => Transport::Tls,
        },
        local: addr("192.0.2.10:3478"),
        remote: std::net::SocketAddr::new(ip("203.0.113.9"), port),
    }
}

/// A syntactically valid but unauthenticated TURN request with arbitrary attribute values.
fn unauth_request(method: u16, tid: [u8; 12], attrs: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let method = Method::new(method & 0x0FFF).unwrap_or(Method::ALLOCATE);
    let Ok(mut b) = MessageBuilder::new(&mut buf, Class::Request, method, TransactionId(tid))
    else {
        return Vec::new();
    };
    for (t, v) in attrs {
        // Skip integrity so the request stays unauthenticated.
        if matches!(*t, 0x0008 | 0x001C | 0x8028) {
            continue;
        }
        let _ = b.add_raw(floe_stun::AttrType(*t), v);
    }
    let n = b.finish();
    buf.truncate(n);
    buf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_client_and_peer_bytes_never_panic_nor_leave_state(
        packets in proptest::collection::vec(
            (any::<u8>(), any::<u16>(), proptest::collection::vec(any::<u8>(), 0..300)),
            1..20,
        )
    ) {
        let mut h = Harness::new();
        for (transport, port, bytes) in &packets {
            let _ = h.client(tuple(*transport, *port), bytes);
            let _ = h.peer(addr("192.0.2.1:50000"), addr(PEER), bytes);
            h.advance(Duration::from_millis(100));
        }
        prop_assert_eq!(h.server.allocation_count(), 0);
        prop_assert_eq!(h.server.cached_transactions(), 0);
        prop_assert_eq!(h.server.timer_count(), 0);
        prop_assert!(h.binder.bound.is_empty());
    }

    #[test]
    fn unauthenticated_requests_with_any_attributes_leave_no_state(
        requests in proptest::collection::vec(
            (
                prop_oneof![Just(3u16), Just(4), Just(8), Just(9), Just(10), Just(11), any::<u16>()],
                any::<[u8; 12]>(),
                proptest::collection::vec(
                    (
                        prop_oneof![
                            Just(0x0006u16), Just(0x0014), Just(0x0015), Just(0x0019),
                            Just(0x0012), Just(0x000C), Just(0x000D), Just(0x001E),
                            Just(0x001D), Just(0x8002), Just(0x0022), Just(0x0018),
                            Just(0x002A), any::<u16>(),
                        ],
                        proptest::collection::vec(any::<u8>(), 0..40),
                    ),
                    0..8,
                ),
                any::<u16>(),
            ),
            1..30,
        )
    ) {
        let mut h = Harness::new();
        for (method, tid, attrs, port) in &requests {
            let req = unauth_request(*method, *tid, attrs);
            let _ = h.client(tuple(0, *port), &req);
        }
        prop_assert_eq!(h.server.allocation_count(), 0);
        prop_assert_eq!(h.server.cached_transactions(), 0);
        prop_assert_eq!(h.server.timer_count(), 0);
        prop_assert_eq!(h.shared.total_allocations(), 0);
    }

    /// Authenticated messages with garbage attribute values and truncated/mutated bytes of valid
    /// requests: never a panic, and the server's bookkeeping stays consistent.
    #[test]
    fn mutated_authenticated_requests_never_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        extra in proptest::collection::vec((any::<u16>(), proptest::collection::vec(any::<u8>(), 0..24)), 0..5),
        which in 0usize..4,
    ) {
        let mut h = Harness::new();
        let mut c = TestClient::udp("203.0.113.5:40000");
        let relay = h.allocate(&mut c);
        let method = [Method::REFRESH, Method::CREATE_PERMISSION, Method::CHANNEL_BIND, Method::ALLOCATE][which];
        let mut req = c.request(method, |b| {
            for (t, v) in &extra {
                let _ = b.add_raw(floe_stun::AttrType(*t), v);
            }
            if method == Method::REFRESH {
                let _ = b.add(&Lifetime(0));
            }
            if method == Method::ALLOCATE {
                let _ = b.add(&RequestedTransport(17));
            }
            let _ = b.add(&XorPeerAddress(addr(PEER)));
        });
        for (at, x) in &flips {
            let n = req.len();
            req[at % n] ^= x;
        }
        let _ = h.client(c.tuple, &req);
        let _ = h.peer(relay, addr(PEER), b"x");
        h.advance(Duration::from_secs(4000));
        prop_assert_eq!(h.server.allocation_count(), 0);
        prop_assert_eq!(h.server.timer_count(), 0);
        prop_assert!(h.binder.bound.is_empty());
        prop_assert_eq!(h.shared.total_allocations(), 0);
        let s = h.server.stats();
        prop_assert_eq!(s.allocations_active, 0);
        prop_assert_eq!(s.permissions_active, 0);
        prop_assert_eq!(s.channels_active, 0);
    }
}
