//! The TURN server state machine (RFC 8656, RFC 6062 control plane), sans-IO.
//!
//! # API overview (for the IO shell)
//!
//! One [`TurnServer`] per IO worker; state that must be common to all workers (quota counts per
//! user and in total, EVEN-PORT reservations, RFC 6062 connection ids) lives in an
//! `Arc<`[`Shared`]`>` given to every worker. The shell reads the clock once per loop turn and
//! passes `now: Instant` (and `unix_secs` where credentials expire) into every call; nothing
//! here reads a clock, a socket or the OS RNG.
//!
//! ```text
//! let shared = Arc::new(Shared::new(QuotaConfig::default()));
//! let mut turn = TurnServer::new(config.clone(), shared.clone(), seed, now);
//! loop {
//!     // a packet from a client (UDP datagram, or one framed STUN/ChannelData message from a
//!     // TCP/TLS stream: frame with floe_stun::Message::frame_len / ChannelData::frame_len)
//!     if let Some(t) = turn.handle_client_packet(now, unix, client, pkt, &mut out, &mut binder) { send(t, &out) }
//!     // a datagram from a peer on a relay socket bound through `binder`
//!     if let Some(t) = turn.handle_peer_packet(now, relay, peer, data, &mut out) { send(t, &out) }
//!     // timers
//!     if turn.poll_timeout() <= Some(now) { turn.handle_timeout(now, unix, &mut binder) }
//!     while let Some(ev) = turn.poll_event() { /* RFC 6062 connects, splices, logs */ }
//! }
//! ```
//!
//! * Outputs are written into the caller's `out` buffer; a [`Transmit`] says where `out[..len]`
//!   goes. Use an `out` of at least 1500 bytes for control traffic and `data.len() + 64` for
//!   relayed data (65 600 bytes covers every UDP payload). Too small a buffer drops the packet
//!   (counted as [`DropReason::BufferTooSmall`]).
//! * The relay path (ChannelData, Send/Data indications, peer datagrams) allocates nothing:
//!   O(1) hash lookups by client 5-tuple, by relay address, by (allocation, channel) and by
//!   (allocation, peer), then one copy into `out`. Bandwidth quotas draw leases from the shared
//!   buckets every [`shared`]`::BANDWIDTH_LEASE` bytes, so the hot path takes no lock.
//! * [`RelayBinder`] is implemented by the shell: `bind` opens a relay socket synchronously
//!   (RFC 8656 §7.2 answers 508 when none can be bound), `release` closes it.
//! * The shell tells the state machine when a client's TCP/TLS connection closes
//!   ([`TurnServer::handle_client_closed`]: RFC 8656 §3.1 deletes its allocation).
//! * RFC 6062: [`Event::ConnectPeer`] asks the shell to connect; the shell answers with
//!   [`TurnServer::handle_peer_connected`] or [`TurnServer::handle_peer_connect_failed`]. An
//!   incoming peer TCP connection on a relayed address is offered with
//!   [`TurnServer::handle_peer_tcp_incoming`]. A successful ConnectionBind yields
//!   [`Event::ConnectionBound`]: splice the two streams. [`Event::CloseConnection`] and
//!   [`TurnServer::handle_peer_tcp_closed`] end them.
//! * [`TurnServer::stats`] exposes counters as plain data for the shell's metrics exporter.
//!
//! Which parts of which RFC are implemented, and every error code with when it is sent, is in
//! `docs/turn-protocol.md`.

mod allocate;
mod allocation;
mod auth;
mod cache;
mod config;
mod own_relay;
mod relay;
mod reply;
mod requests;
mod rfc6062;
mod rng;
mod shared;
mod stats;
mod types;

use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use floe_stun::attr::{ErrorCode, Nonce as NonceAttr, PasswordAlgorithms, Realm};
use floe_stun::{BuildError, Class, Message, MessageBuilder, Method, TransactionId};

use crate::binding::{BindingConfig, BindingService, Outcome};
use crate::nonce::{NonceConfig, Nonces};
use crate::ratelimit::SourceRateLimiter;

pub use allocation::{CHANNEL_LIFETIME, PERMISSION_LIFETIME};
pub use config::{Lifetimes, TurnConfig};
pub use own_relay::{REFUSAL_LOG_BURST, REFUSAL_LOG_WINDOW};
pub use shared::Shared;
pub use stats::{DropCounts, DropReason, ErrorCounts, RefusalCounts, TurnStats, ERROR_CODES};
pub use types::{
    BindError, ClientTuple, ConnectionId, DeleteReason, Event, PeerRequest, RelayBinder,
    RelayTransport, Transmit, Transport,
};

