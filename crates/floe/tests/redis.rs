//! Multi-node signalling on a real Redis: two (or three) `floe signal` processes share rooms
//! through a `redis-server` started per test on a free loopback port (no persistence, in a temp
//! dir, stopped by PID). Clients are plain WebSocket and HTTP over loopback TCP.
//!
//! `redis-server` is required: `./test.sh` installs it; without it these tests fail.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test helpers: a failed unwrap is a failed test.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Proc, TempDir};
use serde_json::{json, Value};

/// Node TTL given to the nodes (seconds): a killed node's peers leave within TTL + TTL/3.
const NODE_TTL: u64 = 2;
/// Default wait for one message.
const T: Duration = Duration::from_secs(5);

// ---- Redis ------------------------------------------------------------------------------------

struct Redis {
    proc: Option<Proc>,
    port: u16,
    dir: TempDir,
    password: Option<String>,
}

impl Redis {
    fn start() -> Redis {
        Redis::start_with(None)
    }

    /// A server that requires `password` (`requirepass`).
    fn start_with(password: Option<&str>) -> Redis {
        assert!(
            common::has_tool("redis-server"),
            "redis-server is not installed: run ./test.sh (it installs the redis-server package)"
        );
        let port = free_tcp_port();
        let mut r = Redis {
            proc: None,
            port,
            dir: TempDir::new("redis"),
            password: password.map(str::to_owned),
        };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &self.dir.path(),
                "--protected-mode",
                "yes",
            ])
            .args(
                self.password
                    .iter()
                    .flat_map(|p| ["--requirepass".to_owned(), p.clone()]),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.proc = Some(Proc(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server did not answer PING on port {}", self.port);
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        // PONG, or NOAUTH when a password is required: either way it is up.
        s.read_exact(&mut buf).is_ok() && (&buf == b"+PONG\r\n" || buf.starts_with(b"-NOAUTH"))
    }

    /// Kills the server (SIGKILL by PID): its data is gone (no persistence).
    fn kill(&mut self) {
        self.proc.take();
    }

    /// One command over RESP; the reply's lines (type markers stripped from simple values).
    fn cmd(&self, args: &[&str]) -> Vec<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut raw = Vec::new();
        let mut buf = [0u8; 4096];
        // Until the server stops sending (a short pause ends the reply).
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&raw)
            .split("\r\n")
            .filter(|l| !l.is_empty() && !l.starts_with('*') && !l.starts_with('$'))
            .map(str::to_owned)
            .collect()
    }

    fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}/0", self.port),
            None => format!("redis://127.0.0.1:{}/0", self.port),
        }
    }
}

fn free_tcp_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

// ---- floe signal nodes ------------------------------------------------------------------------

struct Node {
    proc: Option<Proc>,
    addr: SocketAddr,
    _log: TempDir,
    log_path: String,
}

impl Node {
    fn start(redis: &Redis, extra: &[&str]) -> Node {
        Node::start_url(&redis.url(), extra)
    }

