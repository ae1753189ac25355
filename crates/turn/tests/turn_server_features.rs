//! TURN server features in virtual time: SHA-256 and USERHASH authentication with bid-down
//! protection (RFC 8489 §9.2), TURN REST credential expiry (normal and strict), dual-stack
//! allocations (RFC 8656 §7.2), EVEN-PORT / RESERVATION-TOKEN, quotas, and the RFC 6062 control
//! plane.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use floe_stun::attr::{
    AdditionalAddressFamily, AddressErrorCode, ConnectionId as ConnectionIdAttr, EvenPort, Family,
    Lifetime, PasswordAlgorithm, PasswordAlgorithms, RequestedAddressFamily, RequestedTransport,
    ReservationToken, XorPeerAddress,
};
use floe_stun::{Class, Method};
use floe_turn::credentials::ExpiryPolicy;
use floe_turn::quota::QuotaConfig;
use floe_turn::rest;
use floe_turn::server::{
    ConnectionGrant, ConnectionId, DeleteReason, Event, RelayDirection, RelayTransport, Shared,
    Transmit, Transport, STREAM_MIN_GRANT,
};

fn permit(h: &mut Harness, c: &mut TestClient, peer: &str) -> Vec<u8> {
    h.request(c, Method::CREATE_PERMISSION, |b| {
        b.add(&XorPeerAddress(addr(peer))).expect("peer");
    })
}

// ---------------------------------------------------------------------------------------------
// RFC 8489 §9.2: SHA-256, MESSAGE-INTEGRITY-SHA256, USERHASH, bid-down protection
// ---------------------------------------------------------------------------------------------

#[test]
fn sha256_key_with_message_integrity_sha256() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    c.sha256_key = true;
    c.mi_sha256 = true;
    let relay = h.allocate(&mut c);
    assert_success(&permit(&mut h, &mut c, PEER), &c);
    assert!(h.peer(relay, addr(PEER), b"x").is_some());
}

#[test]
fn md5_key_with_message_integrity_sha256_and_sha256_key_with_sha1_integrity() {
    let mut h = Harness::new();
    let mut a = TestClient::udp("203.0.113.5:40000");
    a.mi_sha256 = true;
    h.allocate(&mut a);
    let mut b = TestClient::udp("203.0.113.5:40001");
    b.sha256_key = true;
    h.allocate(&mut b);
}

#[test]
fn userhash_identifies_a_static_user() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    c.ident = Ident::Userhash;
    c.sha256_key = true;
    c.mi_sha256 = true;
    h.allocate(&mut c);
    // An unknown USERHASH is 401.
    let mut ghost = TestClient::new(Transport::Udp, "203.0.113.5:40001", "ghost", "pw");
    ghost.ident = Ident::Userhash;
    let _ = h.request(&mut ghost, Method::ALLOCATE, |_| {});
    let r = h.allocate_with(&mut ghost, |_| {});
    assert_eq!(error_code(&r), Some(401));
}

#[test]
fn userhash_is_refused_when_not_offered() {
    let mut cfg = config();
    cfg.offer_userhash = false;
    let mut h = Harness::with(cfg, QuotaConfig::default());
    let mut c = TestClient::udp("203.0.113.5:40000");
    c.ident = Ident::Userhash;
    let _ = h.request(&mut c, Method::ALLOCATE, |_| {});
    assert_eq!(error_code(&h.allocate_with(&mut c, |_| {})), Some(401));
}

