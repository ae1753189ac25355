//! Issue 12, TURN side, end to end against a real `floe serve`: a TCP client that never reads
//! holds at most its outbound queue (seen in `/metrics`), and one IP at its TCP caps (idle,
//! dripping and non-reading connections) and beyond its signalling connection cap, under a 1,024
//! open-files limit, leaves another IP able to allocate and relay over UDP and TCP and to join a
//! room over WebSocket on the same process.
//!
//! Relaying goes allocation to allocation through the server's own relay IP, which the default
//! peer policy grants (loopback peers are refused by default), so no test needs `--allow-peer`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on setup failure

#[path = "../../turn-server/tests/common/client.rs"]
mod client;
mod common;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{send_indication, Client, REALM};
use common::{free_port_pair, get_metrics, printed_http_addr, wait_for_stun, Proc};
use floe_stun::attr::{Data, XorPeerAddress};
use floe_stun::{Class, Message, Method};

/// `floe serve` on 127.0.0.1 with user `alice:pw` and `extra` flags, its open-files limit set
/// to 1,024 (`ulimit -n`, the limit the issue's scenario runs under); returns the process, its
/// TURN address and its HTTP address (for `/metrics`).
fn serve(extra: &[&str]) -> (Proc, SocketAddr, SocketAddr) {
    let port = free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let turn = SocketAddr::from(([127, 0, 0, 1], port));
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 1024 && exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_floe"))
        .args(["serve", "--listen", &turn.to_string()])
        .args([
            "--http",
            "127.0.0.1:0",
            "--realm",
            REALM,
            "--user",
            "alice:pw",
        ])
        .args(extra)
        .env("FLOE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = printed_http_addr(&mut child);
    let proc = Proc(child);
    wait_for_stun(turn);
    (proc, turn, http)
}

/// GET /metrics.
fn metrics(http: SocketAddr) -> String {
    get_metrics(http)
}

/// The value of the metric line that starts with `prefix` (0 when absent).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// Polls `/metrics` (bounded) until `done` holds; returns the last text.
fn wait_for(http: SocketAddr, what: &str, mut done: impl FnMut(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = metrics(http);
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed {what}:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(200)); // polling interval of a bounded wait
    }
}

/// Permits each of two allocations to hear from the other (relay to relay).
fn permit_each_other(a: &mut Client, a_relay: SocketAddr, b: &mut Client, b_relay: SocketAddr) {
    for (c, peer) in [(a, b_relay), (b, a_relay)] {
        let resp = c.request(Method::CREATE_PERMISSION, |m| {
            m.add(&XorPeerAddress(peer)).unwrap()
        });
        Client::expect_class(&resp, Class::SuccessResponse);
    }
}

/// A TCP client on `ip` that allocates and then never reads: its receive buffer is small, so
/// the server's writes to it soon block. Returns it (to keep it open) and its relayed address.
fn non_reader(server: SocketAddr, ip: &str) -> (Client, SocketAddr) {
    let mut c = Client::tcp_from(server, ip);
    let s = socket2::SockRef::from(c.tcp.as_ref().unwrap());
    s.set_recv_buffer_size(4096).unwrap();
    let relay = c.allocate();
    (c, relay)
}

/// Floods `to` (a relayed address) with 1,000-byte Send indications from a UDP allocation of
/// `ip` until `stop` is set; the flooding allocation's relay is the sender.
fn flood(server: SocketAddr, ip: &str, target: &mut Client, to: SocketAddr, stop: Arc<AtomicBool>) {
    let mut sender = Client::udp_from(server, ip);
    let from = sender.allocate();
    permit_each_other(&mut sender, from, target, to);
    let udp = sender.udp.take().unwrap();
    std::thread::spawn(move || {
        let payload = [0x5a_u8; 1000];
        let mut n = 0_u32;
        while !stop.load(Ordering::Relaxed) {
            let _ = udp.send_to(&send_indication(to, &payload, n), server);
            n = n.wrapping_add(1);
            if n % 64 == 0 {
                std::thread::sleep(Duration::from_millis(1)); // pace the sender a little
            }
        }
    });
}

