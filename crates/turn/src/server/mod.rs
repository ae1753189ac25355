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

mod admin;
mod allocate;
mod allocation;
mod auth;
mod cache;
mod config;
mod dispatch;
mod fast_path;
mod own_relay;
mod relay;
mod reload;
mod reply;
mod requests;
mod rfc6062;
mod rng;
mod shared;
mod stats;
mod timers;
mod types;

use core::net::{IpAddr, SocketAddr};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use floe_stun::{Class, Message, Method, TransactionId};

use crate::binding::{BindingConfig, BindingService};
use crate::nonce::{NonceConfig, Nonces};

pub use admin::{AllocationFilter, AllocationInfo, AllocationUsage, DrainConfig, UsageDelta};
pub use allocation::{CHANNEL_LIFETIME, PERMISSION_LIFETIME};
pub use config::{Lifetimes, TurnConfig};
pub use fast_path::{FastPathCharge, FastPathUsage};
pub use own_relay::{REFUSAL_LOG_BURST, REFUSAL_LOG_WINDOW};
pub use reload::ReloadOutcome;
pub use rfc6062::STREAM_MIN_GRANT;
pub use shared::Shared;
pub use stats::{
    DropCounts, DropReason, ErrorCounts, MethodCounts, RefusalCounts, Traffic, TransportTraffic,
    TurnStats, ERROR_CODES, METHODS,
};
pub use types::{
    BindError, ChannelRelay, ClientTuple, ConnectionGrant, ConnectionId, DeleteReason, Event,
    PeerAddr, PeerRequest, PermissionRelay, RelayAddr, RelayBinder, RelayDirection, RelayTransport,
    Transmit, Transport,
};

use allocation::{AllocId, Allocation, Signer};
use cache::TransactionCache;
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
    /// Usernames revoked through the admin API (answered 401 until their time).
    revoked: admin::Revoked,
    /// Draining: new Allocates are refused (see [`DrainConfig`]).
    draining: Option<DrainConfig>,
    /// Per-allocation usage reports ([`TurnServer::drain_usage`]).
    usage: admin::UsageTracking,
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
        shared.init_limiter(config.rate_limit, config.rate_limit_key, now);
        let worker = shared.register_worker();
        TurnServer {
            cache: TransactionCache::new(config.transaction_cache_entries),
            config,
            shared,
            worker,
            rng: SplitMix64::new(seed),
            binding,
            nonces,
            allocations: FastMap::default(),
            by_client: FastMap::default(),
            by_relay: FastMap::default(),
            next_alloc: 1,
            timers: BTreeSet::new(),
            events: VecDeque::new(),
            connects: HashMap::new(),
            stats: TurnStats::default(),
            refusal_log: own_relay::RefusalLog::default(),
            revoked: admin::Revoked::default(),
            draining: None,
            usage: admin::UsageTracking::default(),
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
        relay: RelayAddr,
        peer: PeerAddr,
        data: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        self.peer_datagram(now, relay.0, peer.0, data, out)
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

    /// Whether `client` (its 5-tuple) holds an allocation on this worker. The shell uses it to
    /// close a TCP/TLS connection that never allocates (RFC 8656 §21.3: resources of an
    /// unauthenticated client are bounded in time).
    pub fn has_allocation(&self, client: ClientTuple) -> bool {
        self.by_client.contains_key(&client)
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
}
