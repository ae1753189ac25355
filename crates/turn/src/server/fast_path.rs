//! Events for a kernel fast path (XDP, `docs/xdp.md`): the shell mirrors every live UDP channel
//! and permission of a UDP allocation into the kernel and removes it the moment the channel, its
//! peer's permission or the allocation ends. The state machine stays the single source of truth; these
//! events are only reported with [`TurnConfig::fast_path_events`](super::TurnConfig).

use core::net::{IpAddr, SocketAddr};
use std::time::Instant;

use floe_stun::attr::Family;

use super::allocation::family_of_ip;
use super::allocation::AllocId;
use super::types::{ChannelRelay, ClientTuple, Event, PermissionRelay, RelayTransport, Transport};
use super::TurnServer;

/// What a kernel fast path relayed for one allocation since the last report: application bytes
/// (without ChannelData or STUN headers) and packets, per direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FastPathUsage {
    /// Packets relayed client → peer.
    pub to_peer_packets: u64,
    /// Bytes relayed client → peer.
    pub to_peer_bytes: u64,
    /// Packets relayed peer → client.
    pub to_client_packets: u64,
    /// Bytes relayed peer → client.
    pub to_client_bytes: u64,
}

/// What [`TurnServer::fast_path_relayed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FastPathCharge {
    /// No allocation has that relayed address on this worker (another worker's, or ended).
    Unknown,
    /// Counted and charged; the allocation stays within its caps.
    Charged,
    /// Counted and charged; the allocation (or its user) went over its bandwidth cap, so its
    /// channels and permissions were withdrawn from the fast path (`*RelayDown` events).
    Withdrawn,
}

impl TurnServer {
    /// Accounts what a kernel fast path relayed for the allocation with relayed address `relay`
    /// (the shell reads its counters every polling interval): adds it to the allocation's
    /// counters (admin API, usage metrics) and charges the allocation's and its user's bandwidth
    /// buckets (RFC 8656 §7.2 leaves quotas to the server). An allocation that went over a cap is
    /// withdrawn from the fast path at once and its packets take the user-space relay, which
    /// enforces the cap exactly; [`TurnServer::fast_path_recheck`] puts it back once its buckets
    /// recovered. So the fast path overshoots a cap by at most one polling interval of traffic.
    /// Server-wide totals are not touched (the shell counts the fast path's own totals).
    pub fn fast_path_relayed(
        &mut self,
        now: Instant,
        relay: SocketAddr,
        usage: FastPathUsage,
    ) -> FastPathCharge {
        let Some(&id) = self.by_relay.get(&relay) else {
            return FastPathCharge::Unknown;
        };
        let Some(a) = self.allocations.get_mut(&id) else {
            return FastPathCharge::Unknown;
        };
        a.bytes_to_peer += usage.to_peer_bytes;
        a.packets_to_peer += usage.to_peer_packets;
        a.bytes_to_client += usage.to_client_bytes;
        a.packets_to_client += usage.to_client_packets;
        let bytes = usage.to_peer_bytes.saturating_add(usage.to_client_bytes);
        // Bytes already leased from the shared buckets pay first.
        let from_credit = bytes.min(a.credit as u64);
        a.credit -= from_credit as usize;
        let rest = bytes - from_credit;
        if rest == 0 || !self.shared.bandwidth_limited() {
            return FastPathCharge::Charged;
        }
        let fits = match a.quota.as_mut() {
            Some(q) => self.shared.quota().charge_relayed(q, rest, now),
            None => true,
        };
        if fits || a.fast_path_held {
            return FastPathCharge::Charged;
        }
        a.fast_path_held = true;
        self.fast_path_sync_all(id, now);
        FastPathCharge::Withdrawn
    }

