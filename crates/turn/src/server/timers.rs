//! Timers (allocation, permission, channel, EVEN-PORT reservation and RFC 6062 ConnectionBind
//! expiry) and the deletion of an allocation.

use std::time::Instant;

use floe_stun::attr::Family;

use super::admin::{AllocationUsage, EndedUsage};
use super::allocation::{family_of_ip, AllocId};
use super::{DeleteReason, Event, RelayBinder, Timer, TurnServer};

impl TurnServer {
    pub(super) fn fire(&mut self, now: Instant, timer: Timer, binder: &mut dyn RelayBinder) {
        match timer {
            Timer::Allocation(id) => {
                let Some(a) = self.allocations.get(&id) else {
                    return;
                };
                if a.deadline() > now {
                    return;
                }
                let reason = match a.hard_deadline {
                    Some(h) if h <= a.expires => DeleteReason::CredentialExpired,
                    _ => DeleteReason::Expired,
                };
                self.delete_allocation(id, reason, binder);
            }
            Timer::Permission(id, ip) => {
                if let Some(a) = self.allocations.get_mut(&id) {
                    if a.permissions.get(&ip).is_some_and(|&e| e <= now) {
                        a.permissions.remove(&ip);
                        self.stats.permissions_active -= 1;
                        self.fast_path_sync_ip(id, ip, now);
                    }
                }
            }
            Timer::Channel(id, ch) => {
                if let Some(a) = self.allocations.get_mut(&id) {
                    if let Some(c) = a.channels.get(&ch).copied() {
                        if c.expires <= now {
                            a.channels.remove(&ch);
                            a.channel_by_peer.remove(&c.peer);
                            self.stats.channels_active -= 1;
                            let client = a.client;
                            if let Some(r) = a.relay(Family::of(&c.peer)) {
                                let local = r.local;
                                self.fast_path_down(client, local, c.peer, ch);
                            }
                        }
                    }
                }
            }
            Timer::Reservation(token) => self.expire_reservation(now, token),
            Timer::ConnectionBind(id) => self.expire_connection(id),
        }
    }

    /// Re-arms a timer: removes the entry at `old` (if any), adds one at `new`.
    pub(super) fn rearm(&mut self, old: Option<Instant>, new: Instant, timer: Timer) {
        if let Some(old) = old {
            self.timers.remove(&(old, timer));
        }
        self.timers.insert((new, timer));
    }

    /// Deletes an allocation: releases its relay sockets and quota, disarms its timers, closes
    /// its RFC 6062 connections and reports it.
    pub(super) fn delete_allocation(
        &mut self,
        id: AllocId,
        reason: DeleteReason,
        binder: &mut dyn RelayBinder,
    ) {
        let Some(mut a) = self.allocations.remove(&id) else {
            return;
        };
        self.by_client.remove(&a.client);
        for relay in a.relays.iter().flatten() {
            self.forget_relay(relay.local, a.transport);
            binder.release(relay.local, a.transport);
        }
        self.timers.remove(&(a.deadline(), Timer::Allocation(id)));
        for (&ip, &exp) in &a.permissions {
            self.timers.remove(&(exp, Timer::Permission(id, ip)));
        }
        for (&ch, c) in &a.channels {
            self.timers.remove(&(c.expires, Timer::Channel(id, ch)));
        }
        self.stats.permissions_active -= a.permissions.len() as u64;
        self.stats.channels_active -= a.channels.len() as u64;
        if let Some(q) = a.quota.take() {
            self.shared.quota().release(q);
        }
        for (&ch, c) in &a.channels {
            if let Some(r) = a.relay(Family::of(&c.peer)) {
                self.fast_path_down(a.client, r.local, c.peer, ch);
            }
        }
        for &ip in a.permissions.keys() {
            if let Some(r) = a.relay(family_of_ip(ip)) {
                self.fast_path_permission_down(a.client, r.local, ip);
            }
        }
        self.close_connections_of(id, &a);
        self.connects.retain(|_, p| p.alloc != id);
        self.stats.allocations_deleted += 1;
        self.stats.allocations_active -= 1;
        if self.usage.tracking {
            let (peer, client) = a.usage_reported.unwrap_or_default();
            self.usage.ended.push(EndedUsage {
                id,
                user: a.user.clone(),
                first: a.usage_reported.is_none(),
                bytes_to_peer: a.bytes_to_peer - peer,
                bytes_to_client: a.bytes_to_client - client,
            });
        }
        self.events.push_back(Event::AllocationDeleted {
            client: a.client,
            reason,
            created: a.created,
            usage: AllocationUsage {
                bytes_to_peer: a.bytes_to_peer,
                bytes_to_client: a.bytes_to_client,
                packets_to_peer: a.packets_to_peer,
                packets_to_client: a.packets_to_client,
            },
            username: a.user,
        });
    }
}