    /// A node on `url`, given through the environment (as a password should be).
    fn start_url(url: &str, extra: &[&str]) -> Node {
        let log = TempDir::new("signal-node");
        let log_path = log.file("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_floe"))
            .args(["signal", "--http", "127.0.0.1:0"])
            .args(["--redis-node-ttl", &NODE_TTL.to_string()])
            .args(extra)
            .env("FLOE_REDIS_URL", url)
            .env("FLOE_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .expect("start floe signal");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("floe signal: listening on http://") {
                    let _ = tx.send(a.trim().to_owned());
                }
            }
        });
        let proc = Proc(child);
        let addr = rx
            .recv_timeout(Duration::from_secs(15))
            .expect("floe signal prints its address")
            .parse()
            .unwrap();
        Node {
            proc: Some(proc),
            addr,
            _log: log,
            log_path,
        }
    }

    fn pid(&self) -> u32 {
        self.proc.as_ref().unwrap().0.id()
    }

    /// SIGKILL by PID: a crash, nothing is cleaned up.
    fn kill(&mut self) {
        self.proc.take();
    }

    /// SIGTERM by PID, then wait (bounded) for the exit.
    fn terminate(&mut self) {
        let mut p = self.proc.take().unwrap();
        let ok = Command::new("kill")
            .args(["-TERM", &p.0.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if p.0.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("floe signal did not exit after SIGTERM");
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    fn ws(&self) -> Ws {
        Ws::connect(self.addr)
    }

    fn join(&self, room: &str, peer: &str) -> (Ws, Value) {
        self.join_msg(json!({"type":"join","v":1,"room":room,"peer":peer}))
    }

    fn join_msg(&self, join: Value) -> (Ws, Value) {
        let mut ws = self.ws();
        ws.send(join);
        let w = ws.recv();
        assert_eq!(
            w["type"],
            "welcome",
            "{w}\n--- node log ---\n{}",
            self.log()
        );
        (ws, w)
    }

    fn metrics(&self) -> String {
        http(self.addr, "GET", "/metrics", None, None).1
    }
}

// ---- a minimal blocking WebSocket client (RFC 6455, client frames masked) ----------------------

struct Ws {
    s: TcpStream,
    buf: Vec<u8>,
}

impl Ws {
    fn connect(addr: SocketAddr) -> Ws {
        let mut s = TcpStream::connect_timeout(&addr, T).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        write!(
            s,
            "GET /v1/ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        .unwrap();
        let mut ws = Ws { s, buf: Vec::new() };
        let deadline = Instant::now() + T;
        let end = loop {
            if let Some(i) = ws.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(ws.fill(deadline), "no WebSocket handshake answer");
        };
        let head = String::from_utf8_lossy(&ws.buf[..end]).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        ws.buf.drain(..end);
        ws
    }

    /// Reads more bytes; `false` at the deadline.
    fn fill(&mut self, deadline: Instant) -> bool {
        let mut tmp = [0u8; 16 * 1024];
        while Instant::now() < deadline {
            match self.s.read(&mut tmp) {
                Ok(0) => return false,
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return true;
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return false,
            }
        }
        false
    }

    fn send_frame(&mut self, opcode: u8, payload: &[u8]) {
        let mut f = vec![0x80 | opcode];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let _ = self.s.write_all(&f);
    }

    fn send(&mut self, v: Value) {
        self.send_frame(0x1, v.to_string().as_bytes());
    }

    /// The next frame: `Some((opcode, payload))`, `None` when nothing came before `deadline`.
    fn frame(&mut self, deadline: Instant) -> Option<(u8, Vec<u8>)> {
        loop {
            if self.buf.len() >= 2 {
                let op = self.buf[0] & 0x0f;
                let (len, hdr) = match self.buf[1] & 0x7f {
                    126 if self.buf.len() >= 4 => {
                        (u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize, 4)
                    }
                    127 if self.buf.len() >= 10 => (
                        u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                        10,
                    ),
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.buf.len() >= hdr + len {
                    let payload = self.buf[hdr..hdr + len].to_vec();
                    self.buf.drain(..hdr + len);
                    return Some((op, payload));
                }
            }
            if !self.fill(deadline) {
                return None;
            }
        }
    }

    /// The next JSON message within `within`; a close frame reads as `{"type":"_closed"}`.
    fn recv_within(&mut self, within: Duration) -> Option<Value> {
        let deadline = Instant::now() + within;
        loop {
            let (op, payload) = self.frame(deadline)?;
            match op {
                0x1 => return Some(serde_json::from_slice(&payload).unwrap()),
                0x8 => return Some(json!({"type": "_closed"})),
                0x9 => self.send_frame(0xA, &payload),
                _ => {}
            }
        }
    }

    fn recv(&mut self) -> Value {
        self.recv_within(T).expect("a message in time")
    }

    /// Skips messages until one of type `ty` (bounded by `within`).
    fn recv_type(&mut self, ty: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.recv_within(left) {
                Some(m) if m["type"] == ty => return m,
                Some(m) => seen.push(m),
                None => break,
            }
        }
        panic!("no {ty} within {within:?}; got {seen:?}");
    }
}

// ---- a minimal HTTP/1.1 client --------------------------------------------------------------------

/// One request with `Connection: close`: (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&Value>,
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, T).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = body.map(Value::to_string).unwrap_or_default();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

// ---- the tests ----------------------------------------------------------------------------------

#[test]
fn peers_on_two_nodes_share_a_room() {
    let redis = Redis::start();
    let a = Node::start(&redis, &[]);
    let b = Node::start(&redis, &[]);

    let (mut alice, w) = a.join("r1", "alice");
    assert_eq!(w["peers"], json!([]));
    let (mut bob, w) = b.join("r1", "bob");
    assert_eq!(
        w["peers"],
        json!([{"peer": "alice", "polite": false, "offerer": true}]),
        "bob (later) offers to alice and is impolite"
    );
    let pj = alice.recv();
    assert_eq!(
        (&pj["type"], &pj["peer"], &pj["polite"], &pj["offerer"]),
        (
            &json!("peer_joined"),
            &json!("bob"),
            &json!(true),
            &json!(false)
        ),
        "{pj}"
    );

    // Candidates before the offer are held by bob's node, then follow the offer.
    bob.send(json!({"type":"candidate","to":"alice","candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0,"seq":1}));
    bob.send(json!({"type":"offer","to":"alice","sdp":"v=0 offer","seq":2}));
    let m = alice.recv();
    assert_eq!(
        (&m["type"], &m["from"], &m["sdp"]),
        (&json!("offer"), &json!("bob"), &json!("v=0 offer")),
        "{m}"
    );
    let m = alice.recv();
    assert_eq!(
        (&m["type"], &m["sdpMid"], &m["sdpMLineIndex"]),
        (&json!("candidate"), &json!("0"), &json!(0)),
        "{m}"
    );
    alice.send(json!({"type":"answer","to":"bob","sdp":"v=0 answer"}));
    let m = bob.recv();
    assert_eq!(
        (&m["type"], &m["from"], &m["sdp"]),
        (&json!("answer"), &json!("alice"), &json!("v=0 answer")),
        "{m}"
    );
    // Arbitrary JSON survives the trip through Redis unchanged (empty arrays stay arrays).
    let data = json!({"a": [], "b": {}, "n": 1.5, "big": 9007199254740993u64, "s": "\u{e9}\"x"});
    alice.send(json!({"type":"data","to":"bob","data":data}));
    let m = bob.recv();
    assert_eq!(
        (&m["type"], &m["data"], &m["broadcast"]),
        (&json!("data"), &data, &json!(false)),
        "{m}"
    );

    // A third peer over the HTTP post box on node B.
    let (st, body) = http(
        b.addr,
        "POST",
        "/v1/rest/join",
        None,
        Some(&json!({"type":"join","v":1,"room":"r1","peer":"carol"})),
    );
    assert_eq!(st, 200, "{body}");
    let w = json_of(&body);
    let peers: Vec<&str> = w["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer"].as_str().unwrap())
        .collect();
    assert_eq!(peers, ["alice", "bob"]);
    let (sid, tok) = (
        w["session"].as_str().unwrap().to_owned(),
        w["resumeToken"].as_str().unwrap().to_owned(),
    );
    for ws in [&mut alice, &mut bob] {
        let m = ws.recv();
        assert_eq!(
            (&m["type"], &m["peer"], &m["offerer"]),
            (&json!("peer_joined"), &json!("carol"), &json!(false)),
            "{m}"
        );
    }
    // Broadcast from alice (node A) reaches bob and carol (node B).
    alice.send(json!({"type":"data","data":"hello all"}));
    let m = bob.recv();
    assert_eq!(
        (&m["type"], &m["broadcast"], &m["from"]),
        (&json!("data"), &json!(true), &json!("alice")),
        "{m}"
    );
    let (st, body) = http(
        b.addr,
        "GET",
        &format!("/v1/rest/sessions/{sid}/messages?after=0&wait=5"),
        Some(&tok),
        None,
    );
    assert_eq!(st, 200, "{body}");
    let msgs = json_of(&body)["messages"].clone();
    assert!(
        msgs.as_array()
            .unwrap()
            .iter()
            .any(|m| m["type"] == "data" && m["from"] == "alice" && m["data"] == "hello all"),
        "{msgs}"
    );
    // Carol (REST, node B) to alice (WebSocket, node A).
    let (st, body) = http(
        b.addr,
        "POST",
        &format!("/v1/rest/sessions/{sid}/messages"),
        Some(&tok),
        Some(&json!({"type":"data","to":"alice","data":{"from":"rest"}})),
    );
    assert_eq!(st, 200, "{body}");
    let m = alice.recv();
    assert_eq!(
        (&m["type"], &m["from"], &m["data"]),
        (&json!("data"), &json!("carol"), &json!({"from":"rest"})),
        "{m}"
    );

    // An absent peer is reported with the message's seq, across nodes.
    alice.send(json!({"type":"offer","to":"ghost","sdp":"x","seq":5}));
    let m = alice.recv();
    assert_eq!(
        (&m["code"], &m["refSeq"]),
        (&json!("peer_not_found"), &json!(5)),
        "{m}"
    );

    // Leaving on node B is seen on node A with the reason.
    bob.send(json!({"type":"leave"}));
    let m = alice.recv();
    assert_eq!(
        (&m["type"], &m["peer"], &m["reason"]),
        (&json!("peer_left"), &json!("bob"), &json!("left")),
        "{m}"
    );
    let (st, _) = http(
        b.addr,
        "DELETE",
        &format!("/v1/rest/sessions/{sid}"),
        Some(&tok),
        None,
    );
    assert_eq!(st, 204);
    let m = alice.recv();
    assert_eq!(
        (&m["peer"], &m["reason"]),
        (&json!("carol"), &json!("left")),
        "{m}"
    );
    // Room state is gone from Redis once everybody left: a fresh join gets index 1 again.
    alice.send(json!({"type":"leave"}));
    let deadline = Instant::now() + T;
    loop {
        let mut ws = b.ws();
        ws.send(json!({"type":"join","v":1,"room":"r1","peer":"alice"}));
        let w = ws.recv();
        if w["type"] == "welcome" {
            assert_eq!(w["peers"], json!([]));
            break;
        }
        // alice's leave may still be on its way to Redis.
        assert_eq!(w["code"], "peer_id_taken", "{w}");
        assert!(
            Instant::now() < deadline,
            "alice's leave never reached Redis"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn peer_ids_and_room_capacity_hold_across_nodes() {
    let redis = Redis::start();
    let a = Node::start(&redis, &["--max-peers-per-room", "2"]);
    let b = Node::start(&redis, &["--max-peers-per-room", "2"]);
    let (_alice, _) = a.join("cap", "alice");

    let mut dup = b.ws();
    dup.send(json!({"type":"join","v":1,"room":"cap","peer":"alice"}));
    let m = dup.recv();
    assert_eq!(
        (&m["type"], &m["code"]),
        (&json!("error"), &json!("peer_id_taken")),
        "{m}"
    );

    let (_bob, _) = b.join("cap", "bob");
    let mut carol = a.ws();
    carol.send(json!({"type":"join","v":1,"room":"cap","peer":"carol"}));
    let m = carol.recv();
    assert_eq!(
        (&m["type"], &m["code"]),
        (&json!("error"), &json!("room_full")),
        "{m}"
    );
    let (st, body) = http(
        b.addr,
        "POST",
        "/v1/rest/join",
        None,
        Some(&json!({"type":"join","v":1,"room":"cap","peer":"dave"})),
    );
    assert_eq!(
        (st, json_of(&body)["code"].clone()),
        (409, json!("room_full"))
    );

    // Atomic under contention: 8 simultaneous joins, 4 per node, to an empty room of 2.
    let nodes = [a.addr, b.addr];
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let addr = nodes[i % 2];
            std::thread::spawn(move || {
                let mut ws = Ws::connect(addr);
                ws.send(json!({"type":"join","v":1,"room":"race","peer":format!("p{i}")}));
                let m = ws.recv();
                (
                    m["type"].as_str().unwrap().to_owned(),
                    m["code"].as_str().map(str::to_owned),
                    ws,
                )
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let welcomed = results.iter().filter(|r| r.0 == "welcome").count();
    let full = results
        .iter()
        .filter(|r| r.1.as_deref() == Some("room_full"))
        .count();
    assert_eq!(
        (welcomed, full),
        (2, 6),
        "{:?}",
        results.iter().map(|r| (&r.0, &r.1)).collect::<Vec<_>>()
    );
    // Same peer id from both nodes at once: exactly one wins.
    let handles: Vec<_> = (0..6)
        .map(|i| {
            let addr = nodes[i % 2];
            std::thread::spawn(move || {
                let mut ws = Ws::connect(addr);
                ws.send(json!({"type":"join","v":1,"room":"dup","peer":"same"}));
                let m = ws.recv();
                (m["type"].as_str().unwrap().to_owned(), ws)
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.0 == "welcome").count(), 1);
}

/// Resume TTL given to the nodes of the tests where sessions must end (seconds).
const RESUME_TTL: u64 = 1;

#[test]
fn a_crashed_or_stopped_node_s_peers_leave_after_the_resume_ttl() {
    let redis = Redis::start();
    let ttl = ["--resume-ttl", "1", "--max-poll-wait", "1"];
    let a = Node::start(&redis, &ttl);
    let mut b = Node::start(&redis, &ttl);
    let mut c = Node::start(&redis, &ttl);
    let (mut alice, _) = a.join("crash", "alice");
    let (_bob, wb) = b.join("crash", "bob");
    assert_eq!(alice.recv()["peer"], "bob");

    // SIGKILL: nobody cleans up; node A's sweep orphans bob once B's heartbeat key expired, and
    // removes him when his resume TTL passed without a resume.
    let started = Instant::now();
    let _ = b.pid();
    b.kill();
    let bound = Duration::from_secs(NODE_TTL + RESUME_TTL)
        + Duration::from_secs(NODE_TTL) * 2 / 3
        + Duration::from_secs(2);
    let m = alice.recv_type("peer_left", bound);
    let took = started.elapsed();
    assert_eq!(
        (&m["peer"], &m["reason"]),
        (&json!("bob"), &json!("timeout")),
        "{m}"
    );
    eprintln!(
        "peer_left after a node crash: {took:?} (node TTL {NODE_TTL} s, resume TTL {RESUME_TTL} s)"
    );
    // After the TTL the session is gone on every node.
    let mut late = a.ws();
    late.send(json!({"type":"resume","session":wb["session"],"resumeToken":wb["resumeToken"],"lastSeq":0}));
    let m = late.recv();
    assert_eq!(
        (&m["type"], &m["code"]),
        (&json!("error"), &json!("resume_failed")),
        "{m}"
    );
    // The id is free again: bob joins on node A.
    let (_bob2, w) = a.join("crash", "bob");
    assert_eq!(w["peers"][0]["peer"], "alice");
    assert_eq!(alice.recv()["type"], "peer_joined");

    // SIGTERM: the node drains (go_away); its peers stay resumable for the resume TTL, then
    // leave with reason shutdown.
    let (_carol, _) = c.join("crash", "carol");
    assert_eq!(alice.recv()["peer"], "carol");
    let started = Instant::now();
    c.terminate();
    let m = alice.recv_type("peer_left", Duration::from_secs(RESUME_TTL + NODE_TTL + 2));
    assert_eq!(
        (&m["peer"], &m["reason"]),
        (&json!("carol"), &json!("shutdown")),
        "{m}"
    );
    eprintln!("peer_left after SIGTERM: {:?}", started.elapsed());
    let (_carol2, _) = a.join("crash", "carol");
}

#[test]
fn nodes_recover_after_redis_restarts() {
    let mut redis = Redis::start();
    let a = Node::start(&redis, &[]);
    let b = Node::start(&redis, &[]);
    let (mut alice, _) = a.join("phoenix", "alice");
    let (mut bob, _) = b.join("phoenix", "bob");
    assert_eq!(alice.recv()["peer"], "bob");

    // An outage that both nodes notice (their bus reports disconnected, so they are in their
    // reconnect loop), then an empty Redis on the same port.
    redis.kill();
    let deadline = Instant::now() + Duration::from_secs(15);
    while ![&a, &b]
        .iter()
        .all(|n| n.metrics().contains("floe_signal_bus_connected 0"))
    {
        assert!(
            Instant::now() < deadline,
            "the nodes did not notice the outage"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A join during the outage waits for Redis (up to 5 s) instead of failing at once.
    let mut dave = a.ws();
    dave.send(json!({"type":"join","v":1,"room":"phoenix","peer":"dave"}));
    redis.launch();
    let started = Instant::now();
    let w = dave.recv();
    assert_eq!(w["type"], "welcome", "{w}");

    // The nodes reconnect and put their members back; alice's messages reach bob again.
    let deadline = started + Duration::from_secs(20);
    let mut seq = 0;
    let got = loop {
        assert!(
            Instant::now() < deadline,
            "no delivery after the Redis restart\n--- A ---\n{}\n--- B ---\n{}",
            a.log(),
            b.log()
        );
        seq += 1;
        alice.send(json!({"type":"data","to":"bob","data":{"n":seq},"seq":seq}));
        if let Some(m) = bob.recv_within(Duration::from_millis(300)) {
            if m["type"] == "data" {
                break m;
            }
            assert_ne!(m["type"], "_closed", "{m}");
        }
        while let Some(m) = alice.recv_within(Duration::from_millis(10)) {
            assert!(
                m["type"] == "error" || m["type"] == "peer_left" || m["type"] == "peer_joined",
                "{m}"
            );
        }
    };
    eprintln!(
        "delivery resumed {:?} after the Redis restart (attempt {seq}): {got}",
        started.elapsed()
    );
    // New joins work and see the restored members, on either node.
    let (mut carol, w) = b.join("phoenix", "carol");
    let peers: Vec<&str> = w["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["peer"].as_str().unwrap())
        .collect();
    assert_eq!(peers.len(), 3, "{peers:?}");
    assert!(
        ["alice", "bob", "dave"].iter().all(|p| peers.contains(p)),
        "{peers:?}"
    );
    // Alice also hears of dave (he joined her room during the outage); that notice may come
    // after the delivery above, so it can precede carol's.
    let mut joined = alice.recv_type("peer_joined", T);
    if joined["peer"] == "dave" {
        joined = alice.recv_type("peer_joined", T);
    }
    assert_eq!(joined["peer"], "carol", "{joined}");
    bob.send(json!({"type":"data","to":"carol","data":"after"}));
    assert_eq!(carol.recv_type("data", T)["data"], "after");
    // The restart was noticed and counted.
    assert!(
        a.metrics().contains("floe_signal_bus_errors_total"),
        "{}",
        a.metrics()
    );
}

#[test]
fn malformed_data_in_redis_is_counted_and_dropped() {
    let redis = Redis::start();
    let a = Node::start(&redis, &["--max-peers-per-room", "3"]);
    let b = Node::start(&redis, &["--max-peers-per-room", "3"]);
    let (mut alice, _) = a.join("junk", "alice");

    // Garbage on every node's event channel.
    // (Each node subscribes to its channel once connected; wait for both, bounded.)
    let deadline = Instant::now() + T;
    let channels = loop {
        let c = redis.cmd(&["PUBSUB", "CHANNELS", "floe:node:*"]);
        if c.len() == 2 || Instant::now() > deadline {
            break c;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(channels.len(), 2, "{channels:?}");
    for c in &channels {
        for junk in [
            "not json",
            "{\"t\":\"deliver\",\"to\":\"x\"}",
            "{\"t\":\"joined\",\"room\":\"bad room\",\"peer\":\"a\",\"session\":\"s\",\"idx\":1,\"sub\":1}",
            "\u{1}\u{2}",
        ] {
            redis.cmd(&["PUBLISH", c, junk]);
        }
    }
    // A corrupt member record: it holds its id and a seat but is skipped in peer lists.
    redis.cmd(&["HSET", "floe:room:junk:members", "mallory", "{not json"]);
    // An operator flushes the script cache: the nodes load the scripts again.
    redis.cmd(&["SCRIPT", "FLUSH"]);

    let (mut bob, w) = b.join("junk", "bob");
    assert_eq!(
        w["peers"],
        json!([{"peer": "alice", "polite": false, "offerer": true}])
    );
    assert_eq!(alice.recv()["peer"], "bob");
    alice.send(json!({"type":"data","data":"still fine"}));
    assert_eq!(bob.recv()["data"], "still fine");
    let mut m = b.ws();
    m.send(json!({"type":"join","v":1,"room":"junk","peer":"carol"}));
    assert_eq!(m.recv()["code"], "room_full");
    for node in [&a, &b] {
        let text = node.metrics();
        let decode = text
            .lines()
            .find(|l| l.starts_with("floe_signal_bus_errors_total") && l.contains("op=\"decode\""))
            .unwrap_or_else(|| panic!("{text}"));
        let n: f64 = decode.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 4.0, "{decode}");
    }
}

fn token(secret: &str, room: &str, peer: &str, perms: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args([
            "token", "--secret", secret, "--room", room, "--peer", peer, "--perms", perms,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn kick_and_resume_across_nodes() {
    let redis = Redis::start();
    let secret = "test-jwt-secret-0123456789abcdef";
    let a = Node::start(&redis, &["--jwt-secret", secret]);
    let b = Node::start(&redis, &["--jwt-secret", secret]);
    let join = |peer: &str, perms: &str| {
        let t = token(secret, "k", peer, perms);
        json!({"type":"join","v":1,"room":"k","peer":peer,"token":t})
    };
    let (mut admin, _) = a.join_msg(join("admin", "publish,subscribe,data,admin"));
    let (mut bob, _) = b.join_msg(join("bob", "publish,subscribe,data"));
    let (mut carol, w) = b.join_msg(join("carol", "publish,subscribe,data"));
    assert_eq!(w["peers"].as_array().unwrap().len(), 2);
    assert_eq!(admin.recv()["peer"], "bob");
    assert_eq!(admin.recv()["peer"], "carol");
    assert_eq!(bob.recv()["peer"], "carol");

    // An admin on node A removes bob from node B.
    admin.send(json!({"type":"kick","peer":"bob"}));
    let m = bob.recv_type("error", T);
    assert_eq!(
        (&m["code"], &m["fatal"]),
        (&json!("kicked"), &json!(true)),
        "{m}"
    );
    for ws in [&mut admin, &mut carol] {
        let m = ws.recv_type("peer_left", T);
        assert_eq!(
            (&m["peer"], &m["reason"]),
            (&json!("bob"), &json!("kicked")),
            "{m}"
        );
    }
    admin.send(json!({"type":"kick","peer":"bob"}));
    assert_eq!(admin.recv_type("error", T)["code"], "peer_not_found");

    // A wrong resume token fails on any node; the right one moves carol's session to node A.
    let mut other = a.ws();
    other.send(
        json!({"type":"resume","session":w["session"],"resumeToken":"0123456789abcdef0123456789abcdef","lastSeq":0}),
    );
    let m = other.recv();
    assert_eq!(
        (&m["type"], &m["code"]),
        (&json!("error"), &json!("resume_failed")),
        "{m}"
    );
    other.send(
        json!({"type":"resume","session":w["session"],"resumeToken":w["resumeToken"],"lastSeq":0}),
    );
    let m = other.recv();
    assert_eq!(m["type"], "resumed", "{m}");
    let m = carol.recv_type("error", T);
    assert_eq!(m["code"], "session_replaced", "{m}");
}

#[test]
fn redis_passwords_never_reach_the_log() {
    let redis = Redis::start_with(Some("s3cret-pw-for-floe"));
    let a = Node::start(&redis, &[]);
    let (_alice, _) = a.join("pw", "alice");
    // A wrong password: the node keeps retrying and logs why, without the password.
    let wrong = format!("redis://:wrong-pw-for-floe@127.0.0.1:{}/0", redis.port);
    let b = Node::start_url(&wrong, &[]);
    let deadline = Instant::now() + T;
    while !b.log().contains("Redis unreachable") {
        assert!(
            Instant::now() < deadline,
            "no reconnect warning:\n{}",
            b.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut ws = b.ws();
    ws.send(json!({"type":"join","v":1,"room":"pw","peer":"bob"}));
    let m = ws.recv_type("error", Duration::from_secs(10));
    assert_eq!(m["code"], "internal", "{m}");
    assert!(
        b.metrics().contains("floe_signal_bus_connected 0"),
        "{}",
        b.metrics()
    );
    let (la, lb) = (a.log(), b.log());
    assert!(
        la.contains("127.0.0.1") && !la.contains("s3cret-pw-for-floe"),
        "{la}"
    );
    assert!(!lb.contains("wrong-pw-for-floe"), "{lb}");
}

#[test]
fn messages_across_nodes_arrive_in_order() {
    let redis = Redis::start();
    let limits = ["--msgs-per-sec", "100000", "--msg-burst", "100000"];
    let a = Node::start(&redis, &limits);
    let b = Node::start(&redis, &limits);
    let (mut alice, _) = a.join("flow", "alice");
    let (mut bob, _) = b.join("flow", "bob");
    assert_eq!(alice.recv()["peer"], "bob");
    const N: u64 = 2000;
    let started = Instant::now();
    let sender = std::thread::spawn(move || {
        for i in 1..=N {
            alice.send(json!({"type":"data","to":"bob","data":i,"seq":i}));
        }
        alice
    });
    for i in 1..=N {
        let m = bob.recv();
        assert_eq!((&m["type"], &m["data"]), (&json!("data"), &json!(i)), "{m}");
        if i % 200 == 0 {
            bob.send(json!({"type":"ack","seq":m["seq"]}));
        }
    }
    let took = started.elapsed();
    let _alice = sender.join().unwrap();
    eprintln!(
        "{N} messages node A -> Redis -> node B in {took:?} ({:.0}/s)",
        N as f64 / took.as_secs_f64()
    );
}

// ---- resume on any node (shared sessions and mailboxes) ------------------------------------------

/// Polls Redis (bounded) until `check` holds for the reply of `args`.
fn wait_redis(redis: &Redis, args: &[&str], what: &str, check: impl Fn(&[String]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(NODE_TTL * 3 + 5);
    loop {
        let reply = redis.cmd(args);
        if check(&reply) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: last reply {reply:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (bounded) until the session `sid` is an orphan: its node is gone, Redis keeps it.
fn wait_orphaned(redis: &Redis, sid: &str) {
    wait_redis(redis, &["ZSCORE", "floe:orphans", sid], sid, |r| {
        r.len() == 1
    });
}

/// Sends `data` messages `from..=to` (client seqs equal to the values) to `peer` and waits until
/// the node processed them (the `pong` that follows acknowledges the last one).
fn send_data(ws: &mut Ws, peer: &str, range: std::ops::RangeInclusive<u64>) {
    let last = *range.end();
    for i in range {
        ws.send(json!({"type":"data","to":peer,"data":i,"seq":i}));
    }
    ws.send(json!({"type":"ping"}));
    assert_eq!(ws.recv_type("pong", T)["ack"], last);
}

/// Resumes `w`'s session on `node` after `last_seq` and checks that the missed `data` values
/// `expect` arrive, each once and in order, then returns the connection.
fn resume_on(node: &Node, w: &Value, last_seq: u64, expect: &[u64]) -> (Ws, Value) {
    let mut ws = node.ws();
    ws.send(json!({"type":"resume","session":w["session"],"resumeToken":w["resumeToken"],"lastSeq":last_seq}));
    let r = ws.recv();
    assert_eq!(
        r["type"],
        "resumed",
        "{r}\n--- node log ---\n{}",
        node.log()
    );
    let mut seq = last_seq;
    for want in expect {
        let m = ws.recv();
        assert_eq!(
            (&m["type"], &m["data"]),
            (&json!("data"), &json!(want)),
            "{m}"
        );
        assert!(m["seq"].as_u64().unwrap() > seq, "seq not increasing: {m}");
        seq = m["seq"].as_u64().unwrap();
    }
    assert_eq!(r["lastSeq"], seq, "{r}");
    (ws, r)
}

/// The session resumed on `alice` gets exactly what bob sends next (no replayed duplicate in
/// between), and bob gets alice's answer as his next message (no `peer_left`).
fn still_talking(alice: &mut Ws, bob: &mut Ws, next: u64, alice_seq: u64) {
    bob.send(json!({"type":"data","to":"alice","data":next,"seq":next}));
    let m = alice.recv();
    assert_eq!(
        (&m["type"], &m["data"]),
        (&json!("data"), &json!(next)),
        "{m}"
    );
    alice.send(json!({"type":"data","to":"bob","data":"hi","seq":alice_seq}));
    let m = bob.recv();
    assert_eq!(
        (&m["type"], &m["from"], &m["data"]),
        (&json!("data"), &json!("alice"), &json!("hi")),
        "{m}"
    );
}

#[test]
fn a_session_resumes_on_another_node_after_its_node_crashes() {
    let redis = Redis::start();
    let ttl = ["--resume-ttl", "30"];
    let mut a = Node::start(&redis, &ttl);
    let b = Node::start(&redis, &ttl);
    let (mut alice, w) = a.join("move", "alice");
    let (mut bob, _) = b.join("move", "bob");
    let m = alice.recv();
    assert_eq!(
        (&m["type"], &m["seq"]),
        (&json!("peer_joined"), &json!(1)),
        "{m}"
    );
    send_data(&mut bob, "alice", 1..=1);
    let m = alice.recv();
    assert_eq!((&m["data"], &m["seq"]), (&json!(1), &json!(2)), "{m}");
    alice.send(json!({"type":"ping","ack":2}));
    assert_eq!(alice.recv_type("pong", T)["type"], "pong");

    // SIGKILL node A; B's sweep orphans alice's session (kept for the resume TTL, not removed).
    a.kill();
    let sid = w["session"].as_str().unwrap();
    wait_orphaned(&redis, sid);
    // Bob keeps talking to alice while her node is dead: the messages wait in Redis.
    send_data(&mut bob, "alice", 2..=4);

    // A wrong token fails on the other node too.
    let mut wrong = b.ws();
    wrong.send(json!({"type":"resume","session":sid,"resumeToken":"00000000000000000000000000000000","lastSeq":2}));
    let m = wrong.recv();
    assert_eq!(
        (&m["type"], &m["code"]),
        (&json!("error"), &json!("resume_failed")),
        "{m}"
    );

    // Alice resumes on B: everything after her lastSeq, once, in order.
    let (mut alice, r) = resume_on(&b, &w, 2, &[2, 3, 4]);
    assert_eq!(r["peers"][0]["peer"], "bob", "{r}");
    wait_redis(
        &redis,
        &["ZCARD", "floe:orphans"],
        "orphan mark cleared",
        |r| r == ["0".to_string()] || r == [":0".to_string()],
    );
    still_talking(&mut alice, &mut bob, 5, 1);
}

#[test]
fn a_draining_node_s_sessions_resume_on_another_node() {
    let redis = Redis::start();
    let ttl = ["--resume-ttl", "30"];
    let mut a = Node::start(&redis, &ttl);
    let b = Node::start(&redis, &ttl);
    let (mut alice, w) = a.join("drain", "alice");
    let (mut bob, _) = b.join("drain", "bob");
    assert_eq!(alice.recv()["type"], "peer_joined");
    send_data(&mut bob, "alice", 1..=1);
    assert_eq!(alice.recv()["data"], 1);

    // SIGTERM: go_away, and the session stays (no peer_left shutdown) for the resume TTL.
    a.terminate();
    assert_eq!(alice.recv_type("go_away", T)["type"], "go_away");
    let sid = w["session"].as_str().unwrap();
    wait_orphaned(&redis, sid);
    send_data(&mut bob, "alice", 2..=3);
    // Alice did not process seq 2 (data 1): it is replayed, then 2 and 3.
    let (mut alice, _) = resume_on(&b, &w, 1, &[1, 2, 3]);
    still_talking(&mut alice, &mut bob, 4, 1);
}

#[test]
fn a_live_session_moves_to_the_node_it_resumes_on() {
    let redis = Redis::start();
    let a = Node::start(&redis, &[]);
    let b = Node::start(&redis, &[]);
    let (mut alice, w) = a.join("live", "alice");
    let (mut bob, _) = b.join("live", "bob");
    assert_eq!(alice.recv()["type"], "peer_joined");
    send_data(&mut bob, "alice", 1..=2);
    assert_eq!(alice.recv()["data"], 1);
    assert_eq!(alice.recv()["data"], 2);
    // Resumed on B while still attached on A: A's connection is replaced.
    let (mut alice2, _) = resume_on(&b, &w, 3, &[]);
    let m = alice.recv_type("error", T);
    assert_eq!(
        (&m["code"], &m["fatal"]),
        (&json!("session_replaced"), &json!(true)),
        "{m}"
    );
    still_talking(&mut alice2, &mut bob, 3, 1);
    // A leave from the new node ends the session for everyone.
    alice2.send(json!({"type":"leave"}));
    let m = bob.recv_type("peer_left", T);
    assert_eq!(
        (&m["peer"], &m["reason"]),
        (&json!("alice"), &json!("left")),
        "{m}"
    );
}

/// The TURN usernames minted for a session name its JWT's `tenant` (usage per tenant, docs/
/// operations.md §7.1); a session that resumes on another node keeps it (the shared session
/// record carries the claim).
#[test]
fn the_tenant_claim_survives_a_resume_on_another_node() {
    let redis = Redis::start();
    let secret = "test-jwt-secret-0123456789abcdef";
    let args = [
        "--jwt-secret",
        secret,
        "--turn-url",
        "turn:127.0.0.1:3478",
        "--turn-secret",
        "turn-rest-secret-for-the-test",
    ];
    let a = Node::start(&redis, &args);
    let b = Node::start(&redis, &args);
    let out = Command::new(env!("CARGO_BIN_EXE_floe"))
        .args([
            "token", "--secret", secret, "--room", "ten", "--peer", "alice",
        ])
        .args(["--tenant", "acme"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let (_alice, w) =
        a.join_msg(json!({"type":"join","v":1,"room":"ten","peer":"alice","token":t}));
    let turn_user = |m: &Value| -> String {
        let servers = m["iceServers"].as_array().unwrap_or_else(|| panic!("{m}"));
        servers
            .iter()
            .find_map(|s| s["username"].as_str())
            .unwrap_or_else(|| panic!("no TURN credentials in {m}"))
            .to_owned()
    };
    let user = turn_user(&w);
    assert!(user.ends_with(":alice;room=ten;tenant=acme"), "{user}");

    let (_alice2, r) = resume_on(&b, &w, 0, &[]);
    let user = turn_user(&r);
    assert!(
        user.ends_with(":alice;room=ten;tenant=acme"),
        "{user} in {r}"
    );
}
