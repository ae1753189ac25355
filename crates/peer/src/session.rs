//! The peer's IO shell around [`PeerCore`]: owns the UDP sockets, the TURN links (UDP socket,
//! TCP or TLS stream) and the signalling session, and carries out the core's outputs.
//!
//! One task, one `select!`: socket readers forward datagrams (and TURN stream frames) over a
//! channel, so the loop itself never blocks on a socket. The clock is read once per wake-up and
//! passed to the core.
//!
//! This file holds the public API and the event loop; `session/sockets.rs` the host candidate
//! sockets (server resolution, local address discovery, UDP readers) and `session/turn_stream.rs`
//! the TCP/TLS links to TURN servers.

mod sockets;
mod turn_stream;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};

pub use crate::core::{Chan, PeerEvent};
use crate::core::{CoreConfig, Output, PeerCore};
use crate::ice_servers::{IceServer, TurnTransport};
use crate::signal::{self, Incoming, RemotePeer, Signal, SignalOptions};
use crate::PeerError;
use sockets::{local_ips, resolve_servers, signal_ip, spawn_udp_reader};
use turn_stream::{spawn_turn_stream, TlsTarget};

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
    let shell = Shell::start(&opts, &ice_servers, remote, signal, ev_tx).await?;
    tokio::spawn(shell.run(cmd_rx, early));
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
        local: SocketAddr,
        from: SocketAddr,
        data: Vec<u8>,
    },
    Turn {
        idx: usize,
        data: Vec<u8>,
    },
    TurnDown {
        idx: usize,
        reason: String,
    },
}

enum TurnLink {
    Udp(Arc<UdpSocket>, SocketAddr),
    Stream(mpsc::UnboundedSender<Vec<u8>>),
}

struct Shell {
    core: PeerCore,
    signal: Signal,
    events: mpsc::Sender<PeerEvent>,
    hosts: HashMap<SocketAddr, Arc<UdpSocket>>,
    turns: HashMap<usize, TurnLink>,
    net_tx: mpsc::Sender<Net>,
    net_rx: mpsc::Receiver<Net>,
    tickets: HashMap<u64, oneshot::Sender<Result<(), PeerError>>>,
    flushes: Vec<oneshot::Sender<()>>,
    ca_file: Option<std::path::PathBuf>,
    to_app: VecDeque<PeerEvent>,
}

impl Shell {
    async fn start(
        opts: &PeerOptions,
        ice_servers: &[IceServer],
        remote: RemotePeer,
        signal: Signal,
        events: mpsc::Sender<PeerEvent>,
    ) -> Result<Shell, PeerError> {
        let (net_tx, net_rx) = mpsc::channel(1024);
        let servers = resolve_servers(ice_servers).await;
        let signal_ip = signal_ip(&opts.signal.url).await;
        let mut hosts = HashMap::new();
        let mut addrs = Vec::new();
        for ip in local_ips(servers.iter().map(|(a, _)| *a).chain(signal_ip)) {
            let socket = Arc::new(UdpSocket::bind(SocketAddr::new(ip, 0)).await?);
            let local = socket.local_addr()?;
            spawn_udp_reader(socket.clone(), net_tx.clone(), move |from, data| {
                Net::Host { local, from, data }
            });
            hosts.insert(local, socket);
            addrs.push(local);
        }
        let cfg = CoreConfig {
            relay_only: opts.relay_only,
            gather_timeout: opts.gather_timeout,
        };
        let core = PeerCore::new(cfg, remote, addrs, servers, rand::random(), Instant::now())?;
        Ok(Shell {
            core,
            signal,
            events,
            hosts,
            turns: HashMap::new(),
            net_tx,
            net_rx,
            tickets: HashMap::new(),
            flushes: Vec::new(),
            ca_file: opts.signal.ca_file.clone(),
            to_app: VecDeque::new(),
        })
    }

