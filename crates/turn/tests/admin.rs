//! The admin operations on the state machine: listing allocations with their live byte counts,
//! ending them, revoking a TURN REST username, and drain (refused Allocates).

mod common;

use std::time::Duration;

use common::*;
use floe_stun::attr::{AlternateServer, XorPeerAddress};
use floe_stun::Method;
use floe_turn::rest;
use floe_turn::server::{AllocationFilter, DeleteReason, DrainConfig, Event, Transport};

fn permit(h: &mut Harness, c: &mut TestClient, peer: &str) {
    let resp = h.request(c, Method::CREATE_PERMISSION, |b| {
        b.add(&XorPeerAddress(addr(peer))).expect("peer");
    });
    assert_success(&resp, c);
}

fn rest_client(h: &Harness, remote: &str, user: &str) -> TestClient {
    let cred = rest::mint(REST_SECRET.as_bytes(), user, 600, h.unix);
    TestClient::new(Transport::Udp, remote, &cred.username, &cred.password)
}

fn deleted(h: &mut Harness) -> Vec<DeleteReason> {
    h.take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::AllocationDeleted { reason, .. } => Some(reason),
            _ => None,
        })
        .collect()
}

#[test]
fn allocations_list_user_relay_permissions_and_bytes() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    let relay = h.allocate(&mut c);
    permit(&mut h, &mut c, PEER);
    let _ = h
        .client(c.tuple, &send_indication(addr(PEER), b"hello"))
        .expect("relayed to the peer");
    let _ = h.peer(relay, addr(PEER), b"hi back!").expect("to client");
    h.advance(Duration::from_secs(7));

    let list = h.server.allocations(h.now);

    assert_eq!(list.len(), 1);
    let a = &list[0];
    assert_eq!(a.username, "alice");
    assert_eq!(a.client, c.tuple);
    assert_eq!(a.relayed, vec![relay]);
    assert_eq!(a.permissions, vec![addr(PEER).ip()]);
    assert_eq!((a.bytes_to_peer, a.bytes_to_client), (5, 8));
    assert_eq!((a.packets_to_peer, a.packets_to_client), (1, 1));
    assert_eq!(a.age, Duration::from_secs(7));
    assert!(a.expires_in > Duration::ZERO);
}

#[test]
fn end_allocations_of_a_user_leaves_the_others() {
    let mut h = Harness::new();
    let mut carol1 = rest_client(&h, "203.0.113.5:40000", "carol");
    let mut carol2 = rest_client(&h, "203.0.113.5:40001", "carol");
    let mut dave = rest_client(&h, "203.0.113.6:40000", "dave");
    for c in [&mut carol1, &mut carol2, &mut dave] {
        h.allocate(c);
    }

    let ended = h
        .server
        .end_allocations(&AllocationFilter::User("carol".into()), &mut h.binder);

    assert_eq!(ended, 2);
    assert_eq!(deleted(&mut h), vec![DeleteReason::Admin; 2]);
    let left = h.server.allocations(h.now);
    assert_eq!(left.len(), 1);
    assert_eq!(rest::user_of(&left[0].username), "dave");
    assert_eq!(h.binder.bound.len(), 1, "relay sockets released");
    // carol's next Refresh finds no allocation (437).
    let resp = h.request(&mut carol1, Method::REFRESH, |_| {});
    assert_error(&resp, 437, &carol1);
}

#[test]
fn a_revoked_username_gets_401_and_loses_its_allocations_until_its_expiry() {
    let mut h = Harness::new();
    let mut c = rest_client(&h, "203.0.113.5:40000", "carol");
    h.allocate(&mut c);
    let until = rest::expiry_of(&c.username).expect("REST username");

    let ended = h
        .server
        .revoke(&c.username.clone(), until, h.unix, &mut h.binder);

    assert_eq!(ended, 1);
    assert_eq!(deleted(&mut h), vec![DeleteReason::Revoked]);
    let again = h.allocate_with(&mut c, |_| {});
    assert_eq!(error_code(&again), Some(401));
    // Another credential of the same user (a different expiry, so another username) is not.
    let fresh = rest::mint(REST_SECRET.as_bytes(), "carol", 900, h.unix);
    let mut other = TestClient::new(
        Transport::Udp,
        "203.0.113.5:40002",
        &fresh.username,
        &fresh.password,
    );
    h.allocate(&mut other);
}

