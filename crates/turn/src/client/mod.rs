//! A sans-IO TURN client (RFC 8656 over RFC 8489): allocation with long-term credentials,
//! refreshes, permissions, channels, Send/Data indications and ChannelData.
//!
//! # How to drive it
//!
//! The client owns no socket and reads no clock: the caller passes `now` into every call and
//! moves bytes between the client and one socket (UDP) or stream (TCP, TLS) to the server.
//!
//! ```text
//! let mut turn = TurnClient::new(TurnClientConfig::new(server, user, pass), now);
//! loop {
//!     while let Some(bytes) = turn.poll_transmit() { socket.send_to(&bytes, server) }
//!     while let Some(event) = turn.poll_event() { /* Allocated { relayed, mapped, .. }, ... */ }
//!     wait for a datagram from `server` (or stream bytes), or until turn.poll_timeout();
//!     // UDP: one datagram from the server's address. TCP/TLS: push into a StreamDecoder and
//!     // feed every complete frame.
//!     if let Some((peer, data)) = turn.handle_input(datagram, now) { /* relayed data */ }
//!     if turn.poll_timeout() <= Some(now) { turn.handle_timeout(now) }
//!     turn.send_to(peer, data, now)?;   // once allocated
//! }
//! ```
//!
//! Drain `poll_transmit` and `poll_event` after every `new`/`handle_*`/`send_to`/
//! `create_permission`/`bind_channel`/`refresh`/`release` call.
//!
//! # What is automatic
//!
//! * RFC 8489 §9.2: the first Allocate goes without credentials; the 401 gives REALM and NONCE
//!   and the Allocate is retried signed (MESSAGE-INTEGRITY with the MD5 key; SHA-256 keys and
//!   MESSAGE-INTEGRITY-SHA256 when [`TurnClientConfig::prefer_sha256`] is set and the server
//!   offers them). A 438 Stale Nonce on any request is retried with the new nonce (up to 3
//!   times). Responses are matched by transaction id and, for signed requests, dropped unless
//!   their integrity verifies under the key that signed the request (RFC 8489 §9.2.5).
//! * RFC 8489 §6.2: over UDP a request is retransmitted after 0.5, 1.5, 3.5, 7.5, 15.5 and
//!   31.5 s (RTO 500 ms doubling, Rc = 7) and fails at 39.5 s (Rm = 16); over TCP/TLS it is
//!   sent once and fails at 39.5 s (Ti).
//! * RFC 8656 §8: the allocation is refreshed 60 s before it expires (at half its lifetime when
//!   that is 2 minutes or less). A failed Refresh is retried halfway to the expiry.
//! * RFC 8656 §9, §12: [`TurnClient::send_to`] asks for the peer's permission and binds a
//!   channel on first use; permissions are refreshed every 4 minutes (lifetime 5) and channels
//!   every 9 (lifetime 10) while data flows to or from the peer (or, for permissions asked for
//!   with [`TurnClient::create_permission`], until the allocation ends). An idle one lapses.
//! * Data sent before the permission is confirmed waits in a bounded queue (64 packets,
//!   64 KiB) and goes out, in order, when the CreatePermission (or ChannelBind) succeeds; a
//!   failed permission drops it. This is what makes the first packets reach the peer over UDP,
//!   where a Send indication overtaking its CreatePermission would be dropped by the server.
//! * Data goes as ChannelData when a channel is bound (RFC 8656 §12.6; padded to 4 bytes over
//!   TCP/TLS, §12.5), as a Send indication otherwise (§11.1). Received Data indications (§11.6:
//!   only from IPs with a permission) and ChannelData (§12.7: only on bound channels) come out of
//!   [`TurnClient::handle_input`] without a copy.
//!
//! What the caller does: moving bytes, feeding only datagrams that come from the server's
//! address (UDP), framing streams with [`StreamDecoder`], watching the events, calling
//! [`TurnClient::release`] on shutdown, and making a new client after a terminal event
//! ([`TurnEvent::AllocationFailed`], [`TurnEvent::AllocationLost`], [`TurnEvent::Expired`],
//! [`TurnEvent::Released`]); after a 437 to the Allocate, from a new local port (RFC 8656 §7.3).

mod auth;
mod peers;
mod transaction;
mod types;

use core::fmt;
use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use floe_stun::attr::{
    ChannelNumber, Data, ErrorCode, Family, Lifetime, RequestedTransport, Software,
    XorMappedAddress, XorPeerAddress, XorRelayedAddress,
};
use floe_stun::{BuildError, ChannelData, Class, Message, MessageBuilder, Method, TransactionId};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

pub use floe_stun::stream::{FramingError, StreamDecoder};
pub use types::{Error, TurnEvent, TurnState};

use auth::{Account, Challenge, Credentials, Signer};
use peers::{Channel, ChannelNumbers, Lease, Permission, SendQueue};
use transaction::{Request, Retries, Transaction, MAX_AUTH_RETRIES, MAX_STALE_RETRIES};