type AddAttrs = dyn Fn(&mut floe_stun::MessageBuilder<'_>);

/// RFC 8489 §9.2.4: once the nonce announces password algorithms, a request must carry both
/// PASSWORD-ALGORITHM and PASSWORD-ALGORITHMS (the list exactly as offered) or neither.
#[test]
fn password_algorithm_bid_down_is_refused() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    let _ = h.request(&mut c, Method::ALLOCATE, |_| {});
    let key = c.key();
    let cases: [(&str, &AddAttrs); 3] = [
        ("algorithm alone", &|b| {
            b.add(&PasswordAlgorithm {
                algorithm: 1,
                params: &[],
            })
            .expect("pa");
        }),
        ("list stripped of SHA-256", &|b| {
            b.add(&PasswordAlgorithm {
                algorithm: 1,
                params: &[],
            })
            .expect("pa");
            b.add(&PasswordAlgorithms::List(&[PasswordAlgorithm {
                algorithm: 1,
                params: &[],
            }]))
            .expect("pas");
        }),
        ("algorithm not in the list", &|b| {
            b.add(&PasswordAlgorithm {
                algorithm: 3,
                params: &[],
            })
            .expect("pa");
            b.add(&PasswordAlgorithms::List(&[
                PasswordAlgorithm {
                    algorithm: 2,
                    params: &[],
                },
                PasswordAlgorithm {
                    algorithm: 1,
                    params: &[],
                },
            ]))
            .expect("pas");
        }),
    ];
    for (what, extra) in cases {
        let tid = c.tid();
        let nonce = c.nonce.clone().expect("nonce");
        let mut buf = vec![0u8; 1024];
        let mut b = floe_stun::MessageBuilder::new(&mut buf, Class::Request, Method::ALLOCATE, tid)
            .expect("b");
        b.add(&RequestedTransport(17)).expect("rt");
        b.add(&floe_stun::attr::Username("alice")).expect("u");
        b.add(&floe_stun::attr::Realm(REALM)).expect("r");
        b.add(&floe_stun::attr::Nonce(&nonce)).expect("n");
        extra(&mut b);
        b.add_message_integrity(&key).expect("mi");
        let n = b.finish();
        buf.truncate(n);
        let (_, r) = h.client(c.tuple, &buf).expect("answer");
        assert_eq!(error_code(&r), Some(400), "{what}");
    }
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn without_sha256_offer_the_challenge_has_no_algorithms() {
    let mut cfg = config();
    cfg.offer_sha256 = false;
    cfg.offer_userhash = false;
    let mut h = Harness::with(cfg, QuotaConfig::default());
    let mut c = TestClient::udp("203.0.113.5:40000");
    let r = h.request(&mut c, Method::ALLOCATE, |_| {});
    let m = parse(&r);
    assert!(m.get::<PasswordAlgorithms<'_>>().is_none());
    assert!(!c.nonce.as_deref().expect("nonce").starts_with("obMatJos2"));
    h.allocate(&mut c);
}

// ---------------------------------------------------------------------------------------------
// TURN REST credentials
// ---------------------------------------------------------------------------------------------

fn rest_client(h: &Harness, ttl: u64, port: u16) -> TestClient {
    let cred = rest::mint(REST_SECRET.as_bytes(), "carol", ttl, h.unix);
    TestClient::new(
        Transport::Udp,
        &format!("203.0.113.7:{port}"),
        &cred.username,
        &cred.password,
    )
}

#[test]
fn expired_rest_credentials_are_rejected() {
    let mut h = Harness::new();
    let cred = rest::mint(REST_SECRET.as_bytes(), "carol", 60, h.unix - 120);
    let mut c = TestClient::new(
        Transport::Udp,
        "203.0.113.7:1",
        &cred.username,
        &cred.password,
    );
    let _ = h.request(&mut c, Method::ALLOCATE, |_| {});
    assert_eq!(error_code(&h.allocate_with(&mut c, |_| {})), Some(401));
    // A credential minted with another secret: 401.
    let cred = rest::mint(b"other", "carol", 600, h.unix);
    let mut c = TestClient::new(
        Transport::Udp,
        "203.0.113.7:2",
        &cred.username,
        &cred.password,
    );
    let _ = h.request(&mut c, Method::ALLOCATE, |_| {});
    assert_eq!(error_code(&h.allocate_with(&mut c, |_| {})), Some(401));
    assert_eq!(h.server.allocation_count(), 0);
}

#[test]
fn rest_expiry_ends_the_allocation_at_its_next_refresh() {
    let mut h = Harness::new();
    let mut c = rest_client(&h, 120, 1000);
    let relay = h.allocate(&mut c);
    assert_success(&permit(&mut h, &mut c, PEER), &c);
    // Past the credential's expiry the allocation still relays (until its next Refresh).
    h.advance(Duration::from_secs(200));
    assert!(h.peer(relay, addr(PEER), b"x").is_some());
    assert_eq!(h.server.allocation_count(), 1);
    let r = h.request(&mut c, Method::REFRESH, |b| {
        b.add(&Lifetime(600)).expect("lt")
    });
    assert_eq!(error_code(&r), Some(401));
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.binder.bound.is_empty());
    assert!(h.take_events().iter().any(|e| matches!(
        e,
        Event::AllocationDeleted {
            reason: DeleteReason::CredentialExpired,
            ..
        }
    )));
}

#[test]
fn a_forged_refresh_with_an_expired_username_does_not_end_the_allocation() {
    let mut h = Harness::new();
    let mut c = rest_client(&h, 120, 1000);
    h.allocate(&mut c);
    h.advance(Duration::from_secs(200));
    let mut forger = c.clone();
    forger.password = "guess".into();
    let r = h.request(&mut forger, Method::REFRESH, |b| {
        b.add(&Lifetime(600)).expect("lt")
    });
    assert_eq!(error_code(&r), Some(401));
    assert_eq!(h.server.allocation_count(), 1);
}

#[test]
fn strict_mode_ends_the_allocation_when_the_credential_expires() {
    let mut h = Harness::with(
        config_with(ExpiryPolicy::Immediately),
        QuotaConfig::default(),
    );
    let mut c = rest_client(&h, 120, 1000);
    let resp = h.allocate_with(&mut c, |_| {});
    assert_success(&resp, &c);
    // The granted lifetime is capped by the credential.
    assert_eq!(
        parse(&resp).get::<Lifetime>().expect("lt").expect("lt").0,
        120
    );
    let r = h.request(&mut c, Method::REFRESH, |b| {
        b.add(&Lifetime(3600)).expect("lt")
    });
    assert_success(&r, &c);
    assert_eq!(parse(&r).get::<Lifetime>().expect("lt").expect("lt").0, 120);
    assert_eq!(
        h.server.poll_timeout(),
        Some(h.now + Duration::from_secs(120))
    );
    h.advance(Duration::from_secs(119));
    assert_eq!(h.server.allocation_count(), 1);
    h.advance(Duration::from_secs(1));
    assert_eq!(h.server.allocation_count(), 0);
    assert!(h.take_events().iter().any(|e| matches!(
        e,
        Event::AllocationDeleted {
            reason: DeleteReason::CredentialExpired,
            ..
        }
    )));
    // Static users are not affected by strict mode.
    let mut alice = TestClient::udp("203.0.113.5:40000");
    let resp = h.allocate_with(&mut alice, |_| {});
    assert_eq!(
        parse(&resp).get::<Lifetime>().expect("lt").expect("lt").0,
        600
    );
}

// ---------------------------------------------------------------------------------------------
// Dual stack, EVEN-PORT, RESERVATION-TOKEN
// ---------------------------------------------------------------------------------------------

#[test]
fn dual_stack_allocation() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    let resp = h.allocate_with(&mut c, |b| {
        b.add(&AdditionalAddressFamily(Family::V6)).expect("aaf")
    });
    assert_success(&resp, &c);
    let relays = relayed(&resp);
    assert_eq!(relays.len(), 2);
    assert!(relays[0].is_ipv4() && relays[1].is_ipv6());
    // Both families relay.
    assert_success(&permit(&mut h, &mut c, PEER), &c);
    assert_success(&permit(&mut h, &mut c, PEER_V6), &c);
    let (t, _) = h
        .client(c.tuple, &send_indication(addr(PEER_V6), b"6"))
        .expect("v6");
    assert!(matches!(t, Transmit::ToPeer { relay, .. } if relay.0 == relays[1]));
    let (t, _) = h
        .client(c.tuple, &send_indication(addr(PEER), b"4"))
        .expect("v4");
    assert!(matches!(t, Transmit::ToPeer { relay, .. } if relay.0 == relays[0]));
    assert!(h.peer(relays[1], addr(PEER_V6), b"x").is_some());
    // Refresh(0) with REQUESTED-ADDRESS-FAMILY IPv6 drops only the IPv6 relay.
    let r = h.request(&mut c, Method::REFRESH, |b| {
        b.add(&Lifetime(0)).expect("lt");
        b.add(&RequestedAddressFamily(Family::V6)).expect("raf");
    });
    assert_success(&r, &c);
    assert_eq!(h.server.allocation_count(), 1);
    assert_eq!(h.binder.bound.len(), 1);
    assert!(h.peer(relays[1], addr(PEER_V6), b"x").is_none());
    assert!(h.peer(relays[0], addr(PEER), b"x").is_some());
    assert_eq!(h.server.stats().permissions_active, 1);
}

