//! Bounded loopback WebSocket load for a signalling server: `floe signal` or PeerJS server.
//!
//! ```text
//! signal-load idle --url ws://127.0.0.1:8080 --proto floe --pid PID --conns 10000 [--hold 10]
//! signal-load msgs --url ws://127.0.0.1:9000 --proto peerjs --pid PID --pairs 500 \
//!     --msgs 100000 --rate 10000 --size 300
//! ```
//!
//! `idle`: opens `--conns` WebSockets (one room, or one PeerJS id pair, per two connections),
//! joins each, keeps them alive as the browser clients do (floe.js: `ping {ack}` every 8 s and
//! `ack` 200 ms after a numbered message; PeerJS: `HEARTBEAT` every 5 s), and reports the server's
//! RSS growth per connection (`/proc/PID/status` VmRSS) after joining and after `--hold` seconds.
//!
//! `msgs`: `--pairs` pairs of connections; the first of each pair sends `--msgs` directed
//! messages of about `--size` bytes to the second, paced to `--rate` messages per second in all;
//! reports the server's CPU-seconds (utime + stime from `/proc/PID/stat`) per 100k delivered
//! messages and the delivery latency.
//!
//! Every loop is bounded in count and time (`--timeout`, default 300 s). Loopback only: the URL
//! must name 127.0.0.1, and `--src-ips K` spreads the client sockets over 127.0.0.1..K.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<TcpStream>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    Floe,
    PeerJs,
}

#[derive(Clone, Debug)]
struct Args {
    mode: String,
    url: String,
    proto: Proto,
    pid: u32,
    conns: usize,
    pairs: usize,
    msgs: u64,
    rate: u64,
    size: usize,
    hold: u64,
    settle: u64,
    src_ips: u8,
    concurrency: usize,
    timeout: u64,
    /// floe only: send `join` (0: connect only, to tell the hub's share from the transport's).
    join: bool,
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let mode = it.next().unwrap_or_default();
    let mut a = Args {
        mode,
        url: String::new(),
        proto: Proto::Floe,
        pid: 0,
        conns: 1000,
        pairs: 500,
        msgs: 100_000,
        rate: 10_000,
        size: 300,
        hold: 10,
        settle: 3,
        src_ips: 1,
        concurrency: 64,
        timeout: 300,
        join: true,
    };
    while let Some(k) = it.next() {
        let v = it
            .next()
            .unwrap_or_else(|| die(&format!("{k} needs a value")));
        let num = |v: &str| -> u64 { v.parse().unwrap_or_else(|_| die(&format!("{k}: {v}"))) };
        match k.as_str() {
            "--url" => a.url = v,
            "--proto" => {
                a.proto = match v.as_str() {
                    "floe" => Proto::Floe,
                    "peerjs" => Proto::PeerJs,
                    _ => die("--proto floe|peerjs"),
                }
            }
            "--pid" => a.pid = num(&v) as u32,
            "--conns" => a.conns = num(&v) as usize,
            "--pairs" => a.pairs = num(&v) as usize,
            "--msgs" => a.msgs = num(&v),
            "--rate" => a.rate = num(&v).max(1),
            "--size" => a.size = num(&v) as usize,
            "--hold" => a.hold = num(&v),
            "--settle" => a.settle = num(&v),
            "--src-ips" => a.src_ips = num(&v).clamp(1, 250) as u8,
            "--concurrency" => a.concurrency = num(&v).max(1) as usize,
            "--timeout" => a.timeout = num(&v),
            "--join" => a.join = num(&v) != 0,
            _ => die(&format!("unknown option {k}")),
        }
    }
    if !(a.mode == "idle" || a.mode == "msgs") || a.pid == 0 {
        die("usage: signal-load idle|msgs --url ws://127.0.0.1:PORT --proto floe|peerjs --pid PID ...");
    }
    if !a.url.starts_with("ws://127.0.0.1:") {
        die("loopback only: --url ws://127.0.0.1:PORT");
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("signal-load: {msg}");
    std::process::exit(2)
}

/// VmRSS of `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// utime + stime of `pid`, in clock ticks (100 per second).
fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at ") ".
    let rest = s.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12) // fields 14 and 15 of the whole line
}