    /// Puts allocations withdrawn by [`TurnServer::fast_path_relayed`] back on the fast path
    /// once their buckets (and their users') hold at least half their burst again; returns how
    /// many went back. Call it every polling interval.
    pub fn fast_path_recheck(&mut self, now: Instant) -> usize {
        let held: Vec<AllocId> = self
            .allocations
            .iter()
            .filter(|(_, a)| a.fast_path_held)
            .map(|(&id, _)| id)
            .collect();
        let mut back = 0;
        for id in held {
            let Some(a) = self.allocations.get_mut(&id) else {
                continue;
            };
            let recovered = match a.quota.as_mut() {
                Some(q) => self.shared.quota().relay_recovered(q, now),
                None => true,
            };
            if recovered {
                a.fast_path_held = false;
                self.fast_path_sync_all(id, now);
                back += 1;
            }
        }
        back
    }

    /// [`TurnServer::fast_path_sync_ip`] for every permitted IP of allocation `id`.
    fn fast_path_sync_all(&mut self, id: AllocId, now: Instant) {
        let Some(a) = self.allocations.get(&id) else {
            return;
        };
        let ips: Vec<IpAddr> = a.permissions.keys().copied().collect();
        for ip in ips {
            self.fast_path_sync_ip(id, ip, now);
        }
    }

    /// Re-evaluates every channel of allocation `id` whose peer has IP `ip` after the
    /// permission for `ip` was installed, refreshed or expired: up when the channel (RFC 8656
    /// §12) and the permission (§9) are live, down otherwise.
    pub(super) fn fast_path_sync_ip(&mut self, id: AllocId, ip: IpAddr, now: Instant) {
        if !self.config.fast_path_events {
            return;
        }
        let Some(a) = self.allocations.get(&id) else {
            return;
        };
        if a.transport != RelayTransport::Udp || a.client.transport != Transport::Udp {
            return;
        }
        // An allocation over its bandwidth cap stays on the user-space relay (which enforces it).
        let permitted = a.permitted(ip, now) && !a.fast_path_held;
        // Relay-to-relay (peer = one of this server's relayed addresses) is offloaded too: the
        // kernel program hands the datagram to the other allocation's entries directly. Not
        // behind 1:1 NAT (external IPs): there the peer address clients use is not the local
        // one the program sees, and user space hands such data over in-process.
        let own = self.is_own_relay_ip(ip) && !self.config.external_ips.is_empty();
        if let Some(relay) = a.relay(family_of_ip(ip)) {
            let p = PermissionRelay {
                client: a.client,
                relay: relay.local,
                peer: ip,
            };
            self.events.push_back(if permitted && !own {
                Event::PermissionRelayUp(p)
            } else {
                Event::PermissionRelayDown(p)
            });
        }
        for (&channel, c) in &a.channels {
            if c.peer.ip() != ip {
                continue;
            }
            let Some(relay) = a.relay(Family::of(&c.peer)) else {
                continue;
            };
            let relay = ChannelRelay {
                client: a.client,
                relay: relay.local,
                peer: c.peer,
                channel,
            };
            self.events
                .push_back(if permitted && !own && c.expires > now {
                    Event::ChannelRelayUp(relay)
                } else {
                    Event::ChannelRelayDown(relay)
                });
        }
    }

    /// Reports that a permission must no longer be relayed outside the state machine.
    pub(super) fn fast_path_permission_down(
        &mut self,
        client: ClientTuple,
        relay: SocketAddr,
        peer: IpAddr,
    ) {
        if !self.config.fast_path_events || client.transport != Transport::Udp {
            return;
        }
        self.events
            .push_back(Event::PermissionRelayDown(PermissionRelay {
                client,
                relay,
                peer,
            }));
    }

    /// Reports that a channel must no longer be relayed outside the state machine.
    pub(super) fn fast_path_down(
        &mut self,
        client: ClientTuple,
        relay: SocketAddr,
        peer: SocketAddr,
        channel: u16,
    ) {
        if !self.config.fast_path_events || client.transport != Transport::Udp {
            return;
        }
        self.events.push_back(Event::ChannelRelayDown(ChannelRelay {
            client,
            relay,
            peer,
            channel,
        }));
    }
}
