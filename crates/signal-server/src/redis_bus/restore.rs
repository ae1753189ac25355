//! After (re)connecting: register, restore the members this node hosts, purge ghosts, reconcile
//! hosted rooms with Redis.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use floe_signal::bus::{BusEvent, Member};
use floe_signal::proto::LeaveReason;
use floe_signal::{ErrorCode, PeerId, RoomId, SessionId};
use redis::aio::MultiplexedConnection;
use redis::RedisError;
use tokio::time::Instant;

use super::wire;
use super::{bus_error, Driver, PREFIX};

impl Driver {
    /// After (re)connecting: register, put back our members, purge ghosts, plan a reconcile.
    pub(super) async fn sync(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), RedisError> {
        // Joins whose answer was lost with the old connection: refuse them (purged below).
        let lost: Vec<SessionId> = self
            .joining
            .iter()
            .filter(|(_, j)| j.executed)
            .map(|(s, _)| s.clone())
            .collect();
        for s in lost {
            self.joining.remove(&s);
            bus_error("join");
            self.emit(BusEvent::JoinRejected {
                session: s,
                code: ErrorCode::Internal,
                message: "the room directory was interrupted; retry".into(),
            });
        }
        self.heartbeat(conn).await?;
        self.restore(conn).await?;
        if !self.local.is_empty() || !self.mirror.is_empty() {
            self.reconcile_at = Some(Instant::now() + self.ttl / 3);
        }
        Ok(())
    }

    /// Puts back the members this node hosts and removes the ones it no longer does.
    pub(super) async fn restore(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), RedisError> {
        let mut rooms: BTreeSet<String> = redis::cmd("SMEMBERS")
            .arg(format!("{PREFIX}node:{}:rooms", self.node))
            .query_async(conn)
            .await?;
        rooms.extend(self.local.values().map(|l| l.room.to_string()));
        for room in rooms {
            let mut inv = self.scripts.purge.prepare_invoke();
            inv.arg(PREFIX).arg(&room).arg(&self.node);
            for (s, l) in &self.local {
                if l.room.as_str() == room {
                    inv.arg(s.as_str());
                }
            }
            let _: i64 = inv.invoke_async(conn).await?;
        }
        let mut conflicts = Vec::new();
        for (s, l) in &self.local {
            let ok: i64 = self
                .scripts
                .restore
                .arg(PREFIX)
                .arg(l.room.as_str())
                .arg(l.peer.as_str())
                .arg(s.as_str())
                .arg(&self.node)
                .arg(l.join_index)
                .arg(u8::from(l.subscribe))
                .invoke_async(conn)
                .await?;
            if ok == 0 {
                conflicts.push(s.clone());
            }
        }
        for s in conflicts {
            // Another session took the peer id while Redis had forgotten ours.
            bus_error("sync");
            if let Some(l) = self.local.remove(&s) {
                self.forget_local(&l.room);
            }
            self.emit(BusEvent::Evict {
                session: s,
                code: ErrorCode::SessionReplaced,
            });
        }
        Ok(())
    }

    /// Compares each hosted room with Redis and tells the hub what it missed while the
    /// connection was down.
    pub(super) async fn reconcile(
        &mut self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(), RedisError> {
        let rooms: Vec<RoomId> = self.mirror.keys().cloned().collect();
        for room in rooms {
            let raw: HashMap<String, String> = redis::cmd("HGETALL")
                .arg(format!("{PREFIX}room:{room}:members"))
                .query_async(conn)
                .await?;
            let mut now: BTreeMap<PeerId, Member> = BTreeMap::new();
            for (peer, value) in &raw {
                match wire::parse_record(peer, value) {
                    Some((m, _node)) => {
                        now.insert(m.peer.clone(), m);
                    }
                    None => bus_error("decode"),
                }
            }
            let Some(before) = self.mirror.get(&room).cloned() else {
                continue;
            };
            for (peer, m) in &before {
                if now.get(peer).is_none_or(|n| n.session != m.session) {
                    self.member_left(
                        room.clone(),
                        peer.clone(),
                        m.session.clone(),
                        LeaveReason::Timeout,
                        BTreeMap::new(),
                    );
                }
            }
            let mut joined: Vec<&Member> = now
                .values()
                .filter(|n| before.get(&n.peer).is_none_or(|m| m.session != n.session))
                .collect();
            joined.sort_by_key(|m| m.join_index);
            for m in joined {
                if let Some(mirror) = self.mirror.get_mut(&room) {
                    mirror.insert(m.peer.clone(), m.clone());
                }
                self.emit(BusEvent::MemberJoined {
                    room: room.clone(),
                    member: m.clone(),
                    seqs: BTreeMap::new(),
                });
            }
        }
        Ok(())
    }
}