/// Connects connection `i` (from 127.0.0.{1 + i % src_ips}) and joins: answers the socket once
/// the server confirmed (`welcome` / `OPEN`).
async fn open(a: &Args, i: usize) -> Result<Ws, String> {
    let hostport = a.url.trim_start_matches("ws://");
    let addr: SocketAddr = hostport.parse().map_err(|e| format!("{hostport}: {e}"))?;
    let src = Ipv4Addr::new(127, 0, 0, 1 + (i % usize::from(a.src_ips)) as u8);
    let sock = TcpSocket::new_v4().map_err(|e| e.to_string())?;
    sock.bind(SocketAddr::new(IpAddr::V4(src), 0))
        .map_err(|e| format!("bind {src}: {e}"))?;
    let tcp = sock
        .connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let peer = peer_id(i);
    let url = match a.proto {
        Proto::Floe => format!("{}/v1/ws", a.url),
        Proto::PeerJs => format!("{}/peerjs?key=peerjs&id={peer}&token=t{i}", a.url),
    };
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    if a.proto == Proto::Floe && !a.join {
        return Ok(ws);
    }
    if a.proto == Proto::Floe {
        let join = json!({"type":"join","v":1,"room":format!("r{}", i / 2),"peer":peer});
        send(&mut ws, &join).await?;
    }
    let want = match a.proto {
        Proto::Floe => "welcome",
        Proto::PeerJs => "OPEN",
    };
    let m = recv(&mut ws).await?;
    if m["type"] == want {
        Ok(ws)
    } else {
        Err(format!("join answered {m}"))
    }
}

fn peer_id(i: usize) -> String {
    format!("p{i}")
}

async fn send(ws: &mut Ws, v: &Value) -> Result<(), String> {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .map_err(|e| format!("send: {e}"))
}

async fn recv(ws: &mut Ws) -> Result<Value, String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(t.as_str()).map_err(|e| e.to_string())
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => return Err(format!("unexpected frame {other:?}")),
            Some(Err(e)) => return Err(format!("read: {e}")),
            None => return Err("closed".into()),
        }
    }
}

/// Counters shared by the client tasks.
#[derive(Default)]
struct Shared {
    joined: AtomicUsize,
    failed: AtomicUsize,
    delivered: AtomicU64,
    /// Latency histogram in 10 µs buckets up to 100 ms (the last bucket holds the rest).
    lat: Vec<AtomicU64>,
}

const LAT_BUCKETS: usize = 10_000;