use allocation::{AllocId, Allocation, Signer};
use auth::{AuthFailure, Authed, OFFERED_ALGORITHMS};
use cache::TransactionCache;
use reply::{seal, IntegrityKind, Reject};
use rng::SplitMix64;
use shared::WorkerId;

/// The maps looked up for every relayed packet (allocations by client, by relay address; an
/// allocation's channels and permissions). foldhash (hashbrown's default) instead of SipHash:
/// several times cheaper on these small keys, and still seeded at random per map, so keys an
/// attacker chooses (source ports) cannot be aimed at one bucket without knowing the seed; the
/// maps are also bounded by the allocation and per-allocation quotas. Iteration order is as
/// arbitrary as with the std hasher and never reaches output.
pub(crate) type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// A timer; the set of `(deadline, Timer)` is ordered, so expiry is processed deterministically.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// RFC 8656 §7: the allocation's lifetime (or strict credential expiry).
    Allocation(AllocId),
    /// RFC 8656 §9: a permission's 300 s.
    Permission(AllocId, IpAddr),
    /// RFC 8656 §12: a channel's 600 s.
    Channel(AllocId, u16),
    /// RFC 8656 §7.2: an EVEN-PORT reservation's 30 s.
    Reservation([u8; 8]),
    /// RFC 6062 §5.2/§5.3: 30 s to receive ConnectionBind.
    ConnectionBind(ConnectionId),
}

/// A Connect waiting for the shell's outcome (RFC 6062 §5.2).
#[derive(Debug, Clone)]
pub(crate) struct PendingConnect {
    client: ClientTuple,
    tid: TransactionId,
    signer: Signer,
    alloc: AllocId,
    peer: SocketAddr,
}

/// What a request handler produced.
pub(crate) enum Handled {
    /// The success response was written into the builder.
    Respond,
    /// No response now (RFC 6062 Connect: answered when the shell reports the outcome).
    Deferred,
}

/// The TURN server state machine of one IO worker. See the [module docs](self).
#[derive(Debug)]
pub struct TurnServer {
    config: TurnConfig,
    shared: Arc<Shared>,
    worker: WorkerId,
    rng: SplitMix64,
    binding: BindingService,
    nonces: Nonces,
    limiter: SourceRateLimiter,
    allocations: FastMap<AllocId, Allocation>,
    by_client: FastMap<ClientTuple, AllocId>,
    by_relay: FastMap<SocketAddr, AllocId>,
    next_alloc: AllocId,
    timers: BTreeSet<(Instant, Timer)>,
    cache: TransactionCache,
    events: VecDeque<Event>,
    connects: HashMap<ConnectionId, PendingConnect>,
    stats: TurnStats,
    refusal_log: own_relay::RefusalLog,
}

impl TurnServer {
    /// A server for one worker. `seed` feeds the PRNG for relay ports, reservation tokens,
    /// connection ids and Data indication transaction ids (use a different seed per worker).
    pub fn new(config: TurnConfig, shared: Arc<Shared>, seed: u64, now: Instant) -> Self {
        let features = Self::security_features(config.offer_sha256, config.offer_userhash);
        let nonces = Nonces::new(
            config.nonce_secret.clone(),
            NonceConfig::new(config.nonce_ttl_secs, features),
        );
        let binding = BindingService::new(BindingConfig {
            software: config.software.clone(),
            ..config.binding.clone()
        });
        let limiter = SourceRateLimiter::new(config.rate_limit, config.rate_limit_key, now);
        let worker = shared.register_worker();
        TurnServer {
            cache: TransactionCache::new(config.transaction_cache_entries),
            config,
            shared,
            worker,
            rng: SplitMix64::new(seed),
            binding,
            nonces,
            limiter,
            allocations: FastMap::default(),
            by_client: FastMap::default(),
            by_relay: FastMap::default(),
            next_alloc: 1,
            timers: BTreeSet::new(),
            events: VecDeque::new(),
            connects: HashMap::new(),
            stats: TurnStats::default(),
            refusal_log: own_relay::RefusalLog::default(),
        }
    }

