//! The peer's event loop: owns the UDP sockets, the TURN clients and the str0m `Rtc`, and
//! moves bytes between them, the signalling session and the application.
//!
//! One task, one `select!`: socket readers forward datagrams (and TURN stream frames) over a
//! channel, so the loop itself never blocks on a socket. Time goes into the sans-IO parts
//! (`Rtc`, `TurnClient`, STUN transactions) as `Instant`s read once per wake-up.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_stun::attr::XorMappedAddress;
use floe_stun::{Class, Message, MessageBuilder, Method, TransactionId};
use floe_turn::client::{StreamDecoder, TurnClient, TurnClientConfig, TurnEvent};
use serde_json::json;
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

use crate::ice_servers::{IceServer, TurnTransport};
use crate::pair::{CandidateType, LocalCandidate, SelectedPair};
use crate::signal::{self, Incoming, RemotePeer, Signal, SignalOptions};
use crate::PeerError;

/// The data channels of floe.js (negotiated out of band, RFC 8832 not used).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Chan {
    /// `chat`, stream id 0: text lines.
    Chat,
    /// `file`, stream id 1: the file protocol of [`crate::transfer`].
    File,
}

impl Chan {
    fn stream_id(self) -> u16 {
        match self {
            Chan::Chat => 0,
            Chan::File => 1,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Chan::Chat => "chat",
            Chan::File => "file",
        }
    }
}

/// Options of [`connect`].
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// Signalling server, room, identity.
    pub signal: SignalOptions,
    /// Talk to this peer (default: the first other peer in the room, or the first to join).
    pub remote: Option<String>,
    /// Offer only relayed candidates (like `iceTransportPolicy: "relay"`).
    pub relay_only: bool,
    /// Give up gathering after this long and signal end-of-candidates.
    pub gather_timeout: Duration,
    /// How long to wait for another peer to be in the room.
    pub wait_for_peer: Duration,
    /// Extra ICE servers (in addition to those in `welcome`), e.g. for tests.
    pub extra_ice_servers: Vec<IceServer>,
    /// Ignore the server's ICE servers and use only `extra_ice_servers`.
    pub replace_ice_servers: bool,
    /// Use only TURN servers reached over these transports (empty: all).
    pub turn_transports: Vec<TurnTransport>,
}

impl PeerOptions {
    /// Defaults: any remote peer, all candidate types, 10 s gathering, wait 5 min for a peer.
    pub fn new(signal: SignalOptions) -> Self {
        PeerOptions {
            signal,
            remote: None,
            relay_only: false,
            gather_timeout: Duration::from_secs(10),
            wait_for_peer: Duration::from_secs(300),
            extra_ice_servers: Vec::new(),
            replace_ice_servers: false,
            turn_transports: Vec::new(),
        }
    }
}

/// What the connection reports.
#[derive(Debug, Clone)]
pub enum PeerEvent {
    /// We gathered a candidate (and signalled it).
    LocalCandidate(LocalCandidate),
    /// The remote peer signalled a candidate.
    RemoteCandidate(CandidateType, SocketAddr),
    /// A TURN server could not be used.
    TurnFailed {
        /// The server.
        server: String,
        /// Why.
        reason: String,
    },
    /// ICE state (new, checking, connected, completed, disconnected).
    IceState(String),
    /// A data channel is open.
    ChannelOpen(Chan),
    /// A message on a data channel.
    Message {
        /// Which channel.
        chan: Chan,
        /// Binary (true) or text.
        binary: bool,
        /// Payload.
        data: Vec<u8>,
    },
    /// The selected candidate pair (again whenever it changes).
    Selected(SelectedPair),
    /// The connection ended.
    Closed(String),
}

enum Cmd {
    Send {
        chan: Chan,
        binary: bool,
        data: Vec<u8>,
        done: oneshot::Sender<Result<(), PeerError>>,
    },
    Flush(oneshot::Sender<()>),
    Close(oneshot::Sender<()>),
}

/// An established (or establishing) connection to one remote peer.
#[derive(Debug)]
pub struct Connection {
    /// Our peer id.
    pub local_peer: String,
    /// The remote peer's id.
    pub remote_peer: String,
    events: mpsc::Receiver<PeerEvent>,
    cmds: mpsc::Sender<Cmd>,
}

impl std::fmt::Debug for Cmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cmd")
    }
}

/// A cloneable handle for sending on a [`Connection`] from another task.
#[derive(Debug, Clone)]
pub struct Sender(mpsc::Sender<Cmd>);

impl Sender {
    /// As [`Connection::send`].
    pub async fn send(&self, chan: Chan, binary: bool, data: Vec<u8>) -> Result<(), PeerError> {
        let (done, rx) = oneshot::channel();
        self.0
            .send(Cmd::Send {
                chan,
                binary,
                data,
                done,
            })
            .await
            .map_err(|_| PeerError::Closed("connection task ended".into()))?;
        rx.await
            .map_err(|_| PeerError::Closed("connection task ended".into()))?
    }

    /// As [`Connection::flush`].
    pub async fn flush(&self) -> Result<(), PeerError> {
        let (tx, rx) = oneshot::channel();
        self.0
            .send(Cmd::Flush(tx))
            .await
            .map_err(|_| PeerError::Closed("connection task ended".into()))?;
        rx.await
            .map_err(|_| PeerError::Closed("connection task ended".into()))
    }
}

impl Connection {
    /// A handle for sending from another task.
    pub fn sender(&self) -> Sender {
        Sender(self.cmds.clone())
    }

    /// The next event; `None` after the connection ended.
    pub async fn next_event(&mut self) -> Option<PeerEvent> {
        self.events.recv().await
    }