/// Issue 12 item 2: a TCP client that never reads holds at most `tcp_queue_bytes` queued in
/// floe (lowered to 16 KiB here), frames beyond are dropped and counted, and the write deadline
/// (lowered to 5 s) closes the connection and gives its queue back. Fails on the old code (no
/// byte bound, no gauge, no write deadline: up to 256 frames held for as long as the client
/// stays).
#[test]
fn a_tcp_client_that_never_reads_holds_at_most_its_queue() {
    const QUEUE: f64 = 16_384.0;
    let (_floe, server, http) = serve(&[
        "--tcp-queue-bytes",
        "16384",
        "--tcp-write-timeout-secs",
        "5",
    ]);
    let (mut reader, relay) = non_reader(server, "127.0.0.1");
    let stop = Arc::new(AtomicBool::new(false));
    flood(server, "127.0.0.1", &mut reader, relay, stop.clone());

    let mut most = 0.0_f64;
    let text = wait_for(
        http,
        "the non-reader closed for its write deadline",
        |text| {
            most = most.max(metric(text, "floe_turn_tcp_queued_bytes "));
            metric(text, "floe_turn_tcp_closed_total{reason=\"write_timeout\"}") >= 1.0
        },
    );
    stop.store(true, Ordering::Relaxed);

    assert!(
        most > 0.0,
        "the queue was never seen holding bytes:\n{text}"
    );
    assert!(most <= QUEUE, "{most} bytes queued for one client");
    assert!(
        metric(
            &text,
            "floe_turn_dropped_total{reason=\"stream_queue_full\"}"
        ) > 0.0,
        "nothing dropped:\n{text}"
    );
    wait_for(http, "the queue given back", |text| {
        metric(text, "floe_turn_tcp_queued_bytes ") == 0.0
    });
}

/// The resident set size of process `pid`, in KiB (from /proc).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Issue 12, "Done when" (TURN part), with `floe serve`'s default limits under `ulimit -n 1024`:
/// 127.0.0.2 opens TCP connections up to its per-IP cap (64) — one allocation that never reads
/// while its own UDP allocation floods it, half of the rest idle, half dripping a byte of a STUN
/// header every second — and is refused beyond; 127.0.0.1 still allocates over UDP and TCP and
/// relays both ways; the global TCP cap is half the open-files limit (512), so the other half
/// stays for relay sockets and signalling. Fails on the old code (no per-IP cap: the 65th
/// connection is served; the cap stayed at 4096 whatever the limit).
#[test]
fn one_ip_at_its_tcp_caps_leaves_turn_working_for_another() {
    const CAP: usize = 64; // the default --max-tcp-connections-per-ip
    let (floe, server, http) = serve(&[]);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", floe.0.id())).unwrap();
    assert!(
        limits
            .lines()
            .any(|l| l.starts_with("Max open files") && l.contains(" 1024 ")),
        "{limits}"
    );
    let rss_before = rss_kib(floe.0.id());

    // The attacker: one non-reading allocation, flooded by its own UDP allocation ...
    let (mut reader, relay) = non_reader(server, "127.0.0.2");
    let stop = Arc::new(AtomicBool::new(false));
    flood(server, "127.0.0.2", &mut reader, relay, stop.clone());
    // ... then idle and dripping connections up to the cap, each one served (a Binding answer).
    let mut held: Vec<Client> = Vec::new();
    for _ in 1..CAP {
        let mut c = Client::tcp_from(server, "127.0.0.2");
        c.binding();
        held.push(c);
    }
    let mut refused = Client::tcp_from(server, "127.0.0.2");
    assert!(
        refused.closed_within(Duration::from_secs(3)),
        "connection {} served",
        CAP + 1
    );
    let dripping = Arc::new(AtomicBool::new(true));
    let drip = {
        let mut drippers: Vec<TcpStream> = held
            .iter_mut()
            .step_by(2)
            .map(|c| c.tcp.as_ref().unwrap().try_clone().unwrap())
            .collect();
        let dripping = dripping.clone();
        std::thread::spawn(move || {
            let header = [0x00_u8, 0x01, 0x03, 0xe8, 0x21, 0x12, 0xa4, 0x42];
            let mut i = 0;
            while dripping.load(Ordering::Relaxed) && i < header.len() {
                for s in &mut drippers {
                    let _ = s.write_all(&header[i..=i]);
                }
                i += 1;
                std::thread::sleep(Duration::from_secs(1)); // one byte a second, as a slowloris
            }
        })
    };
    wait_for(
        http,
        "the attacker's 65th connection refused for its IP",
        |text| {
            metric(text, "floe_turn_tcp_refused_total{reason=\"ip_limit\"}") >= 1.0
                && metric(
                    text,
                    "floe_turn_dropped_total{reason=\"stream_queue_full\"}",
                ) > 0.0
        },
    );

    // The same process's signalling port: idle connections from 127.0.0.2 beyond its per-IP cap
    // (64 by default).
    let http_idle: Vec<TcpStream> = (0..SIGNAL_ATTEMPTS)
        .filter_map(|_| tcp_from("127.0.0.2", http).ok())
        .collect();
    wait_for(http, "the signalling port refusing 127.0.0.2", |text| {
        metric(
            text,
            "floe_signal_connections_refused_total{reason=\"per_ip\"}",
        ) >= 1.0
    });
    // ... while 127.0.0.1 joins a room over WebSocket on that port.
    join_from_another_ip(http);

    // Another IP: UDP and TCP allocations relaying to each other both ways.
    let mut udp = Client::udp_from(server, "127.0.0.1");
    let udp_relay = udp.allocate();
    let mut tcp = Client::tcp_from(server, "127.0.0.1");
    let tcp_relay = tcp.allocate();
    permit_each_other(&mut udp, udp_relay, &mut tcp, tcp_relay);
    let to_tcp = send_indication(tcp_relay, b"udp to tcp", 1);
    udp.send_raw(&to_tcp);
    assert_eq!(data_of(&tcp.recv_raw()), b"udp to tcp");
    let to_udp = send_indication(udp_relay, b"tcp to udp", 2);
    tcp.send_raw(&to_udp);
    assert_eq!(data_of(&udp.recv_raw()), b"tcp to udp");

    // The figures once the metrics loop (once a second) has seen every connection.
    let text = wait_for(http, "every connection and a full queue", |text| {
        metric(text, "floe_turn_tcp_connections ") >= (CAP + 1) as f64
            && metric(text, "floe_turn_tcp_queued_bytes ") > 0.0
    });
    let rss_after = rss_kib(floe.0.id());
    assert_eq!(
        metric(&text, "floe_turn_tcp_max_connections "),
        512.0,
        "the 4096 default is lowered to half the open-files limit"
    );
    let queued = metric(&text, "floe_turn_tcp_queued_bytes ");
    assert!(
        queued <= 131_072.0,
        "{queued} bytes queued for the one non-reader"
    );
    eprintln!(
        "floe serve RSS {rss_before} KiB before, {rss_after} KiB with 127.0.0.2 at its caps; \
         queued for TCP clients: {} bytes; TCP connections: {}",
        metric(&text, "floe_turn_tcp_queued_bytes "),
        metric(&text, "floe_turn_tcp_connections ")
    );
    stop.store(true, Ordering::Relaxed);
    dripping.store(false, Ordering::Relaxed);
    drip.join().unwrap();
    drop(held);
    drop(http_idle);
}