    /// A packet from a client: a STUN message (Binding or TURN request, Send indication) or a
    /// ChannelData message (RFC 8656 §12.4; over TCP/TLS one frame without its padding or with
    /// it). Writes at most one reply or relayed packet into `out`.
    pub fn handle_client_packet(
        &mut self,
        now: Instant,
        unix_secs: u64,
        client: ClientTuple,
        packet: &[u8],
        out: &mut [u8],
        binder: &mut dyn RelayBinder,
    ) -> Option<Transmit> {
        // RFC 7983: 0x40..=0x7F is ChannelData (channel numbers 0x4000..=0x7FFF); parse it first,
        // it is the hot path.
        match packet.first() {
            Some(0x40..=0x7F) => return self.client_channel_data(now, client, packet, out),
            Some(0x00..=0x03) => {}
            _ => {
                self.stats.dropped.add(DropReason::Malformed);
                return None;
            }
        }
        let Ok(msg) = Message::parse(packet) else {
            self.stats.dropped.add(DropReason::Malformed);
            return None;
        };
        if msg.has_fingerprint() && !msg.verify_fingerprint() {
            self.stats.dropped.add(DropReason::BadFingerprint);
            return None;
        }
        match (msg.class(), msg.method()) {
            (Class::Request, Method::BINDING) => self.binding_request(&msg, client, out),
            (Class::Request, _) => self.request(now, unix_secs, client, &msg, out, binder),
            (Class::Indication, Method::SEND) => self.send_indication(now, client, &msg, out),
            // RFC 8489 §6.3.2: a Binding indication is a keepalive; nothing to do.
            (Class::Indication, Method::BINDING) => None,
            _ => {
                self.stats.dropped.add(DropReason::UnexpectedMessage);
                None
            }
        }
    }

    /// A UDP datagram from `peer` received on the relay socket bound at `relay` (RFC 8656 §11.3:
    /// relayed to the client as ChannelData when a channel is bound to the peer, as a Data
    /// indication otherwise; dropped without a permission).
    pub fn handle_peer_packet(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        data: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        self.peer_datagram(now, relay, peer, data, out)
    }

    /// The client's TCP/TLS connection closed: RFC 8656 §3.1 deletes the allocation made over it
    /// (for RFC 6062, its control connection).
    pub fn handle_client_closed(
        &mut self,
        _now: Instant,
        client: ClientTuple,
        binder: &mut dyn RelayBinder,
    ) {
        if let Some(&id) = self.by_client.get(&client) {
            self.delete_allocation(id, DeleteReason::ClientClosed, binder);
        }
    }

    /// Processes every timer due at `now`: allocation, permission and channel expiry, strict
    /// REST credential expiry, EVEN-PORT reservations, RFC 6062 ConnectionBind timers. Call it
    /// when [`TurnServer::poll_timeout`] is reached (calling it early is harmless).
    pub fn handle_timeout(&mut self, now: Instant, _unix_secs: u64, binder: &mut dyn RelayBinder) {
        self.cache.expire(now);
        while let Some(&(deadline, timer)) = self.timers.first() {
            if deadline > now {
                break;
            }
            self.timers.pop_first();
            self.fire(now, timer, binder);
        }
    }

