//! The sans-IO room hub: connections, sessions, mailboxes, limits and timers for one node.
//!
//! Feed it with `handle_*` (connections, frames, HTTP post-box requests, timeouts), drain what it
//! wants done with [`Hub::poll_output`] until `None`, and call [`Hub::handle_timeout`] at
//! [`Hub::poll_timeout`]. It never reads the clock ([`Now`] is passed in), never touches a socket
//! and takes its randomness from an injected, seedable RNG.
//!
//! Files, one concern each (every one adds an `impl Hub` block):
//!
//! | file | concern |
//! |---|---|
//! | `mod.rs` | the [`Hub`] type, construction, connection entry points, `poll_*` |
//! | `config.rs` | [`HubConfig`], its defaults and the token buckets it sizes |
//! | `state.rs` | per-connection, per-session, per-room and timer records |
//! | `dispatch.rs` | routing a parsed client message to its handler |
//! | `session.rs` | join, resume, token refresh, leave; generated ids and tokens |
//! | `routing.rs` | signals between peers: permission checks, held candidates, data, kick |
//! | `bus_events.rs` | directory events: presence, mailbox delivery, eviction |
//! | `post_box.rs` | the HTTP post box (send, poll) |
//! | `limits.rs` | the per-IP join limiter and the message rate-limit answer |
//! | `reconfigure.rs` | a configuration reload on the live hub |
//! | `timers.rs` | join, heartbeat, resume-TTL and token-expiry deadlines |
//! | `reply.rs` | replies, errors and fatal closes |

mod admin;
mod bus_events;
mod config;
mod dispatch;
mod limits;
mod post_box;
mod reconfigure;
mod reply;
mod routing;
mod session;
mod state;
mod timers;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Instant;

use rand::rngs::StdRng;

use crate::bus::{Bus, LocalBus};
use crate::error::ErrorCode;
use crate::ids::{ConnId, RoomId, SessionId};
use crate::proto::{parse_client_msg, ServerMsg};
use floe_turn::ratelimit::TokenBucket;

pub use admin::{SessionFilter, SessionInfo};
pub use config::HubConfig;
pub use post_box::PostBoxPoll;
use state::{Conn, LocalRoom, PendingJoin, PendingResume, ReplyTo, Session, Timer};

/// The current time, read once by the IO shell: monotonic for deadlines, unix seconds for token
/// expiry and TURN credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Seconds since the unix epoch.
    pub unix: u64,
}

/// What the hub asks its IO shell to do.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Output {
    /// Send `msg` on `conn`.
    Send {
        /// The connection.
        conn: ConnId,
        /// The message.
        msg: ServerMsg,
    },
    /// Close `conn` (after sending what was queued for it). The hub has forgotten the
    /// connection already; a later `handle_disconnect` for it is a no-op.
    Close {
        /// The connection.
        conn: ConnId,
        /// Why (the last error sent, or `server_shutdown`).
        code: ErrorCode,
    },
    /// A message was queued for `session`, which has no WebSocket: wake its post-box long-polls.
    Wake {
        /// The session.
        session: SessionId,
    },
    /// An input was refused with `code` (for the `floe_signal_errors_total` counter). Emitted
    /// for every refusal, including those answered through the HTTP post box.
    Rejected {
        /// The code.
        code: ErrorCode,
    },
}

/// Counts for gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HubStats {
    /// Open connections (WebSocket, and post-box joins in flight).
    pub connections: usize,
    /// Sessions, attached or waiting for resume.
    pub sessions: usize,
    /// Rooms with at least one session on this node.
    pub rooms: usize,
}

/// The room hub for one node. See the module docs for the driving protocol.
#[derive(Debug)]
pub struct Hub<B: Bus = LocalBus> {
    config: HubConfig,
    bus: B,
    rng: StdRng,
    conns: HashMap<ConnId, Conn>,
    next_conn: u64,
    /// Boxed: a session record is a few hundred bytes, and the table's empty buckets (up to half
    /// of them just after it grows) would each cost as much (docs/benchmarks.md, memory).
    sessions: HashMap<SessionId, Box<Session>>,
    pending: HashMap<SessionId, PendingJoin>,
    /// Resumes of sessions held elsewhere, waiting for the directory (shared sessions only).
    pending_resumes: HashMap<SessionId, PendingResume>,
    rooms: BTreeMap<RoomId, LocalRoom>,
    ip_joins: HashMap<IpAddr, TokenBucket>,
    timers: BTreeSet<(Instant, Timer)>,
    ip_prune_scheduled: bool,
    outputs: VecDeque<Output>,
    /// Replies collected for the post-box request being processed, and its session.
    post_box: Option<(SessionId, Vec<ServerMsg>)>,
    shutting_down: bool,
    /// Draining: joins are refused, sessions go on (see [`Hub::handle_drain`]).
    draining: bool,
}

