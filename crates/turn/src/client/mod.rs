//! A sans-IO TURN client (RFC 8656 over RFC 8489): allocation with long-term credentials,
//! refreshes, permissions, channels, Send/Data indications and ChannelData.
//!
//! # How to drive it
//!
//! The client owns no socket and reads no clock: the caller passes `now` into every call and
//! moves bytes between the client and one socket (UDP) or stream (TCP, TLS) to the server.
//!
//! ```text
//! let mut turn = TurnClient::new(TurnClientConfig::new(server, user, pass, seed), now);
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

// `impl TurnClient`, by concern.
mod allocation;
mod data;
mod leases;
mod requests;
mod timers;

use core::fmt;
use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use floe_stun::{Class, Message, Method, TransactionId};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};

pub use floe_stun::stream::{FramingError, StreamDecoder};
pub use types::{Error, TurnEvent, TurnState};

use auth::{Account, Credentials};
use peers::{Channel, ChannelNumbers, Permission, SendQueue};
use transaction::{Request, Retries, Transaction};

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
    /// Seed of the CSPRNG (ChaCha) behind transaction ids (RFC 8489 §5: they must be
    /// cryptographically random). The IO shell draws it from the operating system; tests fix it,
    /// so the client is deterministic.
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
    /// SOFTWARE. `seed` seeds the transaction-id CSPRNG ([`TurnClientConfig::seed`]): the
    /// client reads no randomness itself, so give it 32 bytes from the OS (`rand::random()`).
    pub fn new(
        server: SocketAddr,
        username: impl Into<String>,
        password: impl Into<String>,
        seed: [u8; 32],
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
            seed,
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
    /// Call it until `None` after `new` and after every `handle_*`, `send_to`,
    /// `create_permission`, `bind_channel`, `refresh` or `release` call.
    #[must_use]
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.transmits.pop_front()
    }

    /// The next event ([`TurnEvent`]: what happened to the allocation, its permissions and
    /// channels), until `None`. Call it, like [`TurnClient::poll_transmit`], until `None` after
    /// every call that changes the client.
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

    /// RFC 8489 §5: a transaction id from the CSPRNG.
    fn new_tid(&mut self) -> TransactionId {
        let mut id = [0u8; 12];
        self.rng.fill_bytes(&mut id);
        TransactionId(id)
    }
}

/// IPv4-mapped IPv6 addresses as IPv4 (the form the server uses in XOR-PEER-ADDRESS).
fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}