    /// Queues a message; resolves once the SCTP stack accepted it (backpressure: at most about
    /// 1 MiB is buffered per connection).
    pub async fn send(&self, chan: Chan, binary: bool, data: Vec<u8>) -> Result<(), PeerError> {
        self.sender().send(chan, binary, data).await
    }

    /// Resolves when everything sent so far was acknowledged by the remote SCTP stack.
    pub async fn flush(&self) -> Result<(), PeerError> {
        self.sender().flush().await
    }

    /// Says `bye`, leaves the room, releases TURN allocations and closes the connection;
    /// returns when that is done (bounded: about 2 s).
    pub async fn close(self) {
        let (tx, rx) = oneshot::channel();
        if self.cmds.send(Cmd::Close(tx)).await.is_ok() {
            let _ = tokio::time::timeout(Duration::from_secs(3), rx).await;
        }
    }
}

/// Joins the room, waits for a remote peer, and starts connecting to it. Watch
/// [`Connection::next_event`] for `ChannelOpen` and `Selected`.
pub async fn connect(opts: PeerOptions) -> Result<Connection, PeerError> {
    let mut signal = signal::join(&opts.signal).await?;
    let (remote, early) = wait_for_remote(&mut signal, &opts).await?;
    let mut ice_servers = if opts.replace_ice_servers {
        Vec::new()
    } else {
        signal.welcome.ice_servers.clone()
    };
    ice_servers.extend(opts.extra_ice_servers.iter().cloned());
    ice_servers.retain(|s| match s {
        IceServer::Turn { transport, .. } => {
            opts.turn_transports.is_empty() || opts.turn_transports.contains(transport)
        }
        IceServer::Stun { .. } => true,
    });
    let (ev_tx, ev_rx) = mpsc::channel(1024);
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    let local_peer = signal.welcome.peer.clone();
    let remote_peer = remote.peer.clone();
    let driver = Driver::start(&opts, &ice_servers, remote, signal, ev_tx).await?;
    tokio::spawn(driver.run(cmd_rx, early));
    Ok(Connection {
        local_peer,
        remote_peer,
        events: ev_rx,
        cmds: cmd_tx,
    })
}

/// Waits until the peer to talk to is known; messages that arrive meanwhile are kept.
async fn wait_for_remote(
    signal: &mut Signal,
    opts: &PeerOptions,
) -> Result<(RemotePeer, Vec<Incoming>), PeerError> {
    let wanted = |p: &RemotePeer| opts.remote.as_deref().is_none_or(|r| r == p.peer);
    if let Some(p) = signal.welcome.peers.iter().find(|p| wanted(p)) {
        return Ok((p.clone(), Vec::new()));
    }
    let deadline = tokio::time::Instant::now() + opts.wait_for_peer;
    let mut early = Vec::new();
    loop {
        let m = tokio::time::timeout_at(deadline, signal.incoming.recv())
            .await
            .map_err(|_| PeerError::Timeout("no other peer joined the room".into()))?;
        match m {
            Some(Incoming::PeerJoined(p)) if wanted(&p) => return Ok((p, early)),
            Some(Incoming::Closed(r)) => {
                return Err(PeerError::Signal(format!("signalling closed: {r}")))
            }
            None => {
                let r = "connection ended";
                return Err(PeerError::Signal(format!("signalling closed: {r}")));
            }
            Some(Incoming::Error {
                code,
                message,
                fatal: true,
            }) => return Err(PeerError::Refused { code, message }),
            Some(other) => early.push(other),
        }
    }
}

/// What socket readers hand to the loop.
enum Net {
    Host {
        idx: usize,
        from: SocketAddr,
        data: Vec<u8>,
    },
    Turn {
        idx: usize,
        data: Vec<u8>,
    },
    TurnConnected {
        idx: usize,
        local: SocketAddr,
    },
    TurnDown {
        idx: usize,
        reason: String,
    },
}

struct HostSocket {
    socket: Arc<UdpSocket>,
    addr: SocketAddr,
}

enum TurnLink {
    Udp(Arc<UdpSocket>),
    Stream(mpsc::UnboundedSender<Vec<u8>>),
}

struct TurnSlot {
    client: TurnClient,
    link: TurnLink,
    server: SocketAddr,
    transport: TurnTransport,
    local: SocketAddr,
    relayed: Option<SocketAddr>,
    done: bool,
}

struct StunTxn {
    host: usize,
    server: SocketAddr,
    request: Vec<u8>,
    next_send: Instant,
    attempts: u32,
}

/// How long a TURN transport may take before the next one is tried as well.
const TURN_GRACE: Duration = Duration::from_secs(1);

fn transport_rank(t: TurnTransport) -> u8 {
    match t {
        TurnTransport::Udp => 0,
        TurnTransport::Tcp => 1,
        TurnTransport::Tls => 2,
    }
}

/// RFC 8489 §6.2.1 retransmissions, shortened: 500 ms, then doubling, 5 sends (≈ 7.5 s).
const STUN_RTO: Duration = Duration::from_millis(500);
const STUN_SENDS: u32 = 5;
/// Keep at most this much queued in SCTP before asking the application to wait.
const MAX_BUFFERED: usize = 1 << 20;

/// A message waiting for room in SCTP: channel, binary, payload, completion.
type Outgoing = (Chan, bool, Vec<u8>, oneshot::Sender<Result<(), PeerError>>);

