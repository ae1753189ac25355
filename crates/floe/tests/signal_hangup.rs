//! Many peers hanging up at once against a real `floe signal` process over real WebSockets
//! (issue 11 item 3): every `leave` sent just before a close is honoured (`peer_left` `left`, not
//! `timeout` after the resume TTL), the peer id is free again at once, and none of these ordinary
//! hang-ups counts as a slow consumer.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a failed unwrap is a failed test.

mod common;

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::Proc;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// Rooms of three peers; in each, two peers send `leave` and close together.
const ROOMS: usize = 200;
/// Bound on every wait for one message (far above what a loaded 2-core box needs).
const T: Duration = Duration::from_secs(20);
/// Bound on the whole scenario.
const WHOLE: Duration = Duration::from_secs(120);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// `floe signal` on loopback with the per-IP join and connection limits raised (every client
/// here shares 127.0.0.1) and a short resume TTL, so that a lost `leave` shows as `peer_left` `timeout`
/// within a few seconds instead of 30.
fn start_signal() -> (Proc, SocketAddr) {
    // Every client here shares 127.0.0.1: the per-IP join and connection limits would
    // otherwise refuse them (600 WebSockets against 64 connections per address).
    common::start_signal(
        &[],
        &[
            "--joins-per-min-per-ip",
            "100000",
            "--max-connections",
            "1000",
            "--max-connections-per-ip",
            "1000",
            "--resume-ttl",
            "3",
        ],
    )
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

/// The next JSON message, within [`T`].
async fn recv(ws: &mut Ws) -> Value {
    loop {
        let m = tokio::time::timeout(T, ws.next())
            .await
            .expect("a message in time")
            .expect("connection open")
            .unwrap();
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The next message of type `ty` (others, such as `peer_joined` of earlier peers, are skipped).
async fn recv_type(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let m = recv(ws).await;
        if m["type"] == ty {
            return m;
        }
        assert_ne!(m["type"], "error", "{m}");
    }
}

/// Joins `room` as `peer`; answers the connection and the first reply (`welcome` or `error`).
async fn join(addr: SocketAddr, room: &str, peer: &str) -> (Ws, Value) {
    let url = format!("ws://{addr}/v1/ws");
    let (mut ws, _) = tokio::time::timeout(T, tokio_tungstenite::connect_async(url))
        .await
        .expect("connect in time")
        .unwrap();
    send(
        &mut ws,
        json!({"type":"join","v":1,"room":room,"peer":peer}),
    )
    .await;
    let first = recv(&mut ws).await;
    (ws, first)
}

async fn join_ok(addr: SocketAddr, room: &str, peer: &str) -> Ws {
    let (ws, w) = join(addr, room, peer).await;
    assert_eq!(w["type"], "welcome", "{room}/{peer}: {w}");
    ws
}

/// One room: joins a, b, c; waits for every room to be ready; a and b send `leave` and close at
/// once; answers what c saw (`(peer, reason)` of each `peer_left`) and the replies to a and b
/// joining again at once with the same ids.
async fn room(addr: SocketAddr, i: usize, ready: Arc<tokio::sync::Barrier>) -> RoomOutcome {
    let r = format!("hangup-{i}");
    let mut a = join_ok(addr, &r, "a").await;
    let mut b = join_ok(addr, &r, "b").await;
    let mut c = join_ok(addr, &r, "c").await;
    recv_type(&mut a, "peer_joined").await;
    recv_type(&mut a, "peer_joined").await;
    recv_type(&mut b, "peer_joined").await;
    ready.wait().await;
    // Hang up together: both leaves are on the wire before either close.
    send(&mut a, json!({"type":"leave"})).await;
    send(&mut b, json!({"type":"leave"})).await;
    let _ = a.close(None).await;
    let _ = b.close(None).await;
    drop((a, b));
    let mut left = Vec::new();
    for _ in 0..2 {
        let m = recv_type(&mut c, "peer_left").await;
        left.push((
            m["peer"].as_str().unwrap().to_owned(),
            m["reason"].as_str().unwrap().to_owned(),
        ));
    }
    left.sort();
    // Rejoin at once with the same peer ids.
    let (mut a2, wa) = join(addr, &r, "a").await;
    let (mut b2, wb) = join(addr, &r, "b").await;
    let _ = a2.close(None).await;
    let _ = b2.close(None).await;
    let _ = c.close(None).await;
    RoomOutcome {
        left,
        rejoin: [
            wa["type"].as_str().map(str::to_owned),
            wb["type"].as_str().map(str::to_owned),
        ],
    }
}

#[derive(Debug, PartialEq)]
struct RoomOutcome {
    left: Vec<(String, String)>,
    rejoin: [Option<String>; 2],
}

/// `GET /metrics` with a plain HTTP/1.0 request.
fn metrics(addr: SocketAddr) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn peers_hanging_up_together_all_leave_and_can_rejoin_at_once() {
    let (_floe, addr) = start_signal();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let outcomes = rt.block_on(async {
        let ready = Arc::new(tokio::sync::Barrier::new(ROOMS));
        let tasks: Vec<_> = (0..ROOMS)
            .map(|i| tokio::spawn(room(addr, i, ready.clone())))
            .collect();
        tokio::time::timeout(WHOLE, futures_util::future::join_all(tasks))
            .await
            .expect("the scenario ends in time")
    });
    let want = RoomOutcome {
        left: vec![("a".into(), "left".into()), ("b".into(), "left".into())],
        rejoin: [Some("welcome".into()), Some("welcome".into())],
    };
    let bad: Vec<_> = outcomes
        .into_iter()
        .map(|o| o.expect("room task"))
        .enumerate()
        .filter(|(_, o)| *o != want)
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {ROOMS} rooms lost a leave, e.g. {:?}",
        bad.len(),
        bad.iter().take(3).collect::<Vec<_>>()
    );
    let m = metrics(addr);
    let slow: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("floe_signal_slow_consumers_total"))
        .collect();
    assert!(
        slow.iter().all(|l| l.ends_with(" 0")),
        "ordinary hang-ups counted as slow consumers: {slow:?}"
    );
}
