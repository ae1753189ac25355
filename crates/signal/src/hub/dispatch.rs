//! Routing a parsed client message to its handler.

use super::state::ReplyTo;
use super::{Hub, Now};
use crate::bus::Bus;
use crate::error::ErrorCode;
use crate::ids::{ConnId, SessionId};
use crate::proto::{ClientMsg, DirectedBody, LeaveReason, SdpBody, ServerMsg, Signal};

impl<B: Bus> Hub<B> {
    pub(super) fn dispatch(&mut self, conn: ConnId, msg: ClientMsg, now: Now) {
        let Some(c) = self.conns.get(&conn) else {
            return;
        };
        let session = c.session.clone();
        let busy = session.is_some() || c.pending_join.is_some();
        match msg {
            ClientMsg::Join { .. } | ClientMsg::Resume { .. } if busy => self.reply_error(
                ReplyTo::Conn(conn),
                ErrorCode::AlreadyJoined,
                "this connection already has a session",
                None,
            ),
            ClientMsg::Join {
                v,
                room,
                peer,
                token,
            } => self.join(conn, v, room, peer, token.as_deref(), now),
            ClientMsg::Resume {
                session: sid,
                resume_token,
                last_seq,
            } => self.resume(conn, &sid, &resume_token, last_seq, now),
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

    pub(super) fn dispatch_session(
        &mut self,
        to: ReplyTo,
        sid: SessionId,
        msg: ClientMsg,
        now: Now,
    ) {
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
            ClientMsg::Ack { seq } => self.ack_or_refuse(to, &sid, seq),
            ClientMsg::Ping { ack } => {
                let received = s.last_client_seq;
                if let Some(a) = ack {
                    self.ack_or_refuse(to, &sid, a);
                }
                self.reply(to, ServerMsg::Pong { ack: received });
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
}

impl<B: Bus> Hub<B> {
    /// An `ack` or a `ping`'s `ack`: beyond the last message numbered for the session it is
    /// answered with `bad_ack` (not fatal) and changes nothing.
    fn ack_or_refuse(&mut self, to: ReplyTo, sid: &SessionId, upto: u64) {
        if let Err(e) = self.ack_mailbox(sid, upto) {
            self.reply_error(to, ErrorCode::BadAck, e.to_string(), None);
        }
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
