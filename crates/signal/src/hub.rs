//! The sans-IO room hub: connections, sessions, mailboxes, limits and timers for one node.
//!
//! Feed it with `handle_*` (connections, frames, REST requests, timeouts), drain what it wants
//! done with [`Hub::poll_output`] until `None`, and call [`Hub::handle_timeout`] at
//! [`Hub::poll_timeout`]. It never reads the clock ([`Now`] is passed in), never touches a socket
//! and takes its randomness from an injected, seedable RNG.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::RngCore;

use crate::auth::{grant_for_room, Auth};
use crate::bus::{Bus, BusCommand, BusEvent, LocalBus, Member};
use crate::error::ErrorCode;
use crate::ice::IceConfig;
use crate::ids::{ConnId, PeerId, ResumeToken, RoomId, SessionId};
use crate::limits::TokenBucket;
use crate::mailbox::Mailbox;
use crate::proto::{
    parse_client_msg, CandidateBody, ClientMsg, DataBody, DirectedBody, ErrorBody, LeaveReason,
    PeerInfo, Permission, Permissions, Resumed, SdpBody, ServerMsg, Signal, Welcome,
    PROTOCOL_VERSION,
};

/// The current time, read once by the IO shell: monotonic for deadlines, unix seconds for token
/// expiry and TURN credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time.
    pub mono: Instant,
    /// Seconds since the unix epoch.
    pub unix: u64,
}

/// Hub limits and settings. [`HubConfig::default`] gives the documented defaults.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// How joins are authorised.
    pub auth: Auth,
    /// STUN/TURN servers for `welcome` and `resumed`.
    pub ice: IceConfig,
    /// Largest accepted frame (default 64 KiB).
    pub max_message_bytes: usize,
    /// Sustained messages per second per connection (default 50).
    pub msgs_per_sec: u32,
    /// Burst of messages per connection (default 200).
    pub msg_burst: u32,
    /// Consecutive rate-limited messages after which the connection is closed (default 50).
    pub max_rate_violations: u32,
    /// Joins per minute per IP address (default 60).
    pub joins_per_min_per_ip: u32,
    /// Peers per room (default 50).
    pub max_peers_per_room: usize,
    /// Rooms with at least one session on this node (default 10 000).
    pub max_rooms: usize,
    /// Distinct IP addresses tracked by the join limiter; beyond it new addresses are refused
    /// until entries age out (default 100 000).
    pub max_tracked_ips: usize,
    /// How long a disconnected session waits for `resume` (default 30 s).
    pub resume_ttl: Duration,
    /// The heartbeat interval clients are told to use; three intervals of silence end a
    /// connection (default 10 s).
    pub heartbeat: Duration,
    /// Time allowed between connecting and joining (default 10 s).
    pub join_timeout: Duration,
    /// Unacknowledged messages per session (default 1024).
    pub mailbox_max_msgs: usize,
    /// Unacknowledged bytes per session (default 1 MiB).
    pub mailbox_max_bytes: usize,
    /// Candidates held per peer pair until an offer or answer passes (default 128).
    pub max_held_candidates: usize,
    /// Messages returned by one REST poll (default 256).
    pub rest_poll_batch: usize,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            auth: Auth::Development,
            ice: IceConfig::default(),
            max_message_bytes: 64 * 1024,
            msgs_per_sec: 50,
            msg_burst: 200,
            max_rate_violations: 50,
            joins_per_min_per_ip: 60,
            max_peers_per_room: 50,
            max_rooms: 10_000,
            max_tracked_ips: 100_000,
            resume_ttl: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            join_timeout: Duration::from_secs(10),
            mailbox_max_msgs: 1024,
            mailbox_max_bytes: 1024 * 1024,
            max_held_candidates: 128,
            rest_poll_batch: 256,
        }
    }
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
    /// A message was queued for `session`, which has no WebSocket: wake its REST long-polls.
    Wake {
        /// The session.
        session: SessionId,
    },
    /// An input was refused with `code` (for the `floe_signal_errors_total` counter). Emitted
    /// for every refusal, including those answered through the REST API.
    Rejected {
        /// The code.
        code: ErrorCode,
    },
}

/// The result of a REST poll.
#[derive(Debug, Clone, PartialEq)]
pub struct RestPoll {
    /// Messages with `seq > after`, oldest first.
    pub messages: Vec<ServerMsg>,
    /// The highest `seq` assigned so far; the next poll's `after` is the last one processed.
    pub last_seq: u64,
}

/// Counts for gauges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct HubStats {
    /// Open connections (WebSocket and REST in flight).
    pub connections: usize,
    /// Sessions, attached or waiting for resume.
    pub sessions: usize,
    /// Rooms with at least one session on this node.
    pub rooms: usize,
}

#[derive(Debug)]
struct Conn {
    ip: IpAddr,
    session: Option<SessionId>,
    pending_join: Option<SessionId>,
    /// When the connection last had no session (for the join timeout).
    unjoined_since: Instant,
    last_rx: Instant,
    bucket: TokenBucket,
    violations: u32,
}

