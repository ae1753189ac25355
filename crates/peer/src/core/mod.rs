//! The peer's logic without IO: negotiation, gathering, TURN relaying, data channels.
//!
//! `PeerCore` owns str0m's `Rtc` (ICE, DTLS, SCTP; itself sans-IO), the STUN Binding
//! transactions for server-reflexive candidates and one [`floe_turn::client::TurnClient`] per
//! TURN server. It never touches a socket or a clock: the shell (`session.rs`) feeds it datagrams,
//! stream frames, signalling messages and the time, and carries out its [`Output`]s. Tests drive
//! it the same way in virtual time (`tests/core.rs`).

mod channels;
mod negotiation;
mod stun;
mod turn;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::{json, Value};
use str0m::channel::ChannelId;
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output as RtcOutput, Rtc, RtcConfig};

use crate::ice_servers::{IceServer, TurnTransport};
use crate::pair::{CandidateType, LocalCandidate, SelectedPair};
use crate::signal::{Incoming, RemotePeer};
use crate::PeerError;

pub use channels::Chan;
use channels::Queued;
use stun::StunTxn;
use turn::{transport_rank, TurnSlot};

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

/// What the shell must do for the core.
#[derive(Debug)]
pub enum Output {
    /// Send a datagram from the local socket `from`.
    Udp {
        /// One of the host addresses given to [`PeerCore::new`].
        from: SocketAddr,
        /// Destination.
        to: SocketAddr,
        /// Payload.
        data: Vec<u8>,
    },
    /// Open the link to TURN server `idx` (a UDP socket on `local_ip`, or a TCP/TLS stream).
    OpenTurn {
        /// Index used by [`PeerCore::handle_turn`] and [`Output::Turn`].
        idx: usize,
        /// Server address.
        server: SocketAddr,
        /// Host name from the URL (the TLS server name).
        host: String,
        /// Transport.
        transport: TurnTransport,
        /// Our address of the same family.
        local_ip: IpAddr,
    },
    /// Bytes for TURN server `idx` (one datagram, or one frame on the stream).
    Turn {
        /// Which server.
        idx: usize,
        /// Bytes.
        data: Vec<u8>,
    },
    /// A signalling message to send.
    Signal(Value),
    /// An event for the application.
    Event(PeerEvent),
    /// The message queued with [`PeerCore::send`] under this ticket was accepted by SCTP.
    Sent(u64, Result<(), String>),
}

/// Settings of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Offer relayed candidates only.
    pub relay_only: bool,
    /// Give up gathering after this long and signal end-of-candidates.
    pub gather_timeout: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            relay_only: false,
            gather_timeout: Duration::from_secs(10),
        }
    }
}

/// The peer's state machine (see the module docs).
pub struct PeerCore {
    rtc: Rtc,
    /// Injected randomness: STUN transaction ids, TURN clients' seeds.
    rng: StdRng,
    remote: RemotePeer,
    cfg: CoreConfig,
    hosts: Vec<SocketAddr>,
    turns: Vec<TurnSlot>,
    /// TURN servers not started yet, in transport order.
    turn_queue: Vec<(SocketAddr, IceServer)>,
    next_turn_group: Instant,
    /// Ordered, so that retransmissions go out in a deterministic order.
    stun: BTreeMap<[u8; 12], StunTxn>,
    locals: Vec<LocalCandidate>,
    remotes: Vec<(CandidateType, SocketAddr)>,
    /// Remote candidates received before the remote description.
    held_remote: Vec<String>,
    has_remote_sdp: bool,
    pending_offer: Option<str0m::change::SdpPendingOffer>,
    channels: HashMap<ChannelId, Chan>,
    open: Vec<Chan>,
    outbox: VecDeque<Queued>,
    next_ticket: u64,
    mid: String,
    gather_deadline: Instant,
    end_of_candidates_sent: bool,
    selected: Option<SelectedPair>,
    connected: bool,
    rtc_timeout: Instant,
    out: VecDeque<Output>,
    /// How the remote peer saw each of our sockets: XOR-MAPPED-ADDRESS of its ICE Binding
    /// responses, by (our base, its address). Only names the selected pair (RFC 8445 §7.2.5.3.1
    /// peer-reflexive); ICE itself is str0m's.
    seen_as: HashMap<(SocketAddr, SocketAddr), SocketAddr>,
}

impl std::fmt::Debug for PeerCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCore")
            .field("remote", &self.remote.peer)
            .field("locals", &self.locals)
            .field("remotes", &self.remotes)
            .field("connected", &self.connected)
            .finish_non_exhaustive()
    }
}

