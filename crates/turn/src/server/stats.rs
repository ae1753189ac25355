//! Counters as plain data: the sans-IO crate does not depend on a metrics library; the IO shell
//! reads [`TurnStats`] and exports it.

use super::types::{PeerRequest, Transport};

/// Error codes the server sends, in the order of [`ErrorCounts::iter`].
pub const ERROR_CODES: [u16; 17] = [
    300, 400, 401, 403, 420, 437, 438, 440, 441, 442, 443, 446, 447, 486, 500, 508, 0,
];

/// Error responses sent, by code. Index with [`ErrorCounts::get`]; codes outside
/// [`ERROR_CODES`] count under 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorCounts([u64; ERROR_CODES.len()]);

impl ErrorCounts {
    fn slot(code: u16) -> usize {
        ERROR_CODES
            .iter()
            .position(|&c| c == code)
            .unwrap_or(ERROR_CODES.len() - 1)
    }

    pub(crate) fn add(&mut self, code: u16) {
        self.0[Self::slot(code)] += 1;
    }

    /// Error responses sent with `code`.
    pub fn get(&self, code: u16) -> u64 {
        self.0[Self::slot(code)]
    }

    /// `(code, count)` for every tracked code (0 = any other code).
    pub fn iter(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        ERROR_CODES.iter().copied().zip(self.0.iter().copied())
    }
}

/// Why a packet was dropped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// Neither a valid STUN message nor a valid ChannelData message.
    Malformed,
    /// A STUN message with a wrong FINGERPRINT (RFC 8489 §7.3).
    BadFingerprint,
    /// A response or an indication the server does not take (RFC 8489 §7.3).
    UnexpectedMessage,
    /// Data for a 5-tuple without an allocation (RFC 8656 §11.2, §12.6).
    NoAllocation,
    /// ChannelData on an unbound channel (RFC 8656 §12.6).
    NoChannel,
    /// No permission for the peer (RFC 8656 §9: silently discarded).
    NoPermission,
    /// A Send indication without XOR-PEER-ADDRESS or DATA, or of the wrong family (§11.2).
    BadIndication,
    /// Peer data on a relay address without an allocation.
    UnknownRelay,
    /// The allocation or user is over its bandwidth quota.
    Bandwidth,
    /// An answer to an unauthenticated request was rate limited (RFC 8656 §21.1).
    RateLimited,
    /// The caller's output buffer was too small.
    BufferTooSmall,
    /// Data for one of the server's own relayed addresses at a port without a live allocation
    /// (never sent to the host: see `own_relay.rs`).
    NoSuchRelay,
}

impl DropReason {
    /// Every reason, in [`DropCounts::iter`] order.
    pub const ALL: [DropReason; 12] = [
        DropReason::Malformed,
        DropReason::BadFingerprint,
        DropReason::UnexpectedMessage,
        DropReason::NoAllocation,
        DropReason::NoChannel,
        DropReason::NoPermission,
        DropReason::BadIndication,
        DropReason::UnknownRelay,
        DropReason::Bandwidth,
        DropReason::RateLimited,
        DropReason::BufferTooSmall,
        DropReason::NoSuchRelay,
    ];

    /// A stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::BadFingerprint => "bad_fingerprint",
            DropReason::UnexpectedMessage => "unexpected_message",
            DropReason::NoAllocation => "no_allocation",
            DropReason::NoChannel => "no_channel",
            DropReason::NoPermission => "no_permission",
            DropReason::BadIndication => "bad_indication",
            DropReason::UnknownRelay => "unknown_relay",
            DropReason::Bandwidth => "bandwidth",
            DropReason::RateLimited => "rate_limited",
            DropReason::BufferTooSmall => "buffer_too_small",
            DropReason::NoSuchRelay => "no_such_relay",
        }
    }

    fn index(self) -> usize {
        DropReason::ALL
            .iter()
            .position(|&r| r == self)
            .unwrap_or_default()
    }
}

/// Dropped packets by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    pub(crate) fn add(&mut self, reason: DropReason) {
        self.0[reason.index()] += 1;
    }

    /// Packets dropped for `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()]
    }

    /// `(reason, count)` for every reason.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().copied().zip(self.0.iter().copied())
    }
}

/// Relayed traffic of the allocations of one client transport (RFC 8656 §3.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Packets relayed client → peer (RFC 6062 data connections count bytes only).
    pub packets_to_peer: u64,
    /// Payload bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Packets relayed peer → client.
    pub packets_to_client: u64,
    /// Payload bytes relayed peer → client.
    pub bytes_to_client: u64,
}

/// [`Traffic`] by the client transport of the allocation (UDP, TCP, TLS).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportTraffic([Traffic; 3]);

impl TransportTraffic {
    const ALL: [Transport; 3] = [Transport::Udp, Transport::Tcp, Transport::Tls];

    pub(crate) fn get_mut(&mut self, t: Transport) -> &mut Traffic {
        let i = match t {
            Transport::Udp => 0,
            Transport::Tcp => 1,
            Transport::Tls => 2,
        };
        &mut self.0[i]
    }

