//! The peer's logic without IO: negotiation, gathering, TURN relaying, data channels.
//!
//! `PeerCore` owns str0m's `Rtc` (ICE, DTLS, SCTP; itself sans-IO), the STUN Binding
//! transactions for server-reflexive candidates and one [`floe_turn::client::TurnClient`] per
//! TURN server. It never touches a socket or a clock: the shell (`session.rs`) feeds it datagrams,
//! stream frames, signalling messages and the time, and carries out its [`Output`]s. Tests drive
//! it the same way in virtual time (`tests/core.rs`).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use floe_stun::attr::XorMappedAddress;
use floe_stun::{Class, Message, MessageBuilder, Method, TransactionId};
use floe_turn::client::{TurnClient, TurnClientConfig, TurnEvent};
use serde_json::{json, Value};
use str0m::channel::{ChannelConfig, ChannelId};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output as RtcOutput, Rtc, RtcConfig};

use crate::ice_servers::{IceServer, TurnTransport};
use crate::pair::{CandidateType, LocalCandidate, SelectedPair};
use crate::signal::{Incoming, RemotePeer};
use crate::PeerError;

/// The data channels of floe.js (negotiated out of band, no DCEP).
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

    fn config(self) -> ChannelConfig {
        ChannelConfig {
            label: self.label().to_owned(),
            negotiated: Some(self.stream_id()),
            ..ChannelConfig::default()
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

/// How long a TURN transport may take before the next one is tried as well.
const TURN_GRACE: Duration = Duration::from_secs(1);
/// RFC 8489 §6.2.1 retransmissions, shortened: 500 ms, then doubling, 5 sends (≈ 7.5 s).
const STUN_RTO: Duration = Duration::from_millis(500);
const STUN_SENDS: u32 = 5;
/// Keep at most this much queued in SCTP before holding the application's messages back.
const MAX_BUFFERED: usize = 1 << 20;

fn transport_rank(t: TurnTransport) -> u8 {
    match t {
        TurnTransport::Udp => 0,
        TurnTransport::Tcp => 1,
        TurnTransport::Tls => 2,
    }
}

struct TurnSlot {
    client: TurnClient,
    server: SocketAddr,
    transport: TurnTransport,
    relayed: Option<SocketAddr>,
    done: bool,
}

struct StunTxn {
    host: SocketAddr,
    server: SocketAddr,
    request: Vec<u8>,
    next_send: Instant,
    attempts: u32,
}

struct Queued {
    chan: Chan,
    binary: bool,
    data: Vec<u8>,
    ticket: u64,
}

/// The peer's state machine (see the module docs).
pub struct PeerCore {
    rtc: Rtc,
    remote: RemotePeer,
    cfg: CoreConfig,
    hosts: Vec<SocketAddr>,
    turns: Vec<TurnSlot>,
    /// TURN servers not started yet, in transport order.
    turn_queue: Vec<(SocketAddr, IceServer)>,
    next_turn_group: Instant,
    stun: HashMap<[u8; 12], StunTxn>,
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
    pub fn new(
        cfg: CoreConfig,
        remote: RemotePeer,
        hosts: Vec<SocketAddr>,
        servers: Vec<(SocketAddr, IceServer)>,
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
            remote,
            gather_deadline: now + cfg.gather_timeout,
            cfg,
            hosts: hosts.clone(),
            turns: Vec::new(),
            turn_queue: Vec::new(),
            next_turn_group: now,
            stun: HashMap::new(),
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

    /// The next thing to do.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`PeerCore::handle_timeout`] wants to be called.
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

    /// Time passed.
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

    /// A datagram (UDP) or a frame (TCP/TLS) arrived from TURN server `idx`.
    pub fn handle_turn(&mut self, idx: usize, data: &[u8], now: Instant) -> Result<(), PeerError> {
        if let Some(t) = self.turns.get_mut(idx) {
            let relayed = t.relayed;
            if let (Some((peer, payload)), Some(relayed)) =
                (t.client.handle_input(data, now), relayed)
            {
                if let Ok(r) = Receive::new(Protocol::Udp, peer, relayed, payload) {
                    if let Err(e) = self.rtc.handle_input(Input::Receive(now, r)) {
                        tracing::debug!("rtc input: {e}");
                    }
                }
            }
        }
        self.drive(now)
    }

    /// The link to TURN server `idx` failed or closed.
    pub fn turn_down(&mut self, idx: usize, reason: String, now: Instant) -> Result<(), PeerError> {
        if let Some(t) = self.turns.get_mut(idx) {
            let server = format!("{} {}", t.transport, t.server);
            if !t.done {
                t.done = true;
                self.emit(PeerEvent::TurnFailed { server, reason });
            } else if let Some(relayed) = t.relayed.take() {
                tracing::warn!("TURN connection {server} lost ({reason}); relay {relayed} gone");
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

    /// Queues a message; [`Output::Sent`] with the returned ticket says when SCTP took it.
    /// An error means the connection failed (as from any `handle_*`).
    pub fn send(
        &mut self,
        chan: Chan,
        binary: bool,
        data: Vec<u8>,
        now: Instant,
    ) -> Result<u64, PeerError> {
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.outbox.push_back(Queued {
            chan,
            binary,
            data,
            ticket,
        });
        self.drive(now)?;
        Ok(ticket)
    }

    /// Nothing is waiting to be sent and SCTP holds no unacknowledged data.
    pub fn is_flushed(&mut self) -> bool {
        if !self.outbox.is_empty() {
            return false;
        }
        let ids: Vec<ChannelId> = self.channels.keys().copied().collect();
        ids.into_iter()
            .filter_map(|id| self.rtc.channel(id).map(|mut c| c.buffered_amount()))
            .sum::<usize>()
            == 0
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

    /// Fails every queued message (the connection ended).
    pub fn fail_outbox(&mut self, reason: &str) {
        for q in self.outbox.drain(..) {
            self.out
                .push_back(Output::Sent(q.ticket, Err(reason.to_owned())));
        }
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

    /// We joined later: we offer (docs/signalling.md §3, roles).
    fn make_offer(&mut self) -> Result<(), PeerError> {
        let mut api = self.rtc.sdp_api();
        let chat = api.add_channel_with_config(Chan::Chat.config());
        let file = api.add_channel_with_config(Chan::File.config());
        let (offer, pending) = api
            .apply()
            .ok_or_else(|| PeerError::Rtc("nothing to offer".into()))?;
        self.channels.insert(chat, Chan::Chat);
        self.channels.insert(file, Chan::File);
        self.pending_offer = Some(pending);
        let sdp = offer.to_sdp_string();
        self.mid = first_mid(&sdp).unwrap_or_else(|| "0".into());
        let to = self.remote.peer.clone();
        self.signal(json!({"type": "offer", "to": to, "sdp": sdp}));
        Ok(())
    }

    fn on_sdp(&mut self, kind: &str, sdp: &str, now: Instant) -> Result<(), PeerError> {
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
                        let id = self.rtc.direct_api().create_data_channel(chan.config());
                        self.channels.insert(id, chan);
                    }
                }
                let sdp_out = answer.to_sdp_string();
                self.mid = first_mid(&sdp_out).unwrap_or_else(|| "0".into());
                let to = self.remote.peer.clone();
                self.signal(json!({"type": "answer", "to": to, "sdp": sdp_out}));
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
                    self.on_remote_candidate(c, now);
                }
            }
        }
        for c in std::mem::take(&mut self.held_remote) {
            self.on_remote_candidate(&c, now);
        }
        Ok(())
    }

    fn on_remote_candidate(&mut self, line: &str, now: Instant) {
        if !self.has_remote_sdp {
            self.held_remote.push(line.to_owned());
            return;
        }
        let line = line.trim().trim_start_matches("a=");
        let Ok(c) = Candidate::from_sdp_string(line) else {
            // e.g. an mDNS ".local" host candidate.
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
        // Permissions on every allocation of the family (RFC 8656 §9), before ICE checks.
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
            let (to, mid) = (self.remote.peer.clone(), self.mid.clone());
            self.signal(json!({
                "type": "candidate", "to": to, "candidate": line,
                "sdpMid": mid, "sdpMLineIndex": 0,
            }));
        }
    }

    fn start_stun(&mut self, server: SocketAddr, now: Instant) {
        for host in self.hosts.clone() {
            if host.is_ipv4() != server.is_ipv4() {
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
                    host,
                    server,
                    request: buf,
                    next_send: now,
                    attempts: 0,
                },
            );
        }
    }

    fn send_stun(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (tid, t) in &mut self.stun {
            if t.next_send > now {
                continue;
            }
            if t.attempts >= STUN_SENDS {
                expired.push(*tid);
                continue;
            }
            self.out.push_back(Output::Udp {
                from: t.host,
                to: t.server,
                data: t.request.clone(),
            });
            t.next_send = now + STUN_RTO * 2u32.pow(t.attempts);
            t.attempts += 1;
        }
        for tid in expired {
            if let Some(t) = self.stun.remove(&tid) {
                tracing::info!("no STUN answer from {}", t.server);
            }
        }
    }

    /// Remembers the address the remote peer saw us as, from its ICE Binding success responses.
    fn note_reflexive(&mut self, local: SocketAddr, from: SocketAddr, data: &[u8]) {
        if data.len() < 20 || data[0] >> 6 != 0 {
            return;
        }
        let Ok(m) = Message::parse(data) else {
            return;
        };
        if m.class() != Class::SuccessResponse || m.method() != Method::BINDING {
            return;
        }
        if let Some(Ok(mapped)) = m.get::<XorMappedAddress>() {
            if self.seen_as.len() < 256 || self.seen_as.contains_key(&(local, from)) {
                self.seen_as.insert((local, from), mapped.0);
            }
        }
    }

    /// A Binding response to one of our srflx transactions?
    fn on_stun_response(&mut self, local: SocketAddr, from: SocketAddr, data: &[u8]) -> bool {
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
        if t.server != from || t.host != local {
            return false;
        }
        self.stun.remove(&tid);
        if m.class() != Class::SuccessResponse {
            return true;
        }
        let Some(Ok(mapped)) = m.get::<XorMappedAddress>() else {
            return true;
        };
        let mapped = mapped.0;
        if mapped != local && !self.cfg.relay_only && !self.locals.iter().any(|l| l.addr == mapped)
        {
            self.add_local(
                LocalCandidate {
                    kind: CandidateType::Srflx,
                    addr: mapped,
                    base: local,
                    turn: None,
                },
                true,
            );
        }
        true
    }

    /// Starts the next transport's TURN allocations once the previous transport's finished or
    /// [`TURN_GRACE`] passed. str0m ranks relayed candidates by the order they are added (RFC
    /// 8445 §5.1.2.1 local preference, counted down), so this order makes a relay over UDP
    /// preferred to one over TCP, and TCP to TLS, as browsers do, while a blocked transport
    /// delays the next by at most the grace.
    fn start_due_turns(&mut self, now: Instant) {
        let Some((
            _,
            IceServer::Turn {
                transport: next, ..
            },
        )) = self.turn_queue.first()
        else {
            return;
        };
        let next = *next;
        let previous_done = self.turns.iter().all(|t| t.done);
        if !(self.turns.is_empty() || previous_done || now >= self.next_turn_group) {
            return;
        }
        while let Some((
            server,
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
            let Some(local_ip) = self
                .hosts
                .iter()
                .find(|h| h.is_ipv4() == server.is_ipv4())
                .map(|h| h.ip())
            else {
                continue;
            };
            let mut cfg = TurnClientConfig::new(server, username, credential);
            cfg.software = Some(concat!("floe-peer ", env!("CARGO_PKG_VERSION")).to_owned());
            cfg.stream = transport != TurnTransport::Udp;
            let idx = self.turns.len();
            self.out.push_back(Output::OpenTurn {
                idx,
                server,
                host,
                transport,
                local_ip,
            });
            self.turns.push(TurnSlot {
                client: TurnClient::new(cfg, now),
                server,
                transport,
                relayed: None,
                done: false,
            });
        }
        self.next_turn_group = now + TURN_GRACE;
    }

    fn pump_turns(&mut self, now: Instant) {
        let mut new_locals = Vec::new();
        let mut failures = Vec::new();
        for (idx, t) in self.turns.iter_mut().enumerate() {
            while let Some(data) = t.client.poll_transmit() {
                self.out.push_back(Output::Turn { idx, data });
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
        for c in new_locals {
            // Permissions for the remote candidates we already know (RFC 8656 §9).
            let remote_ips: Vec<IpAddr> = self.remotes.iter().map(|(_, a)| a.ip()).collect();
            if let Some(t) = self.turns.iter_mut().find(|t| t.relayed == Some(c.addr)) {
                for ip in remote_ips
                    .into_iter()
                    .filter(|ip| ip.is_ipv4() == c.addr.is_ipv4())
                {
                    // The requests go out with the next pump (drive() pumps twice).
                    t.client.create_permission(ip, now);
                }
            }
            self.add_local(c, true);
        }
        for (server, reason) in failures {
            self.emit(PeerEvent::TurnFailed { server, reason });
        }
    }

    fn gathering_done(&self) -> bool {
        self.stun.is_empty() && self.turn_queue.is_empty() && self.turns.iter().all(|t| t.done)
    }

    fn maybe_end_of_candidates(&mut self, now: Instant) -> Result<(), PeerError> {
        if !self.end_of_candidates_sent && (self.gathering_done() || now >= self.gather_deadline) {
            if self.locals.is_empty() {
                return Err(PeerError::Closed(if self.cfg.relay_only {
                    "relay-only, and no TURN server gave us a relayed address".into()
                } else {
                    "gathered no candidate".into()
                }));
            }
            self.end_of_candidates_sent = true;
            let to = self.remote.peer.clone();
            self.signal(json!({"type": "end_of_candidates", "to": to}));
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

    fn write_outbox(&mut self) {
        while let Some(q) = self.outbox.front() {
            let chan = q.chan;
            let Some(id) = self.channel_id(chan) else {
                break;
            };
            if !self.open.contains(&chan) {
                break;
            }
            let Some(mut ch) = self.rtc.channel(id) else {
                break;
            };
            if ch.buffered_amount() > MAX_BUFFERED {
                break;
            }
            match ch.write(q.binary, &q.data) {
                Ok(true) => {
                    if let Some(q) = self.outbox.pop_front() {
                        self.out.push_back(Output::Sent(q.ticket, Ok(())));
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    if let Some(q) = self.outbox.pop_front() {
                        self.out
                            .push_back(Output::Sent(q.ticket, Err(e.to_string())));
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
}

fn first_mid(sdp: &str) -> Option<String> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=mid:"))
        .map(str::to_owned)
}
