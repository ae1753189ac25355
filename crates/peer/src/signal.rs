//! A WebSocket client of floe's signalling protocol (docs/signalling.md): join a room, learn the
//! other peers and their roles, exchange offer/answer/candidates, keep the session alive with
//! `ping {ack}`.
//!
//! A dropped connection is resumed (`resume`, with client sequence numbers and resending) within
//! the server's resume TTL; after that the session ends. An established WebRTC connection does
//! not depend on signalling.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::ice_servers::{parse_ice_servers, IceServer};
use crate::PeerError;

/// Where and as whom to join.
#[derive(Debug, Clone)]
pub struct SignalOptions {
    /// Base URL of the signalling server: `http://host:port` (or `ws://`, `https://`, `wss://`).
    pub url: String,
    /// Room to join.
    pub room: String,
    /// Requested peer id (the server assigns one when absent).
    pub peer: Option<String>,
    /// JWT for production-mode servers.
    pub token: Option<String>,
    /// Extra CA certificate (PEM) for `wss://`.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Another peer in the room, with the roles the server assigned to the pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePeer {
    /// Its id.
    pub peer: String,
    /// We send the first offer.
    pub offerer: bool,
    /// We are polite in perfect negotiation.
    pub polite: bool,
}

/// The server's `welcome`.
#[derive(Debug, Clone)]
pub struct Welcome {
    /// Our peer id.
    pub peer: String,
    /// Peers already in the room, oldest first.
    pub peers: Vec<RemotePeer>,
    /// Usable ICE servers.
    pub ice_servers: Vec<IceServer>,
    /// Heartbeat interval.
    pub heartbeat: Duration,
}

/// A message from the server (numbered messages are acknowledged automatically).
#[derive(Debug, Clone)]
pub enum Incoming {
    /// `peer_joined`.
    PeerJoined(RemotePeer),
    /// `peer_left` with its reason.
    PeerLeft {
        /// Who.
        peer: String,
        /// Why.
        reason: String,
    },
    /// `offer` or `answer`.
    Sdp {
        /// Sender.
        from: String,
        /// "offer" or "answer".
        kind: String,
        /// The SDP.
        sdp: String,
    },
    /// `candidate`.
    Candidate {
        /// Sender.
        from: String,
        /// `candidate:...` line.
        candidate: String,
    },
    /// `end_of_candidates`.
    EndOfCandidates {
        /// Sender.
        from: String,
    },
    /// `bye`.
    Bye {
        /// Sender.
        from: String,
    },
    /// An `error` reply.
    Error {
        /// Stable code.
        code: String,
        /// Human text.
        message: String,
        /// The server closes the connection after it.
        fatal: bool,
    },
    /// The connection closed.
    Closed(String),
}

