//! The NAT lab's connection scenarios with two headless Chromiums (issue 5 §2, the browser
//! baseline): each browser runs tests/natlab/browser-peer.mjs in its own host namespace, joins
//! a room on the lab's `floe serve` (signalling at http://203.0.113.10:8080, STUN/TURN at
//! 203.0.113.10:3478, TURN over TLS at :5349) with web/floe.js, and one sends a 1 MiB file to
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
//!
//! Needs root (namespaces), chromium, node and tests/browser/node_modules (./test.sh installs
//! them). The scenarios run one at a time (two Chromiums each on a 2-core machine).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod common;
#[path = "natlab/mod.rs"]
mod natlab;

use std::sync::Mutex;
use std::time::Duration;

use natlab::{Finished, Host, Lab, Nat, SelectedPair, SERVER_IP};

const ALICE_NET: [u8; 3] = [192, 0, 2];
const BOB_NET: [u8; 3] = [198, 51, 100];
const FILE_SIZE: usize = 1024 * 1024;
/// Bound of one scenario's peers (each browser also stops itself after its own --timeout).
const PEER_TIMEOUT: Duration = Duration::from_secs(90);

/// One scenario at a time: two Chromiums already load both cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// Both peers' reports.
struct Outcome {
    sender: Finished,
    receiver: Finished,
}

impl Outcome {
    /// Both sides' selected pairs: (sender's, receiver's).
    fn pairs(&self) -> (SelectedPair, SelectedPair) {
        (self.sender.selected_pair(), self.receiver.selected_pair())
    }

    fn show(&self) -> String {
        format!(
            "--- {} ---\n{}--- {} ---\n{}",
            self.sender.name, self.sender.log, self.receiver.name, self.receiver.log
        )
    }
}

/// Runs a browser on `alice` sending a 1 MiB file to a browser on `bob` through the lab's floe,
/// and checks that both finished and agree on the file. `relay_only` applies to both.
fn browsers_transfer(lab: &mut Lab, alice: &Host, bob: &Host, room: &str) -> Outcome {
    let file = lab.make_file("one-mib.bin", FILE_SIZE);
    let (cert, _) = lab.cert();
    let out = format!("{}/received.bin", lab.tmp_path());
    let timeout = (PEER_TIMEOUT.as_secs() - 5).to_string();
    let receiver_token = lab.token(room, "bob");
    let receiver = lab.browser_peer(
        bob,
        &[
            "--room",
            room,
            "--peer",
            "bob",
            "--token",
            &receiver_token,
            "--mode",
            "receive",
            "--out",
            &out,
            "--ca-file",
            &cert,
            "--timeout",
            &timeout,
        ],
    );
    let receiver = lab.spawn_logged("chromium bob (receive)", receiver);
    let sender_token = lab.token(room, "alice");
    let sender = lab.browser_peer(
        alice,
        &[
            "--room",
            room,
            "--peer",
            "alice",
            "--token",
            &sender_token,
            "--mode",
            "send",
            "--file",
            &file,
            "--ca-file",
            &cert,
            "--timeout",
            &timeout,
        ],
    );
    let sender = lab.spawn_logged("chromium alice (send)", sender);
    let mut done = lab.wait_all(&[sender, receiver], PEER_TIMEOUT).into_iter();
    let outcome = Outcome {
        sender: done.next().unwrap(),
        receiver: done.next().unwrap(),
    };
    // Shown with --nocapture (docs/how-peers-connect.md quotes it).
    println!("{}", outcome.show());
    assert!(
        outcome.sender.ok(),
        "the sender failed:\n{}",
        outcome.show()
    );
    assert!(
        outcome.receiver.ok(),
        "the receiver failed:\n{}",
        outcome.show()
    );
    let sha = sha256_hex(&std::fs::read(&file).unwrap());
    let sent = format!("one-mib.bin {FILE_SIZE} bytes sha256 {sha}");
    assert_eq!(
        outcome.sender.line("sent "),
        Some(sent.as_str()),
        "{}",
        outcome.show()
    );
    assert!(
        outcome
            .receiver
            .line("received ")
            .is_some_and(|l| l.starts_with(&sent)),
        "the receiver did not get the same bytes:\n{}",
        outcome.show()
    );
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&file).unwrap());
    for side in [&outcome.sender, &outcome.receiver] {
        floe_js_agrees(side);
    }
    outcome
}

