//! `floe peer` end to end on loopback: two real `floe peer` processes meet in a room of a real
//! `floe serve`, open WebRTC data channels (str0m: ICE, DTLS, SCTP) and move a file, checked by
//! SHA-256 on both sides. Direct over host candidates, and relay-only through floe's TURN over
//! UDP, TCP and TLS (floe's own TURN client). NAT scenarios are in natlab_peers.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port_pair, run, self_signed_cert, spawn_floe, wait_for_tcp, Proc, TempDir};

struct Serve {
    _proc: Proc,
    signal: String,
    cert: String,
    dir: TempDir,
}

/// Starts `floe serve` on loopback with TURN over UDP, TCP and TLS; loopback peers allowed so
/// that relayed traffic may reach the other (loopback) peer.
fn serve() -> Serve {
    let dir = TempDir::new("peer");
    let (cert, key) = self_signed_cert(&dir);
    let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let port = free_port_pair(lo);
    let tls_port = free_port_pair(lo);
    let http_port = free_port_pair(lo);
    let args = [
        "serve".to_owned(),
        format!("--listen=127.0.0.1:{port}"),
        format!("--tls-listen=127.0.0.1:{tls_port}"),
        format!("--tls-cert={cert}"),
        format!("--tls-key={key}"),
        "--allow-peer=127.0.0.0/8".to_owned(),
        format!("--http=127.0.0.1:{http_port}"),
    ];
    let proc = spawn_floe(&args, SocketAddr::from(([127, 0, 0, 1], port)));
    wait_for_tcp(SocketAddr::from(([127, 0, 0, 1], http_port)));
    Serve {
        _proc: proc,
        signal: format!("http://127.0.0.1:{http_port}"),
        cert,
        dir,
    }
}

/// Deterministic pseudo-random bytes (so a failure is reproducible).
fn letter(size: usize) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

struct Outcome {
    sender: String,
    receiver: String,
}

/// Runs `floe peer receive` and `floe peer send` in one room; both must exit 0 within 90 s.
fn transfer(s: &Serve, room: &str, size: usize, extra: &[&str]) -> Outcome {
    let data = letter(size);
    let src = s.dir.file(&format!("{room}.bin"));
    let dst = s.dir.file(&format!("{room}.out"));
    std::fs::write(&src, &data).unwrap();
    let common = |cmd: &mut Command| {
        cmd.args([
            "--room",
            room,
            "--signal",
            &s.signal,
            "--ca-file",
            &s.cert,
            "--timeout",
            "40",
        ])
        .args(extra)
        .env("FLOE_LOG", "warn");
    };
    let mut recv = Command::new(env!("CARGO_BIN_EXE_floe"));
    recv.args(["peer", "receive", "--out", &dst]);
    common(&mut recv);
    let recv = recv
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let recv = Proc(recv);
    let mut send = Command::new(env!("CARGO_BIN_EXE_floe"));
    send.args(["peer", "send", &src]);
    common(&mut send);
    let (out, sender) = run(send.stdout(Stdio::piped()).stderr(Stdio::piped()));
    let (rout, receiver) = wait_output(recv, Duration::from_secs(90));
    assert!(
        out.status.success() && rout,
        "transfer failed\n--- sender:\n{sender}\n--- receiver:\n{receiver}"
    );
    assert_eq!(std::fs::read(&dst).unwrap(), data, "received bytes differ");
    Outcome { sender, receiver }
}

/// Waits (bounded) for a child; returns (exited successfully, stdout+stderr).
fn wait_output(mut p: Proc, limit: Duration) -> (bool, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = p.0.try_wait().unwrap() {
            let mut text = String::new();
            use std::io::Read as _;
            if let Some(mut o) = p.0.stdout.take() {
                o.read_to_string(&mut text).unwrap();
            }
            if let Some(mut e) = p.0.stderr.take() {
                e.read_to_string(&mut text).unwrap();
            }
            return (status.success(), text);
        }
        assert!(Instant::now() < deadline, "receiver did not finish in time");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix:?} line in:\n{text}"))
}

fn sha_of(line: &str) -> &str {
    line.split_whitespace()
        .skip_while(|w| *w != "sha256")
        .nth(1)
        .unwrap_or_else(|| panic!("no sha256 in {line:?}"))
}

#[test]
fn a_file_goes_directly_over_host_candidates() {
    let s = serve();
    let o = transfer(&s, "host", 2_000_000, &[]);
    for text in [&o.sender, &o.receiver] {
        let pair = line(text, "selected pair:");
        assert!(
            pair.contains("local host 127.0.0.1:") && pair.contains("remote host 127.0.0.1:"),
            "{pair}"
        );
        assert!(pair.contains(" via udp rtt "), "{pair}");
    }
    let sent = line(&o.sender, "sent host.bin 2000000 bytes sha256 ");
    let got = line(&o.receiver, "received host.bin 2000000 bytes sha256 ");
    assert!(got.ends_with(" verified"), "{got}");
    assert_eq!(sha_of(sent), sha_of(got));
}

