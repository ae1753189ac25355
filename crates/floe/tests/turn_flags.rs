//! `floe turn` flags that shape the relay's limits, checked end to end on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{free_port_pair, wait_for_stun, Proc};
use floe_stun::attr::{ErrorCode, RequestedTransport};
use floe_stun::{Class, Message, MessageBuilder, Method, TransactionId};

fn floe_turn(extra: &[&str]) -> (Proc, SocketAddr) {
    let port = free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["turn", "--listen", &addr.to_string(), "--user", "alice:pw"])
        .args(extra)
        .env("FLOE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let proc = Proc(child);
    wait_for_stun(addr);
    (proc, addr)
}

/// Sends `n` unauthenticated Allocates from one socket; counts the 401 answers.
fn challenges(server: SocketAddr, n: u8) -> usize {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..n {
        let mut buf = vec![0u8; 128];
        let mut b = MessageBuilder::new(
            &mut buf,
            Class::Request,
            Method::ALLOCATE,
            TransactionId([i; 12]),
        )
        .unwrap();
        b.add(&RequestedTransport(RequestedTransport::UDP)).unwrap();
        let len = b.finish();
        socket.send_to(&buf[..len], server).unwrap();
    }
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut answers = 0;
    let mut buf = [0u8; 1500];
    while let Ok((len, _)) = socket.recv_from(&mut buf) {
        let m = Message::parse(&buf[..len]).unwrap();
        assert_eq!(m.get::<ErrorCode<'_>>().unwrap().unwrap().code, 401);
        answers += 1;
    }
    answers
}

#[test]
fn auth_rate_and_burst_bound_the_401_answers_over_udp() {
    let (_default, addr) = floe_turn(&[]);
    assert_eq!(challenges(addr, 8), 8, "the default burst (40) answers all");
    let (_strict, addr) = floe_turn(&["--auth-rate", "1", "--auth-burst", "2"]);
    let answered = challenges(addr, 8);
    // A burst of 2, plus at most one token refilled while the requests are in flight.
    assert!((2..=3).contains(&answered), "{answered} answered");
}

#[test]
fn a_zero_auth_rate_is_refused_at_start() {
    let out = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args([
            "turn",
            "--listen",
            "127.0.0.1:0",
            "--user",
            "a:b",
            "--auth-rate",
            "0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("auth_rate must be at least 1"));
}