/// floe.js's `selectedPath()` names the same candidate types as the printed pair.
fn floe_js_agrees(side: &Finished) {
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

/// SHA-256 with the openssl CLI (no extra dependency).
fn sha256_hex(bytes: &[u8]) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-r"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run openssl");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn browsers_behind_two_cone_nats_connect_directly() {
    let _one = serial();
    let mut lab = Lab::new();
    let alice = lab.site("alice", ALICE_NET, Nat::Cone, 1);
    let bob = lab.site("bob", BOB_NET, Nat::Cone, 1);
    lab.serve_peers(&[]);
    let o = browsers_transfer(&mut lab, &alice.hosts[0], &bob.hosts[0], "cone-cone");
    let (a, b) = o.pairs();
    for (pair, me, my_wan, other_wan) in [
        (&a, &alice.hosts[0], alice.wan_ip, bob.wan_ip),
        (&b, &bob.hosts[0], bob.wan_ip, alice.wan_ip),
    ] {
        assert!(
            !pair.relayed(),
            "relayed between cone NATs: {pair:?}\n{}",
            o.show()
        );
        assert_eq!(pair.via, "udp", "{pair:?}");
        // The other side is reached at its router's public address: a reflexive candidate.
        assert!(
            ["srflx", "prflx"].contains(&pair.remote.as_str()),
            "{pair:?}\n{}",
            o.show()
        );
        assert_eq!(pair.remote_ip(), Some(other_wan.into()), "{pair:?}");
        // Our end is named by its base (the host address) or by its public mapping.
        let mine = if pair.local == "host" { me.ip } else { my_wan };
        assert_eq!(pair.local_ip(), Some(mine.into()), "{pair:?}");
    }
}

#[test]
fn browsers_behind_two_symmetric_nats_go_through_turn() {
    let _one = serial();
    let mut lab = Lab::new();
    let alice = lab.site("alice", ALICE_NET, Nat::Symmetric, 1);
    let bob = lab.site("bob", BOB_NET, Nat::Symmetric, 1);
    lab.serve_peers(&[]);
    let o = browsers_transfer(&mut lab, &alice.hosts[0], &bob.hosts[0], "sym-sym");
    let (a, b) = o.pairs();
    for pair in [&a, &b] {
        assert!(pair.relayed(), "not relayed: {pair:?}\n{}", o.show());
        for (kind, ip) in [
            (&pair.local, pair.local_ip()),
            (&pair.remote, pair.remote_ip()),
        ] {
            if kind == "relay" {
                assert_eq!(ip, Some(SERVER_IP.into()), "a relay not on floe: {pair:?}");
            }
        }
        if pair.local == "relay" {
            assert_eq!(pair.via, "turn-udp", "{pair:?}");
        }
    }
    // Both sides name the same relay: one side's local relay is the other's remote one.
    for (x, y) in [(&a, &b), (&b, &a)] {
        if x.local == "relay" {
            assert_eq!(
                (y.remote.as_str(), &y.remote_addr),
                ("relay", &x.local_addr),
                "{x:?} / {y:?}"
            );
        }
    }
}

#[test]
fn browser_behind_udp_blocking_firewall_relays_over_turn_tcp() {
    let _one = serial();
    let mut lab = Lab::new();
    let alice = lab.site("alice", ALICE_NET, Nat::UdpBlocked, 1);
    let bob = lab.site("bob", BOB_NET, Nat::Cone, 1);
    lab.serve_peers(&[]);
    let o = browsers_transfer(&mut lab, &alice.hosts[0], &bob.hosts[0], "blocked-cone");
    let (a, b) = o.pairs();
    assert_eq!(a.local, "relay", "{a:?}\n{}", o.show());
    assert_eq!(a.via, "turn-tcp", "{a:?}\n{}", o.show());
    assert_eq!(a.local_ip(), Some(SERVER_IP.into()), "{a:?}");
    assert_eq!(b.remote, "relay", "{b:?}\n{}", o.show());
    assert_eq!(
        b.remote_addr, a.local_addr,
        "both sides name the same relay"
    );
}

#[test]
fn browser_behind_tls_only_firewall_relays_over_turns() {
    let _one = serial();
    let mut lab = Lab::new();
    let alice = lab.site("alice", ALICE_NET, Nat::TlsOnly, 1);
    let bob = lab.site("bob", BOB_NET, Nat::Cone, 1);
    lab.serve_peers(&[]);
    let o = browsers_transfer(&mut lab, &alice.hosts[0], &bob.hosts[0], "tls-cone");
    let (a, b) = o.pairs();
    assert_eq!(a.local, "relay", "{a:?}\n{}", o.show());
    assert_eq!(a.via, "turn-tls", "{a:?}\n{}", o.show());
    assert_eq!(a.local_ip(), Some(SERVER_IP.into()), "{a:?}");
    assert_eq!(b.remote, "relay", "{b:?}\n{}", o.show());
    assert_eq!(
        b.remote_addr, a.local_addr,
        "both sides name the same relay"
    );
}

#[test]
fn browsers_behind_the_same_nat_use_host_candidates() {
    let _one = serial();
    let mut lab = Lab::new();
    let site = lab.site("alice", ALICE_NET, Nat::Cone, 2);
    lab.serve_peers(&[]);
    let o = browsers_transfer(&mut lab, &site.hosts[0], &site.hosts[1], "same-nat");
    let (a, b) = o.pairs();
    for (pair, me, other) in [
        (&a, &site.hosts[0], &site.hosts[1]),
        (&b, &site.hosts[1], &site.hosts[0]),
    ] {
        assert_eq!(
            (pair.local.as_str(), pair.remote.as_str(), pair.via.as_str()),
            ("host", "host", "udp"),
            "{pair:?}\n{}",
            o.show()
        );
        assert_eq!(pair.local_ip(), Some(me.ip.into()), "{pair:?}");
        assert_eq!(pair.remote_ip(), Some(other.ip.into()), "{pair:?}");
    }
}
