//! Refresh (RFC 8656 §8.2), CreatePermission (§10.2) and ChannelBind (§12.2).

use core::net::{IpAddr, SocketAddr};
use std::time::Instant;

use floe_stun::attr::{
    ChannelNumber, ErrorCode, Family, Lifetime, RequestedAddressFamily, XorPeerAddress,
};
use floe_stun::channel_data::is_valid_channel;
use floe_stun::{AttrError, Message, MessageBuilder};

use super::allocate::optional;
use super::allocation::{
    family_index, family_of_ip, AllocId, Channel, CHANNEL_LIFETIME, PERMISSION_LIFETIME,
};
use super::own_relay::denied_label;
use super::reply::Reject;
use super::types::{ClientTuple, DeleteReason, PeerRequest, RelayBinder, RelayTransport};
use super::{Handled, Timer, TurnServer};
use crate::policy::PeerDenied;

/// At most this many XOR-PEER-ADDRESS attributes in one CreatePermission.
const MAX_PEERS_PER_REQUEST: usize = 64;

impl TurnServer {
    fn alloc_id(&self, client: ClientTuple) -> Result<AllocId, Reject> {
        self.by_client
            .get(&client)
            .copied()
            .ok_or(Reject::new(ErrorCode::ALLOCATION_MISMATCH))
    }

    /// RFC 8656 §8.2: Refresh. LIFETIME 0 deletes the allocation (with REQUESTED-ADDRESS-FAMILY
    /// on a dual allocation: only that family's relayed address); a family the allocation does
    /// not have is 443.
    pub(crate) fn refresh(
        &mut self,
        now: Instant,
        client: ClientTuple,
        msg: &Message<'_>,
        b: &mut MessageBuilder<'_>,
        binder: &mut dyn RelayBinder,
    ) -> Result<Handled, Reject> {
        let id = self.alloc_id(client)?;
        let requested = optional::<Lifetime>(msg)?.map(|l| l.0);
        let family = match msg.get::<RequestedAddressFamily>() {
            None => None,
            Some(Ok(f)) => Some(f.0),
            Some(Err(AttrError::UnknownFamily { .. })) => {
                return Err(Reject::new(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH))
            }
            Some(Err(_)) => return Err(Reject::new(ErrorCode::BAD_REQUEST)),
        };
        let alloc = self.allocations.get(&id).ok_or(Reject::new(437))?;
        if let Some(f) = family {
            if !alloc.has_family(f) {
                return Err(Reject::new(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH));
            }
        }
        if requested == Some(0) {
            let dual = alloc.relays.iter().flatten().count() == 2;
            match family {
                Some(f) if dual => self.drop_family(id, f, binder),
                _ => self.delete_allocation(id, DeleteReason::Refresh, binder),
            }
            b.add(&Lifetime(0)).map_err(|_| Reject::new(500))?;
            return Ok(Handled::Respond);
        }
        let lifetime = self.config.lifetimes.negotiate(requested);
        let granted = {
            let Some(a) = self.allocations.get_mut(&id) else {
                return Err(Reject::new(437));
            };
            let old = a.deadline();
            a.expires = now + lifetime;
            let new = a.deadline();
            self.timers.remove(&(old, Timer::Allocation(id)));
            self.timers.insert((new, Timer::Allocation(id)));
            new.saturating_duration_since(now)
        };
        b.add(&Lifetime(
            u32::try_from(granted.as_secs()).unwrap_or(u32::MAX),
        ))
        .map_err(|_| Reject::new(500))?;
        Ok(Handled::Respond)
    }

