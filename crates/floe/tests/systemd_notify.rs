//! systemd's notification protocol (issue 13 §10) against a fake `NOTIFY_SOCKET`: the test binds
//! the unix datagram socket systemd would, starts floe as a `Type=notify` unit with
//! `WatchdogSec=` would, and reads what floe says: `READY=1` (with its PID) only once it answers,
//! `WATCHDOG=1` at half the interval, `STOPPING=1` on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port_pair, Proc, TempDir};

const FLOE: &str = env!("CARGO_BIN_EXE_floe");
const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Reads notifications until one contains `want` (bounded); returns every message read.
fn read_until(socket: &UnixDatagram, want: &str) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = msg.lines().any(|l| l == want);
            seen.push(msg);
            if done {
                return seen;
            }
        }
    }
    panic!("no {want} within 20 s; got {seen:?}");
}

fn start(args: &[&str], notify_socket: &str) -> Proc {
    let child = Command::new(FLOE)
        .args(args)
        .env("NOTIFY_SOCKET", notify_socket)
        .env("WATCHDOG_USEC", "200000")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start floe");
    Proc(child)
}

/// READY (with MAINPID), two watchdog pings, then STOPPING after SIGTERM and a clean exit.
fn lifecycle(socket: &UnixDatagram, mut floe: Proc, check_up: impl Fn()) {
    let ready = read_until(socket, "READY=1");
    let pid = floe.0.id();
    assert!(
        ready
            .last()
            .unwrap()
            .lines()
            .any(|l| l == format!("MAINPID={pid}")),
        "{ready:?}"
    );
    // READY means up: answered at once, no retry loop.
    check_up();
    read_until(socket, "WATCHDOG=1");
    read_until(socket, "WATCHDOG=1");
    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    read_until(socket, "STOPPING=1");
    let deadline = Instant::now() + Duration::from_secs(20);
    while floe.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "floe did not exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn floe_turn_notifies_ready_watchdog_and_stopping() {
    let dir = TempDir::new("floe-notify");
    let path = dir.file("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let port = free_port_pair(LOCALHOST);
    let listen = SocketAddr::new(LOCALHOST, port);
    let floe = start(
        &["turn", "--listen", &listen.to_string(), "--user", "a:b"],
        &path,
    );
    lifecycle(&socket, floe, || {
        let client = UdpSocket::bind((LOCALHOST, 0)).unwrap();
        floe_turn_server::stun_client::binding_udp(&client, listen, None, Duration::from_secs(2))
            .expect("STUN answers once READY=1 was sent");
    });
}

#[test]
fn floe_serve_notifies_on_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("floe-notify-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let port = free_port_pair(LOCALHOST);
    let http = std::net::TcpListener::bind((LOCALHOST, 0)).unwrap();
    let http_addr = http.local_addr().unwrap();
    drop(http);
    let floe = start(
        &[
            "serve",
            "--listen",
            &SocketAddr::new(LOCALHOST, port).to_string(),
            "--http",
            &http_addr.to_string(),
        ],
        &format!("@{name}"),
    );
    lifecycle(&socket, floe, || {
        TcpStream::connect(http_addr).expect("signalling accepts once READY=1 was sent");
    });
}

/// The shipped unit file passes `systemd-analyze verify` (with ExecStart pointing at the binary
/// under test) and its sandbox rates as low exposure.
#[test]
fn the_unit_file_verifies() {
    common::require("systemd-analyze");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/floe.service"
    ))
    .unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/floe serve --config /etc/floe/floe.toml"));
    let dir = TempDir::new("floe-unit");
    let path = dir.file("floe.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/floe", FLOE)).unwrap();
    let (out, text) = common::run(Command::new("systemd-analyze").args(["verify", &path]));
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
    let (out, text) =
        common::run(Command::new("systemd-analyze").args(["security", "--offline=yes", &path]));
    assert!(out.status.success(), "{text}");
    let level: f64 = text
        .split("Overall exposure level for floe.service:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    // systemd rates 0-10; below 2 is "OK", the best band.
    assert!(level < 2.0, "exposure {level}:\n{text}");
}