#[test]
fn dual_stack_without_ipv6_reports_address_error_code() {
    let mut cfg = config();
    cfg.relay_ips = vec![ip(RELAY_V4)];
    let mut h = Harness::with(cfg, QuotaConfig::default());
    let mut c = TestClient::udp("203.0.113.5:40000");
    let resp = h.allocate_with(&mut c, |b| {
        b.add(&AdditionalAddressFamily(Family::V6)).expect("aaf")
    });
    assert_success(&resp, &c);
    assert_eq!(relayed(&resp).len(), 1);
    let aec = parse(&resp)
        .get::<AddressErrorCode<'_>>()
        .expect("ADDRESS-ERROR-CODE")
        .expect("valid");
    assert_eq!((aec.family, aec.code), (Family::V6, 440));

    // IPv6 configured but not bindable: 508 in ADDRESS-ERROR-CODE.
    let mut h = Harness::new();
    h.binder.unavailable.insert(ip(RELAY_V6));
    let mut c = TestClient::udp("203.0.113.5:40000");
    let resp = h.allocate_with(&mut c, |b| {
        b.add(&AdditionalAddressFamily(Family::V6)).expect("aaf")
    });
    assert_success(&resp, &c);
    let aec = parse(&resp)
        .get::<AddressErrorCode<'_>>()
        .expect("ADDRESS-ERROR-CODE")
        .expect("valid");
    assert_eq!((aec.family, aec.code), (Family::V6, 508));
}

#[test]
fn ipv6_only_allocation() {
    let mut h = Harness::new();
    let mut c = TestClient::udp("203.0.113.5:40000");
    let resp = h.allocate_with(&mut c, |b| {
        b.add(&RequestedAddressFamily(Family::V6)).expect("raf")
    });
    assert_success(&resp, &c);
    let relays = relayed(&resp);
    assert_eq!(relays.len(), 1);
    assert_eq!(relays[0].ip(), ip(RELAY_V6));
    assert_error(&permit(&mut h, &mut c, PEER), 443, &c);
    assert_success(&permit(&mut h, &mut c, PEER_V6), &c);
}

#[test]
fn even_port_and_reservation_token() {
    let mut h = Harness::new();
    let mut a = TestClient::udp("203.0.113.5:40000");
    let resp = h.allocate_with(&mut a, |b| {
        b.add(&EvenPort { reserve_next: true }).expect("even")
    });
    assert_success(&resp, &a);
    let relay = relayed(&resp)[0];
    assert_eq!(relay.port() % 2, 0);
    let token = parse(&resp)
        .get::<ReservationToken>()
        .expect("RESERVATION-TOKEN")
        .expect("valid");
    assert_eq!(
        h.binder.bound.len(),
        1,
        "the reserved port is not held as a socket"
    );

    // Another client uses the token: it gets port + 1.
    let mut b = TestClient::udp("203.0.113.5:40002");
    let resp = h.allocate_with(&mut b, |m| m.add(&token).expect("token"));
    assert_success(&resp, &b);
    assert_eq!(relayed(&resp)[0].port(), relay.port() + 1);

    // The token is single-use: 508.
    let mut c = TestClient::udp("203.0.113.5:40004");
    let resp = h.allocate_with(&mut c, |m| m.add(&token).expect("token"));
    assert_error(&resp, 508, &c);

    // EVEN-PORT without R: an even port, no token.
    let resp = h.allocate_with(&mut c, |m| {
        m.add(&EvenPort {
            reserve_next: false,
        })
        .expect("even")
    });
    assert_success(&resp, &c);
    assert_eq!(relayed(&resp)[0].port() % 2, 0);
    assert!(parse(&resp).get::<ReservationToken>().is_none());
}