/// RFC 8656 §9: a permission lasts 300 seconds.
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// Permissions in use are refreshed this long after they were (re)installed: a minute before
/// they expire, more than the 39.5 s a transaction may take.
pub const PERMISSION_REFRESH: Duration = Duration::from_secs(240);
/// RFC 8656 §12: a channel binding lasts 600 seconds.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// Channels in use are rebound this long after they were (re)bound.
pub const CHANNEL_REFRESH: Duration = Duration::from_secs(540);
/// RFC 8656 §7.2: the default allocation lifetime, requested unless configured otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// The largest payload [`TurnClient::send_to`] accepts: a Send indication carrying it (48 bytes
/// of framing for an IPv6 peer) still fits one UDP datagram (65 507 bytes).
pub const MAX_PAYLOAD: usize = 65_400;
/// The allocation is refreshed this long before it expires (for lifetimes over 2 minutes).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// After a failed CreatePermission or ChannelBind, no new request for that peer for this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);
/// Room for a request: header, attributes, USERNAME (512), REALM and NONCE (763 each).
const REQUEST_BUFFER: usize = 4096;

/// How to reach and authenticate to a TURN server.
#[derive(Clone)]
pub struct TurnClientConfig {
    /// The server's address (for the caller: where to send [`TurnClient::poll_transmit`]).
    pub server: SocketAddr,
    /// RFC 8489 §9.2: the long-term credential's username.
    pub username: String,
    /// RFC 8489 §9.2: the long-term credential's password (used as UTF-8 bytes, without
    /// OpaqueString processing, like coturn and browsers).
    pub password: String,
    /// SOFTWARE in every request (RFC 8489 §14.14); `None` omits it.
    pub software: Option<String>,
    /// The LIFETIME requested in Allocate and Refresh (RFC 8656 §7.1); default 600 s.
    pub lifetime: Duration,
    /// The connection to the server is TCP or TLS: no retransmissions (RFC 8489 §6.2.2) and
    /// ChannelData padded to a multiple of 4 bytes (RFC 8656 §12.5).
    pub stream: bool,
    /// Bind a channel to a peer on its first [`TurnClient::send_to`] (default true); otherwise
    /// only [`TurnClient::bind_channel`] binds channels and data goes as Send indications.
    pub auto_channel: bool,
    /// Use SHA-256 keys and MESSAGE-INTEGRITY-SHA256 when the server offers them in
    /// PASSWORD-ALGORITHMS (RFC 8489 §9.2.3); default false: MD5, which every server accepts.
    pub prefer_sha256: bool,
    /// Seed of the CSPRNG (ChaCha) behind transaction ids. [`TurnClientConfig::new`] fills it
    /// from the operating system; set it only to make tests deterministic.
    pub seed: [u8; 32],
}

impl fmt::Debug for TurnClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnClientConfig")
            .field("server", &self.server)
            .field("username", &self.username)
            .field("software", &self.software)
            .field("lifetime", &self.lifetime)
            .field("stream", &self.stream)
            .field("auto_channel", &self.auto_channel)
            .field("prefer_sha256", &self.prefer_sha256)
            .finish_non_exhaustive()
    }
}

impl TurnClientConfig {
    /// A UDP configuration with the defaults: lifetime 600 s, automatic channels, MD5, no
    /// SOFTWARE, and a seed from the operating system's RNG.
    pub fn new(
        server: SocketAddr,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        TurnClientConfig {
            server,
            username: username.into(),
            password: password.into(),
            software: None,
            lifetime: DEFAULT_LIFETIME,
            stream: false,
            auto_channel: true,
            prefer_sha256: false,
            seed: rand::random(),
        }
    }

    fn requested_lifetime(&self) -> u32 {
        u32::try_from(self.lifetime.as_secs()).unwrap_or(u32::MAX)
    }

    fn account(&self) -> Account<'_> {
        Account {
            username: &self.username,
            password: &self.password,
            prefer_sha256: self.prefer_sha256,
        }
    }
}

/// A live allocation (RFC 8656 §2.2).
#[derive(Debug, Clone, Copy)]
struct Allocation {
    relayed: SocketAddr,
    mapped: SocketAddr,
    /// RFC 8656 §8: when the server deletes it without a Refresh (a lower bound).
    expires: Instant,
    /// The next Refresh; `None` while one is in flight.
    refresh_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Allocating,
    Allocated(Allocation),
    Releasing,
    Closed,
}

/// Where data to a peer goes now.
enum Route {
    Channel(u16),
    Indication,
    Wait,
    Drop(Error),
}

/// A sans-IO TURN client for one allocation on one server. See the [module docs](self).
pub struct TurnClient {
    cfg: TurnClientConfig,
    rng: StdRng,
    state: State,
    credentials: Option<Credentials>,
    transactions: BTreeMap<TransactionId, Transaction>,
    permissions: BTreeMap<IpAddr, Permission>,
    channels: BTreeMap<SocketAddr, Channel>,
    by_number: BTreeMap<u16, SocketAddr>,
    numbers: ChannelNumbers,
    queue: SendQueue,
    transmits: VecDeque<Vec<u8>>,
    events: VecDeque<TurnEvent>,
}

impl fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnClient")
            .field("server", &self.cfg.server)
            .field("state", &self.state)
            .field("transactions", &self.transactions.len())
            .field("permissions", &self.permissions.len())
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