/// Signalling connections 127.0.0.2 attempts: beyond its default per-IP cap of 64.
const SIGNAL_ATTEMPTS: usize = 80;

/// A TCP connection to `to` from the local address `from`.
fn tcp_from(from: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let local: SocketAddr = format!("{from}:0").parse().expect("address");
    socket.bind(&local.into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(5))?;
    Ok(socket.into())
}

/// A WebSocket from 127.0.0.1 joins a room on the signalling port `http` and gets `welcome`.
fn join_from_another_ip(http: SocketAddr) {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut ws, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async(format!("ws://{http}/v1/ws")),
        )
        .await
        .expect("the WebSocket handshake from 127.0.0.1 in time")
        .expect("the WebSocket handshake from 127.0.0.1");
        let join = r#"{"type":"join","v":1,"room":"ok","peer":"a"}"#;
        ws.send(Message::Text(join.into())).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .expect("an answer to join in time")
                .expect("the connection stays open")
                .unwrap();
            if let Message::Text(t) = m {
                assert!(t.as_str().contains("\"welcome\""), "join answered {t}");
                break;
            }
        }
    });
}

/// The DATA of a Data indication.
fn data_of(bytes: &[u8]) -> Vec<u8> {
    let msg = Message::parse(bytes).unwrap();
    assert_eq!(
        (msg.class(), msg.method()),
        (Class::Indication, Method::DATA)
    );
    msg.get::<Data<'_>>().unwrap().unwrap().0.to_vec()
}

/// The TLS handshake deadline (`--tls-handshake-timeout-secs`, lowered to 1 s) holds against a
/// client that drips a ClientHello a byte at a time, and the close is counted by reason.
#[test]
fn a_dripped_tls_handshake_is_cut_off_at_its_deadline() {
    let dir = common::TempDir::new("turn-tls-deadline");
    let (cert, key) = common::self_signed_cert(&dir);
    let tls = SocketAddr::from((
        [127, 0, 0, 1],
        free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    ));
    let tls_arg = tls.to_string();
    let (_floe, _server, http) = serve(&[
        "--tls-listen",
        &tls_arg,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-handshake-timeout-secs",
        "1",
    ]);
    common::wait_for_tcp(tls);
    let mut s = TcpStream::connect(tls).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // The start of a TLS 1.2 record carrying a ClientHello, never finished.
    let hello = [
        0x16_u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ];
    let until = Instant::now() + Duration::from_secs(15);
    let mut closed = false;
    for b in hello.iter().cycle() {
        use std::io::Read;
        if Instant::now() > until {
            break;
        }
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(0) => closed = true,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => closed = true,
            _ => {}
        }
        if closed {
            break;
        }
    }
    assert!(closed, "a dripped handshake was never cut off");
    wait_for(http, "the close counted", |text| {
        metric(
            text,
            "floe_turn_tcp_closed_total{reason=\"tls_handshake_timeout\"}",
        ) >= 1.0
    });
}
