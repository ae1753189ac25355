//! Zero-config relay addresses (issue 13 §7): `floe turn --listen 0.0.0.0:3478` with no
//! `--relay-ip` relays from the host's global address of each family it listens on, says which at
//! start, and warns when the host has only a private one (a cloud VM behind a 1:1 NAT).
//!
//! floe runs with default settings in a network namespace this test creates, as on a server: a
//! veth interface with private addresses (10.9.0.1, fd00:9::1), created first so that interface
//! order alone would pick it, and a veth to a client namespace with global unicast addresses
//! (11.0.0.1, 2000:9::1; used only inside these namespaces, which have no route out). The client
//! is coturn's `turnutils_uclient` relaying between two allocations (`-y`): it can only reach
//! the relayed addresses if floe chose the global ones.
//!
//! Needs root, iproute2 and coturn's clients (CI runs as root; ./test.sh installs them). It
//! fails, never skips, without them.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{require, run, Netns, Proc};

const FLOE: &str = env!("CARGO_BIN_EXE_floe");

/// Starts `floe turn --user alice:pw ARGS` in `ns` and returns it with its start-up output.
fn start_floe(ns: &Netns, args: &[&str]) -> (Proc, String) {
    let mut full = vec!["turn", "--user", "alice:pw"];
    full.extend_from_slice(args);
    start(ns, &full, "relaying from")
}

/// Starts `floe ARGS` in `ns` and returns it with its start-up output, read (bounded) until
/// `ready` has been printed and no more lines follow for a moment.
fn start(ns: &Netns, args: &[&str], ready: &str) -> (Proc, String) {
    let mut child = ns
        .command(FLOE, args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start floe turn");
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut text = String::new();
    // `ready` comes after every listener is bound; the relay-address lines follow "relaying
    // from".
    let mut relaying_seen = false;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(300)) {
            Ok(line) => {
                relaying_seen |= line.contains(ready);
                text.push_str(&line);
                text.push('\n');
            }
            Err(mpsc::RecvTimeoutError::Timeout) if relaying_seen => return (proc, text),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("floe {args:?} exited at start:\n{text}")
            }
        }
    }
    panic!("floe {args:?} did not report its start within 20 s:\n{text}");
}

/// Runs uclient in `ns` relaying between two of its own allocations through `server`; asserts
/// that every message came back.
fn relay_between_allocations(ns: &Netns, server: &str, extra: &[&str]) {
    let mut cmd = ns.command("timeout", &["60", "turnutils_uclient", "-y"]);
    cmd.args(extra).args([
        "-u", "alice", "-w", "pw", "-n", "20", "-m", "2", "-l", "120", "-p", "3478", server,
    ]);
    let (out, text) = run(&mut cmd);
    assert!(
        out.status.success(),
        "turnutils_uclient through {server} exited with {:?}:\n{text}",
        out.status
    );
    let lost = text
        .lines()
        .find_map(|l| l.split("Total lost packets ").nth(1))
        .and_then(|r| r.split_whitespace().next()?.parse::<u64>().ok());
    let received = text
        .lines()
        .filter_map(|l| l.split("tot_recv_msgs=").nth(1))
        .filter_map(|r| r.trim().parse::<u64>().ok())
        .next_back();
    assert_eq!(lost, Some(0), "lost packets through {server}:\n{text}");
    assert!(
        received.is_some_and(|r| r > 0),
        "nothing relayed through {server}:\n{text}"
    );
}

/// Gives `ns` an interface `d0` for private addresses (one end of a veth pair whose other end
/// stays in `ns` unaddressed: the kernel here has no dummy interfaces).
fn private_interface(ns: &Netns) {
    ns.ip(&["link", "add", "d0", "type", "veth", "peer", "name", "d1"]);
    ns.ip(&["link", "set", "d0", "up"]);
    ns.ip(&["link", "set", "d1", "up"]);
}