impl Shared {
    fn new() -> Arc<Self> {
        Arc::new(Shared {
            lat: (0..LAT_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            ..Default::default()
        })
    }
}

/// Keeps one joined connection alive as its browser client would, counting (and timing)
/// received directed messages, until `stop`.
async fn keep_alive(
    a: Arc<Args>,
    mut ws: Ws,
    shared: Arc<Shared>,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let every = match a.proto {
        Proto::Floe => Duration::from_millis(8000),
        Proto::PeerJs => Duration::from_millis(5000),
    };
    let mut hb = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut last_seq = 0u64;
    let mut ack_at: Option<tokio::time::Instant> = None;
    loop {
        let ack_due = async {
            match ack_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.changed() => break,
            _ = hb.tick() => {
                let m = match a.proto {
                    Proto::Floe => json!({"type":"ping","ack":last_seq}),
                    Proto::PeerJs => json!({"type":"HEARTBEAT"}),
                };
                if send(&mut ws, &m).await.is_err() { break; }
            }
            () = ack_due => {
                ack_at = None;
                if send(&mut ws, &json!({"type":"ack","seq":last_seq})).await.is_err() { break; }
            }
            m = recv(&mut ws) => {
                let Ok(m) = m else { break };
                if let Some(seq) = m["seq"].as_u64() {
                    last_seq = last_seq.max(seq);
                    if ack_at.is_none() {
                        ack_at = Some(tokio::time::Instant::now() + Duration::from_millis(200));
                    }
                }
                let payload = match a.proto {
                    Proto::Floe if m["type"] == "data" => Some(&m["data"]),
                    Proto::PeerJs if m["type"] == "OFFER" => Some(&m["payload"]),
                    _ => None,
                };
                if let Some(t) = payload.and_then(|p| p["t"].as_u64()) {
                    let now = t0.elapsed().as_nanos() as u64;
                    let b = (now.saturating_sub(t) / 10_000) as usize;
                    shared.lat[b.min(LAT_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
                    shared.delivered.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    let _ = ws.close(None).await;
}

/// Sends `count` directed messages of about `size` bytes to `to`, one per `period`.
async fn sender(
    a: Arc<Args>,
    mut ws: Ws,
    to: String,
    count: u64,
    period: Duration,
    t0: Instant,
    mut stop: watch::Receiver<bool>,
) {
    let pad = "x".repeat(a.size.saturating_sub(90));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut hb = Instant::now();
    let mut sent = 0;
    while sent < count {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
            // Drain what the server sends (pongs, acks of nothing) so its queue never fills.
            m = recv(&mut ws) => { if m.is_err() { return; } continue; }
        }
        let t = t0.elapsed().as_nanos() as u64;
        sent += 1;
        let m = match a.proto {
            Proto::Floe => json!({"type":"data","to":to,"seq":sent,"data":{"t":t,"pad":pad}}),
            Proto::PeerJs => json!({"type":"OFFER","dst":to,"payload":{"t":t,"pad":pad}}),
        };
        if send(&mut ws, &m).await.is_err() {
            return;
        }
        if hb.elapsed() > Duration::from_secs(5) {
            hb = Instant::now();
            let m = match a.proto {
                Proto::Floe => json!({"type":"ping"}),
                Proto::PeerJs => json!({"type":"HEARTBEAT"}),
            };
            if send(&mut ws, &m).await.is_err() {
                return;
            }
        }
    }
    // Stay connected (answering nothing) until told to stop.
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            m = recv(&mut ws) => if m.is_err() { break },
        }
    }
    let _ = ws.close(None).await;
}

/// Opens `n` connections, at most `concurrency` connecting at once; answers them in index order.
async fn open_all(
    a: &Arc<Args>,
    n: usize,
    shared: &Arc<Shared>,
    deadline: Instant,
) -> Vec<Option<Ws>> {
    let gate = Arc::new(Semaphore::new(a.concurrency));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (a, gate, shared) = (a.clone(), gate.clone(), shared.clone());
            tokio::spawn(async move {
                let _p = gate.acquire_owned().await.ok()?;
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, open(&a, i)).await {
                    Ok(Ok(ws)) => {
                        shared.joined.fetch_add(1, Ordering::Relaxed);
                        Some(ws)
                    }
                    Ok(Err(e)) => {
                        if shared.failed.fetch_add(1, Ordering::Relaxed) < 3 {
                            eprintln!("signal-load: connection {i}: {e}");
                        }
                        None
                    }
                    Err(_) => {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.ok().flatten());
    }
    out
}

fn percentile(shared: &Shared, q: f64) -> f64 {
    let counts: Vec<u64> = shared
        .lat
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    let total: u64 = counts.iter().sum();
    let want = ((total as f64) * q).ceil() as u64;
    let mut acc = 0;
    for (i, c) in counts.iter().enumerate() {
        acc += c;
        if acc >= want.max(1) {
            return (i as f64 + 1.0) * 0.01; // ms, upper edge of the bucket
        }
    }
    f64::NAN
}

async fn idle(a: Arc<Args>) {
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let shared = Shared::new();
    let t0 = Instant::now();
    let rss0 = rss_kib(a.pid);
    let cpu0 = cpu_ticks(a.pid);
    let conns = open_all(&a, a.conns, &shared, deadline).await;
    let open_secs = t0.elapsed().as_secs_f64();
    let cpu_open = cpu_ticks(a.pid) - cpu0;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for ws in conns.into_iter().flatten() {
        tasks.push(tokio::spawn(keep_alive(
            a.clone(),
            ws,
            shared.clone(),
            t0,
            stop_rx.clone(),
        )));
    }
    let n = shared.joined.load(Ordering::Relaxed);
    // Let acks of the `peer_joined` messages land before measuring.
    tokio::time::sleep(Duration::from_secs(a.settle)).await;
    let rss1 = rss_kib(a.pid);
    tokio::time::sleep(Duration::from_secs(a.hold)).await;
    let rss2 = rss_kib(a.pid);
    let per = |r: u64| (r.saturating_sub(rss0) as f64) * 1024.0 / (n.max(1) as f64);
    println!(
        "idle proto={:?} conns={} joined={} failed={} open_s={:.1} server_cpu_s_open={:.2} \
         rss0_kib={} rss_joined_kib={} rss_held_kib={} bytes_per_conn_joined={:.0} \
         bytes_per_conn_held={:.0} hold_s={}",
        a.proto,
        a.conns,
        n,
        shared.failed.load(Ordering::Relaxed),
        open_secs,
        cpu_open as f64 / 100.0,
        rss0,
        rss1,
        rss2,
        per(rss1),
        per(rss2),
        a.hold
    );
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
}

async fn msgs(a: Arc<Args>) {
    let deadline = Instant::now() + Duration::from_secs(a.timeout);
    let shared = Shared::new();
    let t0 = Instant::now();
    let conns = open_all(&a, a.pairs * 2, &shared, deadline).await;
    if shared.failed.load(Ordering::Relaxed) > 0 {
        die("some connections failed; not measuring");
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let per_sender = a.msgs / a.pairs as u64;
    let total = per_sender * a.pairs as u64;
    // Each sender sends at rate / pairs per second.
    let period = Duration::from_nanos(1_000_000_000 * a.pairs as u64 / a.rate);
    let mut conns = conns.into_iter();
    let mut receivers = Vec::new();
    let mut senders = Vec::new();
    let mut i = 0;
    while let (Some(Some(s)), Some(Some(r))) = (conns.next(), conns.next()) {
        receivers.push(tokio::spawn(keep_alive(
            a.clone(),
            r,
            shared.clone(),
            t0,
            stop_rx.clone(),
        )));
        senders.push((s, peer_id(i + 1)));
        i += 2;
    }
    tokio::time::sleep(Duration::from_secs(a.settle)).await;
    let cpu0 = cpu_ticks(a.pid);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (k, (s, to)) in senders.into_iter().enumerate() {
        let (a, stop) = (a.clone(), stop_rx.clone());
        // Spread the senders' ticks over one period.
        let offset = period * k as u32 / a.pairs as u32;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(offset).await;
            sender(a, s, to, per_sender, period, t0, stop).await;
        }));
    }
    while shared.delivered.load(Ordering::Relaxed) < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(a.pid) - cpu0) as f64 / 100.0;
    let got = shared.delivered.load(Ordering::Relaxed);
    println!(
        "msgs proto={:?} pairs={} size={} rate={} sent={} delivered={} secs={:.2} \
         server_cpu_s={:.2} cpu_s_per_100k={:.3} p50_ms={:.2} p99_ms={:.2}",
        a.proto,
        a.pairs,
        a.size,
        a.rate,
        total,
        got,
        secs,
        cpu,
        cpu * 100_000.0 / got.max(1) as f64,
        percentile(&shared, 0.50),
        percentile(&shared, 0.99),
    );
    let _ = stop_tx.send(true);
    for t in tasks.into_iter().chain(receivers) {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
}

fn main() {
    let a = Arc::new(parse_args());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| die(&format!("runtime: {e}")));
    rt.block_on(async {
        match a.mode.as_str() {
            "idle" => idle(a.clone()).await,
            _ => msgs(a.clone()).await,
        }
    });
}