#[test]
fn reservations_expire_after_30_seconds() {
    let mut h = Harness::new();
    let mut a = TestClient::udp("203.0.113.5:40000");
    let resp = h.allocate_with(&mut a, |b| {
        b.add(&EvenPort { reserve_next: true }).expect("even")
    });
    let token = parse(&resp)
        .get::<ReservationToken>()
        .expect("token")
        .expect("token");
    h.advance(Duration::from_secs(31));
    let mut b = TestClient::udp("203.0.113.5:40002");
    let resp = h.allocate_with(&mut b, |m| m.add(&token).expect("token"));
    assert_error(&resp, 508, &b);
}

#[test]
fn reservation_tokens_work_across_workers() {
    let shared = Arc::new(Shared::new(QuotaConfig::default()));
    let mut w1 = Harness::sharing(config(), shared.clone());
    let mut w2 = Harness::sharing(config(), shared);
    let mut a = TestClient::udp("203.0.113.5:40000");
    let resp = w1.allocate_with(&mut a, |b| {
        b.add(&EvenPort { reserve_next: true }).expect("even")
    });
    let relay = relayed(&resp)[0];
    let token = parse(&resp)
        .get::<ReservationToken>()
        .expect("token")
        .expect("token");
    let mut b = TestClient::udp("203.0.113.5:40002");
    let resp = w2.allocate_with(&mut b, |m| m.add(&token).expect("token"));
    assert_success(&resp, &b);
    assert_eq!(relayed(&resp)[0].port(), relay.port() + 1);
}

// ---------------------------------------------------------------------------------------------
// Quotas and capacity
// ---------------------------------------------------------------------------------------------

#[test]
fn allocation_quota_486_per_user_and_total() {
    let mut q = QuotaConfig::default();
    q.max_allocations_per_user = 2;
    q.max_allocations_total = 3;
    let mut h = Harness::with(config(), q);
    for port in [1, 2] {
        let mut c = TestClient::udp(&format!("203.0.113.5:{port}"));
        h.allocate(&mut c);
    }
    let mut c = TestClient::udp("203.0.113.5:3");
    assert_error(&h.allocate_with(&mut c, |_| {}), 486, &c);
    let mut bob = TestClient::new(Transport::Udp, "203.0.113.5:4", "bob", "bob-pw");
    h.allocate(&mut bob);
    let mut bob2 = TestClient::new(Transport::Udp, "203.0.113.5:5", "bob", "bob-pw");
    assert_error(&h.allocate_with(&mut bob2, |_| {}), 486, &bob2);
    // Deleting one frees a slot.
    let r = h.request(&mut bob, Method::REFRESH, |b| {
        b.add(&Lifetime(0)).expect("lt")
    });
    assert_success(&r, &bob);
    assert_success(&h.allocate_with(&mut bob2, |_| {}), &bob2);
    assert_eq!(h.server.stats().errors.get(486), 2);
}

/// A client of the REST user `user` with a credential expiring `ttl` seconds from now.
fn rest_user_client(h: &Harness, user: &str, ttl: u64, remote: &str) -> TestClient {
    let cred = rest::mint(REST_SECRET.as_bytes(), user, ttl, h.unix);
    TestClient::new(Transport::Udp, remote, &cred.username, &cred.password)
}

#[test]
fn rest_credentials_of_one_user_share_the_per_user_allocation_limit() {
    // Issue 12 item 6: the quota key is the user part of `EXPIRY:USER`, not the credential.
    let q = QuotaConfig::default();
    assert_eq!(q.max_allocations_per_user, 32);
    let mut h = Harness::with(config(), q);
    // Two credentials of dave (different expiries, so different usernames), 16 allocations each.
    for i in 0..32u16 {
        let ttl = if i % 2 == 0 { 600 } else { 3600 };
        let mut c = rest_user_client(&h, "dave", ttl, &format!("203.0.113.8:{}", 1000 + i));
        h.allocate(&mut c);
    }
    // The 33rd, on a third credential of dave: 486.
    let mut c = rest_user_client(&h, "dave", 7200, "203.0.113.8:2000");
    assert_error(&h.allocate_with(&mut c, |_| {}), 486, &c);
    // Another REST user is not affected.
    let mut erin = rest_user_client(&h, "erin", 600, "203.0.113.8:2001");
    h.allocate(&mut erin);
    assert_eq!(h.server.stats().errors.get(486), 1);
}

