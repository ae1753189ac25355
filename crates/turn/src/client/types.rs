//! The client's vocabulary: errors, events and states.

use core::net::{IpAddr, SocketAddr};
use core::time::Duration;

use floe_stun::BuildError;

/// Why a TURN operation failed. Server answers are values ([`Error::Server`]), never panics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with an error response (RFC 8489 §14.8, codes in RFC 8656 §19):
    /// e.g. 401 wrong credentials, 403 peer refused by policy, 437 allocation mismatch,
    /// 486 allocation quota reached, 508 insufficient capacity.
    #[error("TURN server answered {code} {reason}")]
    Server {
        /// The error code (300–699).
        code: u16,
        /// The reason phrase sent by the server.
        reason: String,
    },
    /// No answer within 39.5 s (RFC 8489 §6.2.1: Rc = 7 sends, Rm = 16 over UDP; §6.2.2:
    /// Ti = 39.5 s over TCP/TLS).
    #[error("no answer from the TURN server within 39.5 s")]
    Timeout,
    /// A success response lacked a required attribute or carried a malformed one.
    #[error("invalid response from the TURN server: {0}")]
    InvalidResponse(&'static str),
    /// The server announced password algorithms (RFC 8489 §9.2.3) but neither MD5 nor SHA-256.
    #[error("the TURN server offers no supported password algorithm")]
    UnsupportedPasswordAlgorithm,
    /// A request could not be encoded (e.g. a username or SOFTWARE longer than the RFC allows).
    #[error("cannot encode the request: {0}")]
    Encode(BuildError),
    /// There is no allocation: not allocated yet, or released, expired, lost or failed.
    #[error("no TURN allocation")]
    NotAllocated,
    /// RFC 8656 §9: a peer must be of the relayed address's family (the server answers 443).
    #[error("peer {0} is not of the relayed address's family")]
    PeerFamilyMismatch(SocketAddr),
    /// RFC 8656 §18.3: port 0 is not a valid peer transport address.
    #[error("invalid peer address {0}")]
    InvalidPeer(SocketAddr),
    /// The payload does not fit a Send indication in one UDP datagram.
    #[error("payload of {0} bytes is too large to relay")]
    TooLarge(usize),
    /// Data waiting for a permission exceeds the bound of the send queue.
    #[error("send queue full while waiting for the permission")]
    QueueFull,
    /// RFC 8656 §12: every channel number is bound or cooling down (data uses Send indications).
    #[error("no channel number available")]
    NoChannel,
}

impl Error {
    /// The STUN error code, for [`Error::Server`].
    pub fn code(&self) -> Option<u16> {
        match self {
            Error::Server { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// What happened, for the caller. Drain with [`super::TurnClient::poll_event`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnEvent {
    /// RFC 8656 §7.3: the allocation succeeded.
    Allocated {
        /// XOR-RELAYED-ADDRESS: the relayed candidate.
        relayed: SocketAddr,
        /// XOR-MAPPED-ADDRESS: the client's address as the server sees it (a server-reflexive
        /// candidate for free).
        mapped: SocketAddr,
        /// LIFETIME granted.
        lifetime: Duration,
    },
    /// The Allocate failed (e.g. 401 wrong credentials, 486 quota, 508 capacity, timeout).
    /// Terminal: make a new client (with a new local port after a 437, RFC 8656 §7.3).
    AllocationFailed(Error),
    /// RFC 8656 §8: a Refresh succeeded; the allocation now lasts `lifetime`.
    Refreshed {
        /// LIFETIME granted.
        lifetime: Duration,
    },
    /// A Refresh failed; it is retried while the allocation has time left, else
    /// [`TurnEvent::Expired`] follows.
    RefreshFailed(Error),
    /// RFC 8656 §9: the first CreatePermission for this peer IP succeeded (refreshes are silent).
    PermissionCreated(IpAddr),
    /// A CreatePermission failed (e.g. 403 Forbidden: the server's policy refuses the peer).
    /// Data to that IP is refused for 30 s, then asked for again.
    PermissionFailed {
        /// The peer IP.
        peer: IpAddr,
        /// Why.
        error: Error,
    },
    /// RFC 8656 §12: a channel is bound to `peer`; data to it now travels as ChannelData.
    ChannelBound {
        /// The peer transport address.
        peer: SocketAddr,
        /// The channel number (0x4000–0x4FFF).
        channel: u16,
    },
    /// A ChannelBind failed (e.g. 508 channel quota); data to `peer` keeps using Send
    /// indications.
    ChannelBindFailed {
        /// The peer transport address.
        peer: SocketAddr,
        /// Why.
        error: Error,
    },
    /// The server no longer has the allocation (437 Allocation Mismatch, or credentials that
    /// stopped working). Terminal.
    AllocationLost(Error),
    /// The allocation's lifetime ran out without a successful Refresh (RFC 8656 §8). Terminal.
    Expired,
    /// [`super::TurnClient::release`] finished (RFC 8656 §8: Refresh with LIFETIME 0). Terminal.
    Released,
}

/// Where the client is in its life (RFC 8656 §7–§8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TurnState {
    /// The Allocate transaction (with its 401 round trip) is in progress.
    Allocating,
    /// An allocation exists; data can be relayed.
    Allocated,
    /// [`super::TurnClient::release`] sent a Refresh with LIFETIME 0.
    Releasing,
    /// Terminal: failed, lost, expired or released. Nothing more will be sent.
    Closed,
}
