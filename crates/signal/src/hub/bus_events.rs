//! Events from the room directory: join answers, presence (`peer_joined`, `peer_left`),
//! delivery into a session's mailbox, undeliverable messages and evictions.

use std::collections::BTreeMap;

use super::{Hub, Now, Output};
use crate::bus::{Bus, BusEvent, Member};
use crate::error::ErrorCode;
use crate::ids::{PeerId, RoomId, SessionId};
use crate::proto::{LeaveReason, PeerInfo, ServerMsg};

impl<B: Bus> Hub<B> {
    pub(super) fn pump_bus(&mut self, now: Now) {
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
            BusEvent::MemberJoined { room, member, seqs } => {
                self.member_joined(&room, member, &seqs, now)
            }
            BusEvent::MemberLeft {
                room,
                peer,
                session,
                reason,
                seqs,
            } => self.member_left(&room, &peer, &session, reason, &seqs, now),
            BusEvent::Deliver {
                to,
                from,
                signal,
                broadcast,
                seq,
            } => {
                let size = signal.approx_size() + 64;
                self.deliver(&to, size, seq, now, |seq| {
                    signal.into_server_msg(seq, from, broadcast)
                })
            }
            BusEvent::Resumed(r) => self.resumed_elsewhere(*r, now),
            BusEvent::ResumeRejected { session } => self.resume_rejected(&session),
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

    fn member_joined(
        &mut self,
        room: &RoomId,
        member: Member,
        seqs: &BTreeMap<SessionId, u64>,
        now: Now,
    ) {
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
            let seq = seqs.get(&sid).copied();
            self.deliver(&sid, 64, seq, now, |seq| ServerMsg::PeerJoined {
                seq,
                info,
            });
        }
    }

    fn member_left(
        &mut self,
        room: &RoomId,
        peer: &PeerId,
        session: &SessionId,
        reason: LeaveReason,
        seqs: &BTreeMap<SessionId, u64>,
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
            let seq = seqs.get(&sid).copied();
            self.deliver(&sid, 64, seq, now, |seq| ServerMsg::PeerLeft {
                seq,
                peer,
                reason,
            });
        }
    }

    fn evict(&mut self, sid: &SessionId, code: ErrorCode, now: Now) {
        let conn = self.sessions.get(sid).and_then(|s| s.conn);
        if let Some(conn) = conn {
            let m = match code {
                ErrorCode::SessionReplaced => "the session was resumed on another connection",
                ErrorCode::Kicked => "an admin removed you from the room",
                _ => "the room directory ended this session",
            };
            self.fail(conn, code, m.into(), now);
        }
        self.end_session(sid, LeaveReason::Kicked, false, now);
    }

    /// Puts a numbered message in `sid`'s mailbox and sends it if a client is attached. `seq` is
    /// the number the directory gave it (shared mailboxes), else the mailbox's next one.
    fn deliver(
        &mut self,
        sid: &SessionId,
        size: usize,
        seq: Option<u64>,
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
        // Never backwards: a number the directory gave below ours (its data was lost) is replaced.
        let next = s.mailbox.next_seq();
        let msg = make(seq.map_or(next, |s| s.max(next)));
        s.mailbox.push(msg.clone(), size);
        match s.conn {
            Some(conn) => self.outputs.push_back(Output::Send { conn, msg }),
            None => self.outputs.push_back(Output::Wake {
                session: sid.clone(),
            }),
        }
    }
}