#[test]
fn draining_refuses_new_allocates_with_508_or_300_and_keeps_old_ones() {
    let mut h = Harness::new();
    let mut old = TestClient::udp("203.0.113.5:40000");
    h.allocate(&mut old);

    h.server.set_draining(Some(DrainConfig::default()));
    let mut c = TestClient::udp("203.0.113.7:40000");
    let refused = h.allocate_with(&mut c, |_| {});
    assert_error(&refused, 508, &c);

    let alt = addr("198.51.100.9:3478");
    h.server.set_draining(Some(DrainConfig {
        alternates: vec![addr("[2001:db8::9]:3478"), alt],
    }));
    let mut d = TestClient::udp("203.0.113.8:40000");
    let redirected = h.allocate_with(&mut d, |_| {});
    assert_error(&redirected, 300, &d);
    let m = parse(&redirected);
    assert_eq!(
        m.get::<AlternateServer>().expect("attr").expect("parses").0,
        alt
    );

    // The allocation made before the drain still refreshes.
    let resp = h.request(&mut old, Method::REFRESH, |_| {});
    assert_success(&resp, &old);
    assert!(h.server.is_draining());
}

#[test]
fn answers_are_counted_by_method_and_result() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    h.allocate(&mut c); // a 401 challenge, then a success
    permit(&mut h, &mut c, PEER);

    let by_method: Vec<(&str, u64, u64)> = h
        .server
        .stats()
        .responses
        .iter()
        .filter(|&(_, ok, err)| ok + err > 0)
        .collect();

    assert_eq!(by_method, [("allocate", 1, 1), ("create_permission", 1, 0)]);
}

/// Usage reports: each live allocation's bytes since the last drain, and with tracking on the
/// last bytes of an allocation that ended in between (none lost); the end event carries the
/// creation instant for the lifetime histogram.
#[test]
fn drain_usage_reports_deltas_and_the_last_bytes_of_ended_allocations() {
    let mut h = Harness::new();
    h.server.set_usage_tracking(true);
    let cred = rest::mint_identity(
        REST_SECRET.as_bytes(),
        "carol",
        Some("standup"),
        None,
        600,
        h.unix,
    );
    let mut c = TestClient::new(
        Transport::Udp,
        "203.0.113.5:40000",
        &cred.username,
        &cred.password,
    );
    let created = h.now;
    let relay = h.allocate(&mut c);
    permit(&mut h, &mut c, PEER);
    let _ = h.peer(relay, addr(PEER), b"12345").expect("to client");
    let drain = |h: &mut Harness| {
        let mut out = Vec::new();
        h.server.drain_usage(|d| {
            out.push((
                d.username.to_owned(),
                d.first,
                d.ended,
                d.bytes_to_peer,
                d.bytes_to_client,
            ))
        });
        out
    };

    assert_eq!(
        drain(&mut h),
        vec![(cred.username.clone(), true, false, 0, 5)]
    );
    let _ = h.peer(relay, addr(PEER), b"123").expect("to client");
    assert_eq!(
        drain(&mut h),
        vec![(cred.username.clone(), false, false, 0, 3)]
    );
    let _ = h.peer(relay, addr(PEER), b"12").expect("to client");
    h.advance(Duration::from_secs(4));
    h.server
        .end_allocations(&AllocationFilter::All, &mut h.binder);
    let ends: Vec<_> = h
        .take_events()
        .into_iter()
        .filter_map(|e| match e {
            Event::AllocationDeleted {
                created,
                username,
                usage,
                ..
            } => Some((
                created,
                username.to_string(),
                usage.bytes_to_client,
                usage.packets_to_client,
            )),
            _ => None,
        })
        .collect();
    assert_eq!(ends, vec![(created, cred.username.clone(), 10, 3)]);

    assert_eq!(
        drain(&mut h),
        vec![(cred.username.clone(), false, true, 0, 2)]
    );
    assert_eq!(drain(&mut h), vec![], "reported once");
}
