//! The message-bus boundary between a node's sessions and the room directory.
//!
//! A [`crate::Hub`] owns connections, sessions and mailboxes: state that lives on the node a
//! client is connected to. Everything that concerns a *room* (who is in it, join order, routing a
//! message to a peer's session) goes through a [`Bus`]: the hub sends [`BusCommand`]s and drains
//! [`BusEvent`]s. Nothing in the hub assumes an answer arrives within the same call, so the
//! in-process [`LocalBus`] (the embedded default, which answers at once) can be replaced by a
//! Redis-backed bus (room membership in Redis, events over pub/sub, the IO shell pumping replies
//! back in) without touching the hub.

use std::collections::{BTreeMap, VecDeque};

use crate::error::ErrorCode;
use crate::ids::{PeerId, ResumeToken, RoomId, SessionId, TenantId};
use crate::proto::{LeaveReason, Permissions, Signal};

/// A room member as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The peer id (unique in the room).
    pub peer: PeerId,
    /// The session that holds it.
    pub session: SessionId,
    /// Join order in the room (strictly increasing); decides the roles of each pair.
    pub join_index: u64,
    /// Whether it may receive signals (the `subscribe` permission).
    pub subscribe: bool,
}

/// A request from a hub to the room directory.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BusCommand {
    /// Add `peer` (held by `session`) to `room` unless the id is taken or the room is full.
    Join {
        /// The room.
        room: RoomId,
        /// The peer id asked for.
        peer: PeerId,
        /// The new session.
        session: SessionId,
        /// The `subscribe` permission.
        subscribe: bool,
        /// Room capacity.
        max_peers: usize,
    },
    /// Remove the member held by `session` (idempotent).
    Leave {
        /// The room.
        room: RoomId,
        /// The peer.
        peer: PeerId,
        /// Its session (a newer session with the same peer id is not removed).
        session: SessionId,
        /// Why.
        reason: LeaveReason,
    },
    /// Route a signal from `from` to `to`, or to every other subscriber when `to` is `None`.
    Send {
        /// The room.
        room: RoomId,
        /// The sender.
        from: PeerId,
        /// The sender's session (where an `Undeliverable` goes).
        origin: SessionId,
        /// The receiver, or `None` for a broadcast.
        to: Option<PeerId>,
        /// What to deliver.
        signal: Signal,
        /// The client `seq` of the message, echoed in errors.
        ref_seq: Option<u64>,
    },
    /// Remove `peer` from `room` on an admin's request.
    Kick {
        /// The room.
        room: RoomId,
        /// The admin's session (where an `Undeliverable` goes).
        origin: SessionId,
        /// The peer to remove.
        peer: PeerId,
    },
    /// Store what another node needs to take the session over (after a join, again after a
    /// token refresh). Only sent when [`Bus::shares_sessions`].
    Register(Box<SessionRecord>),
    /// The client acknowledged the session's messages up to `seq`: the shared mailbox may drop
    /// them. Only sent when [`Bus::shares_sessions`].
    Ack {
        /// The session.
        session: SessionId,
        /// Highest acknowledged `seq`.
        seq: u64,
    },
    /// Take over a session this node does not hold (answered by `Resumed` or
    /// `ResumeRejected`). Only sent when [`Bus::shares_sessions`].
    Resume {
        /// The session.
        session: SessionId,
        /// The resume token the client presented.
        token: ResumeToken,
        /// The highest `seq` the client processed.
        last_seq: u64,
    },
}

/// The part of a session that survives its node (multi-node resume).
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// The session.
    pub session: SessionId,
    /// Its resume token (a shared directory stores a hash of it).
    pub token: ResumeToken,
    /// Granted permissions.
    pub perms: Permissions,
    /// Token expiry (unix seconds), if any.
    pub token_exp: Option<u64>,
    /// The token's `tenant` claim, if any (it goes into the TURN credentials minted for the
    /// session on whichever node it resumes on).
    pub tenant: Option<TenantId>,
    /// How long the session may wait for a resume, milliseconds.
    pub resume_ttl_ms: u64,
    /// Most unacknowledged messages the shared mailbox keeps.
    pub mailbox_max_msgs: usize,
    /// Most unacknowledged bytes the shared mailbox keeps.
    pub mailbox_max_bytes: usize,
}