fn relay_only(transport: &str) {
    let s = serve();
    let room = format!("relay-{transport}");
    let o = transfer(
        &s,
        &room,
        300_000,
        &["--relay-only", "--turn-transport", transport],
    );
    for text in [&o.sender, &o.receiver] {
        let pair = line(text, "selected pair:");
        assert!(
            pair.contains("local relay 127.0.0.1:")
                && pair.contains(&format!("via turn-{transport} ")),
            "{pair}"
        );
        assert!(
            !text.contains("local candidate: host") && !text.contains("local candidate: srflx"),
            "relay-only peers offered other candidates:\n{text}"
        );
        assert!(
            line(text, "local candidate: relay").ends_with(&format!("via turn {transport}")),
            "{text}"
        );
    }
    assert!(line(&o.receiver, "received ").ends_with(" verified"));
}

#[test]
fn relay_only_through_turn_over_udp() {
    relay_only("udp");
}

#[test]
fn relay_only_through_turn_over_tcp() {
    relay_only("tcp");
}

#[test]
fn relay_only_through_turn_over_tls() {
    relay_only("tls");
}

#[test]
fn chat_lines_arrive_and_the_other_side_ends_with_bye() {
    let s = serve();
    let chat = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_floe"));
        c.args([
            "peer",
            "chat",
            "--room",
            "chat",
            "--signal",
            &s.signal,
            "--timeout",
            "40",
        ])
        .env("FLOE_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        Proc(c.spawn().unwrap())
    };
    // Bob listens (his stdin stays open); Alice says one line and ends her input: she leaves
    // once Bob's SCTP stack acknowledged it, and Bob ends when her bye arrives.
    let mut bob = chat();
    let _bob_stdin = bob.0.stdin.take().unwrap();
    let mut alice = chat();
    {
        use std::io::Write as _;
        let mut a_in = alice.0.stdin.take().unwrap();
        a_in.write_all(b"dear bob\n").unwrap();
    }
    let (a_ok, a_text) = wait_output(alice, Duration::from_secs(60));
    let (b_ok, b_text) = wait_output(bob, Duration::from_secs(30));
    assert!(a_ok && b_ok, "alice:\n{a_text}\nbob:\n{b_text}");
    assert!(
        b_text.lines().any(|l| l.ends_with(": dear bob")),
        "bob:\n{b_text}"
    );
}

#[test]
fn turns_with_an_untrusted_certificate_is_refused() {
    // Without --ca-file the self-signed certificate is not trusted: no TLS relay, and a
    // relay-only peer says why instead of waiting for its timeout.
    let s = serve();
    let mut c = Command::new(env!("CARGO_BIN_EXE_floe"));
    c.args([
        "peer",
        "send",
        "/dev/null",
        "--room",
        "untrusted",
        "--signal",
        &s.signal,
    ])
    .args(["--relay-only", "--turn-transport", "tls", "--timeout", "30"])
    .env("FLOE_LOG", "warn");
    let mut other = Command::new(env!("CARGO_BIN_EXE_floe"));
    other
        .args([
            "peer",
            "receive",
            "--room",
            "untrusted",
            "--signal",
            &s.signal,
            "--timeout",
            "30",
        ])
        .args(["--out", &s.dir.file("untrusted.out")])
        .env("FLOE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _other = Proc(other.spawn().unwrap());
    let (out, text) = run(&mut c);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("invalid peer certificate"), "{text}");
    assert!(
        text.contains("no TURN server gave us a relayed address"),
        "{text}"
    );
}

/// coturn's `turnserver` on loopback with a static long-term user; relays from `relay_ports`.
fn coturn(dir: &TempDir, relay_ports: (u16, u16)) -> (Proc, u16) {
    let port = free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let args = [
        "--listening-ip=127.0.0.1".to_owned(),
        "--relay-ip=127.0.0.1".to_owned(),
        format!("--listening-port={port}"),
        format!("--min-port={}", relay_ports.0),
        format!("--max-port={}", relay_ports.1),
        "--lt-cred-mech".to_owned(),
        "--user=alice:wonderland".to_owned(),
        "--realm=coturn.test".to_owned(),
        "--allow-loopback-peers".to_owned(),
    ];
    let ready = SocketAddr::from(([127, 0, 0, 1], port));
    (common::start_turnserver(dir, &args, ready), port)
}

