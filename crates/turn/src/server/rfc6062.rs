//! The RFC 6062 control plane: Connect (§5.2), ConnectionAttempt (§5.3), ConnectionBind (§5.4).
//! The IO shell owns the TCP streams and splices them; this module keeps the state: connection
//! ids (shared by all workers, since a ConnectionBind arrives on a new connection that may land
//! on any worker), the 30-second ConnectionBind timer, and the deferred Connect answer.

use core::net::SocketAddr;
use std::time::{Duration, Instant};

use floe_stun::attr::{ConnectionId as ConnectionIdAttr, ErrorCode, Family, XorPeerAddress};
use floe_stun::{BuildError, Class, Message, MessageBuilder, Method, TransactionId};

use super::allocate::optional;
use super::allocation::{AllocId, Allocation, Signer};
use super::auth::Authed;
use super::own_relay::denied_label;
use super::reply::{seal, Reject};
use super::shared::{ConnEntry, ConnState, Registry};
use super::stats::DropReason;
use super::types::{
    ClientTuple, ConnectionGrant, ConnectionId, Event, PeerRequest, RelayDirection, RelayTransport,
    Transmit,
};
use super::{Handled, PendingConnect, Timer, TurnServer};

/// RFC 6062 §5.2/§5.3: the client has 30 seconds to send ConnectionBind.
pub const CONNECTION_BIND_TIMEOUT: Duration = Duration::from_secs(30);

/// The smallest grant a throttled RFC 6062 data connection waits for
/// ([`TurnServer::charge_connection`]), so that it does not wake for every few bytes.
pub const STREAM_MIN_GRANT: usize = 4096;

impl TurnServer {
    /// The worker ([`TurnServer::worker_index`]) whose allocation owns the RFC 6062 connection
    /// `connection_id`: call [`TurnServer::charge_connection`] on it. `None`: no such connection.
    /// May be called on any worker.
    pub fn connection_owner(&self, connection_id: ConnectionId) -> Option<u32> {
        let reg = self.shared.registry();
        reg.connections.get(&connection_id).map(|e| e.owner.0)
    }

    /// RFC 6062 §5.4: the splice of a bound data connection asks to relay `want` bytes going
    /// `direction`. Every byte counts against the allocation's and the user's bandwidth quotas,
    /// the same buckets UDP relaying draws on (RFC 8656 §7.2 leaves quotas to the server). TCP
    /// cannot drop, so instead of refusing bytes this grants what the buckets hold now
    /// ([`ConnectionGrant::Pass`], charged), or says when to ask again
    /// ([`ConnectionGrant::RetryAt`], when at least `min(want, STREAM_MIN_GRANT)` fit): the splice
    /// relays only what it is granted and reads no more meanwhile, so TCP flow control slows
    /// the sender down. Call it on the owner worker ([`TurnServer::connection_owner`]).
    pub fn charge_connection(
        &mut self,
        now: Instant,
        connection_id: ConnectionId,
        direction: RelayDirection,
        want: usize,
    ) -> ConnectionGrant {
        let alloc = {
            let reg = self.shared.registry();
            match reg.connections.get(&connection_id) {
                Some(e) if e.owner == self.worker && e.state == ConnState::Bound => e.alloc,
                _ => return ConnectionGrant::Closed,
            }
        };
        let Some(a) = self.allocations.get_mut(&alloc) else {
            return ConnectionGrant::Closed;
        };
        let granted = if a.credit > 0 {
            let g = a.credit.min(want);
            a.credit -= g;
            g
        } else if !self.shared.bandwidth_limited() {
            want
        } else {
            let Some(quota) = a.quota.as_mut() else {
                return ConnectionGrant::Closed;
            };
            let want64 = u64::try_from(want).unwrap_or(u64::MAX);
            let grant =
                self.shared
                    .quota()
                    .grant_relay(quota, want64, STREAM_MIN_GRANT as u64, now);
            match grant {
                Ok(g) => usize::try_from(g).unwrap_or(want),
                Err(wait) => return ConnectionGrant::RetryAt(now + wait),
            }
        };
        let bytes = granted as u64;
        match direction {
            RelayDirection::ToPeer => a.bytes_to_peer += bytes,
            RelayDirection::ToClient => a.bytes_to_client += bytes,
        }
        let by_transport = self.stats.by_transport.get_mut(a.client.transport);
        match direction {
            RelayDirection::ToPeer => {
                self.stats.bytes_to_peer += bytes;
                by_transport.bytes_to_peer += bytes;
            }
            RelayDirection::ToClient => {
                self.stats.bytes_to_client += bytes;
                by_transport.bytes_to_client += bytes;
            }
        }
        ConnectionGrant::Pass(granted)
    }

