//! Interop with software nobody here wrote (issue 3 §5): coturn's `turnutils_uclient`, relaying
//! through `floe turn` to coturn's `turnutils_peer` (a UDP echo server), over UDP, TCP and TLS,
//! with channels (uclient's default) and with Send/Data indications (`-s`), with static users and
//! TURN REST credentials (two secrets, for rotation), over IPv6, and with RFC 6062 TCP
//! allocations (`-T`). Every run must relay every message and lose none; wrong credentials must
//! fail, and so must relaying to a loopback peer without `--allow-peer` (the secure default).
//! `floe serve` relays too, and its `/metrics` counts exactly the relayed packets. The usernames
//! floe's signalling server mints (with room and tenant) work against floe and against coturn's
//! own server.
//!
//! The coturn tools and `openssl` must be installed (`./test.sh` installs them); a missing tool
//! fails the test rather than skipping it.
//!
//! Loads are small (50 messages of 120 bytes per client, 2 clients, uclient's 20 ms pacing) and
//! the runs are serialised (one lock for the whole file): UDP on loopback drops packets under
//! bursts on a 2-core machine, and "none lost" must mean floe lost none.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

mod common;

use common::{
    free_port_pair, get_metrics, printed_http_addr, require, run, self_signed_cert, summary,
    wait_for_stun, wait_for_tcp, Proc, Summary, TempDir,
};

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const FLOE: &str = env!("CARGO_BIN_EXE_floe");
const REALM: &str = "floe.test";
const USER: &str = "alice";
const PASSWORD: &str = "correct-horse";
const SECRET_OLD: &str = "rest-secret-old";
const SECRET_NEW: &str = "rest-secret-new";
/// Messages per client and clients per uclient run.
const MESSAGES: u32 = 50;
const CLIENTS: u32 = 2;

/// One uclient run at a time across the whole file (see the module comment).
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Waits (bounded) until the UDP echo server at `addr` echoes a datagram.
fn wait_for_echo(addr: SocketAddr) {
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::LOCALHOST, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::LOCALHOST, 0).into(),
    };
    let socket = UdpSocket::bind(local).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 64];
    while Instant::now() < deadline {
        let _ = socket.send_to(b"ping", addr);
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            if from == addr && &buf[..n] == b"ping" {
                return;
            }
        }
    }
    panic!("turnutils_peer does not echo at {addr}");
}

/// A running `floe turn` with its addresses.
struct Floe {
    _proc: Proc,
    port: u16,
    tls_port: Option<u16>,
    cert: Option<String>,
    _dir: TempDir,
}

/// Starts `floe turn` on 127.0.0.1 (and ::1 with `ipv6`), TLS too with `tls`, static user
/// alice and both REST secrets, loopback peers allowed.
fn start_floe(tls: bool, ipv6: bool) -> Floe {
    start_floe_with(tls, ipv6, true)
}

