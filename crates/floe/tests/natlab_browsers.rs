//! The NAT lab's connection scenarios with two headless Chromiums (issue 5 §2, the browser
//! baseline): each browser runs tests/natlab/browser-peer.mjs in its own host namespace, joins
//! a room on the lab's `floe serve` (signalling at http://11.0.0.10:8080, STUN/TURN at
//! 11.0.0.10:3478, TURN over TLS at :5349; default peer policy) with web/floe.js, and one sends a 1 MiB file to
//! the other over floe.js's file channel. Each test asserts the candidate pair that ICE
//! selected on both sides (as getStats() and floe.js's `selectedPath()` report it), the
//! addresses in it, and the file's SHA-256.
//!
//! | scenario | expected pair |
//! |---|---|
//! | cone + cone, two sites | direct over the NATs: a server- or peer-reflexive candidate, no relay |
//! | symmetric + symmetric | through floe's TURN relay (UDP) |
//! | UDP blocked + cone | through floe's TURN relay over TCP |
//! | "TLS only" firewall + cone | through floe's TURN relay over TLS |
//! | two hosts behind one NAT | host candidates on the shared LAN |
//! | cone + cone, both relay-only | relay ↔ relay, two allocations on the same floe |
//! | relay-only (cone) + cone | the relay-only side's relay ↔ the other side's reflexive address |
//! | floe behind 1:1 NAT (`--external-ip`), both relay-only | relay ↔ relay on floe's public address |
//!
//! natlab_peers.rs runs the same scenarios with `floe peer`, and Chromium with `floe peer`.
//! Needs root (namespaces), chromium, node and tests/browser/node_modules (./test.sh installs
//! them). The scenarios run one at a time (two Chromiums each on a 2-core machine).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod common;
#[path = "natlab/mod.rs"]
mod natlab;

use std::sync::Mutex;

use natlab::{Finished, PeerKind::Browser, Scenario, Transfer};

/// One scenario at a time: two Chromiums already load both cores.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// floe.js's `selectedPath()` names the same candidate types as getStats' selected pair.
fn floe_js_agrees(t: &Transfer) {
    for side in [&t.sender, &t.receiver] {
        agrees(side);
    }
}

fn agrees(side: &Finished) {
    let pair = side.selected_pair();
    let path = side
        .line("floe.js selectedPath: ")
        .unwrap_or_else(|| panic!("{}: no selectedPath line:\n{}", side.name, side.log));
    for (key, want) in [("local", &pair.local), ("remote", &pair.remote)] {
        assert!(
            path.contains(&format!("\"{key}\":\"{want}\"")),
            "{}: floe.js selectedPath {path} disagrees with getStats ({pair:?})",
            side.name
        );
    }
}

#[test]
fn browsers_behind_two_cone_nats_connect_directly() {
    let _one = serial();
    floe_js_agrees(&Scenario::ConeCone.run("cone-cone", Browser, Browser));
}

#[test]
fn browsers_behind_two_symmetric_nats_go_through_turn() {
    let _one = serial();
    floe_js_agrees(&Scenario::SymmetricSymmetric.run("sym-sym", Browser, Browser));
}

#[test]
fn browser_behind_udp_blocking_firewall_relays_over_turn_tcp() {
    let _one = serial();
    floe_js_agrees(&Scenario::UdpBlockedCone.run("blocked-cone", Browser, Browser));
}

#[test]
fn browser_behind_tls_only_firewall_relays_over_turns() {
    let _one = serial();
    floe_js_agrees(&Scenario::TlsOnlyCone.run("tls-cone", Browser, Browser));
}

#[test]
fn browsers_behind_the_same_nat_use_host_candidates() {
    let _one = serial();
    floe_js_agrees(&Scenario::SameNat.run("same-nat", Browser, Browser));
}

#[test]
fn relay_only_browsers_connect_through_one_floe() {
    let _one = serial();
    floe_js_agrees(&Scenario::RelayOnlyBoth.run("relay-relay", Browser, Browser));
}

#[test]
fn relay_only_browser_reaches_browser_behind_cone_nat() {
    let _one = serial();
    floe_js_agrees(&Scenario::RelayOnlyCone.run("relay-cone", Browser, Browser));
}

#[test]
fn relay_only_browsers_connect_through_floe_behind_one_to_one_nat() {
    let _one = serial();
    floe_js_agrees(&Scenario::ServerBehindNat.run("server-nat", Browser, Browser));
}

/// [`relay_only_browsers_connect_through_one_floe`] with `floe serve --xdp native`
/// (docs/xdp.md, Tests): libwebrtc's Send indications and ChannelData, handed over
/// relay-to-relay inside the XDP program.
#[test]
fn relay_only_browsers_connect_through_one_floe_with_xdp() {
    let _one = serial();
    let (t, metrics) = Scenario::RelayOnlyBoth.run_xdp("relay-relay-xdp", Browser, Browser);
    floe_js_agrees(&t);
    natlab::expect::xdp_carried(&metrics, true);
}
