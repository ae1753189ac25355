//! State shared by all workers of one server: quota accounting (allocations per user and in
//! total, per-user bandwidth), the limiter of answers to unauthenticated requests, EVEN-PORT
//! reservations and RFC 6062 connection ids. Locked only on control-path operations (Allocate,
//! deletion, Connect, ConnectionBind, an unauthenticated UDP request) and, for bandwidth, once
//! per lease of [`BANDWIDTH_LEASE`] bytes — never per relayed packet.

use core::net::SocketAddr;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Instant;

use crate::quota::{QuotaConfig, QuotaTracker};
use crate::ratelimit::{RateDecision, RateLimitConfig, SourceRateLimiter};

use super::types::ConnectionId;

/// Bytes of relay bandwidth a worker draws from the shared quota buckets at a time.
pub(crate) const BANDWIDTH_LEASE: usize = 16 * 1024;

/// Identifies a worker ([`crate::server::TurnServer`]) among those sharing a [`Shared`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct WorkerId(pub(crate) u32);

/// RFC 8656 §7.2: a port kept for a later Allocate carrying RESERVATION-TOKEN.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reservation {
    pub(crate) addr: SocketAddr,
    pub(crate) expires: Instant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// RFC 6062 §5.2: the server is connecting to the peer.
    Connecting,
    /// RFC 6062 §5.2/§5.3: waiting up to 30 s for ConnectionBind.
    Pending,
    /// RFC 6062 §5.4: spliced with a client data connection.
    Bound,
}

/// An RFC 6062 peer TCP connection.
#[derive(Debug, Clone)]
pub(crate) struct ConnEntry {
    pub(crate) owner: WorkerId,
    pub(crate) alloc: u64,
    pub(crate) user: Arc<str>,
    pub(crate) peer: SocketAddr,
    pub(crate) state: ConnState,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    pub(crate) reservations: HashMap<[u8; 8], Reservation>,
    pub(crate) reserved_addrs: HashMap<SocketAddr, [u8; 8]>,
    pub(crate) connections: HashMap<ConnectionId, ConnEntry>,
}

/// State shared across the workers of a server. Create one and hand an `Arc` to every
/// [`crate::server::TurnServer`].
#[derive(Debug)]
pub struct Shared {
    quota: Mutex<QuotaTracker>,
    registry: Mutex<Registry>,
    /// Whether a bandwidth quota is set (read per relayed packet without the lock).
    bandwidth_limited: AtomicBool,
    next_worker: AtomicU32,
    /// Live UDP relay sockets (local address) and the worker whose allocation owns each: read
    /// per packet only for data addressed to the server's own relayed addresses; written on
    /// allocation changes.
    udp_relays: RwLock<HashMap<SocketAddr, WorkerId>>,
    /// RFC 8489 §9.2.4 / RFC 8656 §21.3.1: answers to unauthenticated UDP requests, limited per
    /// source and in total over every worker (one limiter, so the budgets are not multiplied by
    /// the worker count). Made by the first worker, from its configuration.
    limiter: OnceLock<Mutex<SourceRateLimiter>>,
}

impl Shared {
    /// Shared state with the given quotas (RFC 8656 §7.2: 486 when a user or the server has too
    /// many allocations; see [`QuotaConfig`]).
    pub fn new(quotas: QuotaConfig) -> Self {
        Shared {
            quota: Mutex::new(QuotaTracker::new(quotas)),
            registry: Mutex::new(Registry::default()),
            bandwidth_limited: AtomicBool::new(limits_bandwidth(&quotas)),
            next_worker: AtomicU32::new(0),
            udp_relays: RwLock::new(HashMap::new()),
            limiter: OnceLock::new(),
        }
    }

    /// The quota configuration.
    pub fn quota_config(&self) -> QuotaConfig {
        *self.quota().config()
    }

    /// New quotas for every worker (a configuration reload; see
    /// [`QuotaTracker::set_config`]): each worker then applies the per-allocation ones with
    /// [`crate::server::TurnServer::set_limits`]. Validate `quotas` first.
    pub fn set_quotas(&self, quotas: QuotaConfig, now: Instant) {
        self.quota().set_config(quotas, now);
        self.bandwidth_limited
            .store(limits_bandwidth(&quotas), Ordering::Relaxed);
    }

    /// New rates for the limiter of unauthenticated answers (a configuration reload; see
    /// [`SourceRateLimiter::set_rates`]).
    pub fn set_rate_limit(&self, config: RateLimitConfig, now: Instant) {
        if let Some(l) = self.limiter.get() {
            l.lock()
                .unwrap_or_else(|e| e.into_inner())
                .set_rates(config, now);
        }
    }

    /// Allocations in use over all workers.
    pub fn total_allocations(&self) -> u32 {
        self.quota().total_allocations()
    }

    /// RFC 6062 peer connections over all workers (connecting, pending and bound).
    pub fn tcp_connections(&self) -> usize {
        self.registry().connections.len()
    }

    /// The worker that owns the live UDP relay socket bound at `relay`, if any.
    pub(crate) fn udp_relay_owner(&self, relay: SocketAddr) -> Option<WorkerId> {
        let map = self.udp_relays.read().unwrap_or_else(|e| e.into_inner());
        map.get(&relay).copied()
    }

    pub(crate) fn add_udp_relay(&self, relay: SocketAddr, owner: WorkerId) {
        let mut map = self.udp_relays.write().unwrap_or_else(|e| e.into_inner());
        map.insert(relay, owner);
    }

    pub(crate) fn remove_udp_relay(&self, relay: SocketAddr) {
        let mut map = self.udp_relays.write().unwrap_or_else(|e| e.into_inner());
        map.remove(&relay);
    }

    /// Makes the shared limiter of unauthenticated answers unless a worker already did (every
    /// worker of a server has the same configuration).
    pub(crate) fn init_limiter(&self, config: RateLimitConfig, key: [u8; 32], now: Instant) {
        self.limiter
            .get_or_init(|| Mutex::new(SourceRateLimiter::new(config, key, now)));
    }

    /// Asks the shared limiter whether an unauthenticated answer to `source` may be sent at
    /// `now` (and takes a token if so). The lock is held for one sketch update (two buckets and
    /// the global one); it is taken only for unauthenticated UDP requests.
    pub(crate) fn check_unauthenticated(&self, source: IpAddr, now: Instant) -> RateDecision {
        match self.limiter.get() {
            Some(l) => l
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .check(source, now),
            // Invariant: every TurnServer calls init_limiter in its constructor.
            None => RateDecision::LimitedGlobal,
        }
    }

    pub(crate) fn register_worker(&self) -> WorkerId {
        WorkerId(self.next_worker.fetch_add(1, Ordering::Relaxed))
    }

    /// Locks the quota tracker; a poisoned lock is still usable (the tracker has no invariant a
    /// panic could break half-way that matters more than staying up).
    pub(crate) fn quota(&self) -> MutexGuard<'_, QuotaTracker> {
        self.quota.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether bandwidth is limited at all (else the relay path never locks).
    pub(crate) fn bandwidth_limited(&self) -> bool {
        self.bandwidth_limited.load(Ordering::Relaxed)
    }
}

fn limits_bandwidth(quotas: &QuotaConfig) -> bool {
    quotas.allocation_bandwidth.is_some() || quotas.user_bandwidth.is_some()
}