/// A joined session: send with [`Signal::send`], receive from `incoming`.
#[derive(Debug)]
pub struct Signal {
    /// What the server said on join.
    pub welcome: Welcome,
    /// Server messages in order.
    pub incoming: mpsc::Receiver<Incoming>,
    out: mpsc::UnboundedSender<Value>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Signal {
    /// Sends a client message (`offer`, `answer`, `candidate`, ...). Errors only when the
    /// connection is gone.
    pub fn send(&self, msg: Value) -> Result<(), PeerError> {
        self.out
            .send(msg)
            .map_err(|_| PeerError::Signal("signalling connection closed".into()))
    }

    /// Leaves the room: sends `leave` after everything queued before it and waits (at most
    /// 2 s) until the connection is closed.
    pub async fn leave(&mut self) {
        let _ = self.out.send(json!({"type": "leave"}));
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
    }

    /// A sender handle usable from other tasks.
    pub fn sender(&self) -> SignalSender {
        SignalSender(self.out.clone())
    }
}

/// A cloneable handle for sending.
#[derive(Debug, Clone)]
pub struct SignalSender(mpsc::UnboundedSender<Value>);

impl SignalSender {
    /// As [`Signal::send`].
    pub fn send(&self, msg: Value) -> Result<(), PeerError> {
        self.0
            .send(msg)
            .map_err(|_| PeerError::Signal("signalling connection closed".into()))
    }
}

/// `http://h:p/x` → `ws://h:p/v1/ws` (a URL already ending in `/v1/ws` is kept).
pub fn ws_url(base: &str) -> Result<String, PeerError> {
    let (scheme, rest) = base
        .split_once("://")
        .ok_or_else(|| PeerError::Config(format!("signalling URL {base:?} has no scheme")))?;
    let ws = match scheme.to_ascii_lowercase().as_str() {
        "http" | "ws" => "ws",
        "https" | "wss" => "wss",
        other => {
            return Err(PeerError::Config(format!(
                "signalling URL scheme {other:?} is not http(s) or ws(s)"
            )))
        }
    };
    let rest = rest.trim_end_matches('/');
    if rest.ends_with("/v1/ws") {
        Ok(format!("{ws}://{rest}"))
    } else {
        Ok(format!("{ws}://{rest}/v1/ws"))
    }
}

fn remote_peer(v: &Value) -> Option<RemotePeer> {
    Some(RemotePeer {
        peer: v.get("peer")?.as_str()?.to_owned(),
        offerer: v.get("offerer")?.as_bool()?,
        polite: v.get("polite")?.as_bool()?,
    })
}

fn str_field(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_owned()
}

/// Connects, joins and returns the session. Fails with the server's error code on refusal.
///
/// The session survives a dropped connection: the client reconnects with backoff and sends
/// `resume` (docs/signalling.md §5) until the server's resume TTL runs out; the server replays
/// what was missed, and routed messages sent meanwhile carry a client `seq` and are resent
/// unless `resumed.received` / `pong.ack` covers them.
pub async fn join(opts: &SignalOptions) -> Result<Signal, PeerError> {
    let url = ws_url(&opts.url)?;
    let mut ws = open_ws(&url, opts.ca_file.as_deref()).await?;

    let mut join = json!({"type": "join", "v": 1, "room": opts.room});
    if let Some(p) = &opts.peer {
        join["peer"] = json!(p);
    }
    if let Some(t) = &opts.token {
        join["token"] = json!(t);
    }
    ws.send(WsMessage::text(join.to_string()))
        .await
        .map_err(|e| PeerError::Signal(e.to_string()))?;
    let welcome = first_reply(&mut ws, "welcome").await?;

    let (ice_servers, bad) = parse_ice_servers(welcome.get("iceServers").unwrap_or(&Value::Null));
    for e in bad {
        tracing::warn!("ignoring ICE server: {e}");
    }
    let ms = |k: &str, default: u64| welcome.get(k).and_then(Value::as_u64).unwrap_or(default);
    let heartbeat = Duration::from_millis(ms("heartbeatMs", 10_000).clamp(1_000, 60_000));
    let session = Session {
        url,
        ca_file: opts.ca_file.clone(),
        id: str_field(&welcome, "session"),
        resume_token: str_field(&welcome, "resumeToken"),
        resume_ttl: Duration::from_millis(ms("resumeTtlMs", 30_000).min(300_000)),
        ping_every: heartbeat.mul_f32(0.8),
        last_seq: 0,
        next_out_seq: 1,
        unacked: VecDeque::new(),
    };
    let welcome = Welcome {
        peer: str_field(&welcome, "peer"),
        peers: welcome
            .get("peers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(remote_peer)
            .collect(),
        ice_servers,
        heartbeat,
    };
    let (out_tx, out_rx) = mpsc::unbounded_channel::<Value>();
    let (in_tx, in_rx) = mpsc::channel::<Incoming>(256);
    let task = tokio::spawn(session.run(ws, out_rx, in_tx));
    Ok(Signal {
        welcome,
        incoming: in_rx,
        out: out_tx,
        task: Some(task),
    })
}

/// Longest wait a `go_away` can ask for before the client resumes.
const GO_AWAY_MAX_WAIT_MS: u64 = 10_000;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Unacknowledged routed messages kept for resending after a resume.
const MAX_UNACKED: usize = 1024;

/// Any byte stream a WebSocket can run over (TCP or TLS over TCP).
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

type Ws = tokio_tungstenite::WebSocketStream<Box<dyn Io>>;

/// Opens the WebSocket: TCP, TLS for `wss://`, then the HTTP upgrade.
async fn open_ws(url: &str, ca_file: Option<&std::path::Path>) -> Result<Ws, PeerError> {
    let tls = url.starts_with("wss://");
    let (host, port) = host_port(url)?;
    let tcp = connect_tcp(&host, port).await?;
    let stream: Box<dyn Io> = if tls {
        let config = crate::tls::client_config(ca_file)?;
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|e| PeerError::Config(format!("TLS server name {host:?}: {e}")))?;
        Box::new(
            tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| PeerError::Signal(format!("TLS to {host}:{port}: {e}")))?,
        )
    } else {
        Box::new(tcp)
    };
    let (ws, _) = tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio_tungstenite::client_async(url, stream),
    )
    .await
    .map_err(|_| PeerError::Signal(format!("timed out connecting to {url}")))?
    .map_err(|e| PeerError::Signal(format!("cannot connect to {url}: {e}")))?;
    Ok(ws)
}

