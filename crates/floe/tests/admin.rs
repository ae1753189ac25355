//! The operations listener and drain against real `floe` processes on loopback (issue 13): health,
//! load-aware readiness, token-protected metrics and admin API, the `floe admin` CLI, ending a
//! user's allocations, revoking a TURN REST username, and drain (SIGUSR1 / `POST /v1/drain`)
//! with a live relayed UDP allocation and a connected WebSocket peer.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed unwrap is a failed test.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_port_pair, wait_for_stun, Proc, TempDir};
use floe_stun::attr::{
    AlternateServer, Data, ErrorCode, Lifetime, Nonce, Realm, RequestedTransport, Username,
    XorPeerAddress, XorRelayedAddress,
};
use floe_stun::integrity::long_term_key_md5;
use floe_stun::{Class, Message, MessageBuilder, Method, TransactionId};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Bound on every wait (far above what a loaded 2-core box needs).
const T: Duration = Duration::from_secs(20);
const TOKEN: &str = "test-admin-token";

/// A running floe and the addresses it printed.
struct Floe {
    proc: Proc,
    turn: SocketAddr,
    admin: SocketAddr,
    http: Option<SocketAddr>,
}

/// Starts `floe SUBCOMMAND --listen (free port) --admin 127.0.0.1:0 EXTRA...` and reads the
/// addresses it prints.
fn start(subcommand: &str, extra: &[&str]) -> Floe {
    let port = free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let turn = SocketAddr::from(([127, 0, 0, 1], port));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_floe"));
    cmd.args([subcommand, "--listen", &turn.to_string()])
        .args(["--admin", "127.0.0.1:0", "--user", "alice:pw"])
        .args(extra)
        .env("FLOE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    if subcommand == "serve" {
        cmd.args(["--http", "127.0.0.1:0"]);
    }
    let mut child = cmd.spawn().expect("start floe");
    let stdout = child.stdout.take().unwrap();
    let proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (mut admin, mut http) = (None, None);
    while admin.is_none() || (subcommand == "serve" && http.is_none()) {
        let line = rx.recv_timeout(T).expect("floe prints its addresses");
        if let Some(a) = line.strip_prefix("floe: operations on http://") {
            admin = Some(a.split_whitespace().next().unwrap().parse().unwrap());
        }
        if let Some(a) = line.strip_prefix("floe signal: listening on http://") {
            http = Some(a.trim().parse().unwrap());
        }
    }
    wait_for_stun(turn);
    Floe {
        proc,
        turn,
        admin: admin.unwrap(),
        http,
    }
}

impl Floe {
    fn pid(&self) -> String {
        self.proc.0.id().to_string()
    }

