//! A session's life: join (authorised, rate-limited, confirmed by the directory), resume,
//! token refresh and leave; the random ids and tokens it is given.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rand::RngCore;

use super::state::{
    JoinedWith, LocalRoom, PairState, PendingJoin, PendingResume, ReplyTo, Session, Timer,
};
use super::{Hub, Now, Output};
use crate::auth::{grant_for_room, Auth};
use crate::bus::{Bus, BusCommand, MailboxEntry, Member, ResumedSession, SessionRecord};
use crate::error::ErrorCode;
use crate::ids::{ConnId, PeerId, ResumeToken, RoomId, SessionId};
use crate::mailbox::{AckBeyond, Mailbox};
use crate::proto::{
    ErrorBody, LeaveReason, PeerInfo, Resumed, ServerMsg, Welcome, PROTOCOL_VERSION,
};

/// The answer to any failed `resume` (the causes are indistinguishable on purpose).
const RESUME_FAILED: &str = "unknown or expired session, or wrong resume token; join again";

impl<B: Bus> Hub<B> {
    pub(super) fn join(
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
        if self.draining {
            let m = "this node is draining and takes no new sessions; join another node";
            return self.reply_error(to, ErrorCode::ServerBusy, m, None);
        }
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
                tenant: grant.tenant,
                requested_at: now,
                joined_with: match (&self.config.auth, token) {
                    (Auth::Jwt(_), Some(t)) => JoinedWith::Token(t.to_owned()),
                    _ => JoinedWith::Anonymous,
                },
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

    pub(super) fn join_accepted(
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
            tenant: p.tenant.clone(),
            token_deadline,
            conn: Some(p.conn),
            detached_at: now.mono,
            mailbox: Mailbox::new(),
            last_client_seq: 0,
            pairs: BTreeMap::new(),
            post_box_bucket: self.config.message_bucket(now.mono),
            joined_with: p.joined_with,
        };
        if let Some(d) = token_deadline {
            self.timers.insert((d, Timer::TokenExpiry(sid.clone())));
        }
        self.sessions.insert(sid.clone(), Box::new(session));
        self.register_session(&sid);
        if let Some(c) = self.conns.get_mut(&p.conn) {
            c.pending_join = None;
            c.session = Some(sid.clone());
        }
        self.arm_idle_timer(p.conn, now);
        let ice_servers =
            self.config
                .ice
                .servers_for(&p.peer, Some(&room), p.tenant.as_ref(), now.unix);
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
            ice_servers,
            permissions: p.perms.to_list(),
            token_exp: p.token_exp,
        };
        self.reply(ReplyTo::Conn(p.conn), ServerMsg::Welcome(Box::new(welcome)));
    }

    pub(super) fn join_rejected(&mut self, sid: &SessionId, code: ErrorCode, message: String) {
        if let Some(p) = self.pending.remove(sid) {
            self.refuse_pending(p.conn, sid, code, message);
        }
    }

    /// Answers `conn`'s join or resume of `sid` with an error, if `conn` still waits for it.
    fn refuse_pending(&mut self, conn: ConnId, sid: &SessionId, code: ErrorCode, message: String) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.pending_join.as_ref() == Some(sid) {
            c.pending_join = None;
            self.reply_error(ReplyTo::Conn(conn), code, message, None);
        }
    }

    pub(super) fn resume(
        &mut self,
        conn: ConnId,
        sid: &SessionId,
        token: &ResumeToken,
        last_seq: u64,
        now: Now,
    ) {
        if !self.sessions.contains_key(sid) && self.bus.shares_sessions() {
            return self.resume_elsewhere(conn, sid, token, last_seq);
        }
        let ok = self
            .sessions
            .get(sid)
            .is_some_and(|s| s.resume_token.matches(token.as_str()));
        if !ok {
            let m = RESUME_FAILED;
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
        // A `lastSeq` beyond what was sent acknowledges nothing: `bad_ack`, and the resume
        // replays every message still kept.
        let last_seq = match self.ack_mailbox(sid, last_seq) {
            Ok(()) => last_seq,
            Err(e) => {
                self.reply_error(ReplyTo::Conn(conn), ErrorCode::BadAck, e.to_string(), None);
                0
            }
        };
        self.attach(conn, sid, last_seq, now);
    }

    /// Attaches `conn` to the session `sid` and sends `resumed` and every message after
    /// `last_seq`.
    fn attach(&mut self, conn: ConnId, sid: &SessionId, last_seq: u64, now: Now) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        s.conn = Some(conn);
        let peers = peer_infos(self.rooms.get(&s.room), &s.peer, s.join_index);
        let resumed = Resumed {
            room: s.room.clone(),
            peer: s.peer.clone(),
            session: sid.clone(),
            peers,
            ice_servers: self.config.ice.servers_for(
                &s.peer,
                Some(&s.room),
                s.tenant.as_ref(),
                now.unix,
            ),
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

    /// Asks the directory for a session another node held (it may have died or drained).
    fn resume_elsewhere(
        &mut self,
        conn: ConnId,
        sid: &SessionId,
        token: &ResumeToken,
        last_seq: u64,
    ) {
        if self.pending_resumes.contains_key(sid) || self.shutting_down {
            let m = RESUME_FAILED;
            return self.reply_error(ReplyTo::Conn(conn), ErrorCode::ResumeFailed, m, None);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.pending_join = Some(sid.clone());
        }
        self.pending_resumes.insert(
            sid.clone(),
            PendingResume {
                conn,
                token: token.clone(),
                last_seq,
            },
        );
        self.bus.send(BusCommand::Resume {
            session: sid.clone(),
            token: token.clone(),
            last_seq,
        });
    }

    /// The directory handed this node a session held elsewhere: rebuild it and attach the
    /// client that asked (or keep it detached for the resume TTL if that client is gone).
    pub(super) fn resumed_elsewhere(&mut self, r: ResumedSession, now: Now) {
        let Some(p) = self.pending_resumes.remove(&r.session) else {
            return;
        };
        let sid = r.session.clone();
        let conn_alive = self
            .conns
            .get(&p.conn)
            .is_some_and(|c| c.pending_join.as_ref() == Some(&sid));
        let local = self.rooms.entry(r.room.clone()).or_default();
        for m in &r.members {
            local.members.insert(m.peer.clone(), m.join_index);
        }
        local.sessions.insert(sid.clone());
        let mut mailbox = Mailbox::starting_after(p.last_seq.min(r.last_seq));
        for (seq, entry) in r.missed {
            if seq > mailbox.last_seq() {
                let (msg, size) = numbered(seq, entry);
                mailbox.push(msg, size);
            }
        }
        // The negotiation state of each pair stayed on the old node: assume every offer went
        // out, so that candidates are never held for an offer that will not come.
        let pairs = r
            .members
            .iter()
            .filter(|m| m.peer != r.peer)
            .map(|m| {
                let state = PairState {
                    sdp_sent: true,
                    ..PairState::default()
                };
                (m.peer.clone(), state)
            })
            .collect();
        let token_deadline = r.token_exp.map(|exp| deadline_for(exp, now));
        if let Some(d) = token_deadline {
            self.timers.insert((d, Timer::TokenExpiry(sid.clone())));
        }
        self.sessions.insert(
            sid.clone(),
            Box::new(Session {
                room: r.room,
                peer: r.peer,
                join_index: r.join_index,
                resume_token: p.token,
                perms: r.perms,
                token_exp: r.token_exp,
                tenant: r.tenant,
                token_deadline,
                conn: None,
                detached_at: now.mono,
                mailbox,
                last_client_seq: r.received,
                pairs,
                post_box_bucket: self.config.message_bucket(now.mono),
                joined_with: JoinedWith::Elsewhere,
            }),
        );
        if !conn_alive {
            let at = now.mono + self.config.resume_ttl;
            self.timers.insert((at, Timer::SessionTtl(sid)));
            return;
        }
        if let Some(c) = self.conns.get_mut(&p.conn) {
            c.pending_join = None;
        }
        self.attach(p.conn, &sid, p.last_seq, now);
    }

    /// The directory refused a `resume` of a session held elsewhere.
    pub(super) fn resume_rejected(&mut self, sid: &SessionId) {
        if let Some(p) = self.pending_resumes.remove(sid) {
            let m = RESUME_FAILED.to_string();
            self.refuse_pending(p.conn, sid, ErrorCode::ResumeFailed, m);
        }
    }

    /// Acknowledges `sid`'s messages up to `upto`, in the shared mailbox too. An `upto` beyond
    /// the last message numbered for the session changes nothing and is refused
    /// ([`ErrorCode::BadAck`], answered by the caller).
    pub(super) fn ack_mailbox(&mut self, sid: &SessionId, upto: u64) -> Result<(), AckBeyond> {
        let Some(s) = self.sessions.get_mut(sid) else {
            return Ok(());
        };
        if s.mailbox.ack(upto)? && self.bus.shares_sessions() {
            self.bus.send(BusCommand::Ack {
                session: sid.clone(),
                seq: upto,
            });
        }
        Ok(())
    }

    /// Stores what another node needs to take `sid` over (shared sessions only).
    fn register_session(&mut self, sid: &SessionId) {
        if !self.bus.shares_sessions() {
            return;
        }
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        let record = SessionRecord {
            session: sid.clone(),
            token: s.resume_token.clone(),
            perms: s.perms,
            token_exp: s.token_exp,
            tenant: s.tenant.clone(),
            resume_ttl_ms: duration_ms(self.config.resume_ttl),
            mailbox_max_msgs: self.config.mailbox_max_msgs,
            mailbox_max_bytes: self.config.mailbox_max_bytes,
        };
        self.bus.send(BusCommand::Register(Box::new(record)));
    }

    /// Ends a session for good: tells the directory (when `notify_bus`) and forgets it.
    pub(super) fn end_session(
        &mut self,
        sid: &SessionId,
        reason: LeaveReason,
        notify_bus: bool,
        now: Now,
    ) {
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

    pub(super) fn refresh(&mut self, to: ReplyTo, sid: &SessionId, token: &str, now: Now) {
        let Auth::Jwt(verifier) = &self.config.auth else {
            return self.reply(to, ServerMsg::Refreshed { exp: None });
        };
        let claims = match verifier.verify(token, now.unix) {
            Ok(c) => c,
            Err(d) if d.code == ErrorCode::TokenExpired => {
                // Fatal for a live session (docs/signalling.md §4): the session ends as when its
                // own token expires, and a connection is closed after the error.
                match to {
                    ReplyTo::Conn(conn) => self.fail(conn, d.code, d.message, now),
                    ReplyTo::PostBox => self.reply(
                        to,
                        ServerMsg::Error(ErrorBody {
                            code: d.code,
                            message: d.message,
                            fatal: true,
                            ref_seq: None,
                        }),
                    ),
                }
                return self.end_session(sid, LeaveReason::Expired, true, now);
            }
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
            s.tenant = grant.tenant;
            s.token_deadline = Some(deadline);
            s.joined_with = JoinedWith::Token(token.to_owned());
        }
        self.timers
            .insert((deadline, Timer::TokenExpiry(sid.clone())));
        self.register_session(sid);
        self.reply(
            to,
            ServerMsg::Refreshed {
                exp: Some(claims.exp),
            },
        );
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

/// The message and its accounted size for a shared-mailbox entry numbered `seq`.
pub(super) fn numbered(seq: u64, entry: MailboxEntry) -> (ServerMsg, usize) {
    match entry {
        MailboxEntry::Joined { peer } => {
            let info = PeerInfo {
                peer,
                polite: true,
                offerer: false,
            };
            (ServerMsg::PeerJoined { seq, info }, 64)
        }
        MailboxEntry::Left { peer, reason } => (ServerMsg::PeerLeft { seq, peer, reason }, 64),
        MailboxEntry::Deliver {
            from,
            signal,
            broadcast,
        } => {
            let size = signal.approx_size() + 64;
            (signal.into_server_msg(seq, from, broadcast), size)
        }
    }
}

/// The monotonic instant at which unix time `exp` is reached, seen from `now`.
fn deadline_for(exp: u64, now: Now) -> Instant {
    now.mono + Duration::from_secs(exp.saturating_sub(now.unix))
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