/// Waits (10 s at most) for the server's `want` reply; its `error` becomes [`PeerError::Refused`].
async fn first_reply(ws: &mut Ws, want: &str) -> Result<Value, PeerError> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .map_err(|_| PeerError::Signal(format!("no {want} within 10 s")))?;
        let Some(frame) = frame else {
            return Err(PeerError::Signal(format!(
                "connection closed before {want}"
            )));
        };
        let WsMessage::Text(text) = frame.map_err(|e| PeerError::Signal(e.to_string()))? else {
            continue;
        };
        let v: Value = serde_json::from_str(text.as_str())
            .map_err(|e| PeerError::Signal(format!("bad JSON from server: {e}")))?;
        match v.get("type").and_then(Value::as_str) {
            Some(t) if t == want => return Ok(v),
            Some("error") => {
                return Err(PeerError::Refused {
                    code: str_field(&v, "code"),
                    message: str_field(&v, "message"),
                })
            }
            _ => continue,
        }
    }
}

async fn connect_tcp(host: &str, port: u16) -> Result<tokio::net::TcpStream, PeerError> {
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        tokio::net::TcpStream::connect((host, port)),
    )
    .await
    .map_err(|_| PeerError::Signal(format!("timed out connecting to {host}:{port}")))?
    .map_err(|e| PeerError::Signal(format!("cannot connect to {host}:{port}: {e}")))
}