/// A numbered message kept in a shared mailbox, replayed after a resume on another node.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum MailboxEntry {
    /// `peer_joined` (the newcomer offers first and is impolite).
    Joined {
        /// The newcomer.
        peer: PeerId,
    },
    /// `peer_left`.
    Left {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: LeaveReason,
    },
    /// A routed signal.
    Deliver {
        /// The sender.
        from: PeerId,
        /// What.
        signal: Signal,
        /// Whether it was a broadcast.
        broadcast: bool,
    },
}

/// A session taken over from another node (answer to [`BusCommand::Resume`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ResumedSession {
    /// The session.
    pub session: SessionId,
    /// Its room.
    pub room: RoomId,
    /// Its peer id.
    pub peer: PeerId,
    /// Its join order.
    pub join_index: u64,
    /// Granted permissions.
    pub perms: Permissions,
    /// Token expiry (unix seconds), if any.
    pub token_exp: Option<u64>,
    /// The token's `tenant` claim, if any.
    pub tenant: Option<TenantId>,
    /// Highest client `seq` the directory saw routed.
    pub received: u64,
    /// Highest mailbox `seq` assigned so far.
    pub last_seq: u64,
    /// Every member of the room (including this session's).
    pub members: Vec<Member>,
    /// The unacknowledged messages after the client's `lastSeq`, oldest first.
    pub missed: Vec<(u64, MailboxEntry)>,
}

/// Something the directory tells the hubs.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BusEvent {
    /// The join of `session` succeeded; `members` are the peers that were there before.
    JoinAccepted {
        /// The room.
        room: RoomId,
        /// The new session.
        session: SessionId,
        /// Its join order.
        join_index: u64,
        /// The earlier members.
        members: Vec<Member>,
    },
    /// The join of `session` failed.
    JoinRejected {
        /// The session that asked.
        session: SessionId,
        /// `peer_id_taken` or `room_full`.
        code: ErrorCode,
        /// Human text.
        message: String,
    },
    /// `member` joined `room` (sent to every node with sessions in the room).
    MemberJoined {
        /// The room.
        room: RoomId,
        /// The newcomer.
        member: Member,
        /// Mailbox `seq` of the `peer_joined` per receiving session, when the directory numbers
        /// messages (shared mailboxes); empty: the hub numbers them.
        seqs: BTreeMap<SessionId, u64>,
    },
    /// A member left `room` for good.
    MemberLeft {
        /// The room.
        room: RoomId,
        /// The peer.
        peer: PeerId,
        /// Its session.
        session: SessionId,
        /// Why.
        reason: LeaveReason,
        /// Mailbox `seq` of the `peer_left` per receiving session (see `MemberJoined`).
        seqs: BTreeMap<SessionId, u64>,
    },
    /// Deliver `signal` to the session `to`.
    Deliver {
        /// The receiving session.
        to: SessionId,
        /// The sender.
        from: PeerId,
        /// What.
        signal: Signal,
        /// Whether it was a broadcast.
        broadcast: bool,
        /// Its mailbox `seq` when the directory numbers messages; `None`: the hub numbers it.
        seq: Option<u64>,
    },
    /// A `Send` or `Kick` named a peer that is not in the room (or cannot receive).
    Undeliverable {
        /// The sender's session.
        origin: SessionId,
        /// The missing peer.
        to: PeerId,
        /// The client `seq`, if any.
        ref_seq: Option<u64>,
    },
    /// The session was removed from its room by the directory (kick); end it locally.
    Evict {
        /// The session.
        session: SessionId,
        /// The error its client gets.
        code: ErrorCode,
    },
    /// This node now holds the session (answer to `Resume`).
    Resumed(Box<ResumedSession>),
    /// The `Resume` failed: unknown or ended session, or wrong token.
    ResumeRejected {
        /// The session asked for.
        session: SessionId,
    },
}