    /// Removes one family's relayed address from a dual allocation, with that family's
    /// permissions and channels.
    fn drop_family(&mut self, id: AllocId, family: Family, binder: &mut dyn RelayBinder) {
        let Some(a) = self.allocations.get_mut(&id) else {
            return;
        };
        let Some(relay) = a.relays[family_index(family)].take() else {
            return;
        };
        self.by_relay.remove(&relay.local);
        if a.transport == RelayTransport::Udp {
            self.shared.remove_udp_relay(relay.local);
        }
        binder.release(relay.local, a.transport);
        let ips: Vec<IpAddr> = a
            .permissions
            .keys()
            .copied()
            .filter(|ip| family_of_ip(*ip) == family)
            .collect();
        let mut perms_down = Vec::new();
        for ip in ips {
            if let Some(exp) = a.permissions.remove(&ip) {
                self.timers.remove(&(exp, Timer::Permission(id, ip)));
                self.stats.permissions_active -= 1;
                perms_down.push(ip);
            }
        }
        let chans: Vec<(u16, Channel)> = a
            .channels
            .iter()
            .filter(|(_, c)| Family::of(&c.peer) == family)
            .map(|(&n, &c)| (n, c))
            .collect();
        for &(n, c) in &chans {
            a.channels.remove(&n);
            a.channel_by_peer.remove(&c.peer);
            self.timers.remove(&(c.expires, Timer::Channel(id, n)));
            self.stats.channels_active -= 1;
        }
        let (client, local) = (a.client, relay.local);
        for (n, c) in chans {
            self.fast_path_down(client, local, c.peer, n);
        }
        for ip in perms_down {
            self.fast_path_permission_down(client, local, ip);
        }
    }

    /// Checks a peer address against the allocation's families (443) and the peer policy (403;
    /// counted and reported by reason). The server's own relayed addresses pass (relayed inside
    /// the process, see `own_relay.rs`) unless an explicit `--deny-peer` range covers them.
    fn check_peer(
        &mut self,
        now: Instant,
        client: ClientTuple,
        request: PeerRequest,
        id: AllocId,
        peer: SocketAddr,
    ) -> Result<(), Reject> {
        let a = self.allocations.get(&id).ok_or(Reject::new(437))?;
        if !a.has_family(Family::of(&peer)) {
            return Err(Reject::new(ErrorCode::PEER_ADDRESS_FAMILY_MISMATCH));
        }
        let policy = &self.config.policy;
        let port_matters = request == PeerRequest::ChannelBind;
        let verdict = if port_matters && peer.port() == 0 {
            Err(PeerDenied::PortZero { peer })
        } else if self.is_own_relay_ip(peer.ip()) {
            policy.check_explicit_deny(peer.ip())
        } else if request == PeerRequest::ChannelBind {
            policy.check(peer)
        } else {
            policy.check_ip(peer.ip())
        };
        if let Err(denied) = verdict {
            self.refuse_peer(now, client, request, peer, denied_label(&denied));
            return Err(Reject::new(ErrorCode::FORBIDDEN));
        }
        Ok(())
    }

    /// RFC 8656 §10.2: CreatePermission with one or more XOR-PEER-ADDRESS; all are installed or
    /// none (400 malformed, 443 family, 403 policy, 508 quota).
    pub(crate) fn create_permission(
        &mut self,
        now: Instant,
        client: ClientTuple,
        msg: &Message<'_>,
        _b: &mut MessageBuilder<'_>,
    ) -> Result<Handled, Reject> {
        let id = self.alloc_id(client)?;
        let mut peers = [None::<IpAddr>; MAX_PEERS_PER_REQUEST];
        let mut count = 0;
        for peer in msg.get_all::<XorPeerAddress>() {
            let XorPeerAddress(peer) = peer.map_err(|_| Reject::new(ErrorCode::BAD_REQUEST))?;
            if count == MAX_PEERS_PER_REQUEST {
                return Err(Reject::new(ErrorCode::BAD_REQUEST));
            }
            self.check_peer(now, client, PeerRequest::CreatePermission, id, peer)?;
            peers[count] = Some(peer.ip());
            count += 1;
        }
        if count == 0 {
            return Err(Reject::new(ErrorCode::BAD_REQUEST));
        }
        let ips = &peers[..count];
        let a = self.allocations.get(&id).ok_or(Reject::new(437))?;
        let mut new = 0;
        for (i, ip) in ips.iter().flatten().enumerate() {
            let dup = ips[..i].iter().flatten().any(|p| p == ip);
            if !dup && !a.permissions.contains_key(ip) {
                new += 1;
            }
        }
        // All-or-nothing: the permissions after the request must fit (508 otherwise).
        if let (Some(q), true) = (&a.quota, new > 0) {
            q.check_new_permission(a.permissions.len() + new - 1)
                .map_err(|e| Reject::new(e.error_code()))?;
        }
        for ip in ips.iter().flatten() {
            self.install_permission(id, *ip, now);
        }
        Ok(Handled::Respond)
    }

