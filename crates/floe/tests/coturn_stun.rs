//! Interop with software nobody here wrote (issue 2 §5):
//! coturn's `turnutils_stunclient` and `turnutils_natdiscovery` against `floe serve`, and
//! `floe stun` (plain and `--nat`) against coturn's `turnserver` on 127.0.0.1 and 127.0.0.2.
//!
//! The coturn tools must be installed (the test command installs Debian's `coturn`); a missing
//! tool fails the test rather than skipping it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod common;

use common::{require, run, spawn_floe, start_turnserver, Proc, TempDir};

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;

const FLOE: &str = env!("CARGO_BIN_EXE_floe");

/// A UDP port P such that P and P+1 are free on 127.0.0.1 and 127.0.0.2 right now.
fn free_port_pair() -> u16 {
    for _ in 0..200 {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        if p >= 65000 {
            continue;
        }
        let others = [
            format!("127.0.0.1:{}", p + 1),
            format!("127.0.0.2:{p}"),
            format!("127.0.0.2:{}", p + 1),
        ];
        if others.iter().all(|a| {
            UdpSocket::bind(a.as_str()).is_ok() && std::net::TcpListener::bind(a.as_str()).is_ok()
        }) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port pair");
}

fn start_floe(port: u16, alternate: bool) -> Proc {
    let mut args = vec![
        "serve".to_owned(),
        format!("--listen=127.0.0.1:{port}"),
        "--http=127.0.0.1:0".to_owned(),
    ];
    if alternate {
        args.push("--alternate-ip=127.0.0.2".to_owned());
    }
    spawn_floe(&args, SocketAddr::from(([127, 0, 0, 1], port)))
}

#[test]
fn coturn_stunclient_against_floe() {
    require("turnutils_stunclient");
    let port = free_port_pair();
    let _floe = start_floe(port, false);
    let (_, text) =
        run(Command::new("turnutils_stunclient").args(["-p", &port.to_string(), "127.0.0.1"]));
    assert!(
        text.contains("UDP reflexive addr: 127.0.0.1:"),
        "turnutils_stunclient did not report a mapped address:\n{text}"
    );
}

#[test]
fn coturn_natdiscovery_against_floe_with_rfc5780() {
    require("turnutils_natdiscovery");
    let port = free_port_pair();
    let _floe = start_floe(port, true);
    let (_, text) = run(Command::new("timeout").args([
        "60",
        "turnutils_natdiscovery",
        "-m",
        "-f",
        "-p",
        &port.to_string(),
        "127.0.0.1",
    ]));
    // The responses came from the other socket when asked (RFC 5780 CHANGE-REQUEST) ...
    assert!(
        text.contains(&format!("Response origin: : 127.0.0.2:{}", port + 1)),
        "no response from the alternate address:\n{text}"
    );
    assert!(
        text.contains(&format!("Other addr: : 127.0.0.2:{}", port + 1)),
        "no OTHER-ADDRESS:\n{text}"
    );
    // ... so coturn's classifier reaches its verdicts (loopback: no NAT in the way).
    assert!(
        text.contains("NAT with Endpoint Independent Mapping!"),
        "mapping verdict missing:\n{text}"
    );
    assert!(
        text.contains("NAT with Endpoint Independent Filtering!"),
        "filtering verdict missing:\n{text}"
    );
}

/// coturn's own server, listening on two loopback addresses so it answers RFC 5780.
fn start_coturn(port: u16) -> (Proc, TempDir) {
    let dir = TempDir::new("coturn");
    let args = [
        "--listening-ip=127.0.0.1".to_owned(),
        "--listening-ip=127.0.0.2".to_owned(),
        format!("--listening-port={port}"),
        format!("--alt-listening-port={}", port + 1),
        "--stun-only".to_owned(),
    ];
    let proc = start_turnserver(&dir, &args, SocketAddr::from(([127, 0, 0, 1], port)));
    (proc, dir)
}

#[test]
fn floe_stun_against_coturn() {
    let port = free_port_pair();
    let (_coturn, _dir) = start_coturn(port);
    let (out, text) = run(Command::new(FLOE).args(["stun", &format!("127.0.0.1:{port}")]));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("mapped address: 127.0.0.1:"), "{text}");
    assert!(
        text.contains(&format!("other address: 127.0.0.2:{}", port + 1)),
        "{text}"
    );
}

#[test]
fn floe_stun_nat_against_coturn() {
    let port = free_port_pair();
    let (_coturn, _dir) = start_coturn(port);
    let (out, text) = run(Command::new(FLOE).args([
        "stun",
        "--nat",
        "--bind",
        "127.0.0.1:0",
        &format!("127.0.0.1:{port}"),
    ]));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("mapping behaviour: no NAT"), "{text}");
    assert!(text.contains("filtering behaviour: no NAT"), "{text}");
}
