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
    PeerKind::{Browser, Floe},
    Scenario,
};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn floe_peers_behind_two_cone_nats_connect_directly() {
    let _one = serial();
    Scenario::ConeCone.run("cone-cone", Floe, Floe);
}

#[test]
fn floe_peers_behind_two_symmetric_nats_go_through_turn() {
    let _one = serial();
    Scenario::SymmetricSymmetric.run("sym-sym", Floe, Floe);
}

#[test]
fn floe_peer_behind_udp_blocking_firewall_relays_over_turn_tcp() {
    let _one = serial();
    Scenario::UdpBlockedCone.run("blocked-cone", Floe, Floe);
}

#[test]
fn floe_peer_behind_tls_only_firewall_relays_over_turns() {
    let _one = serial();
    Scenario::TlsOnlyCone.run("tls-cone", Floe, Floe);
}

#[test]
fn floe_peers_behind_the_same_nat_use_host_candidates() {
    let _one = serial();
    Scenario::SameNat.run("same-nat", Floe, Floe);
}

#[test]
fn browser_sends_to_floe_peer_across_two_cone_nats() {
    let _one = serial();
    Scenario::ConeCone.run("browser-to-floe", Browser, Floe);
}

#[test]
fn floe_peer_sends_to_browser_across_two_cone_nats() {
    let _one = serial();
    Scenario::ConeCone.run("floe-to-browser", Floe, Browser);
}

#[test]
fn relay_only_floe_peers_connect_through_one_floe() {
    let _one = serial();
    Scenario::RelayOnlyBoth.run("relay-relay", Floe, Floe);
}

#[test]
fn relay_only_browser_and_floe_peer_connect_through_one_floe() {
    let _one = serial();
    Scenario::RelayOnlyBoth.run("browser-floe-relay", Browser, Floe);
}

#[test]
fn relay_only_floe_peer_reaches_floe_peer_behind_cone_nat() {
    let _one = serial();
    Scenario::RelayOnlyCone.run("relay-cone", Floe, Floe);
}

#[test]
fn relay_only_floe_peers_connect_through_floe_behind_one_to_one_nat() {
    let _one = serial();
    Scenario::ServerBehindNat.run("server-nat", Floe, Floe);
}