    /// RFC 6062 §5.2: Connect. Answered later, when the shell reports the outcome of
    /// [`Event::ConnectPeer`].
    pub(crate) fn connect(
        &mut self,
        now: Instant,
        client: ClientTuple,
        msg: &Message<'_>,
        authed: &Authed,
        _b: &mut MessageBuilder<'_>,
    ) -> Result<Handled, Reject> {
        let id = self
            .by_client
            .get(&client)
            .copied()
            .ok_or(Reject::new(437))?;
        let bad = Reject::new(ErrorCode::BAD_REQUEST);
        let XorPeerAddress(peer) = optional::<XorPeerAddress>(msg)?.ok_or(bad)?;
        let (relay, is_tcp) = {
            let a = self.allocations.get(&id).ok_or(Reject::new(437))?;
            let relay = a.relay(Family::of(&peer)).map(|r| r.local);
            (relay, a.transport == RelayTransport::Tcp)
        };
        if !is_tcp {
            return Err(bad);
        }
        let relay = relay.ok_or(Reject::new(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH))?;
        // The own-relay rule (`own_relay.rs`) is for UDP allocations only: a TCP connection to
        // one of the server's addresses would go through the host's TCP stack, so it takes the
        // plain policy (refused unless an `--allow-peer` range opens it).
        if let Err(denied) = self.config.policy.check(peer) {
            self.refuse_peer(
                now,
                client,
                PeerRequest::Connect,
                peer,
                denied_label(&denied),
            );
            return Err(Reject::new(ErrorCode::FORBIDDEN));
        }
        let connection_id = {
            let shared = self.shared.clone();
            let mut reg = shared.registry();
            let live = self.live_connections(&mut reg, id);
            if live
                .iter()
                .any(|c| reg.connections.get(c).is_some_and(|e| e.peer == peer))
            {
                return Err(Reject::new(ErrorCode::CONNECTION_ALREADY_EXISTS));
            }
            if live.len() >= self.config.max_connections_per_allocation {
                return Err(Reject::new(ErrorCode::INSUFFICIENT_CAPACITY));
            }
            self.register_connection(&mut reg, id, authed, peer, ConnState::Connecting)
        };
        if let Some(a) = self.allocations.get_mut(&id) {
            a.connections.push(connection_id);
        }
        self.connects.insert(
            connection_id,
            PendingConnect {
                client,
                tid: msg.transaction_id(),
                signer: Signer {
                    key: authed.key.clone(),
                    kind: authed.kind,
                },
                alloc: id,
                peer,
            },
        );
        self.events.push_back(Event::ConnectPeer {
            connection_id,
            relay,
            peer,
        });
        Ok(Handled::Deferred)
    }

    /// RFC 6062 §5.2: the shell connected to the peer for [`Event::ConnectPeer`]. Returns the
    /// Connect success response (with CONNECTION-ID) for the client's control connection and
    /// starts the 30-second ConnectionBind timer. `None`: the allocation is gone; close the peer
    /// connection.
    pub fn handle_peer_connected(
        &mut self,
        now: Instant,
        connection_id: ConnectionId,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let p = self.connects.remove(&connection_id)?;
        {
            let mut reg = self.shared.registry();
            let entry = reg.connections.get_mut(&connection_id)?;
            entry.state = ConnState::Pending;
        }
        self.timers.insert((
            now + CONNECTION_BIND_TIMEOUT,
            Timer::ConnectionBind(connection_id),
        ));
        let written = (|| -> Result<usize, BuildError> {
            let mut b = MessageBuilder::new(out, Class::SuccessResponse, Method::CONNECT, p.tid)?;
            b.add(&ConnectionIdAttr(connection_id.0))?;
            seal(
                b,
                self.config.software.as_deref(),
                Some((p.signer.key.as_bytes(), p.signer.kind)),
            )
        })();
        self.deferred_answer(p.client, true, written)
    }

