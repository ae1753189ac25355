//! The vocabulary of the TURN state machine: transports, 5-tuples, what to transmit, events for
//! the IO shell, and the [`RelayBinder`] the shell implements.

use core::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// The transport of a client connection (RFC 8656 §3.1: UDP, TCP or TLS-over-TCP between client
/// and server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// UDP datagrams.
    Udp,
    /// A TCP connection.
    Tcp,
    /// A TLS connection over TCP.
    Tls,
}

impl Transport {
    /// Whether this is a stream transport (TCP or TLS), where ChannelData is padded to a
    /// multiple of 4 bytes (RFC 8656 §12.5) and the connection's lifetime bounds the allocation.
    pub fn is_stream(self) -> bool {
        !matches!(self, Transport::Udp)
    }

    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    pub(crate) fn binding(self) -> crate::binding::Transport {
        match self {
            Transport::Udp => crate::binding::Transport::Udp,
            Transport::Tcp | Transport::Tls => crate::binding::Transport::Tcp,
        }
    }
}

/// RFC 8656 §2: the client's 5-tuple: transport, the server's local address that received the
/// packet, and the client's (possibly NATed) address. Allocations are keyed by it (§3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientTuple {
    /// UDP, TCP or TLS.
    pub transport: Transport,
    /// The server address the client talks to.
    pub local: SocketAddr,
    /// The client's address as seen by the server.
    pub remote: SocketAddr,
}

/// The transport of a relayed transport address: UDP (RFC 8656) or TCP (RFC 6062).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RelayTransport {
    /// A UDP relay socket (RFC 8656 §7).
    Udp,
    /// A TCP listening socket on the relayed address, also the source of outgoing peer
    /// connections (RFC 6062 §5.1).
    Tcp,
}

/// RFC 6062 §6.2.1: the CONNECTION-ID of a peer TCP connection, unique across all workers of a
/// server (allocated through [`crate::server::Shared`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u32);

/// Which way relayed bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelayDirection {
    /// From the client to the peer.
    ToPeer,
    /// From the peer to the client.
    ToClient,
}

/// The answer of [`crate::server::TurnServer::charge_connection`] for an RFC 6062 data
/// connection: TCP cannot drop bytes, so the splice paces itself by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionGrant {
    /// This many bytes (at most those asked for, at least one unless zero were asked for) are
    /// charged to the allocation's and the user's bandwidth quotas: relay them now.
    Pass(usize),
    /// Over quota: relay nothing (read nothing more) and ask again at this instant.
    RetryAt(std::time::Instant),
    /// The connection is not (or no longer) bound on this worker's allocation: close it.
    Closed,
}

/// RFC 8656 §2 *relayed transport address*, named by the local address of its relay socket (the
/// address [`RelayBinder::bind`] bound). A newtype so that it cannot be swapped with a
/// [`PeerAddr`] in the calls and outputs that take both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelayAddr(pub SocketAddr);

/// RFC 8656 §2 *peer transport address*: where relayed data goes, or where it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerAddr(pub SocketAddr);

impl core::fmt::Display for RelayAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

impl core::fmt::Display for PeerAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        self.0.fmt(f)
    }
}

/// What to send. The bytes are always `out[..len]` of the buffer passed to the call that
/// returned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "a Transmit names bytes to send"]
pub enum Transmit {
    /// Send `out[..len]` to the client over `client` (from `client.local` to `client.remote`;
    /// over TCP/TLS, on that connection).
    ToClient {
        /// The 5-tuple to send on.
        client: ClientTuple,
        /// Bytes in `out`.
        len: usize,
    },
    /// Send `out[..len]` as one UDP datagram from the relay socket bound at `relay` to `peer`.
    ToPeer {
        /// The relay socket's local address (as passed to [`RelayBinder::bind`]).
        relay: RelayAddr,
        /// The peer.
        peer: PeerAddr,
        /// Bytes in `out`.
        len: usize,
        /// RFC 8656 §7.2/§18.9: set the DF bit (the allocation asked for DONT-FRAGMENT).
        dont_fragment: bool,
    },
    /// `out[..len]` is application data for another allocation of this server: the client
    /// named one of the server's own relayed addresses as its peer (both sides relay-only
    /// through one server). Never put on the wire: hand it to the worker that owns the relay
    /// socket bound at `relay` with [`crate::server::TurnServer::handle_relay_datagram`], which
    /// applies that allocation's permissions as if it came from `from` (RFC 8656 §11.3).
    ToRelay {
        /// The destination relay socket's local address (as passed to [`RelayBinder::bind`]).
        relay: RelayAddr,
        /// The worker that owns it: [`crate::server::TurnServer::worker_index`] of one of the
        /// servers sharing this one's [`crate::server::Shared`]. (If it has released the socket
        /// meanwhile, its `handle_relay_datagram` drops the data and counts it.)
        worker: u32,
        /// The sending allocation's relayed address as its peers know it (advertised): the
        /// receiving allocation's peer.
        from: PeerAddr,
        /// Bytes in `out`.
        len: usize,
    },
}