impl TurnClient {
    /// A client that immediately queues its first Allocate (REQUESTED-TRANSPORT UDP, no
    /// credentials: RFC 8656 §7.1, RFC 8489 §9.2.3). Drain [`TurnClient::poll_transmit`].
    pub fn new(cfg: TurnClientConfig, now: Instant) -> Self {
        let mut client = TurnClient {
            rng: StdRng::from_seed(cfg.seed),
            cfg,
            state: State::Allocating,
            credentials: None,
            transactions: BTreeMap::new(),
            permissions: BTreeMap::new(),
            channels: BTreeMap::new(),
            by_number: BTreeMap::new(),
            numbers: ChannelNumbers::default(),
            queue: SendQueue::default(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
        };
        client.start(Request::Allocate, Retries::default(), now);
        client
    }

    /// Feeds one datagram (UDP; only from the server's address) or one complete frame (TCP/TLS,
    /// from a [`StreamDecoder`]) received from the server.
    ///
    /// Returns the peer and payload of relayed data (a Data indication or ChannelData message),
    /// borrowed from `data`; `None` when the input was a response (consumed), or was invalid,
    /// unexpected or unauthentic (dropped). Never panics on any input.
    pub fn handle_input<'a>(
        &mut self,
        data: &'a [u8],
        now: Instant,
    ) -> Option<(SocketAddr, &'a [u8])> {
        match data.first()? {
            0x40..=0x7F => self.channel_data(data, now),
            0x00..=0x03 => {
                let msg = Message::parse(data).ok()?;
                if msg.has_fingerprint() && !msg.verify_fingerprint() {
                    return None;
                }
                match (msg.class(), msg.method()) {
                    (Class::Indication, Method::DATA) => self.data_indication(&msg, now),
                    (Class::SuccessResponse | Class::ErrorResponse, _) => {
                        self.response(&msg, now);
                        None
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }

    /// The next bytes to send to the server, until `None`: requests, retransmissions, Send
    /// indications and ChannelData, in order. Over TCP/TLS write them to the stream as they are.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next instant at which [`TurnClient::handle_timeout`] must be called; `None` when no
    /// timer is armed. Ask again after every call that changes the client.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let transactions = self.transactions.values().map(Transaction::next_timeout);
        let allocation = match &self.state {
            State::Allocated(a) => [a.refresh_at, Some(a.expires)],
            _ => [None, None],
        };
        let permissions = self
            .permissions
            .values()
            .filter_map(|p| p.lease.next_timeout());
        let channels = self
            .channels
            .values()
            .filter_map(|c| c.lease.next_timeout());
        transactions
            .chain(allocation.into_iter().flatten())
            .chain(permissions)
            .chain(channels)
            .min()
    }

    /// Runs the timers due at `now`: retransmissions and transaction timeouts, the allocation's
    /// refresh and expiry, permission and channel refreshes. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.transaction_timers(now);
        if let State::Allocated(a) = &mut self.state {
            if a.expires <= now {
                self.close(TurnEvent::Expired);
                return;
            }
            if a.refresh_at.is_some_and(|t| t <= now) {
                a.refresh_at = None;
                let lifetime = self.cfg.requested_lifetime();
                self.start(Request::Refresh { lifetime }, Retries::default(), now);
            }
        }
        self.permission_timers(now);
        self.channel_timers(now);
    }

    /// The next event, until `None`.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<TurnEvent> {
        self.events.pop_front()
    }

    /// Where the client is in its life.
    pub fn state(&self) -> TurnState {
        match self.state {
            State::Allocating => TurnState::Allocating,
            State::Allocated(_) => TurnState::Allocated,
            State::Releasing => TurnState::Releasing,
            State::Closed => TurnState::Closed,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &TurnClientConfig {
        &self.cfg
    }

    /// XOR-RELAYED-ADDRESS of the live allocation: the relayed candidate (RFC 8656 §7.3).
    pub fn relayed_addr(&self) -> Option<SocketAddr> {
        match &self.state {
            State::Allocated(a) => Some(a.relayed),
            _ => None,
        }
    }

    /// XOR-MAPPED-ADDRESS from the Allocate success: the client's server-reflexive address.
    pub fn mapped_addr(&self) -> Option<SocketAddr> {
        match &self.state {
            State::Allocated(a) => Some(a.mapped),
            _ => None,
        }
    }

    /// The channel bound to `peer`, if it is bound now.
    pub fn channel(&self, peer: SocketAddr, now: Instant) -> Option<u16> {
        let c = self.channels.get(&canonical(peer))?;
        c.number.filter(|_| c.lease.is_active(now))
    }

    /// Asks for a permission for `peer` (RFC 8656 §9, §10) and keeps refreshing it every
    /// 4 minutes, used or not, until the allocation ends. Before the allocation exists the
    /// request waits for it. Reports [`TurnEvent::PermissionCreated`] or
    /// [`TurnEvent::PermissionFailed`]; calling it again after a failure retries at once.
    pub fn create_permission(&mut self, peer: IpAddr, now: Instant) {
        if !matches!(self.state, State::Allocating | State::Allocated(_)) {
            return;
        }
        let ip = peer.to_canonical();
        let p = self.permissions.entry(ip).or_insert_with(|| Permission {
            lease: Lease::new(now),
            pinned: true,
            port: 0,
        });
        p.pinned = true;
        p.lease.last_used = now;
        p.lease.failed = None;
        if p.lease.needs_request(now) && matches!(self.state, State::Allocated(_)) {
            self.request_permission(ip, now);
        }
    }

    /// Binds a channel to `peer` now (RFC 8656 §12), with its permission, instead of waiting
    /// for the first [`TurnClient::send_to`]: useful with `auto_channel` off, or so that data
    /// from the peer arrives as ChannelData from the start.
    pub fn bind_channel(&mut self, peer: SocketAddr, now: Instant) -> Result<(), Error> {
        let peer = self.check_peer(peer)?;
        self.use_permission(peer, now)?;
        self.use_channel(peer, now);
        Ok(())
    }

    /// Sends `data` to `peer` through the relay: ChannelData when a channel is bound to the peer
    /// (RFC 8656 §12.6), a Send indication otherwise (§11.1). Asks for the permission (and, with
    /// `auto_channel`, a channel) on first use and keeps them alive while used; until the
    /// permission is confirmed the data waits in a bounded queue (see the module docs).
    ///
    /// Errors: [`Error::NotAllocated`] before [`TurnEvent::Allocated`] or after the end,
    /// [`Error::InvalidPeer`]/[`Error::PeerFamilyMismatch`]/[`Error::TooLarge`] for bad
    /// arguments, [`Error::QueueFull`], or the error that failed the peer's permission within
    /// the last 30 s (e.g. 403).
    pub fn send_to(&mut self, peer: SocketAddr, data: &[u8], now: Instant) -> Result<(), Error> {
        let peer = self.check_peer(peer)?;
        if data.len() > MAX_PAYLOAD {
            return Err(Error::TooLarge(data.len()));
        }
        self.use_permission(peer, now)?;
        if self.cfg.auto_channel {
            self.use_channel(peer, now);
        }
        match self.route(peer, now) {
            Route::Channel(n) => self.push_channel_data(n, data),
            Route::Indication => self.push_send_indication(peer, data),
            Route::Wait => self.queue.push(peer, data),
            Route::Drop(e) => Err(e),
        }
    }

    /// Refreshes the allocation now (RFC 8656 §8), e.g. after a network change, unless a
    /// Refresh is already in flight. The automatic schedule continues from its answer.
    pub fn refresh(&mut self, now: Instant) {
        let State::Allocated(a) = &mut self.state else {
            return;
        };
        let in_flight = self
            .transactions
            .values()
            .any(|t| matches!(t.request, Request::Refresh { .. }));
        if !in_flight {
            a.refresh_at = None;
            let lifetime = self.cfg.requested_lifetime();
            self.start(Request::Refresh { lifetime }, Retries::default(), now);
        }
    }

    /// Deletes the allocation: RFC 8656 §8 Refresh with LIFETIME 0, then
    /// [`TurnEvent::Released`] (also after an error or a timeout: the server deletes the
    /// allocation at its expiry anyway). Data can no longer be sent. Before the server answered
    /// the Allocate, the Refresh is sent only if credentials are known.
    pub fn release(&mut self, now: Instant) {
        let server_may_have_one = match self.state {
            State::Allocated(_) => true,
            State::Allocating => self.credentials.is_some(),
            State::Releasing | State::Closed => return,
        };
        self.transactions.clear();
        self.forget_peers();
        if server_may_have_one {
            self.state = State::Releasing;
            self.start(Request::Refresh { lifetime: 0 }, Retries::default(), now);
        } else {
            self.close(TurnEvent::Released);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Input
    // -----------------------------------------------------------------------------------------

    /// RFC 8656 §12.7: ChannelData on a channel the client bound; others are discarded.
    fn channel_data<'a>(&mut self, data: &'a [u8], now: Instant) -> Option<(SocketAddr, &'a [u8])> {
        let cd = ChannelData::parse(data).ok()?;
        let peer = *self.by_number.get(&cd.channel)?;
        self.note_activity(peer, now);
        Some((peer, cd.data))
    }

    /// RFC 8656 §11.6: a Data indication needs XOR-PEER-ADDRESS and DATA, from an IP with a
    /// permission; others are discarded.
    fn data_indication<'a>(
        &mut self,
        msg: &Message<'a>,
        now: Instant,
    ) -> Option<(SocketAddr, &'a [u8])> {
        if !matches!(self.state, State::Allocated(_)) {
            return None;
        }
        let peer = canonical(msg.get::<XorPeerAddress>()?.ok()?.0);
        let Data(data) = msg.get::<Data<'a>>()?.ok()?;
        if !self.permissions.contains_key(&peer.ip()) {
            return None;
        }
        self.note_activity(peer, now);
        Some((peer, data))
    }

    /// A response: matched by transaction id and method, authenticated, then processed.
    fn response(&mut self, msg: &Message<'_>, now: Instant) {
        let tid = msg.transaction_id();
        let Some(tx) = self.transactions.get(&tid) else {
            return;
        };
        if tx.request.method() != msg.method() {
            return;
        }
        let error = match msg.class() {
            Class::SuccessResponse => None,
            _ => {
                // RFC 8489 §9.2.5: without a valid ERROR-CODE the response is discarded.
                let Some(Ok(ec)) = msg.get::<ErrorCode<'_>>() else {
                    return;
                };
                if matches!(ec.code, ErrorCode::UNAUTHENTICATED | ErrorCode::STALE_NONCE) {
                    // Never signed (RFC 8489 §9.2.4): not checked for integrity.
                    self.challenged(tid, msg, ec.code, ec.reason, now);
                    return;
                }
                Some(Error::Server {
                    code: ec.code,
                    reason: ec.reason.to_owned(),
                })
            }
        };
        // RFC 8489 §9.2.5: any other answer to a signed request must carry valid integrity
        // under the same key, or it is discarded as if never received (retransmissions go on).
        if !tx.signer.as_ref().is_none_or(|s: &Signer| s.verify(msg)) {
            return;
        }
        let Some(tx) = self.transactions.remove(&tid) else {
            return;
        };
        match error {
            None => self.succeeded(tx.request, tx.started, msg, now),
            Some(error) => self.failed(tx.request, error, now),
        }
    }

    /// RFC 8489 §9.2.5: a 401 or 438. Learns the new nonce (and realm, algorithm) and retries
    /// as a new transaction, within bounds; otherwise the request fails with the code.
    fn challenged(
        &mut self,
        tid: TransactionId,
        msg: &Message<'_>,
        code: u16,
        reason: &str,
        now: Instant,
    ) {
        let Some(challenge) = Challenge::parse(msg) else {
            return;
        };
        let Some(tx) = self.transactions.remove(&tid) else {
            return;
        };
        let mut retries = tx.retries;
        let give_up = if code == ErrorCode::UNAUTHENTICATED {
            retries.auth += 1;
            tx.signer.is_some() && tx.retries.auth >= MAX_AUTH_RETRIES
        } else {
            retries.stale += 1;
            tx.retries.stale >= MAX_STALE_RETRIES
        };
        if give_up {
            let error = Error::Server {
                code,
                reason: reason.to_owned(),
            };
            self.failed(tx.request, error, now);
            return;
        }
        match Credentials::learn(self.credentials.as_ref(), &challenge, self.cfg.account()) {
            Ok(c) => self.credentials = Some(c),
            Err(e) => {
                self.failed(tx.request, e, now);
                return;
            }
        }
        self.start(tx.request, retries, now);
    }

    // -----------------------------------------------------------------------------------------
    // Outcomes
    // -----------------------------------------------------------------------------------------

    fn succeeded(&mut self, request: Request, started: Instant, msg: &Message<'_>, now: Instant) {
        match request {
            Request::Allocate => self.allocated(started, msg, now),
            Request::Refresh { lifetime: 0 } => self.close(TurnEvent::Released),
            Request::Refresh { .. } => self.refreshed(started, msg),
            Request::CreatePermission { peer } => {
                self.permission_confirmed(peer.ip(), started, now)
            }
            Request::ChannelBind { peer, channel } => {
                self.channel_confirmed(peer, channel, started, now)
            }
        }
    }

    fn failed(&mut self, request: Request, error: Error, now: Instant) {
        if matches!(self.state, State::Allocated(_)) && ends_allocation(request, &error) {
            self.close(TurnEvent::AllocationLost(error));
            return;
        }
        match request {
            Request::Allocate => self.close(TurnEvent::AllocationFailed(error)),
            Request::Refresh { lifetime: 0 } => self.close(TurnEvent::Released),
            Request::Refresh { .. } => self.refresh_failed(error, now),
            Request::CreatePermission { peer } => self.permission_failed(peer.ip(), error, now),
            Request::ChannelBind { peer, channel } => {
                self.channel_failed(peer, channel, error, now)
            }
        }
    }

    /// RFC 8656 §7.3: the Allocate success response.
    fn allocated(&mut self, started: Instant, msg: &Message<'_>, now: Instant) {
        if !matches!(self.state, State::Allocating) {
            return;
        }
        let relayed = msg.get::<XorRelayedAddress>().and_then(Result::ok);
        let mapped = msg.get::<XorMappedAddress>().and_then(Result::ok);
        let (Some(XorRelayedAddress(relayed)), Some(XorMappedAddress(mapped))) = (relayed, mapped)
        else {
            let e = Error::InvalidResponse(
                "Allocate success without XOR-RELAYED-ADDRESS or XOR-MAPPED-ADDRESS",
            );
            self.close(TurnEvent::AllocationFailed(e));
            return;
        };
        let lifetime = self.granted(msg);
        if lifetime.is_zero() {
            let e = Error::InvalidResponse("Allocate success with LIFETIME 0");
            self.close(TurnEvent::AllocationFailed(e));
            return;
        }
        self.state = State::Allocated(Allocation {
            relayed,
            mapped,
            expires: started + lifetime,
            refresh_at: Some(started + refresh_delay(lifetime)),
        });
        self.events.push_back(TurnEvent::Allocated {
            relayed,
            mapped,
            lifetime,
        });
        // Permissions asked for while allocating.
        let waiting: Vec<IpAddr> = self.permissions.keys().copied().collect();
        for ip in waiting {
            if Family::of(&SocketAddr::new(ip, 0)) == Family::of(&relayed) {
                self.request_permission(ip, now);
            } else {
                self.permissions.remove(&ip);
                let error = Error::PeerFamilyMismatch(SocketAddr::new(ip, 0));
                self.events
                    .push_back(TurnEvent::PermissionFailed { peer: ip, error });
            }
        }
    }

    /// RFC 8656 §8.3: a Refresh success; LIFETIME absent means the lifetime asked for.
    fn refreshed(&mut self, started: Instant, msg: &Message<'_>) {
        let lifetime = self.granted(msg);
        let State::Allocated(a) = &mut self.state else {
            return;
        };
        a.expires = started + lifetime;
        a.refresh_at = Some(started + refresh_delay(lifetime));
        self.events.push_back(TurnEvent::Refreshed { lifetime });
    }

    /// A failed Refresh is retried halfway to the expiry, while more than 10 s are left.
    fn refresh_failed(&mut self, error: Error, now: Instant) {
        if let State::Allocated(a) = &mut self.state {
            let left = a.expires.saturating_duration_since(now);
            a.refresh_at = (left > Duration::from_secs(10)).then(|| now + left / 2);
        }
        self.events.push_back(TurnEvent::RefreshFailed(error));
    }

    fn permission_confirmed(&mut self, ip: IpAddr, started: Instant, now: Instant) {
        let Some(p) = self.permissions.get_mut(&ip) else {
            return;
        };
        p.lease
            .confirm(started, PERMISSION_LIFETIME, PERMISSION_REFRESH);
        if !p.lease.announced {
            p.lease.announced = true;
            self.events.push_back(TurnEvent::PermissionCreated(ip));
        }
        self.flush_queue(now);
    }

    fn permission_failed(&mut self, ip: IpAddr, error: Error, now: Instant) {
        let Some(p) = self.permissions.get_mut(&ip) else {
            return;
        };
        p.lease.fail(error.clone(), now, RETRY_AFTER_FAILURE);
        self.events
            .push_back(TurnEvent::PermissionFailed { peer: ip, error });
        self.flush_queue(now);
    }

    fn channel_confirmed(
        &mut self,
        peer: SocketAddr,
        channel: u16,
        started: Instant,
        now: Instant,
    ) {
        let Some(c) = self.channels.get_mut(&peer) else {
            return;
        };
        if c.number != Some(channel) {
            return;
        }
        c.lease.confirm(started, CHANNEL_LIFETIME, CHANNEL_REFRESH);
        if !c.lease.announced {
            c.lease.announced = true;
            self.events
                .push_back(TurnEvent::ChannelBound { peer, channel });
        }
        // RFC 8656 §12.2: a ChannelBind installs or refreshes the permission for the peer's IP.
        if let Some(p) = self.permissions.get_mut(&peer.ip()) {
            if p.lease.failed.is_none() {
                let until = started + PERMISSION_LIFETIME;
                p.lease.active_until = Some(p.lease.active_until.map_or(until, |t| t.max(until)));
            }
        }
        self.flush_queue(now);
    }

    fn channel_failed(&mut self, peer: SocketAddr, channel: u16, error: Error, now: Instant) {
        let Some(c) = self.channels.get_mut(&peer) else {
            return;
        };
        c.lease.fail(error.clone(), now, RETRY_AFTER_FAILURE);
        // A binding that is still active on the server stays usable until it expires.
        if !c.lease.is_active(now) && c.number == Some(channel) {
            c.number = None;
            self.by_number.remove(&channel);
            self.numbers.release(channel, now);
        }
        self.events
            .push_back(TurnEvent::ChannelBindFailed { peer, error });
    }

    /// Ends the client with a terminal event.
    fn close(&mut self, event: TurnEvent) {
        self.state = State::Closed;
        self.transactions.clear();
        self.forget_peers();
        self.events.push_back(event);
    }

    fn forget_peers(&mut self) {
        self.permissions.clear();
        self.channels.clear();
        self.by_number.clear();
        self.queue.clear();
    }

    /// LIFETIME of a success response; the lifetime asked for when absent or malformed.
    fn granted(&self, msg: &Message<'_>) -> Duration {
        match msg.get::<Lifetime>() {
            Some(Ok(Lifetime(secs))) => Duration::from_secs(u64::from(secs)),
            _ => self.cfg.lifetime,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Timers
    // -----------------------------------------------------------------------------------------

    fn transaction_timers(&mut self, now: Instant) {
        let mut timed_out = Vec::new();
        for (tid, tx) in &mut self.transactions {
            if tx.deadline() <= now {
                timed_out.push(*tid);
            } else if tx.retransmit_due(now) {
                self.transmits.push_back(tx.bytes.clone());
            }
        }
        for tid in timed_out {
            // An earlier failure may have closed the client and cleared the rest.
            if let Some(tx) = self.transactions.remove(&tid) {
                self.failed(tx.request, Error::Timeout, now);
            }
        }
    }

    fn permission_timers(&mut self, now: Instant) {
        let mut refresh = Vec::new();
        self.permissions.retain(|ip, p| {
            if p.lease.on_timeout(now, PERMISSION_REFRESH, p.pinned) {
                refresh.push(*ip);
                return true;
            }
            p.pinned || !p.lease.is_dead(now)
        });
        for ip in refresh {
            self.request_permission(ip, now);
        }
    }

    fn channel_timers(&mut self, now: Instant) {
        let mut refresh = Vec::new();
        let mut released = Vec::new();
        self.channels.retain(|peer, c| {
            if c.lease.on_timeout(now, CHANNEL_REFRESH, false) {
                refresh.push(*peer);
                return true;
            }
            if !c.lease.is_active(now) && !c.lease.in_flight {
                released.extend(c.number.take());
            }
            !c.lease.is_dead(now)
        });
        for n in released {
            self.by_number.remove(&n);
            self.numbers.release(n, now);
        }
        for peer in refresh {
            self.request_channel(peer, now);
        }
    }

    // -----------------------------------------------------------------------------------------
    // Peers
    // -----------------------------------------------------------------------------------------

    /// The canonical peer, checked against the allocation (RFC 8656 §9: same family as the
    /// relayed address; §18.3: port 0 is invalid).
    fn check_peer(&self, peer: SocketAddr) -> Result<SocketAddr, Error> {
        let State::Allocated(a) = &self.state else {
            return Err(Error::NotAllocated);
        };
        let peer = canonical(peer);
        if peer.port() == 0 {
            return Err(Error::InvalidPeer(peer));
        }
        if Family::of(&peer) != Family::of(&a.relayed) {
            return Err(Error::PeerFamilyMismatch(peer));
        }
        Ok(peer)
    }

    /// Marks the permission for `peer` used, asking for it when needed; the error that failed it
    /// within the last 30 s otherwise.
    fn use_permission(&mut self, peer: SocketAddr, now: Instant) -> Result<(), Error> {
        let ip = peer.ip();
        let p = self.permissions.entry(ip).or_insert_with(|| Permission {
            lease: Lease::new(now),
            pinned: false,
            port: peer.port(),
        });
        p.lease.last_used = now;
        p.port = peer.port();
        if let Some((error, until)) = &p.lease.failed {
            if *until > now && !p.lease.is_active(now) {
                return Err(error.clone());
            }
        }
        if p.lease.needs_request(now) {
            self.request_permission(ip, now);
        }
        Ok(())
    }

    /// Marks the channel for `peer` used, binding or rebinding it when needed.
    fn use_channel(&mut self, peer: SocketAddr, now: Instant) {
        let c = self.channels.entry(peer).or_insert_with(|| Channel {
            lease: Lease::new(now),
            number: None,
        });
        c.lease.last_used = now;
        if c.lease.needs_request(now) {
            self.request_channel(peer, now);
        }
    }

    /// Data came from `peer`: it counts as use, and revives a lease left to lapse while idle.
    fn note_activity(&mut self, peer: SocketAddr, now: Instant) {
        let mut permission = false;
        if let Some(p) = self.permissions.get_mut(&peer.ip()) {
            p.lease.last_used = now;
            permission = p.lease.is_active(now) && p.lease.needs_request(now);
        }
        if permission {
            self.request_permission(peer.ip(), now);
        }
        let mut channel = false;
        if let Some(c) = self.channels.get_mut(&peer) {
            c.lease.last_used = now;
            channel = c.lease.is_active(now) && c.lease.needs_request(now);
        }
        if channel {
            self.request_channel(peer, now);
        }
    }

    /// Sends a CreatePermission for `ip` (RFC 8656 §10.1).
    fn request_permission(&mut self, ip: IpAddr, now: Instant) {
        let Some(p) = self.permissions.get_mut(&ip) else {
            return;
        };
        p.lease.in_flight = true;
        p.lease.refresh_at = None;
        p.lease.failed = None;
        let peer = SocketAddr::new(ip, p.port);
        self.start(Request::CreatePermission { peer }, Retries::default(), now);
    }

    /// Sends a ChannelBind for `peer` (RFC 8656 §12.1), with its current number or a new one.
    fn request_channel(&mut self, peer: SocketAddr, now: Instant) {
        let Some(c) = self.channels.get_mut(&peer) else {
            return;
        };
        let channel = match c.number {
            Some(n) => n,
            None => match self.numbers.take(now) {
                Some(n) => {
                    c.number = Some(n);
                    self.by_number.insert(n, peer);
                    n
                }
                None => {
                    c.lease.fail(Error::NoChannel, now, RETRY_AFTER_FAILURE);
                    return;
                }
            },
        };
        c.lease.in_flight = true;
        c.lease.refresh_at = None;
        c.lease.failed = None;
        self.start(
            Request::ChannelBind { peer, channel },
            Retries::default(),
            now,
        );
    }

    /// How data to `peer` goes out now.
    fn route(&self, peer: SocketAddr, now: Instant) -> Route {
        if let Some(c) = self.channels.get(&peer) {
            if let (Some(n), true) = (c.number, c.lease.is_active(now)) {
                return Route::Channel(n);
            }
        }
        match self.permissions.get(&peer.ip()) {
            Some(p) if p.lease.is_active(now) => Route::Indication,
            Some(Permission {
                lease:
                    Lease {
                        failed: Some((e, _)),
                        ..
                    },
                ..
            }) => Route::Drop(e.clone()),
            Some(_) => Route::Wait,
            None => Route::Drop(Error::NotAllocated),
        }
    }

    /// Sends what waited for a permission or channel and can go now, in order.
    fn flush_queue(&mut self, now: Instant) {
        if self.queue.is_empty() {
            return;
        }
        for (peer, data) in self.queue.take() {
            let _ = match self.route(peer, now) {
                Route::Channel(n) => self.push_channel_data(n, &data),
                Route::Indication => self.push_send_indication(peer, &data),
                Route::Wait => self.queue.push(peer, &data),
                Route::Drop(_) => Ok(()),
            };
        }
    }

    // -----------------------------------------------------------------------------------------
    // Output
    // -----------------------------------------------------------------------------------------

    /// Starts a transaction for `request`: builds it (signed when credentials are known) and
    /// queues its first send.
    fn start(&mut self, request: Request, retries: Retries, now: Instant) {
        let tid = self.new_tid();
        match self.build_request(&request, tid) {
            Ok((bytes, signer)) => {
                self.transmits.push_back(bytes.clone());
                let tx = Transaction::new(request, bytes, signer, retries, now, self.cfg.stream);
                self.transactions.insert(tid, tx);
            }
            Err(e) => self.failed(request, Error::Encode(e), now),
        }
    }

    fn build_request(
        &self,
        request: &Request,
        tid: TransactionId,
    ) -> Result<(Vec<u8>, Option<Signer>), BuildError> {
        let mut buf = vec![0u8; REQUEST_BUFFER];
        let mut b = MessageBuilder::new(&mut buf, Class::Request, request.method(), tid)?;
        match *request {
            Request::Allocate => {
                b.add(&RequestedTransport(RequestedTransport::UDP))?;
                b.add(&Lifetime(self.cfg.requested_lifetime()))?;
            }
            Request::Refresh { lifetime } => b.add(&Lifetime(lifetime))?,
            Request::CreatePermission { peer } => b.add(&XorPeerAddress(peer))?,
            Request::ChannelBind { peer, channel } => {
                b.add(&ChannelNumber(channel))?;
                b.add(&XorPeerAddress(peer))?;
            }
        }
        if let Some(software) = &self.cfg.software {
            b.add(&Software(software))?;
        }
        let signer = match &self.credentials {
            Some(c) => {
                c.sign(&mut b, &self.cfg.username)?;
                Some(c.signer().clone())
            }
            None => None,
        };
        b.add_fingerprint()?;
        let n = b.finish();
        buf.truncate(n);
        Ok((buf, signer))
    }

    /// RFC 8656 §12.4: ChannelData, padded to 4 bytes over TCP/TLS (§12.5).
    fn push_channel_data(&mut self, channel: u16, data: &[u8]) -> Result<(), Error> {
        let mut out = vec![0u8; (floe_stun::channel_data::HEADER_LEN + data.len() + 3) & !3];
        let n =
            ChannelData::encode(channel, data, self.cfg.stream, &mut out).map_err(Error::Encode)?;
        out.truncate(n);
        self.transmits.push_back(out);
        Ok(())
    }

    /// RFC 8656 §11.1: a Send indication with XOR-PEER-ADDRESS and DATA.
    fn push_send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), Error> {
        let tid = self.new_tid();
        let mut out = vec![0u8; floe_stun::HEADER_LEN + 24 + 4 + ((data.len() + 3) & !3)];
        let n = (|| -> Result<usize, BuildError> {
            let mut b = MessageBuilder::new(&mut out, Class::Indication, Method::SEND, tid)?;
            b.add(&XorPeerAddress(peer))?;
            b.add(&Data(data))?;
            Ok(b.finish())
        })()
        .map_err(Error::Encode)?;
        out.truncate(n);
        self.transmits.push_back(out);
        Ok(())
    }

    /// RFC 8489 §5: a transaction id from the CSPRNG.
    fn new_tid(&mut self) -> TransactionId {
        let mut id = [0u8; 12];
        self.rng.fill_bytes(&mut id);
        TransactionId(id)
    }
}

/// Whether a failed request means the allocation is gone: RFC 8656 §8.3, 437 Allocation
/// Mismatch; or credentials that no longer verify on a request about the allocation (401 after
/// the retry with a fresh nonce, 441; e.g. an expired TURN REST credential): it cannot be
/// refreshed any more.
fn ends_allocation(request: Request, error: &Error) -> bool {
    match error.code() {
        Some(ErrorCode::ALLOCATION_MISMATCH) => true,
        Some(ErrorCode::UNAUTHENTICATED | ErrorCode::WRONG_CREDENTIALS) => {
            request != Request::Allocate
        }
        _ => false,
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (the form the server uses in XOR-PEER-ADDRESS).
fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// RFC 8656 §8: refresh a minute before expiry, or at half the lifetime when it is short.
fn refresh_delay(lifetime: Duration) -> Duration {
    if lifetime > 2 * REFRESH_MARGIN {
        lifetime - REFRESH_MARGIN
    } else {
        lifetime / 2
    }
}