#[test]
fn rest_credentials_of_one_user_share_the_per_user_bandwidth() {
    let mut q = QuotaConfig::unlimited();
    q.user_bandwidth = Some(floe_turn::quota::Bandwidth {
        bytes_per_sec: 100_000,
        burst_bytes: 100_000,
    });
    let mut h = Harness::with(config(), q);
    let mut a = rest_user_client(&h, "dave", 600, "203.0.113.8:1000");
    let mut b = rest_user_client(&h, "dave", 3600, "203.0.113.8:1001");
    let mut other = rest_user_client(&h, "erin", 600, "203.0.113.8:1002");
    let relays: Vec<_> = [&mut a, &mut b, &mut other]
        .into_iter()
        .map(|c| {
            let relay = h.allocate(c);
            assert_success(&permit(&mut h, c, PEER), c);
            relay
        })
        .collect();
    let payload = vec![7u8; 1000];
    let send = |h: &mut Harness, relay, n: usize| {
        (0..n)
            .filter(|_| h.peer(relay, addr(PEER), &payload).is_some())
            .count()
    };
    // dave's two allocations draw on one 100 kB bucket: at most 100 packets of 1000 bytes in
    // all (fewer by what the first allocation holds of its last 16 KiB lease).
    let first = send(&mut h, relays[0], 60);
    let second = send(&mut h, relays[1], 100);
    assert_eq!(first, 60);
    assert!(
        (24..=40).contains(&second),
        "the second credential got {second} packets: a bucket of its own"
    );
    // erin has her own bucket.
    assert!(send(&mut h, relays[2], 100) >= 90);
    h.advance(Duration::from_secs(1));
    assert_eq!(send(&mut h, relays[1], 1), 1, "the bucket refills");
}

#[test]
fn permission_and_channel_quota_508() {
    let mut q = QuotaConfig::default();
    q.max_permissions_per_allocation = 2;
    q.max_channels_per_allocation = 1;
    let mut h = Harness::with(config(), q);
    let mut c = TestClient::udp("203.0.113.5:40000");
    h.allocate(&mut c);
    let r = h.request(&mut c, Method::CREATE_PERMISSION, |b| {
        b.add(&XorPeerAddress(addr(PEER))).expect("p");
        b.add(&XorPeerAddress(addr(PEER2))).expect("p");
        b.add(&XorPeerAddress(addr("9.9.9.9:1"))).expect("p");
    });
    assert_error(&r, 508, &c);
    assert_eq!(h.server.stats().permissions_active, 0);
    let r = h.request(&mut c, Method::CREATE_PERMISSION, |b| {
        b.add(&XorPeerAddress(addr(PEER))).expect("p");
        b.add(&XorPeerAddress(addr(PEER2))).expect("p");
        b.add(&XorPeerAddress(addr("8.8.8.8:1"))).expect("p");
    });
    assert_success(&r, &c);
    // Refreshing existing permissions needs no room.
    assert_success(&permit(&mut h, &mut c, PEER), &c);
    let bind = |h: &mut Harness, c: &mut TestClient, ch: u16, peer: &str| {
        h.request(c, Method::CHANNEL_BIND, |b| {
            b.add(&floe_stun::attr::ChannelNumber(ch)).expect("ch");
            b.add(&XorPeerAddress(addr(peer))).expect("p");
        })
    };
    assert_success(&bind(&mut h, &mut c, 0x4000, PEER), &c);
    assert_error(&bind(&mut h, &mut c, 0x4001, PEER2), 508, &c);
    assert_success(&bind(&mut h, &mut c, 0x4000, PEER), &c);
}

#[test]
fn no_bindable_port_is_508() {
    let mut h = Harness::new();
    h.binder.all_busy = true;
    let mut c = TestClient::udp("203.0.113.5:40000");
    assert_error(&h.allocate_with(&mut c, |_| {}), 508, &c);
    assert_eq!(h.shared.total_allocations(), 0);
    h.binder.all_busy = false;
    h.allocate(&mut c);
}

#[test]
fn bandwidth_quota_drops_excess_relay_traffic() {
    let mut q = QuotaConfig::default();
    q.allocation_bandwidth = Some(floe_turn::quota::Bandwidth {
        bytes_per_sec: 100_000,
        burst_bytes: 100_000,
    });
    let mut h = Harness::with(config(), q);
    let mut c = TestClient::udp("203.0.113.5:40000");
    let relay = h.allocate(&mut c);
    assert_success(&permit(&mut h, &mut c, PEER), &c);
    let payload = vec![7u8; 1000];
    let mut passed = 0;
    for _ in 0..200 {
        if h.peer(relay, addr(PEER), &payload).is_some() {
            passed += 1;
        }
    }
    assert!((99..=100).contains(&passed), "passed {passed}");
    assert!(
        h.server
            .stats()
            .dropped
            .get(floe_turn::server::DropReason::Bandwidth)
            >= 100
    );
    h.advance(Duration::from_secs(1));
    assert!(h.peer(relay, addr(PEER), &payload).is_some());
}

// ---------------------------------------------------------------------------------------------
// RFC 6062
// ---------------------------------------------------------------------------------------------

fn tcp_alloc(h: &mut Harness, c: &mut TestClient) -> std::net::SocketAddr {
    let _ = h.request(c, Method::ALLOCATE, |_| {});
    let resp = h.request(c, Method::ALLOCATE, |b| {
        b.add(&RequestedTransport(RequestedTransport::TCP))
            .expect("rt")
    });
    assert_success(&resp, c);
    relayed(&resp)[0]
}

fn connect_peer_event(
    h: &mut Harness,
) -> (ConnectionId, std::net::SocketAddr, std::net::SocketAddr) {
    let events = h.take_events();
    events
        .iter()
        .find_map(|e| match e {
            Event::ConnectPeer {
                connection_id,
                relay,
                peer,
            } => Some((*connection_id, *relay, *peer)),
            _ => None,
        })
        .expect("ConnectPeer event")
}