impl PeerCore {
    /// A core talking to `remote` from the UDP sockets `hosts` (their local addresses), with
    /// the resolved ICE servers. Offers at once when the roles say we offer.
    ///
    /// `seed` seeds the CSPRNG (ChaCha) behind the STUN transaction ids and each TURN client's
    /// own seed: the core reads no randomness itself, so the shell passes 32 bytes from the OS
    /// and tests a constant. (str0m's `Rtc` still draws its ICE credentials and DTLS
    /// certificate itself.)
    pub fn new(
        cfg: CoreConfig,
        remote: RemotePeer,
        hosts: Vec<SocketAddr>,
        servers: Vec<(SocketAddr, IceServer)>,
        seed: [u8; 32],
        now: Instant,
    ) -> Result<PeerCore, PeerError> {
        if hosts.is_empty() {
            return Err(PeerError::Config("no usable local IP address".into()));
        }
        let rtc = RtcConfig::new()
            .set_stats_interval(Some(Duration::from_millis(500)))
            .build(now);
        let mut core = PeerCore {
            rtc,
            rng: StdRng::from_seed(seed),
            remote,
            gather_deadline: now + cfg.gather_timeout,
            cfg,
            hosts: hosts.clone(),
            turns: Vec::new(),
            turn_queue: Vec::new(),
            next_turn_group: now,
            stun: BTreeMap::new(),
            locals: Vec::new(),
            remotes: Vec::new(),
            held_remote: Vec::new(),
            has_remote_sdp: false,
            pending_offer: None,
            channels: HashMap::new(),
            open: Vec::new(),
            outbox: VecDeque::new(),
            next_ticket: 0,
            mid: "0".into(),
            end_of_candidates_sent: false,
            selected: None,
            connected: false,
            rtc_timeout: now,
            out: VecDeque::new(),
            seen_as: HashMap::new(),
        };
        if !core.cfg.relay_only {
            for addr in hosts {
                core.add_local(
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
        for (addr, server) in servers {
            match server {
                IceServer::Stun { .. } if !core.cfg.relay_only => core.start_stun(addr, now),
                IceServer::Turn { .. } => core.turn_queue.push((addr, server)),
                IceServer::Stun { .. } => {}
            }
        }
        // UDP first, then TCP, then TLS (a stable sort keeps the server order within each).
        core.turn_queue.sort_by_key(|(_, s)| match s {
            IceServer::Turn { transport, .. } => transport_rank(*transport),
            IceServer::Stun { .. } => 0,
        });
        if core.remote.offerer {
            core.make_offer()?;
        }
        core.drive(now)?;
        Ok(core)
    }

    /// The remote peer.
    pub fn remote(&self) -> &RemotePeer {
        &self.remote
    }

    /// The next thing for the shell to do ([`Output`]: send, open a TURN link, signal, report an
    /// event), until `None`. Call it until `None` after `new` and after every `handle_*`,
    /// `send`, `close` or `fail_outbox` call, then ask [`PeerCore::poll_timeout`].
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`PeerCore::handle_timeout`] must be called next (str0m always has a deadline, so
    /// there is one). Ask again after every call that changes the core: any may move it.
    #[must_use]
    pub fn poll_timeout(&self) -> Instant {
        let mut d = self.rtc_timeout;
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
        d
    }

    /// Time passed: runs str0m's and the TURN clients' timers. Call it when
    /// [`PeerCore::poll_timeout`] is reached (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), PeerError> {
        self.rtc
            .handle_input(Input::Timeout(now))
            .map_err(|e| PeerError::Rtc(e.to_string()))?;
        for t in &mut self.turns {
            t.client.handle_timeout(now);
        }
        self.drive(now)
    }

    /// A datagram arrived on the host socket `local` from `from`.
    pub fn handle_udp(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
        now: Instant,
    ) -> Result<(), PeerError> {
        if !self.on_stun_response(local, from, data) {
            self.note_reflexive(local, from, data);
            if let Ok(r) = Receive::new(Protocol::Udp, from, local, data) {
                if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
                    tracing::debug!("rtc input: {e}");
                }
            }
        }
        self.drive(now)
    }

    /// A signalling message arrived. Errors end the connection.
    pub fn handle_signal(&mut self, m: Incoming, now: Instant) -> Result<(), PeerError> {
        match m {
            Incoming::Sdp { from, kind, sdp } if from == self.remote.peer => {
                self.on_sdp(&kind, &sdp, now)?
            }
            Incoming::Candidate { from, candidate } if from == self.remote.peer => {
                self.on_remote_candidate(&candidate, now)
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
        self.drive(now)
    }

    /// Says `bye`, releases every allocation (Refresh with LIFETIME 0, RFC 8656 §7) and closes
    /// the WebRTC connection. The shell sends the outputs, then leaves the room.
    pub fn close(&mut self, reason: &str, now: Instant) {
        self.out.push_back(Output::Signal(
            json!({"type": "bye", "to": self.remote.peer}),
        ));
        for t in &mut self.turns {
            t.client.release(now);
        }
        let _ = self.drive(now);
        self.rtc.disconnect();
        self.fail_outbox(reason);
    }

    fn emit(&mut self, ev: PeerEvent) {
        self.out.push_back(Output::Event(ev));
    }

    fn signal(&mut self, v: Value) {
        self.out.push_back(Output::Signal(v));
    }

    /// Runs every part until none has anything more to say.
    fn drive(&mut self, now: Instant) -> Result<(), PeerError> {
        self.start_due_turns(now);
        self.send_stun(now);
        self.pump_turns(now);
        self.write_outbox();
        loop {
            match self.rtc.poll_output() {
                Ok(RtcOutput::Timeout(t)) => {
                    self.rtc_timeout = t;
                    break;
                }
                Ok(RtcOutput::Transmit(t)) => {
                    self.transmit(t.source, t.destination, &t.contents, now)
                }
                Ok(RtcOutput::Event(e)) => self.on_rtc_event(e)?,
                Err(e) => return Err(PeerError::Rtc(e.to_string())),
            }
        }
        // Transmits through TURN queued more bytes for the servers.
        self.pump_turns(now);
        self.maybe_end_of_candidates(now)
    }

    fn transmit(&mut self, source: SocketAddr, dest: SocketAddr, data: &[u8], now: Instant) {
        if self.hosts.contains(&source) {
            self.out.push_back(Output::Udp {
                from: source,
                to: dest,
                data: data.to_vec(),
            });
        } else if let Some(t) = self.turns.iter_mut().find(|t| t.relayed == Some(source)) {
            if let Err(e) = t.client.send_to(dest, data, now) {
                tracing::debug!("relay to {dest}: {e}");
            }
        } else {
            tracing::debug!("no socket for transmit from {source}");
        }
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
                        self.seen_as.get(&(p.local.addr, p.remote.addr)).copied(),
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
}