#[derive(Debug, Default)]
struct PairState {
    /// An offer or answer went from this session to the peer in the current negotiation.
    sdp_sent: bool,
    /// Candidates (and end-of-candidates) waiting for that offer or answer.
    held: Vec<(Signal, Option<u64>)>,
}

#[derive(Debug)]
struct Session {
    room: RoomId,
    peer: PeerId,
    join_index: u64,
    resume_token: ResumeToken,
    perms: Permissions,
    token_exp: Option<u64>,
    token_deadline: Option<Instant>,
    conn: Option<ConnId>,
    /// Last time a client was attached or a REST request touched the session.
    detached_at: Instant,
    mailbox: Mailbox,
    last_client_seq: u64,
    pairs: BTreeMap<PeerId, PairState>,
    rest_bucket: TokenBucket,
}

#[derive(Debug)]
struct PendingJoin {
    conn: ConnId,
    peer: PeerId,
    perms: Permissions,
    token_exp: Option<u64>,
    requested_at: Now,
}

#[derive(Debug, Default)]
struct LocalRoom {
    /// Every member of the room (mirror of the directory), with its join index.
    members: BTreeMap<PeerId, u64>,
    /// Sessions of this node in the room.
    sessions: BTreeSet<SessionId>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Conn(ConnId),
    SessionTtl(SessionId),
    TokenExpiry(SessionId),
    IpPrune,
}

/// Where the replies to the input being processed go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplyTo {
    Conn(ConnId),
    Rest,
}