#[test]
fn rfc6062_connect_and_connection_bind() {
    let mut h = Harness::new();
    let mut c = TestClient::new(Transport::Tcp, "203.0.113.5:40000", "alice", "alice-pw");
    let relay = tcp_alloc(&mut h, &mut c);
    assert!(h.binder.bound.contains(&(relay, RelayTransport::Tcp)));

    // Connect: no answer until the shell reports.
    let req = c.request(Method::CONNECT, |b| {
        b.add(&XorPeerAddress(addr(PEER))).expect("p")
    });
    assert!(h.client(c.tuple, &req).is_none());
    let (id, ev_relay, ev_peer) = connect_peer_event(&mut h);
    assert_eq!((ev_relay, ev_peer), (relay, addr(PEER)));
    // A second Connect to the same peer while the first is in progress: 446.
    let r = h.request(&mut c, Method::CONNECT, |b| {
        b.add(&XorPeerAddress(addr(PEER))).expect("p")
    });
    assert_error(&r, 446, &c);

    let t = h
        .server
        .handle_peer_connected(h.now, id, &mut h.out)
        .expect("Connect response");
    let resp = h.bytes(t);
    assert!(matches!(t, Transmit::ToClient { client, .. } if client == c.tuple));
    assert_success(&resp, &c);
    assert_eq!(parse(&resp).method(), Method::CONNECT);
    assert_eq!(
        parse(&resp)
            .get::<ConnectionIdAttr>()
            .expect("cid")
            .expect("cid")
            .0,
        id.0
    );

    // ConnectionBind on a new TCP connection (it may even land on another worker).
    let mut data = TestClient::new(Transport::Tcp, "203.0.113.5:40001", "alice", "alice-pw");
    let _ = h.request(&mut data, Method::CONNECTION_BIND, |_| {});
    let r = h.request(&mut data, Method::CONNECTION_BIND, |b| {
        b.add(&ConnectionIdAttr(id.0)).expect("cid")
    });
    assert_success(&r, &data);
    assert!(h.take_events().contains(&Event::ConnectionBound {
        connection_id: id,
        client: data.tuple
    }));
    // Bound once only.
    let r = h.request(&mut data, Method::CONNECTION_BIND, |b| {
        b.add(&ConnectionIdAttr(id.0)).expect("cid")
    });
    assert_error(&r, 400, &data);
    // The connection to that peer exists: 446.
    let r = h.request(&mut c, Method::CONNECT, |b| {
        b.add(&XorPeerAddress(addr(PEER))).expect("p")
    });
    assert_error(&r, 446, &c);
    // Once closed, the peer can be connected again.
    h.server.handle_peer_tcp_closed(id);
    let req = c.request(Method::CONNECT, |b| {
        b.add(&XorPeerAddress(addr(PEER))).expect("p")
    });
    assert!(h.client(c.tuple, &req).is_none());
    let (id2, _, _) = connect_peer_event(&mut h);
    // Failure: 447.
    let t = h
        .server
        .handle_peer_connect_failed(h.now, id2, &mut h.out)
        .expect("447");
    assert_error(&h.bytes(t), 447, &c);
    assert_eq!(h.shared.tcp_connections(), 0);
}

#[test]
fn rfc6062_connection_bind_errors() {
    let mut h = Harness::new();
    let mut c = TestClient::new(Transport::Tcp, "203.0.113.5:40000", "alice", "alice-pw");
    tcp_alloc(&mut h, &mut c);
    let req = c.request(Method::CONNECT, |b| {
        b.add(&XorPeerAddress(addr(PEER))).expect("p")
    });
    assert!(h.client(c.tuple, &req).is_none());
    let (id, _, _) = connect_peer_event(&mut h);
    let _ = h.server.handle_peer_connected(h.now, id, &mut h.out);

    // Unknown CONNECTION-ID, missing CONNECTION-ID, over UDP: 400.
    let mut data = TestClient::new(Transport::Tcp, "203.0.113.5:40001", "alice", "alice-pw");
    let _ = h.request(&mut data, Method::CONNECTION_BIND, |_| {});
    let r = h.request(&mut data, Method::CONNECTION_BIND, |b| {
        b.add(&ConnectionIdAttr(id.0 ^ 1)).expect("cid")
    });
    assert_error(&r, 400, &data);
    let r = h.request(&mut data, Method::CONNECTION_BIND, |_| {});
    assert_error(&r, 400, &data);
    let mut udp = TestClient::udp("203.0.113.5:40002");
    let _ = h.request(&mut udp, Method::CONNECTION_BIND, |_| {});
    let r = h.request(&mut udp, Method::CONNECTION_BIND, |b| {
        b.add(&ConnectionIdAttr(id.0)).expect("cid")
    });
    assert_error(&r, 400, &udp);
    // Another user: 441.
    let mut bob = TestClient::new(Transport::Tcp, "203.0.113.5:40003", "bob", "bob-pw");
    let _ = h.request(&mut bob, Method::CONNECTION_BIND, |_| {});
    let r = h.request(&mut bob, Method::CONNECTION_BIND, |b| {
        b.add(&ConnectionIdAttr(id.0)).expect("cid")
    });
    assert_error(&r, 441, &bob);

    // No ConnectionBind within 30 s: the peer connection is closed.
    h.advance(Duration::from_secs(30));
    assert!(h
        .take_events()
        .contains(&Event::CloseConnection { connection_id: id }));
    let r = h.request(&mut data, Method::CONNECTION_BIND, |b| {
        b.add(&ConnectionIdAttr(id.0)).expect("cid")
    });
    assert_error(&r, 400, &data);

    // Connect on a UDP allocation: 400. Connect to a forbidden peer: 403.
    let mut u = TestClient::udp("203.0.113.5:40004");
    h.allocate(&mut u);
    let r = h.request(&mut u, Method::CONNECT, |b| {
        b.add(&XorPeerAddress(addr(PEER))).expect("p")
    });
    assert_error(&r, 400, &u);
    let r = h.request(&mut c, Method::CONNECT, |b| {
        b.add(&XorPeerAddress(addr("127.0.0.1:22"))).expect("p")
    });
    assert_error(&r, 403, &c);
    let r = h.request(&mut c, Method::CONNECT, |_| {});
    assert_error(&r, 400, &c);
}