/// As [`start_floe`]; without `allow_loopback` the default peer policy applies.
fn start_floe_with(tls: bool, ipv6: bool, allow_loopback: bool) -> Floe {
    let dir = TempDir::new("turn");
    let port = free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut cmd = Command::new(FLOE);
    cmd.args(["turn", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--relay-ip", "127.0.0.1", "--realm", REALM])
        .args(["--user", &format!("{USER}:{PASSWORD}")])
        .args(["--auth-secret", SECRET_OLD, "--auth-secret", SECRET_NEW]);
    if allow_loopback {
        cmd.args(["--allow-peer", "127.0.0.0/8"]);
    }
    if ipv6 {
        // `::1` also reads as the IPv4-compatible form of 0.0.0.1 (in the default-denied
        // 0.0.0.0/8), which `--allow-peer ::1/128` alone does not open: see the report on
        // policy::normalize. Opening 0.0.0.1/32 as well is harmless here.
        cmd.args(["--listen", &format!("[::1]:{port}"), "--relay-ip", "::1"])
            .args(["--allow-peer", "::1/128", "--allow-peer", "0.0.0.1/32"]);
    }
    let mut tls_port = None;
    let mut cert_path = None;
    if tls {
        let (cert, key) = self_signed_cert(&dir);
        let p = free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
        cmd.args(["--tls-listen", &format!("127.0.0.1:{p}")]).args([
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
        ]);
        tls_port = Some(p);
        cert_path = Some(cert);
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start floe turn");
    let proc = Proc(child);
    wait_for_stun(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    if ipv6 {
        wait_for_stun(SocketAddr::from((Ipv6Addr::LOCALHOST, port)));
    }
    if let Some(p) = tls_port {
        wait_for_tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, p)));
    }
    Floe {
        _proc: proc,
        port,
        tls_port,
        cert: cert_path,
        _dir: dir,
    }
}

/// coturn's UDP echo peer on `ip`, ports P and P+1 (uclient's RTP and RTCP flows).
fn start_peer(ip: IpAddr) -> (Proc, u16) {
    require("turnutils_peer");
    let port = free_port_pair(ip);
    let child = Command::new("turnutils_peer")
        .args(["-L", &ip.to_string(), "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start turnutils_peer");
    let proc = Proc(child);
    wait_for_echo(SocketAddr::from((ip, port)));
    (proc, port)
}

/// Runs turnutils_uclient (bounded by `timeout`) with `flags`, `MESSAGES` messages of 120
/// bytes from each of `CLIENTS` clients, against `server:port`.
fn uclient(flags: &[&str], auth: &[&str], server: &str, port: u16) -> (Output, String) {
    require("turnutils_uclient");
    require("timeout");
    let n = MESSAGES.to_string();
    let m = CLIENTS.to_string();
    let p = port.to_string();
    let mut cmd = Command::new("timeout");
    cmd.args(["60", "turnutils_uclient"])
        .args(flags)
        .args(auth)
        .args(["-n", &n, "-m", &m, "-l", "120", "-p", &p, server]);
    run(&mut cmd)
}

/// Runs uclient and asserts that it exited 0 and that every message was relayed there and back.
fn relay_all(what: &str, flags: &[&str], auth: &[&str], server: &str, port: u16) {
    let expected = u64::from(MESSAGES) * u64::from(CLIENTS);
    relay_exactly(what, flags, auth, server, port, expected);
}

/// As [`relay_all`], when uclient's summary counts `expected` messages each way (with `-y`
/// both clients of a pair send, so it counts twice as many; coturn's own server gives the
/// same figures).
fn relay_exactly(
    what: &str,
    flags: &[&str],
    auth: &[&str],
    server: &str,
    port: u16,
    expected: u64,
) {
    let (out, text) = uclient(flags, auth, server, port);
    assert!(
        out.status.success(),
        "{what}: turnutils_uclient {flags:?} exited with {:?}:\n{text}",
        out.status
    );
    let s =
        summary(&text).unwrap_or_else(|| panic!("{what}: no summary in uclient's output:\n{text}"));
    assert_eq!(
        s,
        Summary {
            sent: expected,
            received: expected,
            lost: 0
        },
        "{what}: not every message was relayed:\n{text}"
    );
    eprintln!(
        "{what}: {flags:?}: sent {} received {} lost 0",
        s.sent, s.received
    );
}

fn static_auth() -> [&'static str; 4] {
    ["-u", USER, "-w", PASSWORD]
}

#[test]
fn udp_with_channels_and_with_indications() {
    let _serial = serial();
    let floe = start_floe(false, false);
    let (_peer, peer_port) = start_peer(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let r = peer_port.to_string();
    let peer = ["-e", "127.0.0.1", "-r", &r];
    relay_all(
        "udp, channels",
        &peer,
        &static_auth(),
        "127.0.0.1",
        floe.port,
    );
    let flags = [&peer[..], &["-s"]].concat();
    relay_all(
        "udp, send/data indications",
        &flags,
        &static_auth(),
        "127.0.0.1",
        floe.port,
    );
}

#[test]
fn tcp_with_channels_and_with_indications() {
    let _serial = serial();
    let floe = start_floe(false, false);
    let (_peer, peer_port) = start_peer(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let r = peer_port.to_string();
    let flags = ["-t", "-e", "127.0.0.1", "-r", &r];
    relay_all(
        "tcp, channels",
        &flags,
        &static_auth(),
        "127.0.0.1",
        floe.port,
    );
    let flags = [&flags[..], &["-s"]].concat();
    relay_all(
        "tcp, send/data indications",
        &flags,
        &static_auth(),
        "127.0.0.1",
        floe.port,
    );
}

#[test]
fn tls_with_channels_and_with_indications() {
    let _serial = serial();
    let floe = start_floe(true, false);
    let tls_port = floe.tls_port.unwrap();
    // floe serves the configured certificate: openssl verifies it against itself for 127.0.0.1.
    let (_, text) = run(Command::new("timeout")
        .args(["20", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{tls_port}"))
        .args(["-CAfile", floe.cert.as_deref().unwrap()])
        .args(["-verify_return_error", "-verify_ip", "127.0.0.1"])
        .stdin(Stdio::null()));
    assert!(
        text.contains("Verify return code: 0 (ok)"),
        "the TLS listener does not present the configured certificate:\n{text}"
    );
    let (_peer, peer_port) = start_peer(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let r = peer_port.to_string();
    // `-S` is TLS with `-t` (without `-t` it would be DTLS, which floe does not offer).
    let flags = ["-t", "-S", "-e", "127.0.0.1", "-r", &r];
    relay_all(
        "tls, channels",
        &flags,
        &static_auth(),
        "127.0.0.1",
        tls_port,
    );
    let flags = [&flags[..], &["-s"]].concat();
    relay_all(
        "tls, send/data indications",
        &flags,
        &static_auth(),
        "127.0.0.1",
        tls_port,
    );
}

#[test]
fn rest_credentials_with_two_secrets_and_floe_credentials() {
    let _serial = serial();
    let floe = start_floe(false, false);
    let (_peer, peer_port) = start_peer(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let r = peer_port.to_string();
    let peer = ["-e", "127.0.0.1", "-r", &r];
    // uclient mints `EXPIRY:bob` with HMAC-SHA1 itself (`-W`): either secret works (rotation).
    for secret in [SECRET_OLD, SECRET_NEW] {
        relay_all(
            "udp, REST (uclient -W)",
            &peer,
            &["-u", "bob", "-W", secret],
            "127.0.0.1",
            floe.port,
        );
    }
    // ... and credentials minted by `floe credentials` work with uclient (over TCP this time).
    let (out, text) = run(Command::new(FLOE).args([
        "credentials",
        "--secret",
        SECRET_NEW,
        "--user",
        "carol",
        "--ttl",
        "600",
    ]));
    assert!(out.status.success(), "floe credentials failed:\n{text}");
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in floe credentials output:\n{text}"))
            .trim()
            .to_owned()
    };
    let (username, password) = (field("username:"), field("password:"));
    assert!(username.ends_with(":carol"), "{username}");
    let flags = [&["-t"], &peer[..]].concat();
    relay_all(
        "tcp, REST (floe credentials)",
        &flags,
        &["-u", &username, "-w", &password],
        "127.0.0.1",
        floe.port,
    );
}

/// The usernames floe's signalling server mints carry the room and tenant
/// (`EXPIRY:PEER;room=ROOM;tenant=TENANT`, docs/turn.md §3): coturn's uclient authenticates
/// with one against floe, and coturn's own server (`use-auth-secret`) accepts one too, so floe's
/// signalling keeps working in front of a coturn relay.
#[test]
fn identity_usernames_relay_through_floe_and_through_coturn() {
    let _serial = serial();
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cred = floe_turn::rest::mint_identity(
        SECRET_NEW.as_bytes(),
        "alice",
        Some("standup"),
        Some("acme"),
        600,
        unix,
    );
    assert!(cred.username.ends_with(":alice;room=standup;tenant=acme"));
    let auth = ["-u", cred.username.as_str(), "-w", cred.password.as_str()];
    let (_peer, peer_port) = start_peer(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let r = peer_port.to_string();
    let peer = ["-e", "127.0.0.1", "-r", &r];

    let floe = start_floe(false, false);
    relay_all(
        "udp, identity username (floe)",
        &peer,
        &auth,
        "127.0.0.1",
        floe.port,
    );

    let dir = TempDir::new("coturn-identity");
    let port = free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let args = [
        "--listening-ip=127.0.0.1".to_owned(),
        "--relay-ip=127.0.0.1".to_owned(),
        format!("--listening-port={port}"),
        "--min-port=56400".to_owned(),
        "--max-port=56499".to_owned(),
        "--use-auth-secret".to_owned(),
        format!("--static-auth-secret={SECRET_NEW}"),
        format!("--realm={REALM}"),
        "--allow-loopback-peers".to_owned(),
    ];
    let _coturn = common::start_turnserver(&dir, &args, SocketAddr::from(([127, 0, 0, 1], port)));
    relay_all(
        "udp, identity username (coturn)",
        &peer,
        &auth,
        "127.0.0.1",
        port,
    );
}

#[test]
fn ipv6_relaying() {
    let _serial = serial();
    let floe = start_floe(false, true);
    let (_peer, peer_port) = start_peer(IpAddr::V6(Ipv6Addr::LOCALHOST));
    let r = peer_port.to_string();
    let peer = ["-x", "-e", "::1", "-r", &r];
    relay_all(
        "udp over ::1, IPv6 relay, channels",
        &peer,
        &static_auth(),
        "::1",
        floe.port,
    );
    let flags = [&peer[..], &["-t", "-s"]].concat();
    relay_all(
        "tcp over ::1, IPv6 relay, indications",
        &flags,
        &static_auth(),
        "::1",
        floe.port,
    );
    // An IPv4 client asking for an IPv6 relay (REQUESTED-ADDRESS-FAMILY).
    relay_all(
        "udp over 127.0.0.1, IPv6 relay",
        &peer,
        &static_auth(),
        "127.0.0.1",
        floe.port,
    );
}

#[test]
fn rfc6062_tcp_allocations() {
    let _serial = serial();
    let floe = start_floe(true, false);
    // `-T`: TCP relay between uclient's own clients (Connect, ConnectionAttempt,
    // ConnectionBind). uclient counts `-n` messages per client here too.
    relay_all(
        "tcp, RFC 6062",
        &["-T"],
        &static_auth(),
        "127.0.0.1",
        floe.port,
    );
    relay_all(
        "tls, RFC 6062",
        &["-T", "-S"],
        &static_auth(),
        "127.0.0.1",
        floe.tls_port.unwrap(),
    );
}

#[test]
fn wrong_credentials_fail() {
    let _serial = serial();
    let floe = start_floe(false, false);
    let (_peer, peer_port) = start_peer(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let r = peer_port.to_string();
    let peer = ["-e", "127.0.0.1", "-r", &r];
    for (what, auth) in [
        ("wrong password", ["-u", USER, "-w", "wrong-password"]),
        ("unknown user", ["-u", "mallory", "-w", PASSWORD]),
        ("wrong REST secret", ["-u", "bob", "-W", "not-the-secret"]),
    ] {
        let (out, text) = uclient(&peer, &auth, "127.0.0.1", floe.port);
        assert_eq!(
            out.status.code(),
            Some(255),
            "{what}: uclient should give up (and not time out):\n{text}"
        );
        assert!(
            text.contains("Cannot complete Allocation"),
            "{what}: expected an allocation failure:\n{text}"
        );
        assert_eq!(
            summary(&text),
            None,
            "{what}: nothing may be relayed:\n{text}"
        );
    }
    // The server still serves the right credentials afterwards.
    relay_all(
        "udp after failures",
        &peer,
        &static_auth(),
        "127.0.0.1",
        floe.port,
    );
}

#[test]
fn loopback_peer_refused_by_default() {
    let _serial = serial();
    let floe = start_floe_with(false, false, false);
    // A loopback service that is not the relay IP (127.0.0.1): refused with 403.
    let (_peer, peer_port) = start_peer(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
    let r = peer_port.to_string();
    for (flags, expected) in [
        (
            vec!["-e", "127.0.0.2", "-r", &r],
            "channel bind: error 403 (Forbidden)",
        ),
        (
            vec!["-s", "-e", "127.0.0.2", "-r", &r],
            "create permission error 403 (Forbidden)",
        ),
    ] {
        let (out, text) = uclient(&flags, &static_auth(), "127.0.0.1", floe.port);
        assert_eq!(out.status.code(), Some(255), "{flags:?}:\n{text}");
        assert!(
            text.contains(expected),
            "{flags:?}: expected {expected:?}:\n{text}"
        );
        assert_eq!(
            summary(&text),
            None,
            "{flags:?}: nothing may be relayed:\n{text}"
        );
    }
    // A service on the relay IP itself: the permission is granted (the server's own relayed
    // address, for relay-to-relay calls), but data for a port without a live allocation is
    // dropped inside floe and never reaches the service.
    let (_local, local_port) = start_peer(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let r = local_port.to_string();
    for flags in [
        vec!["-e", "127.0.0.1", "-r", &r],
        vec!["-s", "-e", "127.0.0.1", "-r", &r],
    ] {
        let (_out, text) = uclient(&flags, &static_auth(), "127.0.0.1", floe.port);
        let s = summary(&text).unwrap_or_else(|| panic!("{flags:?}: no summary:\n{text}"));
        assert!(s.sent > 0, "{flags:?}: uclient sent nothing:\n{text}");
        assert_eq!(
            s.received, 0,
            "{flags:?}: the local service was reached:\n{text}"
        );
    }
}

/// `floe serve` (STUN + TURN + signalling in one process) on `port`, with its HTTP listener on a
/// free port; returns the HTTP address it printed.
fn start_serve(port: u16) -> (Proc, SocketAddr) {
    start_serve_with(port, &["--allow-peer", "127.0.0.0/8"], Stdio::null())
}

/// As [`start_serve`] with `extra` flags, its log (stderr) going to `log`.
fn start_serve_with(port: u16, extra: &[&str], log: Stdio) -> (Proc, SocketAddr) {
    let mut child = Command::new(FLOE)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--http", "127.0.0.1:0", "--realm", REALM])
        .args(["--user", &format!("{USER}:{PASSWORD}")])
        .args(extra)
        .env_remove("NO_COLOR")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start floe serve");
    let http = printed_http_addr(&mut child);
    let proc = Proc(child);
    wait_for_stun(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
    (proc, http)
}

/// GET /metrics.
fn metrics(http: SocketAddr) -> String {
    get_metrics(http)
}

#[test]
fn floe_serve_relays_and_counts_in_metrics() {
    let _serial = serial();
    let port = free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (_serve, http) = start_serve(port);
    let (_peer, peer_port) = start_peer(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let r = peer_port.to_string();
    relay_all(
        "floe serve, udp, channels",
        &["-e", "127.0.0.1", "-r", &r],
        &static_auth(),
        "127.0.0.1",
        port,
    );
    // The workers publish their counters about once a second: wait (bounded) for the totals.
    let expected = u64::from(MESSAGES) * u64::from(CLIENTS);
    let want = [
        format!("floe_turn_relayed_packets_total{{direction=\"to_peer\"}} {expected}"),
        format!("floe_turn_relayed_packets_total{{direction=\"to_client\"}} {expected}"),
        format!(
            "floe_turn_relayed_bytes_total{{direction=\"to_peer\"}} {}",
            expected * 120
        ),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = metrics(http);
    while !want.iter().all(|w| text.lines().any(|l| l == w)) {
        assert!(
            Instant::now() < deadline,
            "metrics do not show {want:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200)); // polling interval of a bounded wait
        text = metrics(http);
    }
}

#[test]
fn summary_parser() {
    let text =
        "6: : start_mclient: msz=2, tot_send_msgs=79, tot_recv_msgs=79, tot_send_bytes ~ 9480\n\
                6: : start_mclient: tot_send_msgs=100, tot_recv_msgs=99\n\
                6: : Total lost packets 1 (1.000000%), total send dropped 0 (0.000000%)\n";
    assert_eq!(
        summary(text),
        Some(Summary {
            sent: 100,
            received: 99,
            lost: 1
        })
    );
    assert_eq!(summary("0: : ERROR: Cannot complete Allocation"), None);
}

/// Both ends relay through one server (issue 10): coturn's uclient with `-y` pairs its own
/// clients, so each installs a permission for the *other client's relayed address* on floe and
/// sends to it. floe runs with its default peer policy (no `--allow-peer`), as a deployment does:
/// the relay IP 127.0.0.1 is loopback and an address of the server, and only the own-relay rule
/// (in-process handoff between allocations) lets this through. UDP, TCP and TLS clients, with
/// channels and with Send/Data indications.
#[test]
fn client_to_client_through_one_server_with_the_default_policy() {
    let _serial = serial();
    let floe = start_floe_with(true, false, false);
    let both_ways = 2 * u64::from(MESSAGES) * u64::from(CLIENTS);
    for (what, flags) in [
        ("udp, relay to relay, channels", &["-y"][..]),
        ("udp, relay to relay, send/data", &["-y", "-s"][..]),
        ("tcp, relay to relay, channels", &["-y", "-t"][..]),
        ("tcp, relay to relay, send/data", &["-y", "-t", "-s"][..]),
    ] {
        relay_exactly(
            what,
            flags,
            &static_auth(),
            "127.0.0.1",
            floe.port,
            both_ways,
        );
    }
    relay_exactly(
        "tls, relay to relay, channels",
        &["-y", "-t", "-S"],
        &static_auth(),
        "127.0.0.1",
        floe.tls_port.unwrap(),
        both_ways,
    );
}

/// Waits (bounded) until `/metrics` has a line starting with each of `want`; returns the text.
fn wait_for_metrics(http: SocketAddr, want: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = metrics(http);
    while !want.iter().all(|w| text.lines().any(|l| l.starts_with(w))) {
        assert!(
            Instant::now() < deadline,
            "metrics do not show {want:?}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200)); // polling interval of a bounded wait
        text = metrics(http);
    }
    text
}

/// An operator sees why relaying fails (issue 10): `floe serve` with its defaults, its log in a
/// file as `floe serve 2>log` writes it. A client asking for a private peer is refused (403),
/// and the refusal is counted by request and reason and logged at info with the client,
/// username, peer and reason, in plain text (no colour codes) and without the password.
/// Relay-to-relay traffic through the same server is counted too.
#[test]
fn refused_peers_are_logged_and_counted_with_the_defaults() {
    let _serial = serial();
    let dir = TempDir::new("refused");
    let log_path = dir.file("floe.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (_serve, http) = start_serve_with(port, &[], Stdio::from(log));
    let (out, text) = uclient(
        &["-e", "10.1.2.3", "-r", "3480"],
        &static_auth(),
        "127.0.0.1",
        port,
    );
    assert!(
        summary(&text).is_none_or(|s| s.received == 0),
        "a private peer must not be reachable:\n{text}"
    );
    let _ = out;
    relay_exactly(
        "floe serve, relay to relay",
        &["-y"],
        &static_auth(),
        "127.0.0.1",
        port,
        2 * u64::from(MESSAGES) * u64::from(CLIENTS),
    );
    wait_for_metrics(
        http,
        &[
            "floe_turn_peer_refused_total{request=\"channel_bind\",reason=\"private\"} ",
            "floe_turn_relay_to_relay_total ",
        ],
    );
    let log = std::fs::read_to_string(&log_path).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("peer refused"))
        .unwrap_or_else(|| panic!("no refusal in the log:\n{log}"));
    for want in [
        "INFO",
        "username=alice",
        "request=\"channel_bind\"",
        "peer=10.1.2.3:",
        "reason=\"private\"",
    ] {
        assert!(line.contains(want), "{want:?} missing from {line:?}");
    }
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );
    assert!(!log.contains(PASSWORD), "the password is in the log");
}

/// `floe serve` is one deployment with one TURN REST secret: `--turn-secret` alone (the
/// signalling server's minting secret) is the TURN server's too, so credentials made with it
/// (here by coturn's uclient, `-W`) are accepted; and explicit ICE URLs with only `--auth-secret`
/// start (they used to be refused: "turn_urls need turn_secret").
#[test]
fn floe_serve_shares_one_rest_secret_between_signalling_and_turn() {
    let _serial = serial();
    let port = free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let (_serve, _http) = start_serve_with(port, &["--turn-secret", SECRET_NEW], Stdio::null());
    relay_exactly(
        "floe serve --turn-secret only, REST credentials, relay to relay",
        &["-y"],
        &["-u", "bob", "-W", SECRET_NEW],
        "127.0.0.1",
        port,
        2 * u64::from(MESSAGES) * u64::from(CLIENTS),
    );
    drop(_serve);
    let port = free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let url = format!("turn:127.0.0.1:{port}?transport=udp");
    let (_serve, _http) = start_serve_with(
        port,
        &["--auth-secret", SECRET_OLD, "--turn-url", &url],
        Stdio::null(),
    );
}
