//! One allocation (RFC 8656 §2.2): relayed transport address(es), permissions, channels, timers.

use super::FastMap;
use core::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_stun::attr::Family;
use floe_stun::TransactionId;

use crate::credentials::LongTermKey;
use crate::quota::AllocationQuota;

use super::reply::IntegrityKind;
use super::types::{ClientTuple, ConnectionId, RelayTransport};

/// RFC 8656 §9: a permission lasts 300 seconds (refreshed by CreatePermission or ChannelBind).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// RFC 8656 §12: a channel binding lasts 600 seconds (refreshed by ChannelBind).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);

/// Worker-local allocation id (never reused).
pub(crate) type AllocId = u64;

/// A relayed transport address: the socket the shell bound and the address advertised in
/// XOR-RELAYED-ADDRESS (differs behind a 1:1 NAT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Relay {
    pub(crate) local: SocketAddr,
    pub(crate) advertised: SocketAddr,
}

/// RFC 8656 §12: a channel binding.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Channel {
    pub(crate) peer: SocketAddr,
    pub(crate) expires: Instant,
}

#[derive(Debug)]
pub(crate) struct Allocation {
    pub(crate) client: ClientTuple,
    pub(crate) user: Arc<str>,
    /// The key that authenticated the Allocate (RFC 8656 §7: later requests must use the same
    /// credentials; also verifies a Refresh after a REST credential expired).
    pub(crate) key: LongTermKey,
    pub(crate) transport: RelayTransport,
    /// Index 0: IPv4, index 1: IPv6 (RFC 8656 §7.2 dual allocation).
    pub(crate) relays: [Option<Relay>; 2],
    /// RFC 8656 §7: the lifetime's end.
    pub(crate) expires: Instant,
    /// Strict REST mode: the credential's expiry; the allocation ends then whatever refreshes.
    pub(crate) hard_deadline: Option<Instant>,
    pub(crate) dont_fragment: bool,
    pub(crate) permissions: FastMap<IpAddr, Instant>,
    pub(crate) channels: FastMap<u16, Channel>,
    pub(crate) channel_by_peer: FastMap<SocketAddr, u16>,
    pub(crate) quota: Option<AllocationQuota>,
    /// Bandwidth bytes already drawn from the shared quota buckets.
    pub(crate) credit: usize,
    pub(crate) throttled_until: Option<Instant>,
    /// RFC 6062 peer connections of this allocation (pruned against the shared registry).
    pub(crate) connections: Vec<ConnectionId>,
    pub(crate) created_by: TransactionId,
    /// When the allocation was made (its age in the admin API).
    pub(crate) created: Instant,
    /// Payload bytes relayed from the client to peers (RFC 6062 data connections included).
    pub(crate) bytes_to_peer: u64,
    /// Payload bytes relayed from peers to the client.
    pub(crate) bytes_to_client: u64,
    /// Packets relayed from the client to peers (UDP relaying; RFC 6062 streams count bytes).
    pub(crate) packets_to_peer: u64,
    /// Packets relayed from peers to the client.
    pub(crate) packets_to_client: u64,
    /// The byte counts (to peer, to client) already reported by
    /// [`TurnServer::drain_usage`](super::TurnServer::drain_usage); `None` before the first.
    pub(crate) usage_reported: Option<(u64, u64)>,
    /// Over its bandwidth cap by what a kernel fast path relayed: its channels and permissions
    /// are withdrawn from the fast path (the user-space relay enforces the cap exactly) until
    /// its buckets recover ([`TurnServer::fast_path_relayed`](super::TurnServer::fast_path_relayed)).
    pub(crate) fast_path_held: bool,
}

/// Index of a family in [`Allocation::relays`].
pub(crate) fn family_index(family: Family) -> usize {
    match family {
        Family::V4 => 0,
        Family::V6 => 1,
    }
}

/// The family of an IP, IPv4-mapped IPv6 counted as IPv4.
pub(crate) fn family_of_ip(ip: IpAddr) -> Family {
    match ip.to_canonical() {
        IpAddr::V4(_) => Family::V4,
        IpAddr::V6(_) => Family::V6,
    }
}

impl Allocation {
    /// The timer deadline: the lifetime's end or, in strict mode, the credential's expiry.
    pub(crate) fn deadline(&self) -> Instant {
        match self.hard_deadline {
            Some(h) if h < self.expires => h,
            _ => self.expires,
        }
    }

    pub(crate) fn relay(&self, family: Family) -> Option<&Relay> {
        self.relays[family_index(family)].as_ref()
    }

    pub(crate) fn has_family(&self, family: Family) -> bool {
        self.relay(family).is_some()
    }

    /// RFC 8656 §9: whether a live permission exists for `ip`.
    pub(crate) fn permitted(&self, ip: IpAddr, now: Instant) -> bool {
        self.permissions.get(&ip).is_some_and(|&exp| exp > now)
    }

    /// RFC 8656 §12: the live channel bound to `peer`.
    pub(crate) fn channel_for(&self, peer: &SocketAddr, now: Instant) -> Option<u16> {
        let ch = *self.channel_by_peer.get(peer)?;
        let c = self.channels.get(&ch)?;
        (c.expires > now).then_some(ch)
    }

    pub(crate) fn relay_list(&self) -> Vec<SocketAddr> {
        self.relays.iter().flatten().map(|r| r.local).collect()
    }
}

/// The response integrity remembered for a deferred answer (RFC 6062 Connect).
#[derive(Debug, Clone)]
pub(crate) struct Signer {
    pub(crate) key: LongTermKey,
    pub(crate) kind: IntegrityKind,
}