#[test]
fn a_wildcard_listener_relays_from_the_hosts_global_addresses() {
    require("turnutils_uclient");
    require("timeout");
    let srv = Netns::new("fcfg-srv");
    let cli = Netns::new("fcfg-cli");
    private_interface(&srv);
    srv.ip(&["addr", "add", "10.9.0.1/24", "dev", "d0"]);
    srv.ip(&["-6", "addr", "add", "fd00:9::1/64", "dev", "d0", "nodad"]);
    srv.ip(&[
        "link", "add", "s0", "type", "veth", "peer", "name", "c0", "netns", &cli.0,
    ]);
    srv.ip(&["link", "set", "s0", "up"]);
    srv.ip(&["addr", "add", "11.0.0.1/24", "dev", "s0"]);
    srv.ip(&["-6", "addr", "add", "2000:9::1/64", "dev", "s0", "nodad"]);
    cli.ip(&["link", "set", "c0", "up"]);
    cli.ip(&["addr", "add", "11.0.0.2/24", "dev", "c0"]);
    cli.ip(&["-6", "addr", "add", "2000:9::2/64", "dev", "c0", "nodad"]);

    // Default settings: only the wildcard listening addresses and a user.
    let (_floe, text) = start_floe(&srv, &["--listen", "0.0.0.0:3478", "--listen", "[::]:3478"]);
    assert!(
        text.contains("relay address 11.0.0.1 chosen from interface s0"),
        "{text}"
    );
    assert!(
        text.contains("relay address 2000:9::1 chosen from interface s0"),
        "{text}"
    );
    assert!(!text.contains("warning"), "{text}");
    relay_between_allocations(&cli, "11.0.0.1", &[]);
    // `-x`: IPv6 relayed addresses (REQUESTED-ADDRESS-FAMILY) through the IPv6 listener.
    relay_between_allocations(&cli, "2000:9::1", &["-x"]);
}

#[test]
fn a_host_with_only_a_private_address_gets_the_external_ip_advice() {
    let srv = Netns::new("fcfg-nat");
    private_interface(&srv);
    srv.ip(&["addr", "add", "10.9.0.1/24", "dev", "d0"]);
    let (floe, text) = start_floe(&srv, &["--listen", "0.0.0.0:3478"]);
    assert!(
        text.contains("relay address 10.9.0.1 chosen from interface d0"),
        "{text}"
    );
    assert!(
        text.contains("warning: 10.9.0.1 is a private address") && text.contains("--external-ip"),
        "{text}"
    );
    drop(floe);
    // Behind a 1:1 NAT with the external address given, no warning.
    let (_floe, text) = start_floe(
        &srv,
        &["--listen", "0.0.0.0:3478", "--external-ip", "11.0.0.7"],
    );
    assert!(text.contains("relay address 10.9.0.1"), "{text}");
    assert!(!text.contains("warning"), "{text}");
    // A host with nothing a peer could reach is refused with the flag to give.
    let lonely = Netns::new("fcfg-lo");
    let (out, text) = run(&mut lonely.command(
        FLOE,
        &["turn", "--user", "alice:pw", "--listen", "0.0.0.0:3478"],
    ));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("give --relay-ip"), "{text}");
}

#[test]
fn floe_serve_on_a_wildcard_hands_out_the_relay_address_in_its_ice_servers() {
    require("curl");
    let srv = Netns::new("fcfg-serve");
    srv.ip(&["link", "add", "s0", "type", "veth", "peer", "name", "s1"]);
    srv.ip(&["link", "set", "s0", "up"]);
    srv.ip(&["link", "set", "s1", "up"]);
    srv.ip(&["addr", "add", "11.0.0.1/24", "dev", "s0"]);
    // Default settings: `floe serve` with only the wildcard listening address.
    let (_floe, text) = start(
        &srv,
        &["serve", "--listen", "0.0.0.0:3478"],
        "floe signal: listening",
    );
    assert!(text.contains("relay address 11.0.0.1"), "{text}");
    let (out, body) = run(&mut srv.command(
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "http://127.0.0.1:8080/v1/ice-servers",
        ],
    ));
    assert!(out.status.success(), "{body}");
    // What a browser is told: this host's address, never the wildcard.
    assert!(body.contains("\"stun:11.0.0.1:3478\""), "{body}");
    assert!(body.contains("turn:11.0.0.1:3478?transport=udp"), "{body}");
    assert!(!body.contains("0.0.0.0"), "{body}");
}