#[test]
fn rfc6062_incoming_peer_connection() {
    let mut h = Harness::new();
    let mut c = TestClient::new(Transport::Tls, "203.0.113.5:40000", "alice", "alice-pw");
    let relay = tcp_alloc(&mut h, &mut c);
    // Without a permission: refused.
    assert!(h
        .server
        .handle_peer_tcp_incoming(h.now, relay, addr(PEER), &mut h.out)
        .is_none());
    assert_success(&permit(&mut h, &mut c, PEER), &c);
    let (id, t) = h
        .server
        .handle_peer_tcp_incoming(h.now, relay, addr(PEER), &mut h.out)
        .expect("ConnectionAttempt");
    let ind = h.bytes(t);
    let m = parse(&ind);
    assert_eq!(
        (m.class(), m.method()),
        (Class::Indication, Method::CONNECTION_ATTEMPT)
    );
    assert_eq!(m.get::<ConnectionIdAttr>().expect("c").expect("c").0, id.0);
    assert_eq!(
        m.get::<XorPeerAddress>().expect("p").expect("p").0,
        addr(PEER)
    );

    // Deleting the allocation closes its connections.
    let r = h.request(&mut c, Method::REFRESH, |b| {
        b.add(&Lifetime(0)).expect("lt")
    });
    assert_success(&r, &c);
    let events = h.take_events();
    assert!(events.contains(&Event::CloseConnection { connection_id: id }));
    assert_eq!(h.shared.tcp_connections(), 0);
    // The shell's late report for a connect of a deleted allocation gets nothing.
    assert!(h
        .server
        .handle_peer_connected(h.now, ConnectionId(12345), &mut h.out)
        .is_none());
}

/// A TCP allocation of alice with a Connect to PEER bound to a data connection.
fn bound_data_connection(h: &mut Harness) -> ConnectionId {
    let mut c = TestClient::new(Transport::Tcp, "203.0.113.5:40000", "alice", "alice-pw");
    tcp_alloc(h, &mut c);
    let req = c.request(Method::CONNECT, |b| {
        b.add(&XorPeerAddress(addr(PEER))).expect("p")
    });
    assert!(h.client(c.tuple, &req).is_none());
    let (id, _, _) = connect_peer_event(h);
    assert!(h
        .server
        .handle_peer_connected(h.now, id, &mut h.out)
        .is_some());
    // Not bound yet: nothing may be relayed.
    assert_eq!(
        h.server
            .charge_connection(h.now, id, RelayDirection::ToPeer, 100),
        ConnectionGrant::Closed
    );
    let mut data = TestClient::new(Transport::Tcp, "203.0.113.5:40001", "alice", "alice-pw");
    let _ = h.request(&mut data, Method::CONNECTION_BIND, |_| {});
    let r = h.request(&mut data, Method::CONNECTION_BIND, |b| {
        b.add(&ConnectionIdAttr(id.0)).expect("cid")
    });
    assert_success(&r, &data);
    id
}

#[test]
fn rfc6062_data_connections_are_paced_by_the_bandwidth_quotas() {
    // Issue 12 item 4: RFC 6062 bytes ignored --max-bps. A splice that relays only what
    // charge_connection grants, and waits when told, moves burst + rate x time, no more.
    const RATE: u64 = 100_000;
    const BURST: u64 = 100_000;
    const CHUNK: usize = 16 * 1024;
    let mut q = QuotaConfig::default();
    q.allocation_bandwidth = Some(floe_turn::quota::Bandwidth {
        bytes_per_sec: RATE,
        burst_bytes: BURST,
    });
    let mut h = Harness::with(config(), q);
    let id = bound_data_connection(&mut h);
    assert_eq!(h.server.connection_owner(id), Some(h.server.worker_index()));
    let start = h.now;
    let before = h.server.stats().bytes_to_peer + h.server.stats().bytes_to_client;

    // Both directions of the splice, 10 s of virtual time, always wanting a full chunk.
    let mut relayed = 0u64;
    let mut waits = 0;
    let mut dir = RelayDirection::ToPeer;
    while h.now < start + Duration::from_secs(10) {
        match h.server.charge_connection(h.now, id, dir, CHUNK) {
            ConnectionGrant::Pass(n) => {
                assert!(n > 0 && n <= CHUNK);
                relayed += n as u64;
            }
            ConnectionGrant::RetryAt(t) => {
                assert!(t > h.now, "a retry instant in the future");
                h.advance(t - h.now);
                waits += 1;
            }
            ConnectionGrant::Closed => panic!("closed"),
        }
        let elapsed = (h.now - start).as_secs_f64();
        assert!(
            relayed as f64 <= BURST as f64 + RATE as f64 * elapsed + 1.0,
            "{relayed} bytes after {elapsed} s"
        );
        dir = match dir {
            RelayDirection::ToPeer => RelayDirection::ToClient,
            RelayDirection::ToClient => RelayDirection::ToPeer,
        };
    }
    let elapsed = (h.now - start).as_secs_f64();
    // Not starved either: within one minimum grant of what the bucket allows.
    let allowed = BURST as f64 + RATE as f64 * elapsed;
    assert!(
        relayed as f64 >= allowed - STREAM_MIN_GRANT as f64,
        "{relayed} of {allowed}"
    );
    // Waits are for at least a minimum grant (~41 ms at 100 kB/s), not per byte.
    assert!(
        waits <= 10 * RATE as usize / STREAM_MIN_GRANT + 1,
        "{waits} waits"
    );
    // Every granted byte is counted.
    let after = h.server.stats().bytes_to_peer + h.server.stats().bytes_to_client;
    assert_eq!(after - before, relayed);

    // The connection closed: nothing more.
    h.server.handle_peer_tcp_closed(id);
    assert_eq!(
        h.server
            .charge_connection(h.now, id, RelayDirection::ToPeer, CHUNK),
        ConnectionGrant::Closed
    );
}