/// The boundary to the room directory. Implementations must deliver events for one room in
/// the order they were produced.
pub trait Bus {
    /// Submits a command; its effects arrive later through [`Bus::poll_event`].
    fn send(&mut self, cmd: BusCommand);
    /// The next event for this node, if any.
    #[must_use]
    fn poll_event(&mut self) -> Option<BusEvent>;
    /// Whether sessions and mailboxes are shared between nodes, so that a session this hub does
    /// not hold may be resumed through [`BusCommand::Resume`] (default: no).
    fn shares_sessions(&self) -> bool {
        false
    }
}

/// The in-process bus: the whole directory in memory, answering every command at once.
#[derive(Debug, Default)]
pub struct LocalBus {
    rooms: BTreeMap<RoomId, Room>,
    events: VecDeque<BusEvent>,
}

#[derive(Debug, Default)]
struct Room {
    next_index: u64,
    members: BTreeMap<PeerId, Member>,
}

impl LocalBus {
    /// An empty directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of non-empty rooms.
    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    fn join(
        &mut self,
        room: RoomId,
        peer: PeerId,
        session: SessionId,
        subscribe: bool,
        max: usize,
    ) {
        let r = self.rooms.entry(room.clone()).or_default();
        let reject = if r.members.contains_key(&peer) {
            Some((
                ErrorCode::PeerIdTaken,
                format!("peer id {peer} is already in use in this room"),
            ))
        } else if r.members.len() >= max {
            Some((
                ErrorCode::RoomFull,
                format!("the room is full ({max} peers)"),
            ))
        } else {
            None
        };
        if let Some((code, message)) = reject {
            if r.members.is_empty() {
                self.rooms.remove(&room);
            }
            self.events.push_back(BusEvent::JoinRejected {
                session,
                code,
                message,
            });
            return;
        }
        r.next_index += 1;
        let member = Member {
            peer: peer.clone(),
            session: session.clone(),
            join_index: r.next_index,
            subscribe,
        };
        let mut members: Vec<Member> = r.members.values().cloned().collect();
        members.sort_by_key(|m| m.join_index);
        r.members.insert(peer, member.clone());
        self.events.push_back(BusEvent::JoinAccepted {
            room: room.clone(),
            session,
            join_index: member.join_index,
            members,
        });
        self.events.push_back(BusEvent::MemberJoined {
            room,
            member,
            seqs: BTreeMap::new(),
        });
    }

    fn leave(&mut self, room: RoomId, peer: PeerId, session: SessionId, reason: LeaveReason) {
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        if r.members.get(&peer).is_none_or(|m| m.session != session) {
            return;
        }
        r.members.remove(&peer);
        if r.members.is_empty() {
            self.rooms.remove(&room);
        }
        self.events.push_back(BusEvent::MemberLeft {
            room,
            peer,
            session,
            reason,
            seqs: BTreeMap::new(),
        });
    }

    fn route(
        &mut self,
        room: &RoomId,
        from: PeerId,
        origin: SessionId,
        to: Option<PeerId>,
        signal: Signal,
        ref_seq: Option<u64>,
    ) {
        let Some(r) = self.rooms.get(room) else {
            if let Some(to) = to {
                self.events.push_back(BusEvent::Undeliverable {
                    origin,
                    to,
                    ref_seq,
                });
            }
            return;
        };
        match to {
            Some(to) => match r.members.get(&to) {
                Some(m) if m.subscribe && m.peer != from => {
                    self.events.push_back(BusEvent::Deliver {
                        to: m.session.clone(),
                        from,
                        signal,
                        broadcast: false,
                        seq: None,
                    });
                }
                _ => self.events.push_back(BusEvent::Undeliverable {
                    origin,
                    to,
                    ref_seq,
                }),
            },
            None => {
                let mut targets: Vec<&Member> = r
                    .members
                    .values()
                    .filter(|m| m.subscribe && m.peer != from)
                    .collect();
                targets.sort_by_key(|m| m.join_index);
                for m in targets {
                    self.events.push_back(BusEvent::Deliver {
                        to: m.session.clone(),
                        from: from.clone(),
                        signal: signal.clone(),
                        broadcast: true,
                        seq: None,
                    });
                }
            }
        }
    }

