//! The hub's records: connections, sessions, pending joins, rooms, timers.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Instant;

use super::Now;
use crate::ids::{ConnId, PeerId, ResumeToken, RoomId, SessionId, TenantId};
use crate::mailbox::Mailbox;
use crate::proto::{Permissions, Signal};
use floe_turn::ratelimit::TokenBucket;

#[derive(Debug)]
pub(super) struct Conn {
    pub(super) ip: IpAddr,
    pub(super) session: Option<SessionId>,
    pub(super) pending_join: Option<SessionId>,
    /// When the connection last had no session (for the join timeout).
    pub(super) unjoined_since: Instant,
    pub(super) last_rx: Instant,
    pub(super) bucket: TokenBucket,
    pub(super) violations: u32,
}

#[derive(Debug, Default)]
pub(super) struct PairState {
    /// An offer or answer went from this session to the peer in the current negotiation.
    pub(super) sdp_sent: bool,
    /// Candidates (and end-of-candidates) waiting for that offer or answer.
    pub(super) held: Vec<(Signal, Option<u64>)>,
}

#[derive(Debug)]
pub(super) struct Session {
    pub(super) room: RoomId,
    pub(super) peer: PeerId,
    pub(super) join_index: u64,
    pub(super) resume_token: ResumeToken,
    pub(super) perms: Permissions,
    pub(super) token_exp: Option<u64>,
    /// The token's `tenant` claim (for TURN credentials); the shared session record carries it
    /// to the node a session resumes on.
    pub(super) tenant: Option<TenantId>,
    pub(super) token_deadline: Option<Instant>,
    pub(super) conn: Option<ConnId>,
    /// Last time a client was attached or a post-box request touched the session.
    pub(super) detached_at: Instant,
    pub(super) mailbox: Mailbox,
    pub(super) last_client_seq: u64,
    pub(super) pairs: BTreeMap<PeerId, PairState>,
    pub(super) post_box_bucket: TokenBucket,
    /// How the join was authorised: a reload that changes the keys checks it again.
    pub(super) joined_with: JoinedWith,
}

/// How a session's join was authorised, kept so that a configuration reload that removes a
/// key ends the sessions it admitted ([`super::Hub::handle_reconfigure`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum JoinedWith {
    /// Development mode: no token.
    Anonymous,
    /// This token (the join's, or the last `refresh`'s).
    Token(String),
    /// Joined on another node and resumed here (multi-node): its token is not known here.
    Elsewhere,
}

#[derive(Debug)]
pub(super) struct PendingJoin {
    pub(super) conn: ConnId,
    pub(super) peer: PeerId,
    pub(super) perms: Permissions,
    pub(super) token_exp: Option<u64>,
    pub(super) joined_with: JoinedWith,
    pub(super) tenant: Option<TenantId>,
    pub(super) requested_at: Now,
}

/// A `resume` of a session held by another node, waiting for the directory's answer.
#[derive(Debug)]
pub(super) struct PendingResume {
    pub(super) conn: ConnId,
    pub(super) token: ResumeToken,
    pub(super) last_seq: u64,
}

#[derive(Debug, Default)]
pub(super) struct LocalRoom {
    /// Every member of the room (mirror of the directory), with its join index.
    pub(super) members: BTreeMap<PeerId, u64>,
    /// Sessions of this node in the room.
    pub(super) sessions: BTreeSet<SessionId>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Timer {
    Conn(ConnId),
    SessionTtl(SessionId),
    TokenExpiry(SessionId),
    IpPrune,
}

/// Where the replies to the input being processed go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReplyTo {
    Conn(ConnId),
    PostBox,
}