    /// RFC 6062 §5.2: the connection to the peer failed or timed out: answers the Connect with
    /// 447 (Connection Timeout or Failure).
    pub fn handle_peer_connect_failed(
        &mut self,
        _now: Instant,
        connection_id: ConnectionId,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let p = self.connects.remove(&connection_id)?;
        self.shared.registry().connections.remove(&connection_id);
        if let Some(a) = self.allocations.get_mut(&p.alloc) {
            a.connections.retain(|c| *c != connection_id);
        }
        let _ = p.peer;
        let reject = Reject::new(ErrorCode::CONNECTION_TIMEOUT_OR_FAILURE);
        let written = (|| -> Result<usize, BuildError> {
            let mut b = MessageBuilder::new(out, Class::ErrorResponse, Method::CONNECT, p.tid)?;
            reject.write(&mut b)?;
            seal(
                b,
                self.config.software.as_deref(),
                Some((p.signer.key.as_bytes(), p.signer.kind)),
            )
        })();
        if written.is_ok() {
            self.stats.errors.add(reject.code);
        }
        self.deferred_answer(p.client, false, written)
    }

    fn deferred_answer(
        &mut self,
        client: ClientTuple,
        success: bool,
        written: Result<usize, BuildError>,
    ) -> Option<Transmit> {
        match written {
            Ok(len) => {
                self.stats.requests += 1;
                self.stats.responses.add(Method::CONNECT.value(), success);
                Some(Transmit::ToClient { client, len })
            }
            Err(_) => {
                self.stats.dropped.add(DropReason::BufferTooSmall);
                None
            }
        }
    }

    /// RFC 6062 §5.3: a peer opened a TCP connection to the relayed address `relay`. With a
    /// permission for the peer's IP, returns its connection id and the ConnectionAttempt
    /// indication for the client's control connection, and starts the 30-second ConnectionBind
    /// timer. `None`: close the peer connection (no allocation, no permission, or too many
    /// connections).
    pub fn handle_peer_tcp_incoming(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        peer: SocketAddr,
        out: &mut [u8],
    ) -> Option<(ConnectionId, Transmit)> {
        let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
        let id = *self.by_relay.get(&relay)?;
        let (client, user, key, kind) = {
            let a = self.allocations.get(&id)?;
            if a.transport != RelayTransport::Tcp || !a.permitted(peer.ip(), now) {
                self.stats.dropped.add(DropReason::NoPermission);
                return None;
            }
            (
                a.client,
                a.user.clone(),
                a.key.clone(),
                super::reply::IntegrityKind::Sha1,
            )
        };
        let authed = Authed {
            quota_user: user.clone(),
            user,
            key,
            kind,
            expires_at: None,
        };
        let connection_id = {
            let shared = self.shared.clone();
            let mut reg = shared.registry();
            if self.live_connections(&mut reg, id).len()
                >= self.config.max_connections_per_allocation
            {
                return None;
            }
            self.register_connection(&mut reg, id, &authed, peer, ConnState::Pending)
        };
        let mut tid = [0u8; 12];
        self.rng.fill(&mut tid);
        let written = (|| -> Result<usize, BuildError> {
            let mut b = MessageBuilder::new(
                out,
                Class::Indication,
                Method::CONNECTION_ATTEMPT,
                TransactionId(tid),
            )?;
            b.add(&XorPeerAddress(peer))?;
            b.add(&ConnectionIdAttr(connection_id.0))?;
            seal(b, None, None)
        })();
        let Ok(len) = written else {
            self.shared.registry().connections.remove(&connection_id);
            self.stats.dropped.add(DropReason::BufferTooSmall);
            return None;
        };
        if let Some(a) = self.allocations.get_mut(&id) {
            a.connections.push(connection_id);
        }
        self.timers.insert((
            now + CONNECTION_BIND_TIMEOUT,
            Timer::ConnectionBind(connection_id),
        ));
        Some((connection_id, Transmit::ToClient { client, len }))
    }