struct Driver {
    rtc: Rtc,
    signal: Signal,
    remote: RemotePeer,
    events: mpsc::Sender<PeerEvent>,
    hosts: Vec<HostSocket>,
    turns: Vec<TurnSlot>,
    stun: HashMap<[u8; 12], StunTxn>,
    net_tx: mpsc::Sender<Net>,
    net_rx: mpsc::Receiver<Net>,
    locals: Vec<LocalCandidate>,
    remotes: Vec<(CandidateType, SocketAddr)>,
    /// Remote candidates received before the remote description.
    held_remote: Vec<String>,
    has_remote_sdp: bool,
    pending_offer: Option<str0m::change::SdpPendingOffer>,
    channels: HashMap<ChannelId, Chan>,
    open: Vec<Chan>,
    outbox: VecDeque<Outgoing>,
    flushes: Vec<oneshot::Sender<()>>,
    relay_only: bool,
    mid: String,
    gather_deadline: Instant,
    end_of_candidates_sent: bool,
    selected: Option<SelectedPair>,
    connected: bool,
    ca_file: Option<std::path::PathBuf>,
    rtc_timeout: Option<Instant>,
    to_app: VecDeque<PeerEvent>,
    /// TURN servers not started yet, in transport order.
    turn_queue: Vec<(SocketAddr, IceServer)>,
    next_turn_group: Instant,
}

impl Driver {
    async fn start(
        opts: &PeerOptions,
        ice_servers: &[IceServer],
        remote: RemotePeer,
        signal: Signal,
        events: mpsc::Sender<PeerEvent>,
    ) -> Result<Driver, PeerError> {
        let now = Instant::now();
        let rtc = RtcConfig::new()
            .set_stats_interval(Some(Duration::from_millis(500)))
            .build(now);
        let (net_tx, net_rx) = mpsc::channel(1024);
        let mut d = Driver {
            rtc,
            signal,
            remote,
            events,
            hosts: Vec::new(),
            turns: Vec::new(),
            stun: HashMap::new(),
            net_tx,
            net_rx,
            locals: Vec::new(),
            remotes: Vec::new(),
            held_remote: Vec::new(),
            has_remote_sdp: false,
            pending_offer: None,
            channels: HashMap::new(),
            open: Vec::new(),
            outbox: VecDeque::new(),
            flushes: Vec::new(),
            relay_only: opts.relay_only,
            mid: "0".into(),
            gather_deadline: now + opts.gather_timeout,
            end_of_candidates_sent: false,
            selected: None,
            connected: false,
            ca_file: opts.signal.ca_file.clone(),
            rtc_timeout: None,
            to_app: VecDeque::new(),
            turn_queue: Vec::new(),
            next_turn_group: now,
        };
        let servers = resolve_servers(ice_servers).await;
        let signal_ip = signal_ip(&opts.signal.url).await;
        let local_ips = local_ips(servers.iter().map(|(a, _)| *a).chain(signal_ip));
        for ip in local_ips {
            let socket = UdpSocket::bind(SocketAddr::new(ip, 0)).await?;
            let addr = socket.local_addr()?;
            let socket = Arc::new(socket);
            let idx = d.hosts.len();
            spawn_udp_reader(socket.clone(), d.net_tx.clone(), move |from, data| {
                Net::Host { idx, from, data }
            });
            d.hosts.push(HostSocket { socket, addr });
            if !d.relay_only {
                d.add_local(
                    LocalCandidate {
                        kind: CandidateType::Host,
                        addr,
                        base: addr,
                        turn: None,
                    },
                    false,
                );
            }
        }
        if d.hosts.is_empty() {
            return Err(PeerError::Config("no usable local IP address".into()));
        }
        for (addr, server) in servers {
            match server {
                IceServer::Stun { .. } if !d.relay_only => d.start_stun(addr, now),
                IceServer::Turn { .. } => d.turn_queue.push((addr, server)),
                IceServer::Stun { .. } => {}
            }
        }
        // UDP first, then TCP, then TLS (a stable sort keeps the server order within each).
        d.turn_queue.sort_by_key(|(_, s)| match s {
            IceServer::Turn { transport, .. } => transport_rank(*transport),
            IceServer::Stun { .. } => 0,
        });
        d.start_due_turns(now).await?;
        if d.remote.offerer {
            d.make_offer()?;
        }
        Ok(d)
    }

    /// Queues an event for the application; [`Driver::deliver`] hands them over in order.
    fn emit(&mut self, ev: PeerEvent) {
        self.to_app.push_back(ev);
    }

    fn start_stun(&mut self, server: SocketAddr, now: Instant) {
        for (idx, h) in self.hosts.iter().enumerate() {
            if h.addr.is_ipv4() != server.is_ipv4() {
                continue;
            }
            let tid = TransactionId(rand::random());
            let mut buf = vec![0u8; 64];
            let Ok(mut b) = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, tid)
            else {
                continue;
            };
            if b.add_fingerprint().is_err() {
                continue;
            }
            let n = b.finish();
            buf.truncate(n);
            self.stun.insert(
                tid.0,
                StunTxn {
                    host: idx,
                    server,
                    request: buf,
                    next_send: now,
                    attempts: 0,
                },
            );
        }
    }

    async fn start_turn(
        &mut self,
        server: SocketAddr,
        host_name: &str,
        transport: TurnTransport,
        username: &str,
        password: &str,
        now: Instant,
    ) -> Result<(), PeerError> {
        let Some(host) = self
            .hosts
            .iter()
            .find(|h| h.addr.is_ipv4() == server.is_ipv4())
        else {
            return Ok(());
        };
        let host_ip = host.addr.ip();
        let idx = self.turns.len();
        let mut cfg = TurnClientConfig::new(server, username, password);
        cfg.software = Some(concat!("floe-peer ", env!("CARGO_PKG_VERSION")).to_owned());
        cfg.stream = transport != TurnTransport::Udp;
        let client = TurnClient::new(cfg, now);
        let (link, local) = match transport {
            TurnTransport::Udp => {
                let socket = Arc::new(UdpSocket::bind(SocketAddr::new(host_ip, 0)).await?);
                let local = socket.local_addr()?;
                spawn_udp_reader(socket.clone(), self.net_tx.clone(), move |from, data| {
                    if from == server {
                        Net::Turn { idx, data }
                    } else {
                        // Only the server talks on this socket; anything else is dropped.
                        Net::Turn {
                            idx,
                            data: Vec::new(),
                        }
                    }
                });
                (TurnLink::Udp(socket), local)
            }
            TurnTransport::Tcp | TurnTransport::Tls => {
                let (tx, rx) = mpsc::unbounded_channel();
                let tls = (transport == TurnTransport::Tls).then(|| TlsTarget {
                    name: host_name.to_owned(),
                    ca_file: self.ca_file.clone(),
                });
                spawn_turn_stream(idx, server, tls, rx, self.net_tx.clone());
                (TurnLink::Stream(tx), SocketAddr::new(host_ip, 0))
            }
        };
        self.turns.push(TurnSlot {
            client,
            link,
            server,
            transport,
            local,
            relayed: None,
            done: false,
        });
        Ok(())
    }
}