/// A channel as a kernel fast path relays it: ChannelData from `client` (to the server address
/// `client.local`) carrying `channel` goes from `relay` to `peer`; datagrams from `peer` to
/// `relay` go to the client as ChannelData on `channel` (RFC 8656 §12.4, §12.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChannelRelay {
    /// The client's 5-tuple (always UDP).
    pub client: ClientTuple,
    /// The allocation's relay socket address of the peer's family (local, not advertised).
    pub relay: SocketAddr,
    /// The peer bound to the channel.
    pub peer: SocketAddr,
    /// The channel number (0x4000..=0x7FFF).
    pub channel: u16,
}

/// A permission as a kernel fast path relays it (RFC 8656 §9, §11): Send indications from
/// `client` whose XOR-PEER-ADDRESS has IP `peer` go from `relay` to that peer; datagrams from any
/// port of `peer` to `relay` that no channel carries go to the client as Data indications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PermissionRelay {
    /// The client's 5-tuple (always UDP).
    pub client: ClientTuple,
    /// The allocation's relay socket address of the peer's family (local, not advertised).
    pub relay: SocketAddr,
    /// The permitted peer IP.
    pub peer: IpAddr,
}

/// Why a relay socket could not be bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BindError {
    /// The port is taken: the state machine tries another one.
    #[error("address in use")]
    InUse,
    /// The address cannot be bound at all (e.g. the IP is not configured on the host); the
    /// state machine gives up for this address family (508 or ADDRESS-ERROR-CODE).
    #[error("address not available")]
    Unavailable,
}

/// Implemented by the IO shell: opens and closes relay sockets.
///
/// Synchronous on purpose: the Allocate answer depends on the result (RFC 8656 §7.2: 508
/// Insufficient Capacity when no relayed address can be had). Binding a socket is a fast,
/// non-blocking system call.
pub trait RelayBinder {
    /// Binds a relay socket on `addr` (a relay IP from the configuration and a port from the
    /// relay range). For [`RelayTransport::Udp`] a UDP socket; for [`RelayTransport::Tcp`] a TCP
    /// listening socket (RFC 6062 §5.1). Must not use SO_REUSEPORT: `InUse` is how the state
    /// machine learns that another worker or process holds the port.
    fn bind(&mut self, addr: SocketAddr, transport: RelayTransport) -> Result<(), BindError>;

    /// Closes the relay socket bound at `addr`.
    fn release(&mut self, addr: SocketAddr, transport: RelayTransport);
}

/// Why an allocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DeleteReason {
    /// A Refresh with LIFETIME 0 (RFC 8656 §8.2).
    Refresh,
    /// The lifetime ran out without a Refresh (RFC 8656 §7).
    Expired,
    /// The TURN REST credential expired (strict mode: at expiry; otherwise at the next Refresh).
    CredentialExpired,
    /// The client's TCP/TLS connection closed (RFC 8656 §3.1).
    ClientClosed,
    /// An operator ended it through the admin API.
    Admin,
    /// An operator revoked its username through the admin API.
    Revoked,
}

impl DeleteReason {
    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            DeleteReason::Refresh => "refresh",
            DeleteReason::Expired => "expired",
            DeleteReason::CredentialExpired => "credential_expired",
            DeleteReason::ClientClosed => "client_closed",
            DeleteReason::Admin => "admin",
            DeleteReason::Revoked => "revoked",
        }
    }
}

/// The client request (or indication) whose peer address was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum PeerRequest {
    /// RFC 8656 §10.2 CreatePermission.
    CreatePermission,
    /// RFC 8656 §12.2 ChannelBind.
    ChannelBind,
    /// RFC 8656 §11.2 Send indication (and ChannelData on a channel whose permission lapsed).
    Send,
    /// RFC 6062 §5.2 Connect.
    Connect,
}

impl PeerRequest {
    /// A stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            PeerRequest::CreatePermission => "create_permission",
            PeerRequest::ChannelBind => "channel_bind",
            PeerRequest::Send => "send",
            PeerRequest::Connect => "connect",
        }
    }
}