    fn kick(&mut self, room: RoomId, origin: SessionId, peer: PeerId) {
        let target = self
            .rooms
            .get(&room)
            .and_then(|r| r.members.get(&peer))
            .map(|m| m.session.clone());
        match target {
            Some(session) => {
                self.events.push_back(BusEvent::Evict {
                    session: session.clone(),
                    code: ErrorCode::Kicked,
                });
                self.leave(room, peer, session, LeaveReason::Kicked);
            }
            None => self.events.push_back(BusEvent::Undeliverable {
                origin,
                to: peer,
                ref_seq: None,
            }),
        }
    }
}

impl Bus for LocalBus {
    fn send(&mut self, cmd: BusCommand) {
        match cmd {
            BusCommand::Join {
                room,
                peer,
                session,
                subscribe,
                max_peers,
            } => self.join(room, peer, session, subscribe, max_peers),
            BusCommand::Leave {
                room,
                peer,
                session,
                reason,
            } => self.leave(room, peer, session, reason),
            BusCommand::Send {
                room,
                from,
                origin,
                to,
                signal,
                ref_seq,
            } => self.route(&room, from, origin, to, signal, ref_seq),
            BusCommand::Kick { room, origin, peer } => self.kick(room, origin, peer),
            // Sessions are never shared in one process.
            BusCommand::Register(_) | BusCommand::Ack { .. } => {}
            BusCommand::Resume { session, .. } => {
                self.events.push_back(BusEvent::ResumeRejected { session })
            }
        }
    }

    fn poll_event(&mut self) -> Option<BusEvent> {
        self.events.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r() -> RoomId {
        RoomId::new("r").unwrap()
    }
    fn p(s: &str) -> PeerId {
        PeerId::new(s).unwrap()
    }
    fn s(x: &str) -> SessionId {
        SessionId::new(x).unwrap()
    }
    fn join(bus: &mut LocalBus, peer: &str, max: usize) -> Vec<BusEvent> {
        bus.send(BusCommand::Join {
            room: r(),
            peer: p(peer),
            session: s(peer),
            subscribe: true,
            max_peers: max,
        });
        std::iter::from_fn(|| bus.poll_event()).collect()
    }

    #[test]
    fn join_order_and_capacity() {
        let mut bus = LocalBus::new();
        let ev = join(&mut bus, "a", 2);
        assert!(
            matches!(&ev[0], BusEvent::JoinAccepted { join_index: 1, members, .. } if members.is_empty())
        );
        let ev = join(&mut bus, "b", 2);
        assert!(
            matches!(&ev[0], BusEvent::JoinAccepted { join_index: 2, members, .. } if members.len() == 1)
        );
        let ev = join(&mut bus, "c", 2);
        assert!(matches!(
            &ev[0],
            BusEvent::JoinRejected {
                code: ErrorCode::RoomFull,
                ..
            }
        ));
        let ev = join(&mut bus, "a", 5);
        assert!(matches!(
            &ev[0],
            BusEvent::JoinRejected {
                code: ErrorCode::PeerIdTaken,
                ..
            }
        ));
    }

    #[test]
    fn leave_of_a_stale_session_is_ignored_and_empty_rooms_vanish() {
        let mut bus = LocalBus::new();
        join(&mut bus, "a", 2);
        bus.send(BusCommand::Leave {
            room: r(),
            peer: p("a"),
            session: s("zz"),
            reason: LeaveReason::Left,
        });
        assert_eq!(bus.poll_event(), None);
        bus.send(BusCommand::Leave {
            room: r(),
            peer: p("a"),
            session: s("a"),
            reason: LeaveReason::Left,
        });
        assert!(matches!(
            bus.poll_event(),
            Some(BusEvent::MemberLeft { .. })
        ));
        assert_eq!(bus.room_count(), 0);
    }

    #[test]
    fn routing_to_absent_peer_is_undeliverable() {
        let mut bus = LocalBus::new();
        join(&mut bus, "a", 4);
        bus.send(BusCommand::Send {
            room: r(),
            from: p("a"),
            origin: s("a"),
            to: Some(p("ghost")),
            signal: Signal::Bye,
            ref_seq: Some(3),
        });
        assert_eq!(
            bus.poll_event(),
            Some(BusEvent::Undeliverable {
                origin: s("a"),
                to: p("ghost"),
                ref_seq: Some(3)
            })
        );
    }
}