impl Driver {
    fn channel_config(chan: Chan) -> ChannelConfig {
        ChannelConfig {
            label: chan.label().to_owned(),
            negotiated: Some(chan.stream_id()),
            ..ChannelConfig::default()
        }
    }

    /// We joined later: we offer (docs/signalling.md §3, roles).
    fn make_offer(&mut self) -> Result<(), PeerError> {
        let mut api = self.rtc.sdp_api();
        let chat = api.add_channel_with_config(Self::channel_config(Chan::Chat));
        let file = api.add_channel_with_config(Self::channel_config(Chan::File));
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| PeerError::Rtc("nothing to offer".into()))?;
        self.channels.insert(chat, Chan::Chat);
        self.channels.insert(file, Chan::File);
        self.pending_offer = Some(pending);
        let sdp = offer.to_sdp_string();
        self.mid = first_mid(&sdp).unwrap_or_else(|| "0".into());
        self.signal
            .send(json!({"type": "offer", "to": self.remote.peer, "sdp": sdp}))
    }

    fn on_sdp(&mut self, kind: &str, sdp: &str) -> Result<(), PeerError> {
        match kind {
            "offer" => {
                if self.pending_offer.is_some() && !self.remote.polite {
                    // Glare and we are impolite: ignore theirs (perfect negotiation).
                    return Ok(());
                }
                self.pending_offer = None;
                let offer = str0m::change::SdpOffer::from_sdp_string(sdp)
                    .map_err(|e| PeerError::Rtc(format!("bad offer: {e}")))?;
                let answer = self
                    .rtc
                    .sdp_api()
                    .accept_offer(offer)
                    .map_err(|e| PeerError::Rtc(format!("cannot accept offer: {e}")))?;
                if self.channels.is_empty() {
                    for chan in [Chan::Chat, Chan::File] {
                        let id = self
                            .rtc
                            .direct_api()
                            .create_data_channel(Self::channel_config(chan));
                        self.channels.insert(id, chan);
                    }
                }
                let sdp_out = answer.to_sdp_string();
                self.mid = first_mid(&sdp_out).unwrap_or_else(|| "0".into());
                self.signal
                    .send(json!({"type": "answer", "to": self.remote.peer, "sdp": sdp_out}))?;
            }
            "answer" => {
                let Some(pending) = self.pending_offer.take() else {
                    return Ok(());
                };
                let answer = str0m::change::SdpAnswer::from_sdp_string(sdp)
                    .map_err(|e| PeerError::Rtc(format!("bad answer: {e}")))?;
                self.rtc
                    .sdp_api()
                    .accept_answer(pending, answer)
                    .map_err(|e| PeerError::Rtc(format!("cannot accept answer: {e}")))?;
            }
            _ => return Ok(()),
        }
        self.has_remote_sdp = true;
        for line in sdp.lines() {
            if let Some(c) = line.trim().strip_prefix("a=") {
                if c.starts_with("candidate:") {
                    self.on_remote_candidate(c);
                }
            }
        }
        for c in std::mem::take(&mut self.held_remote) {
            self.on_remote_candidate(&c);
        }
        Ok(())
    }

    fn on_remote_candidate(&mut self, line: &str) {
        if !self.has_remote_sdp {
            self.held_remote.push(line.to_owned());
            return;
        }
        let line = line.trim().trim_start_matches("a=");
        let Ok(c) = Candidate::from_sdp_string(line) else {
            // e.g. an mDNS ".local" host candidate, or TCP candidates we cannot use.
            tracing::debug!("ignoring remote candidate {line}");
            return;
        };
        if c.proto() != Protocol::Udp {
            return;
        }
        let kind = line
            .split_whitespace()
            .skip_while(|t| *t != "typ")
            .nth(1)
            .and_then(CandidateType::from_typ)
            .unwrap_or(CandidateType::Host);
        let addr = c.addr();
        if self.remotes.iter().any(|(_, a)| *a == addr) {
            return;
        }
        self.remotes.push((kind, addr));
        self.emit(PeerEvent::RemoteCandidate(kind, addr));
        let now = Instant::now();
        for t in &mut self.turns {
            if t.relayed.is_some_and(|r| r.is_ipv4() == addr.is_ipv4()) {
                t.client.create_permission(addr.ip(), now);
            }
        }
        self.rtc.add_remote_candidate(c);
    }

    /// Adds a local candidate to ICE and (when `trickle`) sends it to the remote peer.
    fn add_local(&mut self, cand: LocalCandidate, trickle: bool) {
        let c = match cand.kind {
            CandidateType::Host => Candidate::host(cand.addr, "udp"),
            CandidateType::Srflx => Candidate::server_reflexive(cand.addr, cand.base, "udp"),
            CandidateType::Relay => Candidate::relayed(cand.addr, cand.base, "udp"),
            CandidateType::Prflx => return,
        };
        let Ok(c) = c else {
            return;
        };
        let Some(added) = self.rtc.add_local_candidate(c) else {
            return; // redundant
        };
        let line = added.to_sdp_string();
        self.locals.push(cand);
        self.emit(PeerEvent::LocalCandidate(cand));
        if trickle {
            let _ = self.signal.send(json!({
                "type": "candidate", "to": self.remote.peer, "candidate": line,
                "sdpMid": self.mid, "sdpMLineIndex": 0,
            }));
        }
    }

    fn gathering_done(&self) -> bool {
        self.stun.is_empty() && self.turn_queue.is_empty() && self.turns.iter().all(|t| t.done)
    }

    /// Starts the next transport's TURN allocations once the previous transport's finished or
    /// [`TURN_GRACE`] passed. str0m ranks relayed candidates by the order they are added (RFC
    /// 8445 §5.1.2.1 local preference, counted down), so this order makes a relay over UDP
    /// preferred to one over TCP, and TCP to TLS, as browsers do, while a blocked transport
    /// delays the next by at most the grace.
    async fn start_due_turns(&mut self, now: Instant) -> Result<(), PeerError> {
        let Some((
            _,
            IceServer::Turn {
                transport: next, ..
            },
        )) = self.turn_queue.first()
        else {
            return Ok(());
        };
        let next = *next;
        let previous_done = self.turns.iter().all(|t| t.done);
        if !(self.turns.is_empty() || previous_done || now >= self.next_turn_group) {
            return Ok(());
        }
        while let Some((
            addr,
            IceServer::Turn {
                host,
                transport,
                username,
                credential,
                ..
            },
        )) = self.turn_queue.first().cloned()
        {
            if transport != next {
                break;
            }
            self.turn_queue.remove(0);
            self.start_turn(addr, &host, transport, &username, &credential, now)
                .await?;
        }
        self.next_turn_group = now + TURN_GRACE;
        Ok(())
    }

    fn maybe_end_of_candidates(&mut self, now: Instant) -> Result<(), PeerError> {
        if !self.end_of_candidates_sent && (self.gathering_done() || now >= self.gather_deadline) {
            if self.locals.is_empty() {
                return Err(PeerError::Closed(if self.relay_only {
                    "relay-only, and no TURN server gave us a relayed address".into()
                } else {
                    "gathered no candidate".into()
                }));
            }
            self.end_of_candidates_sent = true;
            let _ = self
                .signal
                .send(json!({"type": "end_of_candidates", "to": self.remote.peer}));
        }
        Ok(())
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>, early: Vec<Incoming>) {
        for m in early {
            if let Err(e) = self.on_signal(m) {
                self.emit(PeerEvent::Closed(e.to_string()));
                self.deliver().await;
                return;
            }
        }
        let reason = loop {
            let now = Instant::now();
            if let Err(e) = self.pump(now).await {
                break e.to_string();
            }
            let deadline = self.next_deadline(now);
            tokio::select! {
                net = self.net_rx.recv() => {
                    let Some(net) = net else { break "socket readers ended".into() };
                    self.on_net(net, Instant::now());
                }
                m = self.signal.incoming.recv() => {
                    let Some(m) = m else { break "signalling ended".into() };
                    if let Err(e) = self.on_signal(m) {
                        break e.to_string();
                    }
                }
                c = cmds.recv() => match c {
                    Some(Cmd::Send { chan, binary, data, done }) => self.outbox.push_back((chan, binary, data, done)),
                    Some(Cmd::Flush(tx)) => self.flushes.push(tx),
                    Some(Cmd::Close(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        break "closed by the application".into();
                    }
                    None => {
                        self.shutdown().await;
                        break "closed by the application".into();
                    }
                },
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let now = Instant::now();
                    if let Err(e) = self.rtc.handle_input(Input::Timeout(now)) {
                        break e.to_string();
                    }
                    for t in &mut self.turns {
                        t.client.handle_timeout(now);
                    }
                }
            }
        };
        for (_, _, _, done) in self.outbox.drain(..) {
            let _ = done.send(Err(PeerError::Closed(reason.clone())));
        }
        self.deliver().await;
        let _ = self.events.send(PeerEvent::Closed(reason)).await;
    }

    /// `bye` to the peer, Refresh(0) for every allocation (RFC 8656 §7), `leave`.
    async fn shutdown(&mut self) {
        let _ = self
            .signal
            .send(json!({"type": "bye", "to": self.remote.peer}));
        let now = Instant::now();
        for t in &mut self.turns {
            t.client.release(now);
        }
        let _ = self.pump(now).await;
        self.rtc.disconnect();
        self.signal.leave().await;
    }

    fn next_deadline(&mut self, now: Instant) -> Instant {
        let mut d = now + Duration::from_secs(1);
        if let Some(t) = self.rtc_timeout {
            d = d.min(t);
        }
        for t in &self.turns {
            if let Some(x) = t.client.poll_timeout() {
                d = d.min(x);
            }
        }
        for s in self.stun.values() {
            d = d.min(s.next_send);
        }
        if !self.end_of_candidates_sent {
            d = d.min(self.gather_deadline);
        }
        if !self.turn_queue.is_empty() {
            d = d.min(self.next_turn_group);
        }
        d.max(now)
    }

    /// Drives every sans-IO part until it has nothing more to say.
    async fn pump(&mut self, now: Instant) -> Result<(), PeerError> {
        self.start_due_turns(now).await?;
        self.send_stun(now).await;
        self.pump_turns(now).await;
        self.write_outbox();
        loop {
            match self.rtc.poll_output() {
                Ok(Output::Timeout(t)) => {
                    self.rtc_timeout = Some(t);
                    break;
                }
                Ok(Output::Transmit(t)) => {
                    self.transmit(t.source, t.destination, &t.contents, now)
                        .await
                }
                Ok(Output::Event(e)) => self.on_rtc_event(e)?,
                Err(e) => return Err(PeerError::Rtc(e.to_string())),
            }
        }
        // Transmits through TURN queued more bytes for the servers.
        self.pump_turns(now).await;
        self.maybe_end_of_candidates(now)?;
        self.check_flushes();
        self.deliver().await;
        Ok(())
    }

    /// Hands queued events to the application. Awaiting here is the receive-side backpressure:
    /// while the application is slow, the loop reads no sockets, the kernel's buffers fill and
    /// SCTP's congestion control slows the sender. An application that dropped its receiver
    /// just stops getting events.
    async fn deliver(&mut self) {
        while let Some(ev) = self.to_app.pop_front() {
            if self.events.send(ev).await.is_err() {
                self.to_app.clear();
            }
        }
    }

    async fn transmit(&mut self, source: SocketAddr, dest: SocketAddr, data: &[u8], now: Instant) {
        if let Some(h) = self.hosts.iter().find(|h| h.addr == source) {
            if let Err(e) = h.socket.send_to(data, dest).await {
                tracing::debug!("send to {dest}: {e}");
            }
            return;
        }
        if let Some(t) = self.turns.iter_mut().find(|t| t.relayed == Some(source)) {
            if let Err(e) = t.client.send_to(dest, data, now) {
                tracing::debug!("relay to {dest}: {e}");
            }
            return;
        }
        tracing::debug!("no socket for transmit from {source}");
    }

    async fn send_stun(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (tid, t) in &mut self.stun {
            if t.next_send > now {
                continue;
            }
            if t.attempts >= STUN_SENDS {
                expired.push(*tid);
                continue;
            }
            if let Some(h) = self.hosts.get(t.host) {
                let _ = h.socket.send_to(&t.request, t.server).await;
            }
            t.next_send = now + STUN_RTO * 2u32.pow(t.attempts);
            t.attempts += 1;
        }
        for tid in expired {
            if let Some(t) = self.stun.remove(&tid) {
                tracing::info!("no STUN answer from {}", t.server);
            }
        }
    }

    async fn pump_turns(&mut self, now: Instant) {
        let mut new_locals = Vec::new();
        let mut failures = Vec::new();
        for t in &mut self.turns {
            while let Some(bytes) = t.client.poll_transmit() {
                match &t.link {
                    TurnLink::Udp(s) => {
                        let _ = s.send_to(&bytes, t.server).await;
                    }
                    TurnLink::Stream(tx) => {
                        let _ = tx.send(bytes);
                    }
                }
            }
            while let Some(ev) = t.client.poll_event() {
                match ev {
                    TurnEvent::Allocated { relayed, .. } => {
                        t.relayed = Some(relayed);
                        t.done = true;
                        new_locals.push(LocalCandidate {
                            kind: CandidateType::Relay,
                            addr: relayed,
                            base: relayed,
                            turn: Some(t.transport),
                        });
                    }
                    TurnEvent::AllocationFailed(e) => {
                        t.done = true;
                        failures.push((format!("{} {}", t.transport, t.server), e.to_string()));
                    }
                    other => tracing::debug!("turn {}: {other:?}", t.server),
                }
            }
        }
        let _ = now;
        for c in new_locals {
            // Permissions for the remote candidates we already know (RFC 8656 §9).
            let remote_ips: Vec<IpAddr> = self.remotes.iter().map(|(_, a)| a.ip()).collect();
            if let Some(t) = self.turns.iter_mut().find(|t| t.relayed == Some(c.addr)) {
                for ip in remote_ips
                    .into_iter()
                    .filter(|ip| ip.is_ipv4() == c.addr.is_ipv4())
                {
                    t.client.create_permission(ip, now);
                }
            }
            self.add_local(c, true);
        }
        for (server, reason) in failures {
            self.emit(PeerEvent::TurnFailed { server, reason });
        }
    }

    fn on_net(&mut self, net: Net, now: Instant) {
        match net {
            Net::Host { idx, from, data } => {
                if self.on_stun_response(idx, from, &data) {
                    return;
                }
                let Some(h) = self.hosts.get(idx) else { return };
                let Ok(r) = Receive::new(Protocol::Udp, from, h.addr, &data) else {
                    return;
                };
                if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
                    tracing::debug!("rtc input: {e}");
                }
            }
            Net::Turn { idx, data } => {
                if data.is_empty() {
                    return;
                }
                let Some(t) = self.turns.get_mut(idx) else {
                    return;
                };
                let relayed = t.relayed;
                if let Some((peer, payload)) = t.client.handle_input(&data, now) {
                    let Some(relayed) = relayed else { return };
                    let Ok(r) = Receive::new(Protocol::Udp, peer, relayed, payload) else {
                        return;
                    };
                    if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
                        tracing::debug!("rtc input: {e}");
                    }
                }
            }
            Net::TurnConnected { idx, local } => {
                if let Some(t) = self.turns.get_mut(idx) {
                    t.local = local;
                }
            }
            Net::TurnDown { idx, reason } => {
                if let Some(t) = self.turns.get_mut(idx) {
                    let server = format!("{} {}", t.transport, t.server);
                    if !t.done {
                        t.done = true;
                        self.emit(PeerEvent::TurnFailed { server, reason });
                    } else if let Some(relayed) = t.relayed.take() {
                        tracing::warn!(
                            "TURN connection {server} lost ({reason}); relay {relayed} gone"
                        );
                    }
                }
            }
        }
    }

    /// A Binding response to one of our srflx transactions?
    fn on_stun_response(&mut self, idx: usize, from: SocketAddr, data: &[u8]) -> bool {
        if data.len() < 20 || data[0] >> 6 != 0 {
            return false;
        }
        let Ok(m) = Message::parse(data) else {
            return false;
        };
        let tid = m.transaction_id().0;
        let Some(t) = self.stun.get(&tid) else {
            return false;
        };
        if t.server != from || t.host != idx {
            return false;
        }
        self.stun.remove(&tid);
        if m.class() != Class::SuccessResponse {
            return true;
        }
        let Some(Ok(mapped)) = m.get::<XorMappedAddress>() else {
            return true;
        };
        let base = self.hosts[idx].addr;
        let mapped = mapped.0;
        if mapped != base && !self.relay_only && !self.locals.iter().any(|l| l.addr == mapped) {
            self.add_local(
                LocalCandidate {
                    kind: CandidateType::Srflx,
                    addr: mapped,
                    base,
                    turn: None,
                },
                true,
            );
        }
        true
    }

    fn on_signal(&mut self, m: Incoming) -> Result<(), PeerError> {
        match m {
            Incoming::Sdp { from, kind, sdp } if from == self.remote.peer => {
                self.on_sdp(&kind, &sdp)?
            }
            Incoming::Candidate { from, candidate } if from == self.remote.peer => {
                self.on_remote_candidate(&candidate)
            }
            Incoming::Bye { from } if from == self.remote.peer => {
                return Err(PeerError::Closed(format!("{from} said bye")))
            }
            Incoming::PeerLeft { peer, reason } if peer == self.remote.peer && !self.connected => {
                return Err(PeerError::Closed(format!("{peer} left ({reason})")))
            }
            Incoming::Error {
                code,
                message,
                fatal,
            } => {
                tracing::warn!("signalling error {code}: {message}");
                if fatal && !self.connected {
                    return Err(PeerError::Refused { code, message });
                }
            }
            Incoming::Closed(reason) if !self.connected => {
                return Err(PeerError::Signal(format!("signalling closed: {reason}")))
            }
            _ => {}
        }
        Ok(())
    }

    fn on_rtc_event(&mut self, e: Event) -> Result<(), PeerError> {
        match e {
            Event::IceConnectionStateChange(s) => {
                let name = match s {
                    IceConnectionState::New => "new",
                    IceConnectionState::Checking => "checking",
                    IceConnectionState::Connected => "connected",
                    IceConnectionState::Completed => "completed",
                    IceConnectionState::Disconnected => "disconnected",
                };
                self.emit(PeerEvent::IceState(name.into()));
            }
            Event::Connected => self.connected = true,
            Event::ChannelOpen(id, label) => {
                let chan = self.channels.get(&id).copied().or(match label.as_str() {
                    "chat" => Some(Chan::Chat),
                    "file" => Some(Chan::File),
                    _ => None,
                });
                if let Some(chan) = chan {
                    self.channels.insert(id, chan);
                    if !self.open.contains(&chan) {
                        self.open.push(chan);
                        self.emit(PeerEvent::ChannelOpen(chan));
                    }
                }
            }
            Event::ChannelData(d) => {
                if let Some(chan) = self.channels.get(&d.id).copied() {
                    self.emit(PeerEvent::Message {
                        chan,
                        binary: d.binary,
                        data: d.data,
                    });
                }
            }
            Event::ChannelClose(_) | Event::Closed => {
                return Err(PeerError::Closed("the remote peer closed".into()))
            }
            Event::PeerStats(s) => {
                if let (true, Some(p)) = (self.connected, s.selected_candidate_pair) {
                    let pair = SelectedPair::classify(
                        p.local.addr,
                        p.remote.addr,
                        &self.locals,
                        &self.remotes,
                        p.current_round_trip_time.or(s.rtt),
                    );
                    let changed = self
                        .selected
                        .is_none_or(|old| (old.local, old.remote) != (pair.local, pair.remote));
                    if changed && pair.rtt.is_some() {
                        self.selected = Some(pair);
                        self.emit(PeerEvent::Selected(pair));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn write_outbox(&mut self) {
        while let Some((chan, binary, data, _)) = self.outbox.front() {
            let Some(id) = self.channel_id(*chan) else {
                break;
            };
            if !self.open.contains(chan) {
                break;
            }
            let Some(mut ch) = self.rtc.channel(id) else {
                break;
            };
            if ch.buffered_amount() > MAX_BUFFERED {
                break;
            }
            match ch.write(*binary, data) {
                Ok(true) => {
                    if let Some((_, _, _, done)) = self.outbox.pop_front() {
                        let _ = done.send(Ok(()));
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    if let Some((_, _, _, done)) = self.outbox.pop_front() {
                        let _ = done.send(Err(PeerError::Rtc(e.to_string())));
                    }
                }
            }
        }
    }

    fn channel_id(&self, chan: Chan) -> Option<ChannelId> {
        self.channels
            .iter()
            .find(|(_, c)| **c == chan)
            .map(|(id, _)| *id)
    }

    fn check_flushes(&mut self) {
        if self.flushes.is_empty() || !self.outbox.is_empty() {
            return;
        }
        let ids: Vec<ChannelId> = self.channels.keys().copied().collect();
        let buffered: usize = ids
            .into_iter()
            .filter_map(|id| self.rtc.channel(id).map(|mut c| c.buffered_amount()))
            .sum();
        if buffered == 0 {
            for f in self.flushes.drain(..) {
                let _ = f.send(());
            }
        }
    }
}

fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=mid:"))
        .map(str::to_owned)
}

/// Resolves ICE server host names (first address of each).
async fn resolve_servers(servers: &[IceServer]) -> Vec<(SocketAddr, IceServer)> {
    let mut out = Vec::new();
    for s in servers {
        let (host, port) = match s {
            IceServer::Stun { host, port } | IceServer::Turn { host, port, .. } => (host, *port),
        };
        let addr = match host.parse::<IpAddr>() {
            Ok(ip) => Some(SocketAddr::new(ip, port)),
            Err(_) => tokio::net::lookup_host((host.as_str(), port))
                .await
                .ok()
                .and_then(|mut a| a.next()),
        };
        match addr {
            Some(a) => out.push((a, s.clone())),
            None => tracing::warn!("cannot resolve ICE server {host}"),
        }
    }
    out
}

async fn signal_ip(url: &str) -> Option<SocketAddr> {
    let rest = url.split_once("://").map(|(_, r)| r)?;
    let authority = rest.split('/').next()?;
    let with_port = if authority.contains(':') && !authority.ends_with(']') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    tokio::net::lookup_host(with_port).await.ok()?.next()
}

/// The local addresses the kernel would use to reach `targets` (a connected UDP socket sends
/// nothing; it only consults the routing table). These are our host candidates' IPs.
fn local_ips(targets: impl Iterator<Item = SocketAddr>) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    for t in targets {
        let bind: SocketAddr = if t.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(s) = std::net::UdpSocket::bind(bind) else {
            continue;
        };
        if s.connect(t).is_err() {
            continue;
        }
        if let Ok(local) = s.local_addr() {
            if !local.ip().is_unspecified() && !ips.contains(&local.ip()) {
                ips.push(local.ip());
            }
        }
    }
    ips
}

fn spawn_udp_reader(
    socket: Arc<UdpSocket>,
    tx: mpsc::Sender<Net>,
    wrap: impl Fn(SocketAddr, Vec<u8>) -> Net + Send + 'static,
) {
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        loop {
            match socket.recv_from(&mut buf).await {
                Ok((n, from)) => {
                    if tx.send(wrap(from, buf[..n].to_vec())).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    // ICMP port unreachable surfaces as ECONNREFUSED on Linux; keep reading.
                    tracing::trace!("udp recv: {e}");
                    if tx.is_closed() {
                        return;
                    }
                }
            }
        }
    });
}

#[derive(Debug, Clone)]
struct TlsTarget {
    name: String,
    ca_file: Option<std::path::PathBuf>,
}

/// Connects to a TURN server over TCP (and TLS), then moves frames both ways.
fn spawn_turn_stream(
    idx: usize,
    server: SocketAddr,
    tls: Option<TlsTarget>,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    tx: mpsc::Sender<Net>,
) {
    tokio::spawn(async move {
        let down = |reason: String| Net::TurnDown { idx, reason };
        let tcp = match tokio::time::timeout(
            Duration::from_secs(5),
            tokio::net::TcpStream::connect(server),
        )
        .await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let _ = tx.send(down(format!("connect: {e}"))).await;
                return;
            }
            Err(_) => {
                let _ = tx.send(down("connect timed out".into())).await;
                return;
            }
        };
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().unwrap_or(server);
        let reason = match tls {
            None => {
                let _ = tx.send(Net::TurnConnected { idx, local }).await;
                pump_stream(idx, tcp, &mut rx, &tx).await
            }
            Some(t) => match tls_connect(tcp, &t).await {
                Ok(s) => {
                    let _ = tx.send(Net::TurnConnected { idx, local }).await;
                    pump_stream(idx, s, &mut rx, &tx).await
                }
                Err(e) => e,
            },
        };
        let _ = tx.send(down(reason)).await;
    });
}

