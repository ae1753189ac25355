//! The NAT lab's connection scenarios with the Rust peer, `floe peer` (issue 5 §2): the same
//! topologies as natlab_browsers.rs, `floe peer send` on one host and `floe peer receive` on
//! another, and headless Chromium (web/floe.js) with `floe peer` in both directions. Each test
//! asserts the candidate pair each side reports (`selected pair: ...`), the addresses in it, and
//! the file's SHA-256 on both sides. The `*_with_xdp` tests run the relayed scenarios again
//! with `floe serve --xdp native` and check from floe's metrics that the XDP program carried
//! the media (docs/xdp.md, Tests).
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

/// [`relay_only_floe_peers_connect_through_one_floe`] with `floe serve --xdp native`: the
/// file and the acknowledgements go through the XDP program's relay-to-relay handover.
#[test]
fn relay_only_floe_peers_connect_through_one_floe_with_xdp() {
    let _one = serial();
    let (_, metrics) = Scenario::RelayOnlyBoth.run_xdp("relay-relay-xdp", Floe, Floe);
    natlab::expect::xdp_carried(&metrics, true);
}

/// [`relay_only_floe_peer_reaches_floe_peer_behind_cone_nat`] with `floe serve --xdp native`:
/// the relay's peer is Bob's cone NAT mapping, reached through the lab's public bridge.
#[test]
fn relay_only_floe_peer_reaches_floe_peer_behind_cone_nat_with_xdp() {
    let _one = serial();
    let (_, metrics) = Scenario::RelayOnlyCone.run_xdp("relay-cone-xdp", Floe, Floe);
    natlab::expect::xdp_carried(&metrics, false);
}

/// [`relay_only_browser_and_floe_peer_connect_through_one_floe`] with `floe serve --xdp
/// native`: Chromium's relayed traffic (libwebrtc's ChannelData, and Send indications before
/// the channel is bound) through the XDP program.
#[test]
fn relay_only_browser_and_floe_peer_connect_through_one_floe_with_xdp() {
    let _one = serial();
    let (_, metrics) = Scenario::RelayOnlyBoth.run_xdp("browser-floe-relay-xdp", Browser, Floe);
    natlab::expect::xdp_carried(&metrics, true);
}

/// Scenarios whose relayed media the program leaves to user space still pass with XDP on
/// (`floe_turn_xdp_*` present: the program is attached and floe exports its counters).
fn assert_xdp_attached(metrics: &str) {
    assert!(
        metrics.contains("floe_turn_xdp_next_hops"),
        "no XDP metrics: was the program attached?\n{metrics}"
    );
}

/// [`floe_peer_behind_udp_blocking_firewall_relays_over_turn_tcp`] with `floe serve --xdp
/// native`: Alice's allocation is over TURN TCP, which stays in user space (its permissions
/// are not mirrored into the program's maps), and Bob's UDP datagrams to it pass the program.
#[test]
fn floe_peer_behind_udp_blocking_firewall_relays_over_turn_tcp_with_xdp() {
    let _one = serial();
    let (_, metrics) = Scenario::UdpBlockedCone.run_xdp("blocked-cone-xdp", Floe, Floe);
    assert_xdp_attached(&metrics);
}

/// [`relay_only_floe_peers_connect_through_floe_behind_one_to_one_nat`] with `floe serve --xdp
/// native`: relay-to-relay with `--external-ip` is handed over in user space (the program sees
/// the local address, the clients name the external one), and passes with XDP on.
#[test]
fn relay_only_floe_peers_connect_through_floe_behind_one_to_one_nat_with_xdp() {
    let _one = serial();
    let (_, metrics) = Scenario::ServerBehindNat.run_xdp("server-nat-xdp", Floe, Floe);
    assert_xdp_attached(&metrics);
}
