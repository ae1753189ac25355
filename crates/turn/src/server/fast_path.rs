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

impl TurnServer {
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
        let permitted = a.permitted(ip, now);
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