    /// A peer data connection (or its spliced client data connection) closed: forgets the
    /// connection id (RFC 6062 §5.5). May be called on any worker.
    pub fn handle_peer_tcp_closed(&mut self, connection_id: ConnectionId) {
        self.shared.registry().connections.remove(&connection_id);
        if let Some(p) = self.connects.remove(&connection_id) {
            if let Some(a) = self.allocations.get_mut(&p.alloc) {
                a.connections.retain(|c| *c != connection_id);
            }
        }
    }

    /// RFC 6062 §5.4: ConnectionBind on a new TCP/TLS connection: CONNECTION-ID must name a
    /// connection waiting for it (400 otherwise), made for the same user (441).
    pub(crate) fn connection_bind(
        &mut self,
        client: ClientTuple,
        msg: &Message<'_>,
        authed: &Authed,
        _b: &mut MessageBuilder<'_>,
    ) -> Result<Handled, Reject> {
        let bad = Reject::new(ErrorCode::BAD_REQUEST);
        if !client.transport.is_stream() || self.by_client.contains_key(&client) {
            return Err(bad);
        }
        let ConnectionIdAttr(raw) = optional::<ConnectionIdAttr>(msg)?.ok_or(bad)?;
        let connection_id = ConnectionId(raw);
        {
            let mut reg = self.shared.registry();
            let entry = reg.connections.get_mut(&connection_id).ok_or(bad)?;
            if entry.state != ConnState::Pending {
                return Err(bad);
            }
            if entry.user != authed.user {
                return Err(Reject::new(ErrorCode::WRONG_CREDENTIALS));
            }
            entry.state = ConnState::Bound;
        }
        self.events.push_back(Event::ConnectionBound {
            connection_id,
            client,
        });
        Ok(Handled::Respond)
    }

    /// Timer: RFC 6062 §5.2/§5.3: no ConnectionBind within 30 s closes the peer connection.
    pub(crate) fn expire_connection(&mut self, connection_id: ConnectionId) {
        let expired = {
            let mut reg = self.shared.registry();
            let pending = reg
                .connections
                .get(&connection_id)
                .is_some_and(|e| e.state == ConnState::Pending && e.owner == self.worker);
            if pending {
                reg.connections.remove(&connection_id)
            } else {
                None
            }
        };
        if let Some(e) = expired {
            if let Some(a) = self.allocations.get_mut(&e.alloc) {
                a.connections.retain(|c| *c != connection_id);
            }
            self.events
                .push_back(Event::CloseConnection { connection_id });
        }
    }

    /// On deletion of allocation `id`: every connection of it closes (RFC 6062 §5.5).
    pub(crate) fn close_connections_of(&mut self, id: AllocId, a: &Allocation) {
        if a.connections.is_empty() {
            return;
        }
        let mut closed = Vec::new();
        {
            let mut reg = self.shared.registry();
            for c in &a.connections {
                let ours = reg
                    .connections
                    .get(c)
                    .is_some_and(|e| e.owner == self.worker && e.alloc == id);
                if ours {
                    reg.connections.remove(c);
                    closed.push(*c);
                }
            }
        }
        for connection_id in closed {
            self.events
                .push_back(Event::CloseConnection { connection_id });
        }
    }

    /// The allocation's connections still in the registry (prunes the others).
    fn live_connections(&mut self, reg: &mut Registry, id: AllocId) -> Vec<ConnectionId> {
        let Some(a) = self.allocations.get_mut(&id) else {
            return Vec::new();
        };
        a.connections.retain(|c| reg.connections.contains_key(c));
        a.connections.clone()
    }

    fn register_connection(
        &mut self,
        reg: &mut Registry,
        alloc: AllocId,
        authed: &Authed,
        peer: SocketAddr,
        state: ConnState,
    ) -> ConnectionId {
        let connection_id = loop {
            let candidate = ConnectionId(self.rng.next_u64() as u32);
            if candidate.0 != 0 && !reg.connections.contains_key(&candidate) {
                break candidate;
            }
        };
        reg.connections.insert(
            connection_id,
            ConnEntry {
                owner: self.worker,
                alloc,
                user: authed.user.clone(),
                peer,
                state,
            },
        );
        connection_id
    }
}
