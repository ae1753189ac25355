//! The NAT lab's connection scenarios with the Rust peer, `floe peer` (issue 5 §2): the same
//! topologies as natlab_browsers.rs, `floe peer send` on one host and `floe peer receive` on
//! another, and headless Chromium (web/floe.js) with `floe peer` in both directions. Each test
//! asserts the candidate pair each side reports (`selected pair: ...`), the addresses in it, and
//! the file's SHA-256 on both sides.
//!
//! Needs root (namespaces); the Chromium tests also chromium, node and
//! tests/browser/node_modules (./test.sh installs them). One scenario at a time.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod common;
#[path = "natlab/mod.rs"]
mod natlab;

use std::sync::Mutex;

use natlab::{
    expect, Lab, Nat,
    PeerKind::{Browser, Floe},
    Side,
};

const ALICE_NET: [u8; 3] = [192, 0, 2];
const BOB_NET: [u8; 3] = [198, 51, 100];
const MIB: usize = 1024 * 1024;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn floe_peers_behind_two_cone_nats_connect_directly() {
    let _one = serial();
    let mut lab = Lab::new();
    let alice = lab.site("alice", ALICE_NET, Nat::Cone, 1);
    let bob = lab.site("bob", BOB_NET, Nat::Cone, 1);
    lab.serve_peers(&[]);
    let (a, b) = (&alice.hosts[0], &bob.hosts[0]);
    let t = lab.transfer(
        "cone-cone",
        Side::new(Floe, a, "alice"),
        Side::new(Floe, b, "bob"),
        MIB,
    );
    expect::direct_through_cone_nats(&t, (&alice, a), (&bob, b));
}

#[test]
fn floe_peers_behind_two_symmetric_nats_go_through_turn() {
    let _one = serial();
    let mut lab = Lab::new();
    let alice = lab.site("alice", ALICE_NET, Nat::Symmetric, 1);
    let bob = lab.site("bob", BOB_NET, Nat::Symmetric, 1);
    lab.serve_peers(&[]);
    let t = lab.transfer(
        "sym-sym",
        Side::new(Floe, &alice.hosts[0], "alice"),
        Side::new(Floe, &bob.hosts[0], "bob"),
        MIB,
    );
    expect::relayed_through_floe(&t);
}

#[test]
fn floe_peer_behind_udp_blocking_firewall_relays_over_turn_tcp() {
    let _one = serial();
    let mut lab = Lab::new();
    let alice = lab.site("alice", ALICE_NET, Nat::UdpBlocked, 1);
    let bob = lab.site("bob", BOB_NET, Nat::Cone, 1);
    lab.serve_peers(&[]);
    let t = lab.transfer(
        "blocked-cone",
        Side::new(Floe, &alice.hosts[0], "alice"),
        Side::new(Floe, &bob.hosts[0], "bob"),
        MIB,
    );
    expect::sender_relayed_over(&t, "turn-tcp");
}

#[test]
fn floe_peer_behind_tls_only_firewall_relays_over_turns() {
    let _one = serial();
    let mut lab = Lab::new();
    let alice = lab.site("alice", ALICE_NET, Nat::TlsOnly, 1);
    let bob = lab.site("bob", BOB_NET, Nat::Cone, 1);
    lab.serve_peers(&[]);
    let t = lab.transfer(
        "tls-cone",
        Side::new(Floe, &alice.hosts[0], "alice"),
        Side::new(Floe, &bob.hosts[0], "bob"),
        MIB,
    );
    expect::sender_relayed_over(&t, "turn-tls");
}

#[test]
fn floe_peers_behind_the_same_nat_use_host_candidates() {
    let _one = serial();
    let mut lab = Lab::new();
    let site = lab.site("alice", ALICE_NET, Nat::Cone, 2);
    lab.serve_peers(&[]);
    let (a, b) = (&site.hosts[0], &site.hosts[1]);
    let t = lab.transfer(
        "same-nat",
        Side::new(Floe, a, "alice"),
        Side::new(Floe, b, "bob"),
        MIB,
    );
    expect::host_to_host(&t, a, b);
}

#[test]
fn browser_sends_to_floe_peer_across_two_cone_nats() {
    let _one = serial();
    let mut lab = Lab::new();
    let alice = lab.site("alice", ALICE_NET, Nat::Cone, 1);
    let bob = lab.site("bob", BOB_NET, Nat::Cone, 1);
    lab.serve_peers(&[]);
    let (a, b) = (&alice.hosts[0], &bob.hosts[0]);
    let t = lab.transfer(
        "browser-to-floe",
        Side::new(Browser, a, "alice"),
        Side::new(Floe, b, "bob"),
        MIB,
    );
    expect::direct_through_cone_nats(&t, (&alice, a), (&bob, b));
}

#[test]
fn floe_peer_sends_to_browser_across_two_cone_nats() {
    let _one = serial();
    let mut lab = Lab::new();
    let alice = lab.site("alice", ALICE_NET, Nat::Cone, 1);
    let bob = lab.site("bob", BOB_NET, Nat::Cone, 1);
    lab.serve_peers(&[]);
    let (a, b) = (&alice.hosts[0], &bob.hosts[0]);
    let t = lab.transfer(
        "floe-to-browser",
        Side::new(Floe, a, "alice"),
        Side::new(Browser, b, "bob"),
        MIB,
    );
    expect::direct_through_cone_nats(&t, (&alice, a), (&bob, b));
}
