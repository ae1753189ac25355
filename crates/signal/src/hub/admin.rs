//! Operations from outside the protocol: list this node's sessions, end some of them, and drain
//! (refuse new joins, tell connected peers `go_away` while their sessions go on).

use std::time::Duration;

use super::{Hub, Now};
use crate::bus::Bus;
use crate::error::ErrorCode;
use crate::ids::SessionId;
use crate::proto::LeaveReason;

/// One session held by this node, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session id (not a secret: the resume token is).
    pub session: String,
    /// Its room.
    pub room: String,
    /// Its peer id (the user part of the TURN credentials minted for it).
    pub peer: String,
    /// A WebSocket is attached; otherwise the session waits for `resume` (or is served through
    /// the HTTP post box).
    pub connected: bool,
    /// Time since it was last attached or touched, while detached.
    pub detached_for: Option<Duration>,
}

/// Which sessions an admin command addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionFilter {
    /// Every session of a peer id, in any room.
    Peer(String),
    /// One session by id.
    Session(String),
    /// Every session of a room.
    Room(String),
}

impl<B: Bus> Hub<B> {
    /// This node's sessions, ordered by room, then peer.
    pub fn sessions(&self, now: Now) -> Vec<SessionInfo> {
        let mut list: Vec<SessionInfo> = self
            .sessions
            .iter()
            .map(|(sid, s)| SessionInfo {
                session: sid.as_str().to_owned(),
                room: s.room.as_str().to_owned(),
                peer: s.peer.as_str().to_owned(),
                connected: s.conn.is_some(),
                detached_for: s
                    .conn
                    .is_none()
                    .then(|| now.mono.saturating_duration_since(s.detached_at)),
            })
            .collect();
        list.sort_by(|a, b| (&a.room, &a.peer).cmp(&(&b.room, &b.peer)));
        list
    }

    /// Ends the sessions `filter` names: an attached client gets the fatal `kicked` error and
    /// its connection closes; the room sees `peer_left` (`kicked`). Returns how many ended.
    pub fn handle_admin_end(&mut self, filter: &SessionFilter, now: Now) -> usize {
        let ids: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(sid, s)| match filter {
                SessionFilter::Peer(p) => s.peer.as_str() == p,
                SessionFilter::Session(id) => sid.as_str() == id,
                SessionFilter::Room(r) => s.room.as_str() == r,
            })
            .map(|(sid, _)| sid.clone())
            .collect();
        let message = "an operator ended this session";
        self.end_sessions_for(ids, ErrorCode::Kicked, message, now)
    }

    /// Ends `ids` (in order): an attached client gets the fatal `code` error with `message` and
    /// its connection closes; the room sees `peer_left` (`kicked`). Returns how many ended.
    pub(super) fn end_sessions_for(
        &mut self,
        mut ids: Vec<SessionId>,
        code: ErrorCode,
        message: &str,
        now: Now,
    ) -> usize {
        ids.sort();
        for sid in &ids {
            let conn = self.sessions.get(sid).and_then(|s| s.conn);
            if let Some(conn) = conn {
                self.fail(conn, code, message.to_owned(), now);
            }
            self.end_session(sid, LeaveReason::Kicked, true, now);
        }
        self.pump_bus(now);
        ids.len()
    }

    /// Starts draining: from now on `join` is refused (`server_busy`, not fatal: the client
    /// joins another node), and every connected client is told `go_away` (reason `draining`)
    /// once, its connection left open: it may reconnect when it likes (through a load balancer,
    /// to another node) and `resume`; until then its session goes on here. Resumes are still
    /// accepted. Calling it again does nothing.
    pub fn handle_drain(&mut self, reconnect_ms: u64, _now: Now) {
        if self.draining {
            return;
        }
        self.draining = true;
        let mut conns: Vec<_> = self
            .conns
            .iter()
            .filter(|(_, c)| c.session.is_some())
            .map(|(&id, _)| id)
            .collect();
        conns.sort();
        for conn in conns {
            self.go_away(conn, "draining", reconnect_ms);
        }
    }

    /// Whether the hub is draining.
    pub fn is_draining(&self) -> bool {
        self.draining
    }
}