async fn tls_connect(
    tcp: tokio::net::TcpStream,
    t: &TlsTarget,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let config = crate::tls::client_config(t.ca_file.as_deref()).map_err(|e| e.to_string())?;
    let name = rustls_pki_types::ServerName::try_from(t.name.clone())
        .map_err(|e| format!("TLS name {}: {e}", t.name))?;
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_owned())?
    .map_err(|e| format!("TLS: {e}"))
}

async fn pump_stream<S>(
    idx: usize,
    stream: S,
    rx: &mut mpsc::UnboundedReceiver<Vec<u8>>,
    tx: &mpsc::Sender<Net>,
) -> String
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut r, mut w) = tokio::io::split(stream);
    let mut framer = StreamDecoder::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(out) = out else { return "closed".into() };
                if let Err(e) = w.write_all(&out).await {
                    return format!("write: {e}");
                }
            }
            n = r.read(&mut buf) => {
                let n = match n {
                    Ok(0) => return "closed by server".into(),
                    Ok(n) => n,
                    Err(e) => return format!("read: {e}"),
                };
                framer.push(&buf[..n]);
                loop {
                    match framer.next_frame() {
                        Ok(Some(frame)) => {
                            if tx.send(Net::Turn { idx, data: frame.to_vec() }).await.is_err() {
                                return "closed".into();
                            }
                        }
                        Ok(None) => break,
                        Err(_) => return "the server sent something that is not STUN or ChannelData".into(),
                    }
                }
            }
        }
    }
}