/// floe's own TURN client against another implementation: both peers relay-only through
/// coturn (UDP, then TCP), floe serve used for signalling only.
#[test]
fn floe_peers_relay_through_coturn() {
    let s = serve();
    let relay_ports = (56_100, 56_199);
    let (_coturn, port) = coturn(&s.dir, relay_ports);
    for transport in ["udp", "tcp"] {
        let url = format!("turn:127.0.0.1:{port}?transport={transport}");
        let room = format!("coturn-{transport}");
        let o = transfer(
            &s,
            &room,
            200_000,
            &[
                "--relay-only",
                "--only-ice-servers",
                "--ice-server",
                &url,
                "--ice-username",
                "alice",
                "--ice-credential",
                "wonderland",
            ],
        );
        for text in [&o.sender, &o.receiver] {
            let pair = line(text, "selected pair:");
            assert!(pair.contains(&format!("via turn-{transport} ")), "{pair}");
            let relay_port: u16 = pair
                .split_whitespace()
                .nth(4)
                .and_then(|a| a.parse::<SocketAddr>().ok())
                .map(|a| a.port())
                .unwrap_or_else(|| panic!("no local address in {pair:?}"));
            assert!(
                (relay_ports.0..=relay_ports.1).contains(&relay_port),
                "not a coturn relay port: {pair}"
            );
        }
        assert!(line(&o.receiver, "received ").ends_with(" verified"));
    }
}

/// A loopback TCP proxy that can cut every connection it carries: it breaks a peer's signalling
/// WebSocket without stopping the server.
struct Proxy {
    addr: SocketAddr,
    conns: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    downstream_bytes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let p = Proxy {
            addr: listener.local_addr().unwrap(),
            conns: Default::default(),
            accepted: Default::default(),
            downstream_bytes: Default::default(),
        };
        let (conns, accepted, down) = (
            p.conns.clone(),
            p.accepted.clone(),
            p.downstream_bytes.clone(),
        );
        // Ends with the test process (accept blocks); every connection ends with `cut`.
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { return };
                let Ok(server) = std::net::TcpStream::connect(upstream) else {
                    return;
                };
                accepted.fetch_add(1, Ordering::SeqCst);
                conns
                    .lock()
                    .unwrap()
                    .extend([client.try_clone().unwrap(), server.try_clone().unwrap()]);
                let pipe = |mut from: std::net::TcpStream,
                            mut to: std::net::TcpStream,
                            count: Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>| {
                    std::thread::spawn(move || {
                        use std::io::{Read as _, Write as _};
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(n) = from.read(&mut buf) {
                            if n == 0 || to.write_all(&buf[..n]).is_err() {
                                break;
                            }
                            if let Some(c) = &count {
                                c.fetch_add(n, Ordering::SeqCst);
                            }
                        }
                        let _ = to.shutdown(std::net::Shutdown::Both);
                    });
                };
                pipe(
                    client.try_clone().unwrap(),
                    server.try_clone().unwrap(),
                    None,
                );
                pipe(server, client, Some(down.clone()));
            }
        });
        p
    }

    fn cut(&self) {
        for s in self.conns.lock().unwrap().drain(..) {
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

/// The receiver's signalling connection breaks after it joined and before the sender arrives:
/// it resumes the session (the server replays peer_joined, the offer and the candidates it
/// missed) and the transfer completes.
#[test]
fn a_broken_signalling_connection_is_resumed() {
    use std::sync::atomic::Ordering;
    let s = serve();
    let upstream: SocketAddr = s.signal.trim_start_matches("http://").parse().unwrap();
    let proxy = Proxy::start(upstream);
    let data = letter(100_000);
    let src = s.dir.file("resume.bin");
    let dst = s.dir.file("resume.out");
    std::fs::write(&src, &data).unwrap();
    let via_proxy = format!("http://{}", proxy.addr);
    let recv = Proc(
        Command::new(env!("CARGO_BIN_EXE_floe"))
            .args([
                "peer", "receive", "--room", "resume", "--signal", &via_proxy,
            ])
            .args(["--out", &dst, "--timeout", "40"])
            .env("FLOE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The welcome (with its ICE servers) is a few hundred bytes: wait until it went through.
    let deadline = Instant::now() + Duration::from_secs(15);
    while proxy.downstream_bytes.load(Ordering::SeqCst) < 300 {
        assert!(
            Instant::now() < deadline,
            "the receiver never got its welcome"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    proxy.cut();
    let (out, sender) = run(Command::new(env!("CARGO_BIN_EXE_floe"))
        .args([
            "peer", "send", &src, "--room", "resume", "--signal", &s.signal,
        ])
        .args(["--timeout", "40"])
        .env("FLOE_LOG", "warn"));
    let (ok, receiver) = wait_output(recv, Duration::from_secs(60));
    assert!(
        out.status.success() && ok,
        "sender:\n{sender}\nreceiver:\n{receiver}"
    );
    assert_eq!(std::fs::read(&dst).unwrap(), data);
    assert!(
        receiver.contains("signalling session resumed"),
        "{receiver}"
    );
    assert!(
        proxy.accepted.load(Ordering::SeqCst) >= 2,
        "no second connection"
    );
}