/// Something the IO shell must act on, or may log and count. Drain with
/// [`crate::server::TurnServer::poll_event`] after every `handle_*` call.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// An allocation was created (for logs and metrics).
    AllocationCreated {
        /// The client's 5-tuple.
        client: ClientTuple,
        /// The authenticated username.
        username: Arc<str>,
        /// UDP or TCP relaying.
        transport: RelayTransport,
        /// The bound relay socket addresses (one or two: RFC 8656 dual allocation).
        relays: Vec<SocketAddr>,
    },
    /// An allocation ended; its relay sockets were already released through the binder.
    AllocationDeleted {
        /// The client's 5-tuple.
        client: ClientTuple,
        /// Why.
        reason: DeleteReason,
        /// When it was created (the `now` of its Allocate): the shell observes its lifetime
        /// with its own clock.
        created: std::time::Instant,
        /// The username that authenticated its Allocate.
        username: Arc<str>,
        /// What it relayed over its life.
        usage: super::AllocationUsage,
    },
    /// RFC 6062 §5.2: open a TCP connection from `relay` to `peer`, then call
    /// `handle_peer_connected` or `handle_peer_connect_failed` with `connection_id` (exactly one
    /// of them; the RFC asks for a connect timeout of at least 30 s).
    ConnectPeer {
        /// Names the connection in later calls and events.
        connection_id: ConnectionId,
        /// The allocation's relayed TCP address (its listening socket's address).
        relay: SocketAddr,
        /// The peer to connect to.
        peer: SocketAddr,
    },
    /// RFC 6062 §5.4: ConnectionBind succeeded; from now on splice the client data connection
    /// `client` with the peer data connection `connection_id` (bytes as-is both ways).
    ConnectionBound {
        /// The peer data connection.
        connection_id: ConnectionId,
        /// The client data connection that sent ConnectionBind.
        client: ClientTuple,
    },
    /// RFC 6062 §5.3/§5.4: close the peer data connection `connection_id` and, if it was bound,
    /// its client data connection (the 30-second ConnectionBind timer expired, or the allocation
    /// ended).
    CloseConnection {
        /// The connection.
        connection_id: ConnectionId,
    },
    /// Only with [`crate::server::TurnConfig::fast_path_events`]: a UDP channel of a UDP
    /// allocation (client over UDP) may now be relayed outside the state machine: the channel is
    /// bound (RFC 8656 §12) and its peer's permission is live (§9). Repeated on every refresh;
    /// mirror it idempotently. Peers that are the server's own relayed addresses are reported
    /// too (the fast path relays to the other allocation directly), except with external IPs
    /// (1:1 NAT), where they are relayed inside the process.
    ChannelRelayUp(ChannelRelay),
    /// Only with [`crate::server::TurnConfig::fast_path_events`]: stop relaying this channel
    /// outside the state machine at once (channel or permission expired, allocation deleted or
    /// its family dropped). May name a channel never reported up; ignore those.
    ChannelRelayDown(ChannelRelay),
    /// Only with [`crate::server::TurnConfig::fast_path_events`]: the permission of a UDP
    /// allocation (client over UDP) is live (installed or refreshed, RFC 8656 §9), so Send and
    /// Data indications for its peer IP may be relayed outside the state machine. Repeated on
    /// every refresh; mirror it idempotently. As for channels, the server's own relay IPs
    /// are reported only without external IPs.
    PermissionRelayUp(PermissionRelay),
    /// Only with [`crate::server::TurnConfig::fast_path_events`]: stop relaying for this
    /// permission outside the state machine at once (expired, removed, allocation deleted or its
    /// family dropped). May name a permission never reported up; ignore those.
    PermissionRelayDown(PermissionRelay),
    /// A peer address was refused (403 answered, or a Send indication dropped), for the
    /// operator's log. Every refusal is counted in [`crate::server::TurnStats::peer_refused`];
    /// this event is rate-limited per worker so that a flood cannot fill a disk (see
    /// [`crate::server::REFUSAL_LOG_BURST`]).
    PeerRefused {
        /// The client's 5-tuple.
        client: ClientTuple,
        /// The authenticated username.
        username: Arc<str>,
        /// What the client asked for.
        request: PeerRequest,
        /// The peer address it named.
        peer: SocketAddr,
        /// Why (the label counted in `floe_turn_peer_refused_total{reason}`).
        reason: &'static str,
    },
}