#[test]
fn rfc6062_data_connections_share_the_user_bandwidth_with_udp() {
    let mut q = QuotaConfig::unlimited();
    q.user_bandwidth = Some(floe_turn::quota::Bandwidth {
        bytes_per_sec: 100_000,
        burst_bytes: 100_000,
    });
    let mut h = Harness::with(config(), q);
    let id = bound_data_connection(&mut h);
    // alice's UDP allocation on the same user bucket.
    let mut u = TestClient::udp("203.0.113.5:40002");
    let relay = h.allocate(&mut u);
    assert_success(&permit(&mut h, &mut u, PEER), &u);

    let mut tcp = 0;
    while let ConnectionGrant::Pass(n) =
        h.server
            .charge_connection(h.now, id, RelayDirection::ToClient, 10_000)
    {
        tcp += n;
    }
    assert_eq!(tcp, 100_000, "the user's burst");
    // The UDP allocation finds the user's bucket empty.
    assert!(h.peer(relay, addr(PEER), &[0u8; 1000]).is_none());
    // Only the owner worker charges: another worker says Closed.
    let mut other = Harness::sharing(config(), h.shared.clone());
    assert_ne!(other.server.worker_index(), h.server.worker_index());
    assert_eq!(
        other
            .server
            .charge_connection(other.now, id, RelayDirection::ToPeer, 1),
        ConnectionGrant::Closed
    );
}

#[test]
fn send_and_channels_are_not_used_on_tcp_allocations() {
    let mut h = Harness::new();
    let mut c = TestClient::new(Transport::Tcp, "203.0.113.5:40000", "alice", "alice-pw");
    tcp_alloc(&mut h, &mut c);
    assert_success(&permit(&mut h, &mut c, PEER), &c);
    assert!(h
        .client(c.tuple, &send_indication(addr(PEER), b"x"))
        .is_none());
}

// ---------------------------------------------------------------------------------------------
// Relay port placement near exhaustion (random first, then a sweep: never 508 while one is free)
// ---------------------------------------------------------------------------------------------

fn small_range_harness(lo: u16, hi: u16) -> Harness {
    let mut cfg = config();
    cfg.relay_ports = lo..=hi;
    Harness::with(cfg, QuotaConfig::unlimited())
}

fn client_n(i: usize) -> TestClient {
    // One source IP per client: the 401 answers are rate-limited per IP.
    TestClient::udp(&format!("203.0.{}.{}:40000", 113 + i / 250, 1 + i % 250))
}

#[test]
fn every_port_of_a_small_range_is_placed_before_508() {
    let mut h = small_range_harness(40_000, 40_063);
    // Another process holds a third of the range.
    for p in (40_000..=40_063).step_by(3) {
        h.binder.busy.insert(addr(&format!("{RELAY_V4}:{p}")));
    }
    let free = 64 - h.binder.busy.len();
    let mut ports = BTreeSet::new();
    for i in 0..free {
        let mut c = client_n(i);
        let relay = h.allocate(&mut c);
        assert!(
            ports.insert(relay.port()),
            "port {} placed twice",
            relay.port()
        );
    }
    assert_eq!(ports.len(), free);
    let mut last = client_n(free);
    assert_error(&h.allocate_with(&mut last, |_| {}), 508, &last);
    // A freed port is found again at once.
    h.binder.busy.remove(&addr(&format!("{RELAY_V4}:40000")));
    assert_eq!(h.allocate(&mut last).port(), 40_000);
}

#[test]
fn even_port_with_reservation_finds_the_last_free_pair() {
    let mut h = small_range_harness(40_000, 40_031);
    // Every even port but one pair (40020, 40021) is held by someone else.
    for p in (40_000..=40_031).step_by(2).filter(|p| *p != 40_020) {
        h.binder.busy.insert(addr(&format!("{RELAY_V4}:{p}")));
    }
    let mut c = client_n(0);
    let resp = h.allocate_with(&mut c, |b| {
        b.add(&EvenPort { reserve_next: true }).expect("even")
    });
    assert_success(&resp, &c);
    assert_eq!(relayed(&resp)[0].port(), 40_020);
    let mut d = client_n(1);
    let resp = h.allocate_with(&mut d, |b| {
        b.add(&EvenPort { reserve_next: true }).expect("even")
    });
    assert_error(&resp, 508, &d);
}