impl<B: Bus> Hub<B> {
    /// A hub with `config`, room directory `bus` and randomness from `rng` (seed it in tests).
    pub fn new(config: HubConfig, bus: B, rng: StdRng) -> Self {
        Self {
            config,
            bus,
            rng,
            conns: HashMap::new(),
            next_conn: 0,
            sessions: HashMap::new(),
            pending: HashMap::new(),
            pending_resumes: HashMap::new(),
            rooms: BTreeMap::new(),
            ip_joins: HashMap::new(),
            timers: BTreeSet::new(),
            ip_prune_scheduled: false,
            outputs: VecDeque::new(),
            post_box: None,
            shutting_down: false,
            draining: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &HubConfig {
        &self.config
    }

    /// The bus (for an IO shell that pumps a remote bus).
    pub fn bus_mut(&mut self) -> &mut B {
        &mut self.bus
    }

    /// Current counts.
    pub fn stats(&self) -> HubStats {
        HubStats {
            connections: self.conns.len(),
            sessions: self.sessions.len(),
            rooms: self.rooms.len(),
        }
    }

    /// The next thing to do, if any. Call until `None` after every `handle_*`.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`Hub::handle_timeout`] must be called next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|(t, _)| *t)
    }

    /// A new connection from `ip`. It must join or resume within the join timeout.
    pub fn handle_connect(&mut self, ip: IpAddr, now: Now) -> ConnId {
        self.next_conn += 1;
        let id = ConnId(self.next_conn);
        let c = &self.config;
        self.conns.insert(
            id,
            Conn {
                ip,
                session: None,
                pending_join: None,
                unjoined_since: now.mono,
                last_rx: now.mono,
                bucket: c.message_bucket(now.mono),
                violations: 0,
            },
        );
        self.timers
            .insert((now.mono + self.config.join_timeout, Timer::Conn(id)));
        id
    }

    /// The connection went away. Its session (if any) waits for `resume` until the TTL ends.
    pub fn handle_disconnect(&mut self, conn: ConnId, now: Now) {
        self.drop_conn(conn, now);
    }

    /// One frame (text expected) from `conn`.
    pub fn handle_frame(&mut self, conn: ConnId, frame: &[u8], now: Now) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_rx = now.mono;
        if frame.len() > self.config.max_message_bytes {
            return self.handle_oversized(conn, now);
        }
        if !c.bucket.try_take(1, now.mono) {
            c.violations += 1;
            let fatal = c.violations > self.config.max_rate_violations;
            self.rate_limited(conn, fatal, now);
            return;
        }
        c.violations = 0;
        let Ok(text) = std::str::from_utf8(frame) else {
            self.reply_error(
                ReplyTo::Conn(conn),
                ErrorCode::BadJson,
                "frame is not UTF-8 text",
                None,
            );
            return;
        };
        match parse_client_msg(text) {
            Ok(msg) => self.dispatch(conn, msg, now),
            Err(e) => self.reply_error(ReplyTo::Conn(conn), e.code, e.message, e.ref_seq),
        }
        self.pump_bus(now);
    }

    /// A frame too large for the transport to even read (the shell's hard cap): count it and
    /// close the connection.
    pub fn handle_oversized(&mut self, conn: ConnId, now: Now) {
        let max = self.config.max_message_bytes;
        self.fail(
            conn,
            ErrorCode::MessageTooLarge,
            format!("frame exceeds {max} bytes"),
            now,
        );
    }

    /// A text frame that is not valid UTF-8, which the WebSocket transport refuses to read past
    /// (RFC 6455 §8.1 makes it fail the connection): answer `bad_json`, fatally, and close.
    pub fn handle_invalid_text(&mut self, conn: ConnId, now: Now) {
        self.fail(
            conn,
            ErrorCode::BadJson,
            "text frame is not valid UTF-8; the WebSocket cannot continue".into(),
            now,
        );
    }

    /// Time passed: fire due timers.
    pub fn handle_timeout(&mut self, now: Now) {
        while let Some((at, _)) = self.timers.first() {
            if *at > now.mono {
                break;
            }
            let Some((_, timer)) = self.timers.pop_first() else {
                break;
            };
            match timer {
                Timer::Conn(c) => self.check_conn(c, now),
                Timer::SessionTtl(s) => self.check_session_ttl(&s, now),
                Timer::TokenExpiry(s) => self.check_token(&s, now),
                Timer::IpPrune => self.prune_ips(now),
            }
            self.pump_bus(now);
        }
    }

    /// The server is stopping: tell every WebSocket client to reconnect elsewhere and close it.
    pub fn handle_shutdown(&mut self, reconnect_ms: u64, _now: Now) {
        self.shutting_down = true;
        let mut conns: Vec<ConnId> = self.conns.keys().copied().collect();
        conns.sort();
        for conn in conns {
            self.go_away(
                conn,
                "server shutting down; reconnect, to another node if possible",
                reconnect_ms,
            );
            self.outputs.push_back(Output::Close {
                conn,
                code: ErrorCode::ServerShutdown,
            });
        }
        self.conns.clear();
    }

    /// Sends `go_away` on `conn`.
    pub(super) fn go_away(&mut self, conn: ConnId, reason: &str, reconnect_ms: u64) {
        self.outputs.push_back(Output::Send {
            conn,
            msg: ServerMsg::GoAway {
                reason: reason.into(),
                reconnect_ms,
            },
        });
    }

    pub(super) fn drop_conn(&mut self, conn: ConnId, now: Now) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let Some(sid) = c.session else { return };
        let ttl = self.config.resume_ttl;
        if let Some(s) = self.sessions.get_mut(&sid) {
            if s.conn == Some(conn) {
                s.conn = None;
                s.detached_at = now.mono;
                self.timers.insert((now.mono + ttl, Timer::SessionTtl(sid)));
            }
        }
    }
}
