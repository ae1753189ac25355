//! Events published on this node's channel: turned into `BusEvent`s, with the mirror of hosted
//! rooms kept up to date (including sessions resumed from other nodes).

use std::collections::BTreeMap;

use floe_signal::bus::{BusEvent, Member, ResumedSession};
use floe_signal::proto::LeaveReason;
use floe_signal::{ErrorCode, PeerId, RoomId, SessionId, TenantId};

use super::wire::{self, Wire};
use super::{bus_error, Driver, LocalMember};

impl Driver {
    pub(super) fn on_message(&mut self, payload: &[u8]) {
        let w = match wire::parse(payload) {
            Ok(w) => w,
            Err(e) => {
                bus_error("decode");
                tracing::debug!(error = %e, bytes = payload.len(), "signalling: malformed event from Redis dropped");
                return;
            }
        };
        metrics::counter!("floe_signal_bus_events_total").increment(1);
        match w {
            Wire::Accepted {
                room,
                session,
                idx,
                members,
            } => {
                let Some(j) = self.joining.remove(&session) else {
                    return;
                };
                let members: Vec<Member> = members.into_iter().map(Member::from).collect();
                // The newcomer itself enters the mirror with its `joined` event, which follows
                // and must reach the hub (other local sessions announce it).
                let mirror = self.mirror.entry(room.clone()).or_default();
                for m in &members {
                    mirror.insert(m.peer.clone(), m.clone());
                }
                self.local.insert(
                    session.clone(),
                    LocalMember {
                        room: room.clone(),
                        peer: j.peer,
                        join_index: idx,
                        subscribe: j.subscribe,
                    },
                );
                self.emit(BusEvent::JoinAccepted {
                    room,
                    session,
                    join_index: idx,
                    members,
                });
            }
            Wire::Rejected {
                session,
                peer,
                code,
                max,
            } => {
                self.joining.remove(&session);
                let message = match code {
                    ErrorCode::PeerIdTaken => {
                        format!("peer id {peer} is already in use in this room")
                    }
                    _ => format!("the room is full ({max} peers)"),
                };
                self.emit(BusEvent::JoinRejected {
                    session,
                    code,
                    message,
                });
            }
            Wire::Joined {
                room,
                peer,
                session,
                idx,
                sub,
                seqs,
            } => {
                let member = Member {
                    peer: peer.clone(),
                    session,
                    join_index: idx,
                    subscribe: sub == 1,
                };
                // Only rooms this node hosts, and only news (a restored member is announced
                // again).
                let Some(m) = self.mirror.get_mut(&room) else {
                    return;
                };
                if m.get(&peer).is_some_and(|x| x.session == member.session) {
                    return;
                }
                m.insert(peer, member.clone());
                self.emit(BusEvent::MemberJoined { room, member, seqs });
            }
            Wire::Left {
                room,
                peer,
                session,
                reason,
                seqs,
            } => self.member_left(room, peer, session, reason, seqs),
            Wire::Deliver {
                to,
                from,
                b,
                msg,
                seq,
            } => self.emit(BusEvent::Deliver {
                to,
                from,
                signal: msg,
                broadcast: b == 1,
                seq,
            }),
            Wire::Resumed(r) => self.resumed(*r),
            Wire::ResumeRejected { session } => {
                self.emit(BusEvent::ResumeRejected { session });
            }
            Wire::Undeliverable {
                origin,
                to,
                ref_seq,
            } => self.emit(BusEvent::Undeliverable {
                origin,
                to,
                ref_seq,
            }),
            Wire::Evict { session, code } => {
                if let Some(l) = self.local.remove(&session) {
                    self.forget_local(&l.room);
                }
                self.emit(BusEvent::Evict { session, code });
            }
        }
    }

    /// A session moved to this node: host it (restore, mirror) and hand it to the hub.
    fn resumed(&mut self, r: wire::WireResumed) {
        let Some(perms) = wire::decode_perms(&r.perms) else {
            bus_error("decode");
            self.emit(BusEvent::ResumeRejected { session: r.session });
            return;
        };
        let Ok(tenant) = r.tenant.map(TenantId::new).transpose() else {
            bus_error("decode");
            self.emit(BusEvent::ResumeRejected { session: r.session });
            return;
        };
        let members: Vec<Member> = r.members.into_iter().map(Member::from).collect();
        let mirror = self.mirror.entry(r.room.clone()).or_default();
        for m in &members {
            mirror.insert(m.peer.clone(), m.clone());
        }
        self.local.insert(
            r.session.clone(),
            LocalMember {
                room: r.room.clone(),
                peer: r.peer.clone(),
                join_index: r.idx,
                subscribe: r.sub == 1,
            },
        );
        let missed = r.missed.into_iter().filter_map(|e| e.entry()).collect();
        self.emit(BusEvent::Resumed(Box::new(ResumedSession {
            session: r.session,
            room: r.room,
            peer: r.peer,
            join_index: r.idx,
            perms,
            token_exp: r.exp,
            tenant,
            received: r.rcv,
            last_seq: r.seq,
            members,
            missed,
        })));
    }

    pub(super) fn member_left(
        &mut self,
        room: RoomId,
        peer: PeerId,
        session: SessionId,
        reason: LeaveReason,
        seqs: BTreeMap<SessionId, u64>,
    ) {
        // Only members the hub knows (a member can be reported gone twice: by a reconcile, then
        // by its own node's purge).
        let known = self
            .mirror
            .get_mut(&room)
            .is_some_and(|m| match m.get(&peer) {
                Some(x) if x.session == session => m.remove(&peer).is_some(),
                _ => false,
            });
        // The directory removed a session this node still hosts (another node reaped us while
        // we could not beat): end it here too, or its peer id would be held twice.
        let evict = self.local.remove(&session).is_some();
        if known {
            self.emit(BusEvent::MemberLeft {
                room: room.clone(),
                peer: peer.clone(),
                session: session.clone(),
                reason,
                seqs,
            });
        }
        if evict {
            self.forget_local(&room);
            self.emit(BusEvent::Evict {
                session,
                code: ErrorCode::ServerShutdown,
            });
        }
    }

    /// Drops the mirror of `room` when this node no longer hosts anyone in it.
    pub(super) fn forget_local(&mut self, room: &RoomId) {
        if !self.local.values().any(|l| &l.room == room) {
            self.mirror.remove(room);
        }
    }
}
