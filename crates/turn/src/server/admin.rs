//! Operations on a worker's allocations from outside the protocol: list them, end them, revoke a
//! TURN REST username, and drain (refuse new Allocates). The shell calls these through its
//! command channel to each shard, never on the relay path.

use core::net::{IpAddr, SocketAddr};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use floe_stun::attr::ErrorCode;

use super::allocation::AllocId;
use super::reply::Reject;
use super::{ClientTuple, DeleteReason, RelayBinder, RelayTransport, TurnServer};

/// One allocation as the admin API shows it (RFC 8656 §2.2: the 5-tuple, the relayed transport
/// address(es), permissions and channels), with its live byte counts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AllocationInfo {
    /// The worker-local allocation id (with [`AllocationInfo::worker`], unique in the process).
    pub id: u64,
    /// The worker that holds it ([`TurnServer::worker_index`]).
    pub worker: u32,
    /// The username that authenticated the Allocate (a TURN REST username as received).
    pub username: String,
    /// The client's 5-tuple.
    pub client: ClientTuple,
    /// UDP (RFC 8656) or TCP (RFC 6062).
    pub transport: RelayTransport,
    /// The relayed transport addresses as advertised in XOR-RELAYED-ADDRESS.
    pub relayed: Vec<SocketAddr>,
    /// Peer IPs with a live permission (RFC 8656 §9), sorted.
    pub permissions: Vec<IpAddr>,
    /// Channel bindings (RFC 8656 §12): number and peer, sorted by number.
    pub channels: Vec<(u16, SocketAddr)>,
    /// Payload bytes relayed from the client to its peers.
    pub bytes_to_peer: u64,
    /// Payload bytes relayed from peers to the client.
    pub bytes_to_client: u64,
    /// Packets relayed from the client to its peers (UDP relaying; an RFC 6062 TCP relay
    /// counts bytes only).
    pub packets_to_peer: u64,
    /// Packets relayed from peers to the client.
    pub packets_to_client: u64,
    /// Time since the Allocate.
    pub age: Duration,
    /// Time left before it expires unless refreshed.
    pub expires_in: Duration,
}

/// Which allocations an admin command addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllocationFilter {
    /// Every allocation.
    All,
    /// A user: a static username, or the user part of TURN REST usernames `EXPIRY:USER`
    /// ([`crate::rest::user_of`]), which is the signalling peer id for credentials floe mints.
    User(String),
    /// One username exactly as received.
    Username(String),
    /// One allocation: (worker, id).
    Id(u32, u64),
}

impl AllocationFilter {
    fn matches(&self, worker: u32, id: AllocId, username: &str) -> bool {
        match self {
            AllocationFilter::All => true,
            AllocationFilter::User(u) => crate::rest::user_of(username) == u,
            AllocationFilter::Username(u) => username == u,
            AllocationFilter::Id(w, i) => *w == worker && *i == id,
        }
    }
}

/// How a draining server answers a new Allocate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainConfig {
    /// RFC 8489 §10 / RFC 8656 §7.2: answer 300 (Try Alternate) with ALTERNATE-SERVER naming
    /// the first of these of the client's address family. With none of its family the answer
    /// is 508 (Insufficient Capacity, RFC 8656 §7.2: "unable to carry out the request due to
    /// some capacity limit").
    pub alternates: Vec<SocketAddr>,
}

/// What an allocation relayed: payload bytes and packets each way (packets: UDP relaying; an
/// RFC 6062 TCP relay counts bytes only).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocationUsage {
    /// Payload bytes relayed from the client to its peers.
    pub bytes_to_peer: u64,
    /// Payload bytes relayed from peers to the client.
    pub bytes_to_client: u64,
    /// Packets relayed from the client to its peers.
    pub packets_to_peer: u64,
    /// Packets relayed from peers to the client.
    pub packets_to_client: u64,
}

/// Bytes an allocation relayed since the last [`TurnServer::drain_usage`], for usage metrics
/// updated while allocations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageDelta<'a> {
    /// The worker-local allocation id.
    pub id: u64,
    /// The username that authenticated the Allocate.
    pub username: &'a str,
    /// Whether this is the allocation's first report (count it once, e.g. when its label is
    /// folded).
    pub first: bool,
    /// Whether the allocation has ended (this is its last report).
    pub ended: bool,
    /// Payload bytes relayed to peers since the last report.
    pub bytes_to_peer: u64,
    /// Payload bytes relayed to the client since the last report.
    pub bytes_to_client: u64,
}

/// What an allocation that ended still had to report ([`TurnServer::drain_usage`]).
#[derive(Debug)]
pub(crate) struct EndedUsage {
    pub(crate) id: AllocId,
    pub(crate) user: Arc<str>,
    pub(crate) first: bool,
    pub(crate) bytes_to_peer: u64,
    pub(crate) bytes_to_client: u64,
}

/// Usage tracking ([`TurnServer::set_usage_tracking`]): off by default, so that an allocation's
/// end costs nothing more.
#[derive(Debug, Default)]
pub(crate) struct UsageTracking {
    pub(crate) tracking: bool,
    /// Allocations that ended since the last drain, with their unreported bytes.
    pub(crate) ended: Vec<EndedUsage>,
}

/// Revoked TURN REST usernames and until when (unix seconds): a request with one of them is
/// answered 401 as if the password were wrong.
#[derive(Debug, Default)]
pub(crate) struct Revoked(BTreeMap<Arc<str>, u64>);

impl Revoked {
    pub(crate) fn is_revoked(&self, username: &str, unix_secs: u64) -> bool {
        self.0.get(username).is_some_and(|&until| unix_secs < until)
    }
}