    /// `(transport, traffic)` for every client transport.
    pub fn iter(&self) -> impl Iterator<Item = (Transport, &Traffic)> + '_ {
        Self::ALL.into_iter().zip(self.0.iter())
    }
}

/// Counters of one [`crate::server::TurnServer`] (one worker). Counters only grow; gauges
/// (`*_active`) are current values. Sum over workers for the server's totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TurnStats {
    /// Allocations created.
    pub allocations_created: u64,
    /// Allocations deleted (any reason).
    pub allocations_deleted: u64,
    /// Allocations now.
    pub allocations_active: u64,
    /// Permissions installed (new, not refreshes).
    pub permissions_created: u64,
    /// Permissions now.
    pub permissions_active: u64,
    /// Channels bound (new, not refreshes).
    pub channels_created: u64,
    /// Channels now.
    pub channels_active: u64,
    /// Packets relayed client → peer (Send indications and ChannelData).
    pub packets_to_peer: u64,
    /// Payload bytes relayed client → peer.
    pub bytes_to_peer: u64,
    /// Packets relayed peer → client (Data indications and ChannelData).
    pub packets_to_client: u64,
    /// Payload bytes relayed peer → client.
    pub bytes_to_client: u64,
    /// The relayed traffic again, by the client transport of the allocation.
    pub by_transport: TransportTraffic,
    /// Requests answered (success or error), Binding included.
    pub requests: u64,
    /// Requests answered from the transaction cache (retransmissions, RFC 8489 §6.3.1).
    pub retransmissions: u64,
    /// Authentication failures: bad MESSAGE-INTEGRITY, unknown user, expired credential,
    /// invalid nonce (401) and stale nonce (438).
    pub auth_failures: u64,
    /// Error responses by code.
    pub errors: ErrorCounts,
    /// Dropped packets by reason.
    pub dropped: DropCounts,
    /// Refused peer addresses (CreatePermission, ChannelBind, Send, Connect) by reason.
    pub peer_refused: RefusalCounts,
    /// Answers by request method and result (success or error).
    pub responses: MethodCounts,
}

impl TurnStats {
    /// Counts an answer sent: `requests`, and `responses` by the method and class of its
    /// message type (RFC 8489 §5).
    pub(crate) fn count_response(&mut self, response: &[u8]) {
        self.requests += 1;
        if let Some(t) = response.get(..2) {
            let t = u16::from_be_bytes([t[0], t[1]]);
            let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
            let error = t & 0x0110 == 0x0110;
            self.responses.add(method, !error);
        }
    }
}

/// The methods counted in [`MethodCounts`], with their labels; any other method counts under
/// `other`.
pub const METHODS: [(u16, &str); 7] = [
    (0x001, "binding"),
    (0x003, "allocate"),
    (0x004, "refresh"),
    (0x008, "create_permission"),
    (0x009, "channel_bind"),
    (0x00A, "connect"),
    (0x00B, "connection_bind"),
];

/// Answers by method (slot per [`METHODS`], then `other`): `(successes, errors)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MethodCounts([(u64, u64); METHODS.len() + 1]);

impl MethodCounts {
    pub(crate) fn add(&mut self, method: u16, success: bool) {
        let slot = METHODS
            .iter()
            .position(|&(m, _)| m == method)
            .unwrap_or(METHODS.len());
        let (ok, err) = &mut self.0[slot];
        if success {
            *ok += 1;
        } else {
            *err += 1;
        }
    }

    /// `(method label, successes, errors)` for every method, `other` last.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64, u64)> + '_ {
        METHODS
            .iter()
            .map(|&(_, label)| label)
            .chain(std::iter::once("other"))
            .zip(self.0.iter())
            .map(|(label, &(ok, err))| (label, ok, err))
    }
}

/// Refused peer addresses by request and reason label (a policy category such as `private`, or
/// `denied_range`, `own_address`, `port_zero`, `no_permission`). Few distinct pairs exist, so a
/// small vector is enough and nothing is allocated after a pair is first seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefusalCounts(Vec<(PeerRequest, &'static str, u64)>);

impl RefusalCounts {
    pub(crate) fn add(&mut self, request: PeerRequest, reason: &'static str) {
        match self
            .0
            .iter_mut()
            .find(|(q, r, _)| *q == request && *r == reason)
        {
            Some((_, _, n)) => *n += 1,
            None => self.0.push((request, reason, 1)),
        }
    }

    /// Refusals counted under `reason`, whatever the request.
    pub fn get(&self, reason: &str) -> u64 {
        self.0
            .iter()
            .filter(|(_, r, _)| *r == reason)
            .map(|(_, _, n)| *n)
            .sum()
    }

    /// `(request, reason, count)` for every pair seen so far.
    pub fn iter(&self) -> impl Iterator<Item = (PeerRequest, &'static str, u64)> + '_ {
        self.0.iter().copied()
    }
}
