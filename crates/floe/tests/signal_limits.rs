//! Issue 12 "Done when", signalling part: a real `floe signal` with default settings under a low
//! open-files limit. One address (127.0.0.2) opens idle HTTP connections, connections that drip
//! a request head, and WebSockets that never read while a broadcast floods them, far beyond its
//! caps; another address (127.0.0.1) still joins a room and exchanges a message, and the
//! server's resident memory stays below the figure docs/security.md states.
//!
//! Before issue 12 the flood took every file descriptor (nothing capped plain connections) and
//! the join from 127.0.0.1 timed out.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed unwrap is a failed test.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The child's open-files limit: `ulimit -n 512`, so the default caps are 128 connections and
/// 32 per address (a quarter of each).
const NOFILE: &str = "--nofile=512:512";
/// Connections the attacker attempts: more than the open-files limit.
const ATTEMPTS: usize = 600;
/// WebSockets among them that join and never read.
const DEAF: usize = 10;
/// Connections among them that drip a request head.
const DRIPPING: usize = 10;
/// Broadcasts of 60 KB to the room of the deaf WebSockets.
const BROADCASTS: usize = 40;
/// The resident-memory bound docs/security.md states for this scenario, MiB.
const RSS_BOUND_MIB: u64 = 200;
/// Bound on every single wait.
const T: Duration = Duration::from_secs(20);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn tcp_from(from: &str, addr: SocketAddr, small_window: bool) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(format!("{from}:0").parse().unwrap())?;
    if small_window {
        sock.set_recv_buffer_size(4096)?;
    }
    tokio::time::timeout(T, sock.connect(addr))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

/// A WebSocket from `from` joined to `room` as `peer`; `None` if the server refused it.
async fn join(from: &str, addr: SocketAddr, room: &str, peer: &str, deaf: bool) -> Option<Ws> {
    let tcp = tcp_from(from, addr, deaf).await.ok()?;
    let req = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
    let (mut ws, _) = tokio::time::timeout(
        T,
        tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(tcp)),
    )
    .await
    .ok()?
    .ok()?;
    let j = json!({"type":"join","v":1,"room":room,"peer":peer});
    ws.send(Message::Text(j.to_string().into())).await.ok()?;
    let w = next_of(&mut ws, "welcome").await?;
    assert_eq!(w["type"], "welcome");
    Some(ws)
}

/// The next message of type `ty`, within [`T`].
async fn next_of(ws: &mut Ws, ty: &str) -> Option<Value> {
    loop {
        let m = tokio::time::timeout(T, ws.next()).await.ok()??.ok()?;
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == ty {
                return Some(v);
            }
        }
    }
}

/// `VmRSS` and `VmHWM` (peak) of `pid`, KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

async fn metrics(addr: SocketAddr) -> String {
    let mut s = tcp_from("127.0.0.1", addr, false).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(T, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn one_address_at_its_caps_leaves_websocket_joins_from_another_working() {
    common::require("prlimit");
    // Default settings: only the open-files limit is lowered (through prlimit, which execs floe).
    let (floe, addr) = common::start_signal(&["prlimit", NOFILE, "--"], &[]);
    let pid = floe.0.id();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // 1. Non-reading WebSockets in one room, and a sender flooding them with broadcasts.
        let mut deaf = Vec::new();
        for i in 0..DEAF {
            if let Some(ws) = join("127.0.0.2", addr, "flood", &format!("deaf{i}"), true).await {
                deaf.push(ws);
            }
        }
        let mut sender = join("127.0.0.2", addr, "flood", "sender", false).await;
        // 2. Connections that drip a request head, a byte every 250 ms.
        let mut drips = Vec::new();
        for _ in 0..DRIPPING {
            if let Ok(s) = tcp_from("127.0.0.2", addr, false).await {
                drips.push(s);
            }
        }
        let dripper = tokio::spawn(async move {
            for b in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: "
                .iter()
                .cycle()
                .take(40)
            {
                for s in &mut drips {
                    let _ = s.write_all(&[*b]).await;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            drips
        });
        // 3. Idle connections until the attempts exceed the open-files limit.
        let mut idle = Vec::new();
        for _ in 0..ATTEMPTS - DEAF - DRIPPING - 1 {
            if let Ok(s) = tcp_from("127.0.0.2", addr, false).await {
                idle.push(s);
            }
        }
        // 4. The flood: 60 KB broadcasts the deaf WebSockets never read.
        let blob = "x".repeat(60_000);
        if let Some(ws) = sender.as_mut() {
            for _ in 0..BROADCASTS {
                let m = json!({"type":"data","data":blob});
                if ws.send(Message::Text(m.to_string().into())).await.is_err() {
                    break;
                }
            }
        }

        // Another address joins a room and exchanges a message while all of that is held.
        let mut a = join("127.0.0.1", addr, "ok", "a", false)
            .await
            .expect("127.0.0.1 joins while 127.0.0.2 is at its caps");
        let mut b = join("127.0.0.1", addr, "ok", "b", false)
            .await
            .expect("a second peer from 127.0.0.1 joins");
        let m = json!({"type":"data","to":"b","data":"hello"});
        a.send(Message::Text(m.to_string().into())).await.unwrap();
        let got = next_of(&mut b, "data").await.expect("b gets a's message");
        assert_eq!(got["data"], "hello");

        let text = metrics(addr).await;
        let refused = metric(
            &text,
            "floe_signal_connections_refused_total{reason=\"per_ip\"}",
        );
        assert!(refused > 0.0, "{text}");
        let (rss, peak) = rss_kib(pid);
        println!(
            "floe signal under {NOFILE}: {ATTEMPTS} attempts from 127.0.0.2, {refused} refused \
             per IP; RSS {} MiB, peak {} MiB",
            rss / 1024,
            peak / 1024
        );
        assert!(
            peak / 1024 < RSS_BOUND_MIB,
            "peak RSS {} MiB above the documented {RSS_BOUND_MIB} MiB",
            peak / 1024
        );
        drop(idle);
        drop(deaf);
        let _ = dripper.await;
    });
}