impl TurnServer {
    /// Every allocation of this worker, ordered by id.
    pub fn allocations(&self, now: Instant) -> Vec<AllocationInfo> {
        let mut list: Vec<AllocationInfo> = self
            .allocations
            .iter()
            .map(|(&id, a)| {
                let mut permissions: Vec<IpAddr> = a
                    .permissions
                    .iter()
                    .filter(|(_, &exp)| exp > now)
                    .map(|(&ip, _)| ip)
                    .collect();
                permissions.sort();
                let mut channels: Vec<(u16, SocketAddr)> = a
                    .channels
                    .iter()
                    .filter(|(_, c)| c.expires > now)
                    .map(|(&n, c)| (n, c.peer))
                    .collect();
                channels.sort();
                AllocationInfo {
                    id,
                    worker: self.worker.0,
                    username: a.user.to_string(),
                    client: a.client,
                    transport: a.transport,
                    relayed: a.relays.iter().flatten().map(|r| r.advertised).collect(),
                    permissions,
                    channels,
                    bytes_to_peer: a.bytes_to_peer,
                    bytes_to_client: a.bytes_to_client,
                    packets_to_peer: a.packets_to_peer,
                    packets_to_client: a.packets_to_client,
                    age: now.saturating_duration_since(a.created),
                    expires_in: a.deadline().saturating_duration_since(now),
                }
            })
            .collect();
        list.sort_by_key(|a| a.id);
        list
    }

    /// Ends the allocations `filter` names (relay sockets released, quota returned, reported as
    /// [`DeleteReason::Admin`]); returns how many. The client learns it at its next Refresh
    /// (437) or when its data stops.
    pub fn end_allocations(
        &mut self,
        filter: &AllocationFilter,
        binder: &mut dyn RelayBinder,
    ) -> usize {
        let ids = self.matching(filter);
        for &id in &ids {
            self.delete_allocation(id, DeleteReason::Admin, binder);
        }
        ids.len()
    }

    /// Revokes the username `username` until `until_unix` (for a TURN REST username, its
    /// expiry): every request with it is answered 401 from now on and its allocations on this
    /// worker end ([`DeleteReason::Revoked`]); returns how many ended. Entries whose time has
    /// passed are forgotten on the next call.
    pub fn revoke(
        &mut self,
        username: &str,
        until_unix: u64,
        unix_secs: u64,
        binder: &mut dyn RelayBinder,
    ) -> usize {
        self.revoked.0.retain(|_, &mut until| until > unix_secs);
        if until_unix > unix_secs {
            self.revoked.0.insert(Arc::from(username), until_unix);
        }
        let ids = self.matching(&AllocationFilter::Username(username.to_owned()));
        for &id in &ids {
            self.delete_allocation(id, DeleteReason::Revoked, binder);
        }
        ids.len()
    }

    /// Turns usage tracking on or off. With it on, an allocation that ends keeps its bytes not
    /// yet reported until the next [`TurnServer::drain_usage`], which the shell must then call
    /// regularly (the list grows until it does).
    pub fn set_usage_tracking(&mut self, on: bool) {
        self.usage.tracking = on;
        if !on {
            self.usage.ended = Vec::new();
        }
    }

    /// Reports, for every live allocation and every allocation that ended since the last call
    /// (with tracking on, [`TurnServer::set_usage_tracking`]), the bytes it relayed since the
    /// last call. Runs over every allocation: call it about once a second, not per packet.
    pub fn drain_usage(&mut self, mut report: impl FnMut(UsageDelta<'_>)) {
        for e in std::mem::take(&mut self.usage.ended) {
            report(UsageDelta {
                id: e.id,
                username: &e.user,
                first: e.first,
                ended: true,
                bytes_to_peer: e.bytes_to_peer,
                bytes_to_client: e.bytes_to_client,
            });
        }
        for (&id, a) in self.allocations.iter_mut() {
            let (peer, client) = a.usage_reported.unwrap_or_default();
            report(UsageDelta {
                id,
                username: &a.user,
                first: a.usage_reported.is_none(),
                ended: false,
                bytes_to_peer: a.bytes_to_peer - peer,
                bytes_to_client: a.bytes_to_client - client,
            });
            a.usage_reported = Some((a.bytes_to_peer, a.bytes_to_client));
        }
    }

    /// Starts (`Some`) or stops (`None`) draining: new Allocates are refused as
    /// [`DrainConfig`] says; existing allocations keep working and can be refreshed.
    pub fn set_draining(&mut self, drain: Option<DrainConfig>) {
        self.draining = drain;
    }

    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.is_some()
    }

    /// Relayed transport addresses (relay ports) this worker holds.
    pub fn relay_ports_in_use(&self) -> usize {
        self.by_relay.len()
    }

    /// The refusal of a new Allocate while draining, if draining.
    pub(crate) fn drain_refusal(&self, client: ClientTuple) -> Option<Reject> {
        let drain = self.draining.as_ref()?;
        let family_v4 = client.remote.ip().to_canonical().is_ipv4();
        let alternate = drain
            .alternates
            .iter()
            .find(|a| a.is_ipv4() == family_v4)
            .copied();
        Some(match alternate {
            Some(a) => Reject::try_alternate(a),
            None => Reject::new(ErrorCode::INSUFFICIENT_CAPACITY),
        })
    }

    fn matching(&self, filter: &AllocationFilter) -> Vec<AllocId> {
        let mut ids: Vec<AllocId> = self
            .allocations
            .iter()
            .filter(|(&id, a)| filter.matches(self.worker.0, id, &a.user))
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        ids
    }
}