    /// Waits (bounded) for the process to exit; its status.
    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            if let Some(status) = self.proc.0.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("floe did not exit");
    }

    fn running(&mut self) -> bool {
        self.proc.0.try_wait().unwrap().is_none()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.pid()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

/// One HTTP/1.1 request; (status, body).
fn http(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body_headers = if method == "POST" {
        "Content-Length: 0\r\n"
    } else {
        ""
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}{body_headers}\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

fn http_json(addr: SocketAddr, method: &str, path: &str, token: Option<&str>) -> (u16, Value) {
    let (status, body) = http(addr, method, path, token);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// Polls `f` (bounded) until it answers `Some`.
fn eventually<R>(what: &str, mut f: impl FnMut() -> Option<R>) -> R {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if let Some(r) = f() {
            return r;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out waiting for {what}");
}

/// `floe admin --url ... ARGS`: (success, stdout).
fn cli(admin: SocketAddr, token: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_floe"));
    cmd.args(["admin", "--url", &format!("http://{admin}")]);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    let out = cmd.args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// A TURN client over UDP with long-term credentials, built on floe-stun.
struct TurnClient {
    socket: UdpSocket,
    server: SocketAddr,
    username: String,
    key: [u8; 16],
    nonce: String,
    next: u8,
}

impl TurnClient {
    fn new(server: SocketAddr, username: &str, password: &str) -> TurnClient {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        TurnClient {
            socket,
            server,
            username: username.to_owned(),
            key: long_term_key_md5(username, "floe", password),
            nonce: String::new(),
            next: 0,
        }
    }

    /// Sends a request (authenticated once a nonce is known) and returns the response.
    fn request(&mut self, method: Method, add: impl Fn(&mut MessageBuilder<'_>)) -> Vec<u8> {
        self.next += 1;
        let tid = TransactionId([self.next; 12]);
        let mut buf = vec![0u8; 1024];
        let mut b = MessageBuilder::new(&mut buf, Class::Request, method, tid).unwrap();
        add(&mut b);
        if !self.nonce.is_empty() {
            b.add(&Username(&self.username)).unwrap();
            b.add(&Realm("floe")).unwrap();
            b.add(&Nonce(&self.nonce)).unwrap();
            b.add_message_integrity(&self.key).unwrap();
        }
        b.add_fingerprint().unwrap();
        let n = b.finish();
        self.socket.send_to(&buf[..n], self.server).unwrap();
        loop {
            let mut resp = vec![0u8; 2048];
            let (len, _) = self.socket.recv_from(&mut resp).unwrap();
            resp.truncate(len);
            let msg = Message::parse(&resp).unwrap();
            if msg.class() != Class::Indication && msg.transaction_id() == tid {
                return resp;
            }
        }
    }

    /// Allocate with the 401 round trip: the relayed address, or the error response.
    fn allocate(&mut self) -> Result<SocketAddr, Vec<u8>> {
        let add = |b: &mut MessageBuilder<'_>| {
            b.add(&RequestedTransport(RequestedTransport::UDP)).unwrap();
            b.add(&Lifetime(600)).unwrap();
        };
        if self.nonce.is_empty() {
            let resp = self.request(Method::ALLOCATE, add);
            let msg = Message::parse(&resp).unwrap();
            assert_eq!(code(&resp), Some(401));
            self.nonce = msg.get::<Nonce<'_>>().unwrap().unwrap().0.to_owned();
        }
        let resp = self.request(Method::ALLOCATE, add);
        let msg = Message::parse(&resp).unwrap();
        match msg.class() {
            Class::SuccessResponse => Ok(msg.get::<XorRelayedAddress>().unwrap().unwrap().0),
            _ => Err(resp),
        }
    }

    fn permit(&mut self, peer: SocketAddr) {
        let resp = self.request(Method::CREATE_PERMISSION, |b| {
            b.add(&XorPeerAddress(peer)).unwrap();
        });
        assert_eq!(code(&resp), None, "CreatePermission succeeds");
    }

    fn refresh(&mut self, lifetime: u32) -> Option<u16> {
        let resp = self.request(Method::REFRESH, |b| {
            b.add(&Lifetime(lifetime)).unwrap();
        });
        code(&resp)
    }

    fn send(&self, peer: SocketAddr, data: &[u8]) {
        let mut buf = vec![0u8; 1024];
        let mut b = MessageBuilder::new(
            &mut buf,
            Class::Indication,
            Method::SEND,
            TransactionId([0xAB; 12]),
        )
        .unwrap();
        b.add(&XorPeerAddress(peer)).unwrap();
        b.add(&Data(data)).unwrap();
        let n = b.finish();
        self.socket.send_to(&buf[..n], self.server).unwrap();
    }

    /// The payload of the next Data indication.
    fn recv_data(&self) -> Vec<u8> {
        loop {
            let mut buf = vec![0u8; 2048];
            let (len, _) = self.socket.recv_from(&mut buf).unwrap();
            let msg = Message::parse(&buf[..len]).unwrap();
            if msg.class() == Class::Indication && msg.method() == Method::DATA {
                return msg.get::<Data<'_>>().unwrap().unwrap().0.to_vec();
            }
        }
    }
}

fn code(resp: &[u8]) -> Option<u16> {
    Message::parse(resp)
        .unwrap()
        .get::<ErrorCode<'_>>()
        .map(|e| e.unwrap().code)
}

/// Relays `data` client → peer and back through `c`'s allocation at `relay`.
fn relay_round_trip(c: &TurnClient, peer: &UdpSocket, relay: SocketAddr, data: &[u8]) {
    c.send(peer.local_addr().unwrap(), data);
    let mut buf = [0u8; 2048];
    let (n, from) = peer.recv_from(&mut buf).unwrap();
    assert_eq!((&buf[..n], from), (data, relay));
    peer.send_to(b"pong", relay).unwrap();
    assert_eq!(c.recv_data(), b"pong");
}

fn peer_socket() -> UdpSocket {
    let p = UdpSocket::bind("127.0.0.1:0").unwrap();
    p.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    p
}

#[test]
fn floe_turn_alone_serves_health_readiness_and_token_protected_metrics() {
    let dir = TempDir::new("admin-ready");
    let config = dir.file("floe.toml");
    // One allocation is the whole quota, so a single allocation makes the node not ready.
    std::fs::write(&config, "[turn]\nmax_allocations = 1\n").unwrap();
    let f = start(
        "turn",
        &[
            "--config",
            &config,
            "--admin-token",
            TOKEN,
            // The test peer is a loopback socket, which the default peer policy refuses; the
            // drain test below has a default-policy twin relaying allocation to allocation.
            "--allow-peer",
            "127.0.0.0/8",
        ],
    );

    assert_eq!(http(f.admin, "GET", "/healthz", None).0, 200);
    let (status, ready) = http_json(f.admin, "GET", "/readyz", None);
    assert_eq!((status, &ready["ready"]), (200, &json!(true)), "{ready}");
    // /metrics and the API need the token (floe turn served no metrics at all before).
    assert_eq!(http(f.admin, "GET", "/metrics", None).0, 401);
    assert_eq!(http(f.admin, "GET", "/metrics", Some("wrong")).0, 401);
    assert_eq!(http(f.admin, "GET", "/v1/allocations", None).0, 401);

    let mut c = TurnClient::new(f.turn, "alice", "pw");
    let relay = c.allocate().expect("allocation");
    let peer = peer_socket();
    c.permit(peer.local_addr().unwrap());
    relay_round_trip(&c, &peer, relay, b"hello");

    // Readiness flips with the load: 1 of 1 allocations is above 0.9.
    let (status, ready) = http_json(f.admin, "GET", "/readyz", None);
    assert_eq!(status, 503, "{ready}");
    assert_eq!(ready["reasons"], json!(["allocations"]), "{ready}");
    let metrics = eventually("the allocation gauge", || {
        let (status, m) = http(f.admin, "GET", "/metrics", Some(TOKEN));
        assert_eq!(status, 200);
        m.lines()
            .any(|l| l == "floe_turn_allocations 1")
            .then_some(m)
    });
    assert!(
        metrics.contains("floe_turn_relayed_bytes_total"),
        "{metrics}"
    );
    // `floe turn` renders the TURN histograms (the Allocate and its 401 challenge were timed),
    // not the signalling one; a static user carries no room, so no per-identity field is set.
    assert_eq!(
        sample(&metrics, "floe_turn_allocate_duration_seconds_count", &[]),
        Some(2.0),
        "{metrics}"
    );
    assert!(
        !metrics.contains("floe_signal_delivery_seconds"),
        "{metrics}"
    );
    // The relayed bytes by the client's transport (a UDP client: 5 bytes out, 4 back).
    for (direction, want) in [("to_peer", 5.0), ("to_client", 4.0)] {
        let m = metric_reaches(
            f.admin,
            "floe_turn_transport_relayed_bytes_total",
            &["transport=\"udp\"", &format!("direction=\"{direction}\"")],
            want,
        );
        assert_eq!(
            sample(
                &m,
                "floe_turn_transport_relayed_bytes_total",
                &["transport=\"tcp\"", &format!("direction=\"{direction}\"")]
            ),
            Some(0.0),
            "{m}"
        );
    }

    // The admin API lists it, with its peer and byte counts; so does the CLI.
    let (_, list) = http_json(f.admin, "GET", "/v1/allocations", Some(TOKEN));
    let a = &list["allocations"][0];
    assert_eq!(a["username"], "alice", "{list}");
    assert_eq!(a["client"], c.socket.local_addr().unwrap().to_string());
    assert_eq!(a["relayed"], json!([relay.to_string()]));
    assert_eq!(a["permissions"], json!(["127.0.0.1"]));
    assert_eq!(
        (&a["bytes_to_peer"], &a["bytes_to_client"]),
        (&json!(5), &json!(4))
    );
    assert_eq!(
        (
            &a["packets_to_peer"],
            &a["packets_to_client"],
            &a["room"],
            &a["peer"]
        ),
        (&json!(1), &json!(1), &Value::Null, &Value::Null)
    );
    let id = a["id"].as_str().unwrap();
    let (status, one) = http_json(
        f.admin,
        "GET",
        &format!("/v1/allocations/{id}"),
        Some(TOKEN),
    );
    // The same entry, but for its clock fields: a second boundary may pass between the two
    // requests (`age_secs` +1, `expires_in_secs` -1), which once made this comparison flaky.
    let timeless = |v: &Value| {
        let mut v = v.clone();
        for k in ["age_secs", "expires_in_secs"] {
            assert!(v[k].is_u64(), "{k} in {v}");
            v[k] = Value::Null;
        }
        v
    };
    assert_eq!(status, 200);
    assert_eq!(timeless(&one), timeless(a));
    assert_eq!(
        http(f.admin, "GET", "/v1/allocations/9-999", Some(TOKEN)).0,
        404
    );
    assert_eq!(
        http(f.admin, "GET", "/v1/allocations/x", Some(TOKEN)).0,
        400
    );
    let (ok, table) = cli(f.admin, Some(TOKEN), &["allocations"]);
    assert!(
        ok && table.contains("alice") && table.contains(&relay.to_string()),
        "{table}"
    );
    let (ok, _) = cli(f.admin, None, &["allocations"]);
    assert!(!ok, "the CLI without the token is refused");

    // kill-user ends it: the client's Refresh finds no allocation, the node is ready again.
    let (ok, out) = cli(f.admin, Some(TOKEN), &["kill-user", "alice"]);
    assert!(ok && out.contains("allocations_ended: 1"), "{out}");
    assert_eq!(c.refresh(600), Some(437));
    assert_eq!(http(f.admin, "GET", "/readyz", None).0, 200);
}

#[test]
fn a_revoked_rest_username_gets_401_and_its_allocation_ends() {
    let f = start("turn", &["--auth-secret", "s3cret", "--admin-token", TOKEN]);
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let cred = floe_turn::rest::mint(b"s3cret", "carol", 600, unix);
    let mut c = TurnClient::new(f.turn, &cred.username, &cred.password);
    c.allocate().expect("allocation");

    let (ok, out) = cli(f.admin, Some(TOKEN), &["revoke", &cred.username]);

    assert!(ok && out.contains("allocations_ended: 1"), "{out}");
    assert_eq!(c.refresh(600), Some(401));
    let mut again = TurnClient::new(f.turn, &cred.username, &cred.password);
    let refused = again.allocate().expect_err("revoked");
    assert_eq!(code(&refused), Some(401));
    let (_, list) = http_json(f.admin, "GET", "/v1/allocations", Some(TOKEN));
    assert_eq!(list["allocations"], json!([]));
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_join(http: SocketAddr, room: &str, peer: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/v1/ws"))
        .await
        .unwrap();
    let join = json!({"type":"join","v":1,"room":room,"peer":peer});
    ws.send(WsMessage::Text(join.to_string().into()))
        .await
        .unwrap();
    let first = ws_recv(&mut ws).await;
    (ws, first)
}

async fn ws_recv(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(T, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .unwrap();
        if let WsMessage::Text(t) = m {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

#[test]
fn sigusr1_drains_with_a_live_allocation_and_peer_and_exits_when_empty() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // `--allow-peer`: the test peer is a plain loopback socket (refused by the default policy).
    // `sigusr1_drains_with_the_default_peer_policy` is the default-settings twin.
    let mut f = start(
        "serve",
        &["--allow-peer", "127.0.0.0/8", "--drain-timeout", "120"],
    );
    let http_addr = f.http.unwrap();
    let mut c = TurnClient::new(f.turn, "alice", "pw");
    let relay = c.allocate().expect("allocation");
    let peer = peer_socket();
    c.permit(peer.local_addr().unwrap());
    relay_round_trip(&c, &peer, relay, b"before");
    let (mut ws, welcome) = rt.block_on(ws_join(http_addr, "room", "bob"));
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    f.signal("-USR1");

    // Readiness goes false, saying why; the connected peer is told go_away.
    let ready = eventually("readyz 503", || {
        let (status, r) = http_json(f.admin, "GET", "/readyz", None);
        (status == 503).then_some(r)
    });
    assert_eq!(ready["reasons"], json!(["draining"]), "{ready}");
    let go_away = rt.block_on(ws_recv(&mut ws));
    assert_eq!(
        (&go_away["type"], &go_away["reason"]),
        (&json!("go_away"), &json!("draining")),
        "{go_away}"
    );
    // New joins and new Allocates are refused (508: no --alternate-server).
    let (_ws2, refused) = rt.block_on(ws_join(http_addr, "room", "carol"));
    assert_eq!(
        (&refused["type"], &refused["code"]),
        (&json!("error"), &json!("server_busy")),
        "{refused}"
    );
    let mut late = TurnClient::new(f.turn, "alice", "pw");
    assert_eq!(code(&late.allocate().expect_err("draining")), Some(508));
    // The old allocation still relays and refreshes; the process waits for it and the session.
    relay_round_trip(&c, &peer, relay, b"during");
    assert_eq!(c.refresh(600), None);
    assert!(f.running());

    // The peer leaves and the client deletes its allocation: empty, so the process exits.
    rt.block_on(async {
        ws.send(WsMessage::Text(json!({"type":"leave"}).to_string().into()))
            .await
            .unwrap();
        let _ = ws.close(None).await;
    });
    assert_eq!(c.refresh(0), None);
    assert!(f.wait_exit().success());
}

/// The drain above with floe's default settings: the live traffic goes between two allocations
/// through the server's own relay address, which the default peer policy grants.
#[test]
fn sigusr1_drains_with_the_default_peer_policy() {
    let mut f = start("serve", &["--drain-timeout", "120"]);
    let mut a = TurnClient::new(f.turn, "alice", "pw");
    let a_relay = a.allocate().expect("allocation");
    let mut b = TurnClient::new(f.turn, "alice", "pw");
    let b_relay = b.allocate().expect("allocation");
    a.permit(b_relay);
    b.permit(a_relay);
    a.send(b_relay, b"before");
    assert_eq!(b.recv_data(), b"before");

    f.signal("-USR1");

    eventually("readyz 503", || {
        let (status, r) = http_json(f.admin, "GET", "/readyz", None);
        (status == 503).then_some(r)
    });
    let mut late = TurnClient::new(f.turn, "alice", "pw");
    assert_eq!(code(&late.allocate().expect_err("draining")), Some(508));
    b.send(a_relay, b"during");
    assert_eq!(a.recv_data(), b"during");
    assert!(f.running());
    assert_eq!(a.refresh(0), None);
    assert_eq!(b.refresh(0), None);
    assert!(f.wait_exit().success());
}

#[test]
fn a_drain_through_the_api_redirects_allocates_and_stops_at_its_timeout() {
    let mut f = start(
        "turn",
        &[
            "--admin-token",
            TOKEN,
            "--drain-timeout",
            "5",
            "--alternate-server",
            "127.0.0.9:3478",
        ],
    );
    let mut c = TurnClient::new(f.turn, "alice", "pw");
    c.allocate().expect("allocation");

    let (status, body) = http_json(f.admin, "POST", "/v1/drain", Some(TOKEN));

    assert_eq!(status, 202, "{body}");
    let mut late = TurnClient::new(f.turn, "alice", "pw");
    let redirected = late.allocate().expect_err("draining");
    assert_eq!(code(&redirected), Some(300));
    let alt = Message::parse(&redirected)
        .unwrap()
        .get::<AlternateServer>()
        .unwrap()
        .unwrap()
        .0;
    assert_eq!(alt, "127.0.0.9:3478".parse().unwrap());
    // The allocation is never deleted: the drain timeout stops the process.
    assert!(f.wait_exit().success());
}

#[test]
fn sigterm_drains_briefly_then_stops_even_with_a_live_allocation() {
    let mut f = start("turn", &["--term-drain-timeout", "1"]);
    let mut c = TurnClient::new(f.turn, "alice", "pw");
    c.allocate().expect("allocation");

    f.signal("-TERM");

    assert!(f.wait_exit().success());
}

#[test]
fn systemd_notify_ready_watchdog_and_stopping_reach_a_fake_notify_socket() {
    use std::os::unix::net::UnixDatagram;
    let dir = TempDir::new("admin-notify");
    let path = dir.file("notify.sock");
    let fake_systemd = UnixDatagram::bind(&path).unwrap();
    fake_systemd.set_read_timeout(Some(T)).unwrap();
    let port = free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let child = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args(["turn", "--listen", &listen.to_string(), "--user", "a:b"])
        .args(["--admin", "127.0.0.1:0", "--term-drain-timeout", "0"])
        .env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "200000")
        .env("FLOE_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut proc = Proc(child);
    let next = || {
        let mut buf = [0u8; 256];
        let n = fake_systemd.recv(&mut buf).expect("a notification in time");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };

    assert!(next().starts_with("READY=1\n"), "READY first");
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(next(), "WATCHDOG=1");
    let ok = Command::new("kill")
        .args(["-TERM", &proc.0.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let stopping = loop {
        let m = next();
        if m != "WATCHDOG=1" {
            break m;
        }
    };
    assert!(stopping.starts_with("STOPPING=1\n"), "{stopping}");
    assert!(proc.0.wait().unwrap().success());
}

/// Log lines written through `tracing`, shared with the test.
#[derive(Clone, Default)]
struct LogBuf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn the_rust_peer_leaves_a_draining_node_and_resumes_its_session() {
    let logs = LogBuf::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    // The peer's tasks run on this thread (current-thread runtime), so they log here.
    let _guard = tracing::subscriber::set_default(subscriber);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let f = start("serve", &["--drain-timeout", "60"]);
    let http_addr = f.http.unwrap();
    let opts = floe_peer::signal::SignalOptions {
        url: format!("http://{http_addr}"),
        room: "room".into(),
        peer: Some("rusty".into()),
        token: None,
        ca_file: None,
    };
    let mut rusty = rt.block_on(floe_peer::signal::join(&opts)).unwrap();
    let (mut bob, welcome) = rt.block_on(ws_join(http_addr, "room", "bob"));
    assert_eq!(welcome["type"], "welcome", "{welcome}");

    f.signal("-USR1");

    // The peer closes the connection on go_away and resumes its session (the single node still
    // takes resumes while draining).
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + T;
        while !logs.text().contains("signalling session resumed") {
            assert!(tokio::time::Instant::now() < deadline, "{}", logs.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(
        logs.text().contains("go_away (draining)"),
        "{}",
        logs.text()
    );
    // Messages still reach it.
    rt.block_on(async {
        bob.send(WsMessage::Text(
            json!({"type":"bye","to":"rusty"}).to_string().into(),
        ))
        .await
        .unwrap();
        loop {
            let m = tokio::time::timeout(T, rusty.incoming.recv())
                .await
                .expect("a message in time")
                .expect("open");
            if let floe_peer::signal::Incoming::Bye { from } = m {
                assert_eq!(from, "bob");
                break;
            }
        }
    });
}

#[test]
fn readiness_flips_on_file_descriptors_under_a_low_rlimit() {
    // RLIMIT_NOFILE lowered to 64 (about 25 in use at start with two workers) and not ready
    // above half of it: each UDP allocation holds one relay socket, so a few allocations cross
    // the line at bounded scale.
    let port = free_port_pair(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let turn = SocketAddr::from(([127, 0, 0, 1], port));
    let script = format!(
        "ulimit -n 64 && exec {} turn --listen {turn} --user alice:pw --workers 2 \
         --admin 127.0.0.1:0 --ready-max-load 0.5",
        env!("CARGO_BIN_EXE_floe")
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .env("FLOE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _proc = Proc(child);
    // Read stdout to its end (a closed pipe would fail floe's later prints).
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let admin: SocketAddr = loop {
        let line = rx
            .recv_timeout(T)
            .expect("floe prints its operations address");
        if let Some(a) = line.strip_prefix("floe: operations on http://") {
            break a.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    wait_for_stun(turn);
    let (status, ready) = http_json(admin, "GET", "/readyz", None);
    assert_eq!(status, 200, "{ready}");

    let mut clients = Vec::new();
    let ready = loop {
        let mut c = TurnClient::new(turn, "alice", "pw");
        c.allocate().expect("allocation");
        clients.push(c);
        let (status, ready) = http_json(admin, "GET", "/readyz", None);
        if status == 503 {
            break ready;
        }
        assert!(clients.len() < 30, "never not ready: {ready}");
    };

    assert_eq!(ready["reasons"], json!(["file_descriptors"]), "{ready}");
    for c in &mut clients {
        assert_eq!(c.refresh(0), None);
    }
    let (status, ready) = http_json(admin, "GET", "/readyz", None);
    assert_eq!(status, 200, "{ready}");
}

/// The value of the first sample of `name` whose labels include each of `labels`
/// (`key="value"`).
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, ""));
            (n == name && labels.iter().all(|x| rest.contains(x)))
                .then(|| value.parse().ok())
                .flatten()
        })
}

fn scrape(admin: SocketAddr) -> String {
    let (status, text) = http(admin, "GET", "/metrics", Some(TOKEN));
    assert_eq!(status, 200);
    text
}

/// Waits until `name{labels}` reads `want` on /metrics (the TURN counters are published once a
/// second).
fn metric_reaches(admin: SocketAddr, name: &str, labels: &[&str], want: f64) -> String {
    eventually(&format!("{name}{labels:?} = {want}"), || {
        let text = scrape(admin);
        (sample(&text, name, labels) == Some(want)).then_some(text)
    })
}

/// TURN credentials from the signalling server's `GET /v1/ice-servers` (a bearer token in
/// production mode): (username, password).
fn mint_credentials(http_addr: SocketAddr, query: &str, jwt: Option<&str>) -> (String, String) {
    let (status, v) = http_json(http_addr, "GET", &format!("/v1/ice-servers{query}"), jwt);
    assert_eq!(status, 200, "{v}");
    let turn = v["iceServers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["username"].is_string())
        .expect("TURN credentials");
    (
        turn["username"].as_str().unwrap().to_owned(),
        turn["credential"].as_str().unwrap().to_owned(),
    )
}

/// Two allocations of `floe serve` with minted credentials relaying to each other: `a` sends
/// `sends` datagrams of 5 bytes, `b` answers one of 2 bytes.
fn relay_pair(
    turn: SocketAddr,
    a: &(String, String),
    b: &(String, String),
    sends: usize,
) -> (TurnClient, SocketAddr, TurnClient, SocketAddr) {
    let mut ca = TurnClient::new(turn, &a.0, &a.1);
    let a_relay = ca.allocate().expect("allocation with minted credentials");
    let mut cb = TurnClient::new(turn, &b.0, &b.1);
    let b_relay = cb.allocate().expect("allocation with minted credentials");
    ca.permit(b_relay);
    cb.permit(a_relay);
    for _ in 0..sends {
        ca.send(b_relay, b"hello");
        assert_eq!(cb.recv_data(), b"hello");
    }
    cb.send(a_relay, b"hi");
    assert_eq!(ca.recv_data(), b"hi");
    (ca, a_relay, cb, b_relay)
}

/// Issue 13 items 2 and 3 end to end on `floe serve` (default peer policy: the two peers relay
/// through each other's relayed address): credentials minted for a room by the signalling HTTP
/// route, relayed bytes and packets per allocation with the room and peer in the admin API, the
/// usage summary, the opt-in usage metric updated while the allocations run with its label cap,
/// and the three histograms.
#[test]
fn usage_by_room_with_minted_credentials_histograms_and_the_label_cap() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // One room label at most: the second room folds into `_other`.
    let f = start(
        "serve",
        &[
            "--admin-token",
            TOKEN,
            "--usage-metrics",
            "room",
            "--usage-metrics-max-labels",
            "1",
        ],
    );
    let http_addr = f.http.unwrap();
    let alice = mint_credentials(http_addr, "?room=standup&peer=alice", None);
    let bob = mint_credentials(http_addr, "?room=standup&peer=bob", None);
    assert!(alice.0.ends_with(":alice;room=standup"), "{}", alice.0);
    let before = scrape(f.admin);
    assert_eq!(
        sample(&before, "floe_turn_allocation_lifetime_seconds_count", &[]),
        Some(0.0),
        "the histograms are exported from the start:\n{before}"
    );

    let (a, a_relay, b, _b_relay) = relay_pair(f.turn, &alice, &bob, 3);

    // The admin API: live byte and packet counts both ways, with room and peer.
    let (_, list) = http_json(f.admin, "GET", "/v1/allocations", Some(TOKEN));
    let list = list["allocations"].as_array().unwrap().clone();
    let of = |peer: &str| list.iter().find(|x| x["peer"] == peer).unwrap().clone();
    let (la, lb) = (of("alice"), of("bob"));
    assert_eq!(
        (&la["room"], &la["user"], &la["tenant"]),
        (&json!("standup"), &json!("alice"), &Value::Null),
        "{la}"
    );
    assert_eq!(
        (
            &la["bytes_to_peer"],
            &la["packets_to_peer"],
            &la["bytes_to_client"],
            &la["packets_to_client"]
        ),
        (&json!(15), &json!(3), &json!(2), &json!(1)),
        "{la}"
    );
    assert_eq!(
        (
            &lb["bytes_to_peer"],
            &lb["bytes_to_client"],
            &lb["packets_to_client"]
        ),
        (&json!(2), &json!(15), &json!(3)),
        "{lb}"
    );
    let path = format!("/v1/allocations/{}", la["id"].as_str().unwrap());
    let (status, one) = http_json(f.admin, "GET", &path, Some(TOKEN));
    assert_eq!(
        (status, &one["room"], &one["peer"]),
        (200, &json!("standup"), &json!("alice"))
    );

    // The usage metric moves while the allocations run.
    metric_reaches(
        f.admin,
        "floe_turn_usage_bytes_total",
        &["room=\"standup\"", "direction=\"to_peer\""],
        17.0,
    );
    // A second room is over the cap of one label: folded into `_other`, and counted.
    let carol = mint_credentials(http_addr, "?room=retro&peer=carol", None);
    let mut c = TurnClient::new(f.turn, &carol.0, &carol.1);
    let c_relay = c.allocate().expect("allocation");
    c.permit(a_relay);
    let mut a = a;
    a.permit(c_relay);
    c.send(a_relay, b"retro");
    assert_eq!(a.recv_data(), b"retro");
    let text = metric_reaches(
        f.admin,
        "floe_turn_usage_bytes_total",
        &["room=\"_other\"", "direction=\"to_peer\""],
        5.0,
    );
    assert_eq!(
        sample(&text, "floe_turn_usage_folded_allocations_total", &[]),
        Some(1.0)
    );
    assert!(!text.contains("room=\"retro\""), "{text}");

    // The summary by room (most bytes first), by user, and a bad `by`.
    let (_, usage) = http_json(f.admin, "GET", "/v1/usage?by=room", Some(TOKEN));
    assert_eq!(
        usage["usage"],
        json!([
            {"room": "standup", "allocations": 2, "ended_allocations": 0, "bytes_to_peer": 17,
             "bytes_to_client": 22, "packets_to_peer": 4, "packets_to_client": 5},
            {"room": "retro", "allocations": 1, "ended_allocations": 0, "bytes_to_peer": 5,
             "bytes_to_client": 0, "packets_to_peer": 1, "packets_to_client": 0},
        ]),
        "{usage}"
    );
    let (_, by_user) = http_json(f.admin, "GET", "/v1/usage?by=user", Some(TOKEN));
    assert_eq!(by_user["usage"].as_array().unwrap().len(), 3, "{by_user}");
    assert_eq!(
        http(f.admin, "GET", "/v1/usage?by=colour", Some(TOKEN)).0,
        400
    );
    let (ok, out) = cli(f.admin, Some(TOKEN), &["usage", "--by", "room"]);
    assert!(
        ok && out.starts_with("ROOM") && out.contains("standup"),
        "{out}"
    );

    // Histograms: every Allocate (challenges included) was timed; an ended allocation's
    // lifetime is observed; bytes it relayed before ending stay counted.
    assert!(
        sample(&text, "floe_turn_allocate_duration_seconds_count", &[]).unwrap() >= 3.0,
        "{text}"
    );
    assert_eq!(c.refresh(0), None);
    let text = metric_reaches(
        f.admin,
        "floe_turn_allocation_lifetime_seconds_count",
        &[],
        1.0,
    );
    assert_eq!(
        sample(
            &text,
            "floe_turn_allocation_lifetime_seconds_bucket",
            &["le=\"+Inf\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "floe_turn_usage_bytes_total",
            &["room=\"_other\"", "direction=\"to_peer\""]
        ),
        Some(5.0)
    );
    // The summary: live only by default, the recently ended on request.
    let (_, live) = http_json(f.admin, "GET", "/v1/usage?by=room", Some(TOKEN));
    assert_eq!(live["usage"].as_array().unwrap().len(), 1, "{live}");
    let (_, recent) = http_json(f.admin, "GET", "/v1/usage?by=room&ended=10", Some(TOKEN));
    assert_eq!(
        recent["usage"][1],
        json!({"room": "retro", "allocations": 0, "ended_allocations": 1, "bytes_to_peer": 5,
               "bytes_to_client": 0, "packets_to_peer": 1, "packets_to_client": 0}),
        "{recent}"
    );
    assert_eq!(
        http(f.admin, "GET", "/v1/usage?ended=11", Some(TOKEN)).0,
        400
    );
    drop(b);

    // A directed signalling message between two WebSocket peers is timed; the welcome's TURN
    // credentials carry the room.
    let delivered = rt.block_on(async {
        let (mut x, wx) = ws_join(http_addr, "standup", "ws-x").await;
        let turn_user = wx["iceServers"]
            .as_array()
            .unwrap()
            .iter()
            .find_map(|s| s["username"].as_str())
            .unwrap()
            .to_owned();
        assert!(turn_user.ends_with(":ws-x;room=standup"), "{turn_user}");
        let (mut y, _) = ws_join(http_addr, "standup", "ws-y").await;
        let offer = json!({"type":"offer","to":"ws-y","sdp":"v=0"});
        x.send(WsMessage::Text(offer.to_string().into()))
            .await
            .unwrap();
        loop {
            let m = ws_recv(&mut y).await;
            if m["type"] == "offer" {
                break m;
            }
        }
    });
    assert_eq!(delivered["from"], "ws-x", "{delivered}");
    let text = scrape(f.admin);
    assert_eq!(
        sample(&text, "floe_signal_delivery_seconds_count", &[]),
        Some(1.0),
        "{text}"
    );
    // The public port's /metrics has them too.
    let (_, public) = http(http_addr, "GET", "/metrics", None);
    assert!(
        public.contains("floe_signal_delivery_seconds_bucket{le=\"+Inf\"} 1"),
        "{public}"
    );
}

/// Without `--usage-metrics` no metric carries a room (or any per-identity label); the admin
/// API still shows usage per room.
#[test]
fn usage_metrics_are_off_by_default() {
    let f = start("serve", &["--admin-token", TOKEN]);
    let http_addr = f.http.unwrap();
    let alice = mint_credentials(http_addr, "?room=standup&peer=alice", None);
    let bob = mint_credentials(http_addr, "?room=standup&peer=bob", None);
    let _pair = relay_pair(f.turn, &alice, &bob, 2);
    // The relayed totals are published by the same tick that would publish usage.
    let text = metric_reaches(
        f.admin,
        "floe_turn_relayed_bytes_total",
        &["direction=\"to_peer\""],
        12.0,
    );
    assert!(!text.contains("floe_turn_usage"), "{text}");
    assert!(
        !text.contains("standup") && !text.contains("alice"),
        "{text}"
    );
    let (_, usage) = http_json(f.admin, "GET", "/v1/usage", Some(TOKEN));
    assert_eq!(usage["usage"][0]["room"], "standup", "{usage}");
    assert_eq!(usage["usage"][0]["bytes_to_peer"], 12, "{usage}");
}

/// Production mode: the JWT's `tenant` claim travels into the TURN username, so usage sums per
/// tenant in the admin API and, opted in, in the metric.
#[test]
fn usage_by_tenant_from_the_jwt_claim() {
    let f = start(
        "serve",
        &[
            "--admin-token",
            TOKEN,
            "--jwt-secret",
            "k3y",
            "--usage-metrics",
            "tenant",
        ],
    );
    let http_addr = f.http.unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = |peer: &str, tenant: Option<&str>| {
        floe_signal::auth::mint_hs256(
            b"k3y",
            &floe_signal::auth::Claims {
                room: "standup".into(),
                peer: Some(peer.into()),
                perms: None,
                exp,
                nbf: None,
                iat: None,
                tenant: tenant.map(Into::into),
            },
        )
        .unwrap()
    };
    let dave = mint_credentials(http_addr, "", Some(&token("dave", Some("acme"))));
    assert!(
        dave.0.ends_with(":dave;room=standup;tenant=acme"),
        "{}",
        dave.0
    );
    // The token pins the room and the peer: asking for others is refused.
    let (status, _) = http(
        http_addr,
        "GET",
        "/v1/ice-servers?room=other",
        Some(&token("dave", Some("acme"))),
    );
    assert_eq!(status, 403);
    let erin = mint_credentials(http_addr, "", Some(&token("erin", None)));
    let _pair = relay_pair(f.turn, &dave, &erin, 1);
    let text = metric_reaches(
        f.admin,
        "floe_turn_usage_bytes_total",
        &["tenant=\"acme\"", "direction=\"to_peer\""],
        5.0,
    );
    assert_eq!(
        sample(
            &text,
            "floe_turn_usage_bytes_total",
            &["tenant=\"_none\"", "direction=\"to_peer\""]
        ),
        Some(2.0)
    );
    let (_, usage) = http_json(f.admin, "GET", "/v1/usage?by=tenant", Some(TOKEN));
    let acme = usage["usage"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["tenant"] == "acme")
        .unwrap_or_else(|| panic!("{usage}"));
    assert_eq!(
        (&acme["allocations"], &acme["bytes_to_peer"]),
        (&json!(1), &json!(5)),
        "{usage}"
    );
}