/// The room hub for one node. See the module docs for the driving protocol.
#[derive(Debug)]
pub struct Hub<B: Bus = LocalBus> {
    config: HubConfig,
    bus: B,
    rng: StdRng,
    conns: HashMap<ConnId, Conn>,
    next_conn: u64,
    sessions: HashMap<SessionId, Session>,
    pending: HashMap<SessionId, PendingJoin>,
    rooms: BTreeMap<RoomId, LocalRoom>,
    ip_joins: HashMap<IpAddr, TokenBucket>,
    timers: BTreeSet<(Instant, Timer)>,
    ip_prune_scheduled: bool,
    outputs: VecDeque<Output>,
    /// Replies collected for the REST request being processed, and its session.
    rest: Option<(SessionId, Vec<ServerMsg>)>,
    shutting_down: bool,
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
            rooms: BTreeMap::new(),
            ip_joins: HashMap::new(),
            timers: BTreeSet::new(),
            ip_prune_scheduled: false,
            outputs: VecDeque::new(),
            rest: None,
            shutting_down: false,
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
                bucket: TokenBucket::new(f64::from(c.msgs_per_sec), c.msg_burst, now.mono),
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
            let max = self.config.max_message_bytes;
            self.fail(
                conn,
                ErrorCode::MessageTooLarge,
                format!("frame exceeds {max} bytes"),
                now,
            );
            return;
        }
        if !c.bucket.try_take(now.mono) {
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
            self.outputs.push_back(Output::Send {
                conn,
                msg: ServerMsg::GoAway {
                    reason: "server shutting down; reconnect, to another node if possible".into(),
                    reconnect_ms,
                },
            });
            self.outputs.push_back(Output::Close {
                conn,
                code: ErrorCode::ServerShutdown,
            });
        }
        self.conns.clear();
    }

    /// REST: one client message for `session`, authenticated by its resume token. Returns the
    /// immediate replies (errors, `pong`, `refreshed`), or the error that refused the request.
    pub fn handle_rest_post(
        &mut self,
        session: &SessionId,
        token: &str,
        body: &[u8],
        now: Now,
    ) -> Result<Vec<ServerMsg>, ErrorBody> {
        self.rest_session(session, token, now)?;
        let refuse = |hub: &mut Self, code: ErrorCode, msg: String, ref_seq| {
            hub.outputs.push_back(Output::Rejected { code });
            Err(ErrorBody {
                code,
                message: msg,
                fatal: false,
                ref_seq,
            })
        };
        if body.len() > self.config.max_message_bytes {
            let max = self.config.max_message_bytes;
            return refuse(
                self,
                ErrorCode::MessageTooLarge,
                format!("body exceeds {max} bytes"),
                None,
            );
        }
        if let Some(s) = self.sessions.get_mut(session) {
            if !s.rest_bucket.try_take(now.mono) {
                return refuse(
                    self,
                    ErrorCode::RateLimited,
                    "too many messages per second".into(),
                    None,
                );
            }
        }
        let Ok(text) = std::str::from_utf8(body) else {
            return refuse(
                self,
                ErrorCode::BadJson,
                "body is not UTF-8 text".into(),
                None,
            );
        };
        let msg = match parse_client_msg(text) {
            Ok(m) => m,
            Err(e) => return refuse(self, e.code, e.message, e.ref_seq),
        };
        if matches!(msg, ClientMsg::Join { .. } | ClientMsg::Resume { .. }) {
            return refuse(
                self,
                ErrorCode::BadMessage,
                "join through POST /v1/rest/join; REST sessions need no resume".into(),
                None,
            );
        }
        self.rest = Some((session.clone(), Vec::new()));
        self.dispatch_session(ReplyTo::Rest, session.clone(), msg, now);
        self.pump_bus(now);
        Ok(self.rest.take().map(|(_, r)| r).unwrap_or_default())
    }

    /// REST: acknowledge up to `after` and return the messages after it (possibly none; the
    /// shell long-polls by waiting for [`Output::Wake`]).
    pub fn handle_rest_poll(
        &mut self,
        session: &SessionId,
        token: &str,
        after: u64,
        now: Now,
    ) -> Result<RestPoll, ErrorBody> {
        self.rest_session(session, token, now)?;
        let batch = self.config.rest_poll_batch;
        let Some(s) = self.sessions.get_mut(session) else {
            return Err(not_found_body());
        };
        s.mailbox.ack(after);
        Ok(RestPoll {
            messages: s.mailbox.since(after).take(batch).cloned().collect(),
            last_seq: s.mailbox.last_seq(),
        })
    }

    /// Whether `session` exists and `token` is its resume token (for the shell's long-poll loop).
    pub fn rest_session_valid(&self, session: &SessionId, token: &str) -> bool {
        self.sessions
            .get(session)
            .is_some_and(|s| s.resume_token.matches(token))
    }

    // ---- dispatch -------------------------------------------------------------------------

    fn dispatch(&mut self, conn: ConnId, msg: ClientMsg, now: Now) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let session = c.session.clone();
        let busy = session.is_some() || c.pending_join.is_some();
        match msg {
            ClientMsg::Join {
                v,
                room,
                peer,
                token,
            } => {
                if busy {
                    self.reply_error(
                        ReplyTo::Conn(conn),
                        ErrorCode::AlreadyJoined,
                        "this connection already has a session",
                        None,
                    );
                } else {
                    self.join(conn, v, room, peer, token.as_deref(), now);
                }
            }
            ClientMsg::Resume {
                session: sid,
                resume_token,
                last_seq,
            } => {
                if busy {
                    self.reply_error(
                        ReplyTo::Conn(conn),
                        ErrorCode::AlreadyJoined,
                        "this connection already has a session",
                        None,
                    );
                } else {
                    self.resume(conn, &sid, &resume_token, last_seq, now);
                }
            }
            ClientMsg::Ping { .. } if session.is_none() => {
                self.reply(ReplyTo::Conn(conn), ServerMsg::Pong { ack: 0 });
            }
            other => match session {
                Some(sid) => self.dispatch_session(ReplyTo::Conn(conn), sid, other, now),
                None => self.reply_error(
                    ReplyTo::Conn(conn),
                    ErrorCode::NotJoined,
                    "join a room first",
                    client_seq(&other),
                ),
            },
        }
    }

    fn dispatch_session(&mut self, to: ReplyTo, sid: SessionId, msg: ClientMsg, now: Now) {
        let Some(s) = self.sessions.get_mut(&sid) else {
            return;
        };
        if let Some(seq) = client_seq(&msg) {
            if seq <= s.last_client_seq {
                return; // A resend after resume that already arrived: drop silently.
            }
            s.last_client_seq = seq;
        }
        match msg {
            ClientMsg::Offer(SdpBody { to: peer, sdp, seq }) => {
                self.signal(to, &sid, peer, Signal::Offer { sdp }, seq)
            }
            ClientMsg::Answer(SdpBody { to: peer, sdp, seq }) => {
                self.signal(to, &sid, peer, Signal::Answer { sdp }, seq)
            }
            ClientMsg::Candidate(c) => self.candidate(to, &sid, c),
            ClientMsg::EndOfCandidates(DirectedBody { to: peer, seq }) => {
                self.signal(to, &sid, peer, Signal::EndOfCandidates, seq)
            }
            ClientMsg::Bye(DirectedBody { to: peer, seq }) => {
                self.signal(to, &sid, peer, Signal::Bye, seq)
            }
            ClientMsg::Data(d) => self.data(to, &sid, d),
            ClientMsg::Ack { seq } => s.mailbox.ack(seq),
            ClientMsg::Ping { ack } => {
                if let Some(a) = ack {
                    s.mailbox.ack(a);
                }
                let ack = s.last_client_seq;
                self.reply(to, ServerMsg::Pong { ack });
            }
            ClientMsg::Refresh { token } => self.refresh(to, &sid, &token, now),
            ClientMsg::Leave {} => self.end_session(&sid, LeaveReason::Left, true, now),
            ClientMsg::Kick { peer } => self.kick(to, &sid, peer),
            ClientMsg::Join { .. } | ClientMsg::Resume { .. } => self.reply_error(
                to,
                ErrorCode::AlreadyJoined,
                "this connection already has a session",
                None,
            ),
        }
    }

    // ---- join, resume, leave ---------------------------------------------------------------

    fn join(
        &mut self,
        conn: ConnId,
        v: u32,
        room: RoomId,
        peer: Option<PeerId>,
        token: Option<&str>,
        now: Now,
    ) {
        let to = ReplyTo::Conn(conn);
        if v != PROTOCOL_VERSION {
            let m = format!(
                "protocol version {v} is not supported; this server speaks {PROTOCOL_VERSION}"
            );
            return self.reply_error(to, ErrorCode::UnsupportedVersion, m, None);
        }
        let Some(ip) = self.conns.get(&conn).map(|c| c.ip) else {
            return;
        };
        if !self.take_join_token(ip, now) {
            return self.reply_error(
                to,
                ErrorCode::JoinRateLimited,
                "too many joins from this address; retry in a minute",
                None,
            );
        }
        let grant = match self.config.auth.authorize_join(&room, token, ip, now.unix) {
            Ok(g) => g,
            Err(d) => return self.reply_error(to, d.code, d.message, None),
        };
        let peer = match (grant.peer, peer) {
            (Some(p), Some(q)) if p != q => {
                return self.reply_error(
                    to,
                    ErrorCode::Forbidden,
                    format!("the token is for peer {p}, not {q}"),
                    None,
                )
            }
            (Some(p), _) | (None, Some(p)) => p,
            (None, None) => self.random_peer_id(),
        };
        if !self.rooms.contains_key(&room) && self.rooms.len() >= self.config.max_rooms {
            let m = format!(
                "this node hosts the maximum of {} rooms",
                self.config.max_rooms
            );
            return self.reply_error(to, ErrorCode::TooManyRooms, m, None);
        }
        let session = self.random_session_id();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.pending_join = Some(session.clone());
        }
        self.pending.insert(
            session.clone(),
            PendingJoin {
                conn,
                peer: peer.clone(),
                perms: grant.perms,
                token_exp: grant.exp,
                requested_at: now,
            },
        );
        self.bus.send(BusCommand::Join {
            room,
            peer,
            session,
            subscribe: grant.perms.subscribe,
            max_peers: self.config.max_peers_per_room,
        });
    }

    fn join_accepted(
        &mut self,
        room: RoomId,
        sid: SessionId,
        join_index: u64,
        members: Vec<Member>,
        now: Now,
    ) {
        let Some(p) = self.pending.remove(&sid) else {
            return;
        };
        let conn_alive = self
            .conns
            .get(&p.conn)
            .is_some_and(|c| c.pending_join.as_ref() == Some(&sid));
        if !conn_alive || self.shutting_down {
            // The client is gone; nobody will ever learn this session's token.
            let reason = LeaveReason::Left;
            self.bus.send(BusCommand::Leave {
                room,
                peer: p.peer,
                session: sid,
                reason,
            });
            return;
        }
        let local = self.rooms.entry(room.clone()).or_default();
        for m in &members {
            local.members.insert(m.peer.clone(), m.join_index);
        }
        local.members.insert(p.peer.clone(), join_index);
        local.sessions.insert(sid.clone());
        let resume_token = self.random_token();
        let token_deadline = p.token_exp.map(|exp| deadline_for(exp, p.requested_at));
        let session = Session {
            room: room.clone(),
            peer: p.peer.clone(),
            join_index,
            resume_token: resume_token.clone(),
            perms: p.perms,
            token_exp: p.token_exp,
            token_deadline,
            conn: Some(p.conn),
            detached_at: now.mono,
            mailbox: Mailbox::new(),
            last_client_seq: 0,
            pairs: BTreeMap::new(),
            rest_bucket: TokenBucket::new(
                f64::from(self.config.msgs_per_sec),
                self.config.msg_burst,
                now.mono,
            ),
        };
        if let Some(d) = token_deadline {
            self.timers.insert((d, Timer::TokenExpiry(sid.clone())));
        }
        self.sessions.insert(sid.clone(), session);
        if let Some(c) = self.conns.get_mut(&p.conn) {
            c.pending_join = None;
            c.session = Some(sid.clone());
        }
        self.arm_idle_timer(p.conn, now);
        let welcome = Welcome {
            v: PROTOCOL_VERSION,
            room,
            peer: p.peer.clone(),
            session: sid,
            resume_token,
            resume_ttl_ms: duration_ms(self.config.resume_ttl),
            heartbeat_ms: duration_ms(self.config.heartbeat),
            max_message_bytes: self.config.max_message_bytes,
            peers: members
                .iter()
                .map(|m| PeerInfo {
                    peer: m.peer.clone(),
                    polite: false,
                    offerer: true,
                })
                .collect(),
            ice_servers: self.config.ice.servers_for(&p.peer, now.unix),
            permissions: p.perms.to_list(),
            token_exp: p.token_exp,
        };
        self.reply(ReplyTo::Conn(p.conn), ServerMsg::Welcome(Box::new(welcome)));
    }

    fn join_rejected(&mut self, sid: &SessionId, code: ErrorCode, message: String) {
        let Some(p) = self.pending.remove(sid) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&p.conn) else {
            return;
        };
        if c.pending_join.as_ref() == Some(sid) {
            c.pending_join = None;
            self.reply_error(ReplyTo::Conn(p.conn), code, message, None);
        }
    }

    fn resume(
        &mut self,
        conn: ConnId,
        sid: &SessionId,
        token: &ResumeToken,
        last_seq: u64,
        now: Now,
    ) {
        let ok = self
            .sessions
            .get(sid)
            .is_some_and(|s| s.resume_token.matches(token.as_str()));
        if !ok {
            let m = "unknown or expired session, or wrong resume token; join again";
            return self.reply_error(ReplyTo::Conn(conn), ErrorCode::ResumeFailed, m, None);
        }
        let old = self.sessions.get(sid).and_then(|s| s.conn);
        if let Some(old) = old {
            self.fail(
                old,
                ErrorCode::SessionReplaced,
                "the session was resumed on another connection".into(),
                now,
            );
        }
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        s.conn = Some(conn);
        s.mailbox.ack(last_seq);
        let peers = peer_infos(self.rooms.get(&s.room), &s.peer, s.join_index);
        let resumed = Resumed {
            room: s.room.clone(),
            peer: s.peer.clone(),
            session: sid.clone(),
            peers,
            ice_servers: self.config.ice.servers_for(&s.peer, now.unix),
            received: s.last_client_seq,
            last_seq: s.mailbox.last_seq(),
        };
        let replay: Vec<ServerMsg> = s.mailbox.since(last_seq).cloned().collect();
        if let Some(c) = self.conns.get_mut(&conn) {
            c.session = Some(sid.clone());
        }
        self.arm_idle_timer(conn, now);
        self.outputs.push_back(Output::Send {
            conn,
            msg: ServerMsg::Resumed(Box::new(resumed)),
        });
        for msg in replay {
            self.outputs.push_back(Output::Send { conn, msg });
        }
    }

    /// Ends a session for good: tells the directory (when `notify_bus`) and forgets it.
    fn end_session(&mut self, sid: &SessionId, reason: LeaveReason, notify_bus: bool, now: Now) {
        let Some(s) = self.sessions.remove(sid) else {
            return;
        };
        if let Some(conn) = s.conn {
            if let Some(c) = self.conns.get_mut(&conn) {
                c.session = None;
                c.unjoined_since = now.mono;
                // Duplicate timers for one connection are harmless: the check is idempotent.
                self.timers
                    .insert((now.mono + self.config.join_timeout, Timer::Conn(conn)));
            }
        }
        if let Some(local) = self.rooms.get_mut(&s.room) {
            local.sessions.remove(sid);
            if local.sessions.is_empty() {
                self.rooms.remove(&s.room);
            }
        }
        if notify_bus {
            self.bus.send(BusCommand::Leave {
                room: s.room,
                peer: s.peer,
                session: sid.clone(),
                reason,
            });
        }
    }

    // ---- signalling ------------------------------------------------------------------------

    fn signal(
        &mut self,
        to: ReplyTo,
        sid: &SessionId,
        peer: PeerId,
        signal: Signal,
        seq: Option<u64>,
    ) {
        if !self.check_publish(to, sid, &peer, seq) {
            return;
        }
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let pair = s.pairs.entry(peer.clone()).or_default();
        let mut batch = Vec::new();
        match &signal {
            Signal::Offer { .. } | Signal::Answer { .. } => {
                pair.sdp_sent = true;
                batch.push((signal, seq));
                batch.append(&mut pair.held);
            }
            Signal::Bye => {
                *pair = PairState::default();
                batch.push((signal, seq));
            }
            _ if !pair.sdp_sent => {
                if pair.held.len() >= self.config.max_held_candidates {
                    let m = format!(
                        "more than {} candidates held for {peer} before an offer or answer",
                        self.config.max_held_candidates
                    );
                    return self.reply_error(to, ErrorCode::CandidateBufferFull, m, seq);
                }
                pair.held.push((signal, seq));
            }
            _ => batch.push((signal, seq)),
        }
        let (room, from) = (s.room.clone(), s.peer.clone());
        for (signal, ref_seq) in batch {
            self.bus.send(BusCommand::Send {
                room: room.clone(),
                from: from.clone(),
                origin: sid.clone(),
                to: Some(peer.clone()),
                signal,
                ref_seq,
            });
        }
    }

    fn candidate(&mut self, to: ReplyTo, sid: &SessionId, c: CandidateBody) {
        let signal = Signal::Candidate {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_mline_index: c.sdp_mline_index,
            username_fragment: c.username_fragment,
        };
        self.signal(to, sid, c.to, signal, c.seq)
    }

    /// Permission and target checks shared by the signals. Returns whether to go on.
    fn check_publish(
        &mut self,
        to: ReplyTo,
        sid: &SessionId,
        peer: &PeerId,
        seq: Option<u64>,
    ) -> bool {
        let Some(s) = self.sessions.get(sid) else {
            return false;
        };
        if !s.perms.has(Permission::Publish) {
            self.reply_error(
                to,
                ErrorCode::Forbidden,
                "the token does not grant publish",
                seq,
            );
            return false;
        }
        if *peer == s.peer {
            self.reply_error(to, ErrorCode::BadMessage, "cannot signal yourself", seq);
            return false;
        }
        let present = self
            .rooms
            .get(&s.room)
            .is_some_and(|r| r.members.contains_key(peer));
        if !present {
            self.reply_error(
                to,
                ErrorCode::PeerNotFound,
                format!("peer {peer} is not in the room"),
                seq,
            );
            return false;
        }
        true
    }

    fn data(&mut self, to: ReplyTo, sid: &SessionId, d: DataBody) {
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        if !s.perms.has(Permission::Data) {
            return self.reply_error(
                to,
                ErrorCode::Forbidden,
                "the token does not grant data",
                d.seq,
            );
        }
        if d.to.as_ref() == Some(&s.peer) {
            return self.reply_error(
                to,
                ErrorCode::BadMessage,
                "cannot send data to yourself",
                d.seq,
            );
        }
        self.bus.send(BusCommand::Send {
            room: s.room.clone(),
            from: s.peer.clone(),
            origin: sid.clone(),
            to: d.to,
            signal: Signal::Data { data: d.data },
            ref_seq: d.seq,
        });
    }

    fn kick(&mut self, to: ReplyTo, sid: &SessionId, peer: PeerId) {
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        if !s.perms.has(Permission::Admin) {
            return self.reply_error(
                to,
                ErrorCode::Forbidden,
                "kick needs the admin permission",
                None,
            );
        }
        let cmd = BusCommand::Kick {
            room: s.room.clone(),
            origin: sid.clone(),
            peer,
        };
        self.bus.send(cmd);
    }

    fn refresh(&mut self, to: ReplyTo, sid: &SessionId, token: &str, now: Now) {
        let Auth::Jwt(verifier) = &self.config.auth else {
            return self.reply(to, ServerMsg::Refreshed { exp: None });
        };
        let claims = match verifier.verify(token, now.unix) {
            Ok(c) => c,
            Err(d) => return self.reply_error(to, d.code, d.message, None),
        };
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        let grant = match grant_for_room(&claims, &s.room) {
            Ok(g) => g,
            Err(d) => return self.reply_error(to, d.code, d.message, None),
        };
        if grant.peer.as_ref().is_some_and(|p| *p != s.peer) {
            return self.reply_error(
                to,
                ErrorCode::Forbidden,
                "the new token is for another peer",
                None,
            );
        }
        let deadline = deadline_for(claims.exp, now);
        if let Some(s) = self.sessions.get_mut(sid) {
            s.perms = grant.perms;
            s.token_exp = Some(claims.exp);
            s.token_deadline = Some(deadline);
        }
        self.timers
            .insert((deadline, Timer::TokenExpiry(sid.clone())));
        self.reply(
            to,
            ServerMsg::Refreshed {
                exp: Some(claims.exp),
            },
        );
    }

    // ---- the bus ---------------------------------------------------------------------------

    fn pump_bus(&mut self, now: Now) {
        // Each event is handled once; handlers may send commands whose events join the queue.
        while let Some(ev) = self.bus.poll_event() {
            self.handle_bus_event(ev, now);
        }
    }

    /// One event from the bus (public for shells that pump a remote bus themselves).
    pub fn handle_bus_event(&mut self, ev: BusEvent, now: Now) {
        match ev {
            BusEvent::JoinAccepted {
                room,
                session,
                join_index,
                members,
            } => self.join_accepted(room, session, join_index, members, now),
            BusEvent::JoinRejected {
                session,
                code,
                message,
            } => self.join_rejected(&session, code, message),
            BusEvent::MemberJoined { room, member } => self.member_joined(&room, member, now),
            BusEvent::MemberLeft {
                room,
                peer,
                session,
                reason,
            } => self.member_left(&room, &peer, &session, reason, now),
            BusEvent::Deliver {
                to,
                from,
                signal,
                broadcast,
            } => {
                let size = signal.approx_size() + 64;
                self.deliver(&to, size, now, |seq| {
                    signal.into_server_msg(seq, from, broadcast)
                })
            }
            BusEvent::Undeliverable {
                origin,
                to,
                ref_seq,
            } => {
                let m = format!("peer {to} is not in the room");
                self.reply_session_error(&origin, ErrorCode::PeerNotFound, m, ref_seq)
            }
            BusEvent::Evict { session, code } => self.evict(&session, code, now),
        }
    }

    fn member_joined(&mut self, room: &RoomId, member: Member, now: Now) {
        let Some(local) = self.rooms.get_mut(room) else {
            return;
        };
        local.members.insert(member.peer.clone(), member.join_index);
        let targets: Vec<SessionId> = local
            .sessions
            .iter()
            .filter(|s| **s != member.session)
            .cloned()
            .collect();
        for sid in targets {
            let info = PeerInfo {
                peer: member.peer.clone(),
                polite: true,
                offerer: false,
            };
            self.deliver(&sid, 64, now, |seq| ServerMsg::PeerJoined { seq, info });
        }
    }

    fn member_left(
        &mut self,
        room: &RoomId,
        peer: &PeerId,
        session: &SessionId,
        reason: LeaveReason,
        now: Now,
    ) {
        let Some(local) = self.rooms.get_mut(room) else {
            return;
        };
        local.members.remove(peer);
        let targets: Vec<SessionId> = local
            .sessions
            .iter()
            .filter(|s| *s != session)
            .cloned()
            .collect();
        for sid in targets {
            if let Some(s) = self.sessions.get_mut(&sid) {
                s.pairs.remove(peer);
            }
            let peer = peer.clone();
            self.deliver(&sid, 64, now, |seq| ServerMsg::PeerLeft {
                seq,
                peer,
                reason,
            });
        }
    }

    fn evict(&mut self, sid: &SessionId, code: ErrorCode, now: Now) {
        let conn = self.sessions.get(sid).and_then(|s| s.conn);
        if let Some(conn) = conn {
            self.fail(conn, code, "an admin removed you from the room".into(), now);
        }
        self.end_session(sid, LeaveReason::Kicked, false, now);
    }

    /// Puts a numbered message in `sid`'s mailbox and sends it if a client is attached.
    fn deliver(
        &mut self,
        sid: &SessionId,
        size: usize,
        now: Now,
        make: impl FnOnce(u64) -> ServerMsg,
    ) {
        let (max_msgs, max_bytes) = (self.config.mailbox_max_msgs, self.config.mailbox_max_bytes);
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if s.mailbox.len() >= max_msgs || s.mailbox.bytes() + size > max_bytes {
            let conn = s.conn;
            if let Some(conn) = conn {
                let m = "too many unacknowledged messages; acknowledge with `ack`".to_string();
                self.fail(conn, ErrorCode::MailboxOverflow, m, now);
            } else {
                self.outputs.push_back(Output::Rejected {
                    code: ErrorCode::MailboxOverflow,
                });
            }
            self.end_session(sid, LeaveReason::Overflow, true, now);
            return;
        }
        let msg = make(s.mailbox.next_seq());
        s.mailbox.push(msg.clone(), size);
        match s.conn {
            Some(conn) => self.outputs.push_back(Output::Send { conn, msg }),
            None => self.outputs.push_back(Output::Wake {
                session: sid.clone(),
            }),
        }
    }

    // ---- timers ----------------------------------------------------------------------------

    fn check_conn(&mut self, conn: ConnId, now: Now) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let dead_after = self.config.heartbeat * 3;
        let idle_deadline = c.last_rx + dead_after;
        let joined = c.session.is_some() || c.pending_join.is_some();
        let join_deadline = (!joined).then(|| c.unjoined_since + self.config.join_timeout);
        if join_deadline.is_some_and(|d| d <= now.mono) {
            return self.fail(
                conn,
                ErrorCode::JoinTimeout,
                "no join or resume in time".into(),
                now,
            );
        }
        if idle_deadline <= now.mono {
            let m = format!("nothing received for {} s", dead_after.as_secs());
            return self.fail(conn, ErrorCode::HeartbeatTimeout, m, now);
        }
        let next = join_deadline.map_or(idle_deadline, |j| j.min(idle_deadline));
        self.timers.insert((next, Timer::Conn(conn)));
    }

    /// Schedules the dead-connection check of a joined connection (the join-timeout check may be
    /// later than three heartbeats).
    fn arm_idle_timer(&mut self, conn: ConnId, now: Now) {
        let at = now.mono + self.config.heartbeat * 3;
        self.timers.insert((at, Timer::Conn(conn)));
    }

    fn check_session_ttl(&mut self, sid: &SessionId, now: Now) {
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        if s.conn.is_some() {
            return; // Re-armed when it detaches again.
        }
        let deadline = s.detached_at + self.config.resume_ttl;
        if deadline <= now.mono {
            self.end_session(sid, LeaveReason::Timeout, true, now);
        } else {
            self.timers
                .insert((deadline, Timer::SessionTtl(sid.clone())));
        }
    }

    fn check_token(&mut self, sid: &SessionId, now: Now) {
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        let Some(deadline) = s.token_deadline else {
            return;
        };
        if deadline > now.mono {
            return; // Refreshed; a timer for the new deadline exists.
        }
        if let Some(conn) = s.conn {
            self.fail(
                conn,
                ErrorCode::TokenExpired,
                "the token expired; refresh it before `exp`".into(),
                now,
            );
        }
        self.end_session(sid, LeaveReason::Expired, true, now);
    }

    fn prune_ips(&mut self, now: Now) {
        self.ip_joins.retain(|_, b| !b.is_full(now.mono));
        self.ip_prune_scheduled = !self.ip_joins.is_empty();
        if self.ip_prune_scheduled {
            self.timers
                .insert((now.mono + Duration::from_secs(60), Timer::IpPrune));
        }
    }

    // ---- helpers ---------------------------------------------------------------------------

    fn take_join_token(&mut self, ip: IpAddr, now: Now) -> bool {
        if !self.ip_joins.contains_key(&ip) && self.ip_joins.len() >= self.config.max_tracked_ips {
            self.ip_joins.retain(|_, b| !b.is_full(now.mono));
            if self.ip_joins.len() >= self.config.max_tracked_ips {
                return false;
            }
        }
        let per_min = self.config.joins_per_min_per_ip;
        let bucket = self
            .ip_joins
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(f64::from(per_min) / 60.0, per_min, now.mono));
        let ok = bucket.try_take(now.mono);
        if !self.ip_prune_scheduled {
            self.ip_prune_scheduled = true;
            self.timers
                .insert((now.mono + Duration::from_secs(60), Timer::IpPrune));
        }
        ok
    }

    fn rest_session(&mut self, sid: &SessionId, token: &str, now: Now) -> Result<(), ErrorBody> {
        let ttl = self.config.resume_ttl;
        match self.sessions.get_mut(sid) {
            Some(s) if s.resume_token.matches(token) => {
                if s.conn.is_none() {
                    s.detached_at = now.mono;
                    self.timers
                        .insert((now.mono + ttl, Timer::SessionTtl(sid.clone())));
                }
                Ok(())
            }
            _ => {
                self.outputs.push_back(Output::Rejected {
                    code: ErrorCode::SessionNotFound,
                });
                Err(not_found_body())
            }
        }
    }

    fn drop_conn(&mut self, conn: ConnId, now: Now) {
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

    /// Sends a fatal error, closes the connection and detaches its session.
    fn fail(&mut self, conn: ConnId, code: ErrorCode, message: String, now: Now) {
        if !self.conns.contains_key(&conn) {
            return;
        }
        self.outputs.push_back(Output::Rejected { code });
        let body = ErrorBody {
            code,
            message,
            fatal: true,
            ref_seq: None,
        };
        self.outputs.push_back(Output::Send {
            conn,
            msg: ServerMsg::Error(body),
        });
        self.outputs.push_back(Output::Close { conn, code });
        self.drop_conn(conn, now);
    }

    fn rate_limited(&mut self, conn: ConnId, fatal: bool, now: Now) {
        if fatal {
            let m = "message rate limit exceeded persistently".to_string();
            return self.fail(conn, ErrorCode::RateLimited, m, now);
        }
        self.reply_error(
            ReplyTo::Conn(conn),
            ErrorCode::RateLimited,
            "too many messages per second; message dropped",
            None,
        );
    }

    fn reply(&mut self, to: ReplyTo, msg: ServerMsg) {
        match to {
            ReplyTo::Conn(conn) => self.outputs.push_back(Output::Send { conn, msg }),
            ReplyTo::Rest => {
                if let Some((_, replies)) = &mut self.rest {
                    replies.push(msg);
                }
            }
        }
    }

    fn reply_error(
        &mut self,
        to: ReplyTo,
        code: ErrorCode,
        message: impl Into<String>,
        ref_seq: Option<u64>,
    ) {
        self.outputs.push_back(Output::Rejected { code });
        self.reply(to, ServerMsg::error(code, message, ref_seq));
    }

    /// An error for a session from an asynchronous bus answer.
    fn reply_session_error(
        &mut self,
        sid: &SessionId,
        code: ErrorCode,
        message: String,
        ref_seq: Option<u64>,
    ) {
        if self.rest.as_ref().is_some_and(|(s, _)| s == sid) {
            return self.reply_error(ReplyTo::Rest, code, message, ref_seq);
        }
        match self.sessions.get(sid).and_then(|s| s.conn) {
            Some(conn) => self.reply_error(ReplyTo::Conn(conn), code, message, ref_seq),
            None => self.outputs.push_back(Output::Rejected { code }),
        }
    }

    fn random_hex(&mut self, bytes: usize) -> String {
        let mut buf = vec![0u8; bytes];
        self.rng.fill_bytes(&mut buf);
        buf.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn random_session_id(&mut self) -> SessionId {
        loop {
            let id = self.random_hex(8);
            // Hex of 8 bytes is a valid id by construction; `ok()` guards the invariant anyway.
            if let Ok(id) = SessionId::new(id) {
                if !self.sessions.contains_key(&id) && !self.pending.contains_key(&id) {
                    return id;
                }
            }
        }
    }

    fn random_peer_id(&mut self) -> PeerId {
        let hex = self.random_hex(6);
        // "p-" + 12 hex digits is valid by construction.
        PeerId::new(format!("p-{hex}"))
            .unwrap_or_else(|_| unreachable!("generated peer id is valid"))
    }

    fn random_token(&mut self) -> ResumeToken {
        ResumeToken::new(self.random_hex(16))
    }
}

fn not_found_body() -> ErrorBody {
    ErrorBody {
        code: ErrorCode::SessionNotFound,
        message: "unknown session or wrong bearer token".into(),
        fatal: false,
        ref_seq: None,
    }
}

/// The client `seq` of a routed message, if it has one.
fn client_seq(msg: &ClientMsg) -> Option<u64> {
    match msg {
        ClientMsg::Offer(b) | ClientMsg::Answer(b) => b.seq,
        ClientMsg::Candidate(b) => b.seq,
        ClientMsg::EndOfCandidates(b) | ClientMsg::Bye(b) => b.seq,
        ClientMsg::Data(b) => b.seq,
        _ => None,
    }
}

/// The other members of `room` as seen by the member with `my_index`.
fn peer_infos(room: Option<&LocalRoom>, me: &PeerId, my_index: u64) -> Vec<PeerInfo> {
    let Some(room) = room else { return Vec::new() };
    let mut v: Vec<(&PeerId, u64)> = room
        .members
        .iter()
        .filter(|(p, _)| *p != me)
        .map(|(p, i)| (p, *i))
        .collect();
    v.sort_by_key(|(_, i)| *i);
    v.into_iter()
        .map(|(p, idx)| {
            let i_am_newer = my_index > idx;
            PeerInfo {
                peer: p.clone(),
                polite: !i_am_newer,
                offerer: i_am_newer,
            }
        })
        .collect()
}

/// The monotonic instant at which unix time `exp` is reached, seen from `now`.
fn deadline_for(exp: u64, now: Now) -> Instant {
    now.mono + Duration::from_secs(exp.saturating_sub(now.unix))
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