    /// The next instant at which [`TurnServer::handle_timeout`] must be called; `None` when no
    /// timer is armed. Call it after every `handle_*` call (they may arm timers).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(t, _)| t)
    }

    /// The next event for the shell, until `None`. Drain after every `handle_*` call.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// This worker's index among the servers sharing its [`Shared`]: 0, 1, ... in the order
    /// they were created (see [`Transmit::ToRelay`]).
    pub fn worker_index(&self) -> u32 {
        self.worker.0
    }

    /// Counters of this worker.
    pub fn stats(&self) -> &TurnStats {
        &self.stats
    }

    /// Allocations held by this worker.
    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Entries in the transaction cache (bounded by
    /// [`TurnConfig::transaction_cache_entries`]).
    pub fn cached_transactions(&self) -> usize {
        self.cache.len()
    }

    /// Armed timers (bounded by the allocations, permissions and channels).
    pub fn timer_count(&self) -> usize {
        self.timers.len()
    }

    /// The configuration.
    pub fn config(&self) -> &TurnConfig {
        &self.config
    }

    // -----------------------------------------------------------------------------------------
    // Requests
    // -----------------------------------------------------------------------------------------

    fn binding_request(
        &mut self,
        msg: &Message<'_>,
        client: ClientTuple,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let outcome = self.binding.handle(
            msg,
            client.local,
            client.remote,
            client.transport.binding(),
            out,
        );
        match outcome {
            Outcome::Reply(r) => {
                self.stats.requests += 1;
                Some(Transmit::ToClient {
                    client: ClientTuple {
                        transport: client.transport,
                        local: r.from,
                        remote: r.to,
                    },
                    len: r.len,
                })
            }
            Outcome::Drop(_) => {
                self.stats.dropped.add(DropReason::UnexpectedMessage);
                None
            }
        }
    }

    /// A TURN request: retransmission cache, authentication, 420, allocation checks, dispatch.
    fn request(
        &mut self,
        now: Instant,
        unix_secs: u64,
        client: ClientTuple,
        msg: &Message<'_>,
        out: &mut [u8],
        binder: &mut dyn RelayBinder,
    ) -> Option<Transmit> {
        let tid = msg.transaction_id();
        if client.transport == Transport::Udp {
            self.cache.expire(now);
            if let Some(cached) = self.cache.get(client, tid) {
                let len = cached.len();
                let Some(dst) = out.get_mut(..len) else {
                    self.stats.dropped.add(DropReason::BufferTooSmall);
                    return None;
                };
                dst.copy_from_slice(cached);
                self.stats.retransmissions += 1;
                return Some(Transmit::ToClient { client, len });
            }
        }
        let method = msg.method();
        if !is_turn_method(method) {
            // RFC 8489 §6.3.1: a request with an unknown method gets 400.
            return self.unauthenticated_error(now, unix_secs, client, msg, Reject::new(400), out);
        }
        let authed = match self.authenticate(msg, client, unix_secs) {
            Ok(a) => a,
            Err(failure) => {
                return self.auth_failed(now, unix_secs, client, msg, failure, out, binder)
            }
        };
        let signer = Signer {
            key: authed.key.clone(),
            kind: authed.kind,
        };
        let result = self.authenticated(now, unix_secs, client, msg, &authed, out, binder);
        let len = match result {
            Ok(Some(len)) => len,
            Ok(None) => return None,
            Err(reject) => self.write_error(out, method, tid, &reject, Some(&signer))?,
        };
        self.stats.requests += 1;
        if client.transport == Transport::Udp {
            self.cache.insert(client, tid, &out[..len], now);
        }
        Some(Transmit::ToClient { client, len })
    }

    /// Processes an authenticated request; `Ok(Some(len))` is a signed success response,
    /// `Ok(None)` a deferred one (Connect) or a build failure.
    #[allow(clippy::too_many_arguments)]
    fn authenticated(
        &mut self,
        now: Instant,
        unix_secs: u64,
        client: ClientTuple,
        msg: &Message<'_>,
        authed: &Authed,
        out: &mut [u8],
        binder: &mut dyn RelayBinder,
    ) -> Result<Option<usize>, Reject> {
        if let Some(reject) =
            Reject::unknown_attributes(msg.unknown_comprehension_required(auth::is_understood))
        {
            return Err(reject);
        }
        let method = msg.method();
        let existing = self.by_client.get(&client).copied();
        if method != Method::ALLOCATE && method != Method::CONNECTION_BIND {
            // RFC 8656 §8.2, §10.2, §12.2 (and RFC 6062 §5.2): these need an allocation on this
            // 5-tuple, made with the same username (441 otherwise, RFC 8656 §5).
            let id = existing.ok_or(Reject::new(ErrorCode::ALLOCATION_MISMATCH))?;
            let same_user = self
                .allocations
                .get(&id)
                .is_some_and(|a| a.user == authed.user);
            if !same_user {
                return Err(Reject::new(ErrorCode::WRONG_CREDENTIALS));
            }
        }
        let handled = {
            let mut b =
                MessageBuilder::new(out, Class::SuccessResponse, method, msg.transaction_id())
                    .map_err(|_| Reject::new(500))?;
            let handled = match method {
                Method::ALLOCATE => {
                    self.allocate(now, unix_secs, client, msg, authed, &mut b, binder)
                }
                Method::REFRESH => self.refresh(now, client, msg, &mut b, binder),
                Method::CREATE_PERMISSION => self.create_permission(now, client, msg, &mut b),
                Method::CHANNEL_BIND => self.channel_bind(now, client, msg, &mut b),
                Method::CONNECT => self.connect(now, client, msg, authed, &mut b),
                Method::CONNECTION_BIND => self.connection_bind(client, msg, authed, &mut b),
                _ => Err(Reject::new(400)),
            }?;
            match handled {
                Handled::Deferred => None,
                Handled::Respond => Some(seal(
                    b,
                    self.config.software.as_deref(),
                    Some((authed.key.as_bytes(), authed.kind)),
                )),
            }
        };
        match handled {
            None => Ok(None),
            Some(Ok(len)) => Ok(Some(len)),
            Some(Err(_)) => {
                self.stats.dropped.add(DropReason::BufferTooSmall);
                Ok(None)
            }
        }
    }

    /// RFC 8489 §9.2.4: the unsigned answer to a request that did not authenticate. A REST
    /// credential that expired ends the allocation at its Refresh (issue §3), when the Refresh
    /// proves it comes from the allocation's owner.
    #[allow(clippy::too_many_arguments)]
    fn auth_failed(
        &mut self,
        now: Instant,
        unix_secs: u64,
        client: ClientTuple,
        msg: &Message<'_>,
        failure: AuthFailure,
        out: &mut [u8],
        binder: &mut dyn RelayBinder,
    ) -> Option<Transmit> {
        if failure != AuthFailure::NoCredentials {
            self.stats.auth_failures += 1;
        }
        if let AuthFailure::Expired { user } = &failure {
            if msg.method() == Method::REFRESH {
                self.end_expired(client, msg, user, binder);
            }
        }
        let reject = Reject::new(failure.code());
        self.unauthenticated_error(now, unix_secs, client, msg, reject, out)
    }

    fn end_expired(
        &mut self,
        client: ClientTuple,
        msg: &Message<'_>,
        user: &str,
        binder: &mut dyn RelayBinder,
    ) {
        let Some(&id) = self.by_client.get(&client) else {
            return;
        };
        let owner = self.allocations.get(&id).is_some_and(|a| {
            let kind = if msg.has_integrity_sha256() {
                IntegrityKind::Sha256
            } else {
                IntegrityKind::Sha1
            };
            &*a.user == user && auth::verify(msg, &a.key, kind)
        });
        if owner {
            self.delete_allocation(id, DeleteReason::CredentialExpired, binder);
        }
    }

    /// An error to an unauthenticated request: never signed; 401 and 438 carry REALM, a fresh
    /// NONCE and PASSWORD-ALGORITHMS (RFC 8489 §9.2.4).
    ///
    /// Over UDP it is rate limited per source (RFC 8656 §21.1): a spoofed source must not turn
    /// the server into a reflector. Over TCP and TLS the handshake proved the source, the answer
    /// goes back on the attacker's own connection (no reflection, no amplification beyond what
    /// it sends), and dropping it would leave an honest client waiting for its 39.5 s
    /// transaction timeout; connection counts and idle timeouts bound that path instead.
    fn unauthenticated_error(
        &mut self,
        now: Instant,
        unix_secs: u64,
        client: ClientTuple,
        msg: &Message<'_>,
        reject: Reject,
        out: &mut [u8],
    ) -> Option<Transmit> {
        if client.transport == Transport::Udp
            && !self.limiter.check(client.remote.ip(), now).is_allowed()
        {
            self.stats.dropped.add(DropReason::RateLimited);
            return None;
        }
        let challenge = matches!(reject.code, 401 | 438);
        let nonce = challenge.then(|| self.nonces.issue(client.remote, unix_secs));
        let written = (|| -> Result<usize, BuildError> {
            let mut b = MessageBuilder::new(
                out,
                Class::ErrorResponse,
                msg.method(),
                msg.transaction_id(),
            )?;
            reject.write(&mut b)?;
            if let Some(nonce) = &nonce {
                b.add(&Realm(self.config.realm()))?;
                b.add(&NonceAttr(nonce.as_str()))?;
                if self.config.offer_sha256 {
                    b.add(&PasswordAlgorithms::List(&OFFERED_ALGORITHMS))?;
                }
            }
            seal(b, self.config.software.as_deref(), None)
        })();
        let Ok(len) = written else {
            self.stats.dropped.add(DropReason::BufferTooSmall);
            return None;
        };
        self.stats.requests += 1;
        self.stats.errors.add(reject.code);
        Some(Transmit::ToClient { client, len })
    }

    /// Writes a (signed) error response.
    fn write_error(
        &mut self,
        out: &mut [u8],
        method: Method,
        tid: TransactionId,
        reject: &Reject,
        signer: Option<&Signer>,
    ) -> Option<usize> {
        let written = (|| -> Result<usize, BuildError> {
            let mut b = MessageBuilder::new(out, Class::ErrorResponse, method, tid)?;
            reject.write(&mut b)?;
            seal(
                b,
                self.config.software.as_deref(),
                signer.map(|s| (s.key.as_bytes(), s.kind)),
            )
        })();
        match written {
            Ok(len) => {
                self.stats.errors.add(reject.code);
                Some(len)
            }
            Err(_) => {
                self.stats.dropped.add(DropReason::BufferTooSmall);
                None
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Timers and deletion
    // -----------------------------------------------------------------------------------------

    fn fire(&mut self, now: Instant, timer: Timer, binder: &mut dyn RelayBinder) {
        match timer {
            Timer::Allocation(id) => {
                let Some(a) = self.allocations.get(&id) else {
                    return;
                };
                if a.deadline() > now {
                    return;
                }
                let reason = match a.hard_deadline {
                    Some(h) if h <= a.expires => DeleteReason::CredentialExpired,
                    _ => DeleteReason::Expired,
                };
                self.delete_allocation(id, reason, binder);
            }
            Timer::Permission(id, ip) => {
                if let Some(a) = self.allocations.get_mut(&id) {
                    if a.permissions.get(&ip).is_some_and(|&e| e <= now) {
                        a.permissions.remove(&ip);
                        self.stats.permissions_active -= 1;
                    }
                }
            }
            Timer::Channel(id, ch) => {
                if let Some(a) = self.allocations.get_mut(&id) {
                    if let Some(c) = a.channels.get(&ch).copied() {
                        if c.expires <= now {
                            a.channels.remove(&ch);
                            a.channel_by_peer.remove(&c.peer);
                            self.stats.channels_active -= 1;
                        }
                    }
                }
            }
            Timer::Reservation(token) => self.expire_reservation(now, token),
            Timer::ConnectionBind(id) => self.expire_connection(id),
        }
    }

    /// Re-arms a timer: removes the entry at `old` (if any), adds one at `new`.
    fn rearm(&mut self, old: Option<Instant>, new: Instant, timer: Timer) {
        if let Some(old) = old {
            self.timers.remove(&(old, timer));
        }
        self.timers.insert((new, timer));
    }

    /// Deletes an allocation: releases its relay sockets and quota, disarms its timers, closes
    /// its RFC 6062 connections and reports it.
    fn delete_allocation(
        &mut self,
        id: AllocId,
        reason: DeleteReason,
        binder: &mut dyn RelayBinder,
    ) {
        let Some(mut a) = self.allocations.remove(&id) else {
            return;
        };
        self.by_client.remove(&a.client);
        for relay in a.relays.iter().flatten() {
            self.forget_relay(relay.local, a.transport);
            binder.release(relay.local, a.transport);
        }
        self.timers.remove(&(a.deadline(), Timer::Allocation(id)));
        for (&ip, &exp) in &a.permissions {
            self.timers.remove(&(exp, Timer::Permission(id, ip)));
        }
        for (&ch, c) in &a.channels {
            self.timers.remove(&(c.expires, Timer::Channel(id, ch)));
        }
        self.stats.permissions_active -= a.permissions.len() as u64;
        self.stats.channels_active -= a.channels.len() as u64;
        if let Some(q) = a.quota.take() {
            self.shared.quota().release(q);
        }
        self.close_connections_of(id, &a);
        self.connects.retain(|_, p| p.alloc != id);
        self.stats.allocations_deleted += 1;
        self.stats.allocations_active -= 1;
        self.events.push_back(Event::AllocationDeleted {
            client: a.client,
            reason,
        });
    }
}

/// The TURN (and RFC 6062) request methods.
fn is_turn_method(m: Method) -> bool {
    matches!(
        m,
        Method::ALLOCATE
            | Method::REFRESH
            | Method::CREATE_PERMISSION
            | Method::CHANNEL_BIND
            | Method::CONNECT
            | Method::CONNECTION_BIND
    )
}