/// Host (brackets removed) and port of a `ws(s)://host[:port]/...` URL (default port 443 for
/// `wss`, else 80).
pub(crate) fn host_port(url: &str) -> Result<(String, u16), PeerError> {
    let (scheme, rest) = url.split_once("://").unwrap_or(("ws", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    let default = if scheme.eq_ignore_ascii_case("wss") {
        443
    } else {
        80
    };
    crate::ice_servers::split_host_port(authority, default)
        .ok_or_else(|| PeerError::Config(format!("malformed URL {url:?}")))
}

/// Routed messages (docs/signalling.md §2) carry a client `seq` and are kept until acknowledged.
fn is_routed(v: &Value) -> bool {
    matches!(
        v.get("type").and_then(Value::as_str),
        Some("offer" | "answer" | "candidate" | "end_of_candidates" | "bye" | "data")
    )
}

/// How one connection ended.
enum Ended {
    /// The application left or dropped the session: stop.
    Done(String),
    /// The connection broke: resume.
    Lost(String),
}

/// The session's connection task state.
struct Session {
    url: String,
    ca_file: Option<std::path::PathBuf>,
    id: String,
    resume_token: String,
    resume_ttl: Duration,
    ping_every: Duration,
    /// Highest server `seq` processed.
    last_seq: u64,
    next_out_seq: u64,
    unacked: VecDeque<(u64, Value)>,
}

impl Session {
    async fn run(
        mut self,
        ws: Ws,
        mut out_rx: mpsc::UnboundedReceiver<Value>,
        in_tx: mpsc::Sender<Incoming>,
    ) {
        let mut ws = ws;
        let reason = loop {
            match self.connected(&mut ws, &mut out_rx, &in_tx).await {
                Ended::Done(r) => break r,
                Ended::Lost(why) => {
                    tracing::warn!("signalling connection lost ({why}); resuming the session");
                    match self.resume().await {
                        Ok(new) => {
                            tracing::warn!("signalling session resumed");
                            ws = new;
                        }
                        Err(e) => break format!("{why}; resume failed: {e}"),
                    }
                }
            }
        };
        let _ = in_tx.send(Incoming::Closed(reason)).await;
    }

    /// Drops what the server says it has (`received` / `ack`: highest client seq processed).
    fn acked(&mut self, up_to: u64) {
        while self.unacked.front().is_some_and(|(s, _)| *s <= up_to) {
            self.unacked.pop_front();
        }
    }

    async fn connected(
        &mut self,
        ws: &mut Ws,
        out_rx: &mut mpsc::UnboundedReceiver<Value>,
        in_tx: &mpsc::Sender<Incoming>,
    ) -> Ended {
        let mut ticker = tokio::time::interval(self.ping_every);
        ticker.tick().await;
        loop {
            tokio::select! {
                msg = out_rx.recv() => {
                    let Some(mut msg) = msg else { return Ended::Done("closed by the application".into()) };
                    let leaving = msg.get("type").and_then(Value::as_str) == Some("leave");
                    if is_routed(&msg) {
                        let seq = self.next_out_seq;
                        self.next_out_seq += 1;
                        msg["seq"] = json!(seq);
                        if self.unacked.len() == MAX_UNACKED {
                            self.unacked.pop_front();
                        }
                        self.unacked.push_back((seq, msg.clone()));
                    }
                    if let Err(e) = ws.send(WsMessage::text(msg.to_string())).await {
                        return Ended::Lost(e.to_string());
                    }
                    if leaving {
                        let _ = ws.close(None).await;
                        return Ended::Done("left".into());
                    }
                }
                _ = ticker.tick() => {
                    let ping = json!({"type": "ping", "ack": self.last_seq});
                    if let Err(e) = ws.send(WsMessage::text(ping.to_string())).await {
                        return Ended::Lost(e.to_string());
                    }
                }
                frame = ws.next() => {
                    let text = match frame {
                        Some(Ok(WsMessage::Text(t))) => t,
                        Some(Ok(WsMessage::Close(c))) => return Ended::Lost(format!("closed by the server: {c:?}")),
                        Some(Ok(_)) => continue,
                        Some(Err(e)) => return Ended::Lost(e.to_string()),
                        None => return Ended::Lost("connection closed".into()),
                    };
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                    if v.get("type").and_then(Value::as_str) == Some("pong") {
                        self.acked(v.get("ack").and_then(Value::as_u64).unwrap_or(0));
                        continue;
                    }
                    if v.get("type").and_then(Value::as_str) == Some("go_away") {
                        // The node shuts down or drains (docs/signalling.md): leave it and
                        // resume after reconnectMs through the same URL (a load balancer picks
                        // a node that takes the session).
                        let ms = v.get("reconnectMs").and_then(Value::as_u64).unwrap_or(500);
                        let _ = ws.close(None).await;
                        tokio::time::sleep(Duration::from_millis(ms.min(GO_AWAY_MAX_WAIT_MS))).await;
                        return Ended::Lost(format!("go_away ({})", str_field(&v, "reason")));
                    }
                    if let Some(seq) = v.get("seq").and_then(Value::as_u64) {
                        if seq <= self.last_seq {
                            continue; // replayed after a resume; already handled
                        }
                        self.last_seq = seq;
                        if seq % 32 == 0 {
                            let ack = json!({"type": "ack", "seq": seq});
                            let _ = ws.send(WsMessage::text(ack.to_string())).await;
                        }
                    }
                    if let Some(m) = parse_incoming(&v) {
                        let fatal = matches!(m, Incoming::Error { fatal: true, .. });
                        if in_tx.send(m).await.is_err() {
                            return Ended::Done("receiver dropped".into());
                        }
                        if fatal {
                            // Fatal errors (kicked, session_replaced, ...) end the session.
                            return Ended::Done(format!("fatal signalling error: {}", str_field(&v, "code")));
                        }
                    }
                }
            }
        }
    }

    /// Reconnects with backoff and sends `resume` until it is answered or the TTL passed.
    async fn resume(&mut self) -> Result<Ws, PeerError> {
        let deadline = tokio::time::Instant::now() + self.resume_ttl;
        let mut backoff = Duration::from_millis(250);
        loop {
            match self.try_resume().await {
                Ok(ws) => return Ok(ws),
                Err(e @ PeerError::Refused { .. }) => return Err(e),
                Err(e) => {
                    if tokio::time::Instant::now() + backoff >= deadline {
                        return Err(e);
                    }
                    tracing::debug!("resume: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(4));
                }
            }
        }
    }

    async fn try_resume(&mut self) -> Result<Ws, PeerError> {
        let mut ws = open_ws(&self.url, self.ca_file.as_deref()).await?;
        let resume = json!({
            "type": "resume", "session": self.id, "resumeToken": self.resume_token,
            "lastSeq": self.last_seq,
        });
        ws.send(WsMessage::text(resume.to_string()))
            .await
            .map_err(|e| PeerError::Signal(e.to_string()))?;
        let resumed = first_reply(&mut ws, "resumed").await?;
        self.acked(resumed.get("received").and_then(Value::as_u64).unwrap_or(0));
        for (_, msg) in &self.unacked {
            ws.send(WsMessage::text(msg.to_string()))
                .await
                .map_err(|e| PeerError::Signal(e.to_string()))?;
        }
        Ok(ws)
    }
}

/// Decodes a server message (`None` for replies the peer does not act on, like `pong`).
pub fn parse_incoming(v: &Value) -> Option<Incoming> {
    let from = || str_field(v, "from");
    Some(match v.get("type")?.as_str()? {
        "peer_joined" => Incoming::PeerJoined(remote_peer(v)?),
        "peer_left" => Incoming::PeerLeft {
            peer: str_field(v, "peer"),
            reason: str_field(v, "reason"),
        },
        kind @ ("offer" | "answer") => Incoming::Sdp {
            from: from(),
            kind: kind.to_owned(),
            sdp: str_field(v, "sdp"),
        },
        "candidate" => Incoming::Candidate {
            from: from(),
            candidate: str_field(v, "candidate"),
        },
        "end_of_candidates" => Incoming::EndOfCandidates { from: from() },
        "bye" => Incoming::Bye { from: from() },
        "error" => Incoming::Error {
            code: str_field(v, "code"),
            message: str_field(v, "message"),
            fatal: v.get("fatal").and_then(Value::as_bool).unwrap_or(false),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signalling_urls() {
        assert_eq!(
            ws_url("http://127.0.0.1:8080").unwrap(),
            "ws://127.0.0.1:8080/v1/ws"
        );
        assert_eq!(
            ws_url("https://x.example/").unwrap(),
            "wss://x.example/v1/ws"
        );
        assert_eq!(ws_url("ws://h:1/v1/ws").unwrap(), "ws://h:1/v1/ws");
        assert!(ws_url("ftp://h").is_err());
        assert!(ws_url("h:8080").is_err());
        assert_eq!(
            host_port("wss://x.example/v1/ws").unwrap(),
            ("x.example".into(), 443)
        );
        assert_eq!(
            host_port("wss://[2001:db8::1]:8443/v1/ws").unwrap(),
            ("2001:db8::1".into(), 8443)
        );
    }

    #[test]
    fn server_messages_are_decoded() {
        let m = parse_incoming(
            &json!({"type":"peer_joined","seq":1,"peer":"bob","polite":true,"offerer":false}),
        );
        assert!(
            matches!(m, Some(Incoming::PeerJoined(RemotePeer { ref peer, offerer: false, polite: true })) if peer == "bob")
        );
        let m = parse_incoming(
            &json!({"type":"candidate","seq":2,"from":"bob","candidate":"candidate:1 1 udp 1 192.0.2.1 5 typ host"}),
        );
        assert!(matches!(m, Some(Incoming::Candidate { .. })));
        assert!(parse_incoming(&json!({"type":"pong","ack":3})).is_none());
        assert!(parse_incoming(&json!({"type":"peer_joined","peer":"x"})).is_none());
    }
}