    async fn run(mut self, mut cmds: mpsc::Receiver<Cmd>, early: Vec<Incoming>) {
        let mut result = Ok(());
        for m in early {
            result = result.and_then(|()| self.core.handle_signal(m, Instant::now()));
        }
        let reason = loop {
            if let Err(e) = result {
                break e.to_string();
            }
            if let Err(e) = self.carry_out().await {
                break e.to_string();
            }
            let now = Instant::now();
            let deadline = self
                .core
                .poll_timeout()
                .clamp(now, now + Duration::from_secs(1));
            result = tokio::select! {
                net = self.net_rx.recv() => match net {
                    Some(Net::Host { local, from, data }) => self.core.handle_udp(local, from, &data, Instant::now()),
                    Some(Net::Turn { idx, data }) => self.core.handle_turn(idx, &data, Instant::now()),
                    Some(Net::TurnDown { idx, reason }) => self.core.handle_turn_closed(idx, reason, Instant::now()),
                    None => Err(PeerError::Closed("socket readers ended".into())),
                },
                m = self.signal.incoming.recv() => match m {
                    Some(m) => self.core.handle_signal(m, Instant::now()),
                    None => Err(PeerError::Closed("signalling ended".into())),
                },
                c = cmds.recv() => match c {
                    Some(Cmd::Send { chan, binary, data, done }) => {
                        self.core.send(chan, binary, data, Instant::now()).map(|ticket| {
                            self.tickets.insert(ticket, done);
                        })
                    }
                    Some(Cmd::Flush(tx)) => {
                        self.flushes.push(tx);
                        Ok(())
                    }
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
                _ = tokio::time::sleep_until(deadline.into()) => self.core.handle_timeout(Instant::now()),
            };
        };
        self.core.fail_outbox(&reason);
        let _ = self.carry_out().await;
        for (_, done) in self.tickets.drain() {
            let _ = done.send(Err(PeerError::Closed(reason.clone())));
        }
        let _ = self.events.send(PeerEvent::Closed(reason)).await;
    }

    /// `bye`, TURN Refresh(0), close; then `leave` once those went out.
    async fn shutdown(&mut self) {
        self.core.close("closed by the application", Instant::now());
        let _ = self.carry_out().await;
        self.signal.leave().await;
    }

    /// Carries out every output of the core, then hands events to the application.
    async fn carry_out(&mut self) -> Result<(), PeerError> {
        while let Some(o) = self.core.poll_output() {
            match o {
                Output::Udp { from, to, data } => {
                    if let Some(s) = self.hosts.get(&from) {
                        if let Err(e) = s.send_to(&data, to).await {
                            tracing::debug!("send to {to}: {e}");
                        }
                    }
                }
                Output::OpenTurn {
                    idx,
                    server,
                    host,
                    transport,
                    local_ip,
                } => {
                    match self.open_turn(idx, server, host, transport, local_ip).await {
                        Ok(link) => {
                            self.turns.insert(idx, link);
                        }
                        // That server is unusable; the others and the direct paths go on.
                        Err(e) => {
                            self.core
                                .handle_turn_closed(idx, e.to_string(), Instant::now())?
                        }
                    }
                }
                Output::Turn { idx, data } => match self.turns.get(&idx) {
                    Some(TurnLink::Udp(s, server)) => {
                        let _ = s.send_to(&data, *server).await;
                    }
                    Some(TurnLink::Stream(tx)) => {
                        let _ = tx.send(data);
                    }
                    None => {}
                },
                Output::Signal(v) => {
                    // Without signalling no new candidates reach the peer, but an established
                    // connection does not need it: not fatal here.
                    if let Err(e) = self.signal.send(v) {
                        tracing::debug!("{e}");
                    }
                }
                Output::Event(ev) => self.to_app.push_back(ev),
                Output::Sent(ticket, r) => {
                    if let Some(done) = self.tickets.remove(&ticket) {
                        let _ = done.send(r.map_err(PeerError::Rtc));
                    }
                }
            }
        }
        if !self.flushes.is_empty() && self.core.is_flushed() {
            for f in self.flushes.drain(..) {
                let _ = f.send(());
            }
        }
        self.deliver().await;
        Ok(())
    }

    async fn open_turn(
        &mut self,
        idx: usize,
        server: SocketAddr,
        host: String,
        transport: TurnTransport,
        local_ip: IpAddr,
    ) -> Result<TurnLink, PeerError> {
        Ok(match transport {
            TurnTransport::Udp => {
                let socket = Arc::new(UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?);
                spawn_udp_reader(socket.clone(), self.net_tx.clone(), move |from, data| {
                    // Only the server talks on this socket; anything else is dropped.
                    let data = if from == server { data } else { Vec::new() };
                    Net::Turn { idx, data }
                });
                TurnLink::Udp(socket, server)
            }
            TurnTransport::Tcp | TurnTransport::Tls => {
                let (tx, rx) = mpsc::unbounded_channel();
                let tls = (transport == TurnTransport::Tls).then(|| TlsTarget {
                    name: host,
                    ca_file: self.ca_file.clone(),
                });
                spawn_turn_stream(idx, server, tls, rx, self.net_tx.clone());
                TurnLink::Stream(tx)
            }
        })
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
}