    /// Installs or refreshes the permission for `ip` (RFC 8656 §9: 300 s).
    pub(crate) fn install_permission(&mut self, id: AllocId, ip: IpAddr, now: Instant) {
        let Some(a) = self.allocations.get_mut(&id) else {
            return;
        };
        let expires = now + PERMISSION_LIFETIME;
        let old = a.permissions.insert(ip, expires);
        if old.is_none() {
            self.stats.permissions_created += 1;
            self.stats.permissions_active += 1;
        }
        self.rearm(old, expires, Timer::Permission(id, ip));
        self.fast_path_sync_ip(id, ip, now);
    }

    /// RFC 8656 §12.2: ChannelBind. A channel number bound to another peer, or a peer bound to
    /// another channel, is 400; the same pair refreshes the binding. Installs or refreshes the
    /// peer's permission too.
    pub(crate) fn channel_bind(
        &mut self,
        now: Instant,
        client: ClientTuple,
        msg: &Message<'_>,
        _b: &mut MessageBuilder<'_>,
    ) -> Result<Handled, Reject> {
        let id = self.alloc_id(client)?;
        let bad = Reject::new(ErrorCode::BAD_REQUEST);
        let ChannelNumber(number) = optional::<ChannelNumber>(msg)?.ok_or(bad)?;
        if !is_valid_channel(number) {
            return Err(bad);
        }
        let XorPeerAddress(peer) = optional::<XorPeerAddress>(msg)?.ok_or(bad)?;
        self.check_peer(now, client, PeerRequest::ChannelBind, id, peer)?;
        let a = self.allocations.get(&id).ok_or(Reject::new(437))?;
        let bound_peer = a.channels.get(&number).map(|c| c.peer);
        let bound_number = a.channel_by_peer.get(&peer).copied();
        match (bound_peer, bound_number) {
            (Some(p), _) if p != peer => return Err(bad),
            (_, Some(n)) if n != number => return Err(bad),
            _ => {}
        }
        if let Some(q) = &a.quota {
            if bound_peer.is_none() {
                q.check_new_channel(a.channels.len())
                    .map_err(|e| Reject::new(e.error_code()))?;
            }
            if !a.permissions.contains_key(&peer.ip()) {
                q.check_new_permission(a.permissions.len())
                    .map_err(|e| Reject::new(e.error_code()))?;
            }
        }
        self.install_channel(id, number, peer, now);
        self.install_permission(id, peer.ip(), now);
        Ok(Handled::Respond)
    }

    fn install_channel(&mut self, id: AllocId, number: u16, peer: SocketAddr, now: Instant) {
        let Some(a) = self.allocations.get_mut(&id) else {
            return;
        };
        let expires = now + CHANNEL_LIFETIME;
        let old = a
            .channels
            .insert(number, Channel { peer, expires })
            .map(|c| c.expires);
        a.channel_by_peer.insert(peer, number);
        if old.is_none() {
            self.stats.channels_created += 1;
            self.stats.channels_active += 1;
        }
        self.rearm(old, expires, Timer::Channel(id, number));
    }
}
