//! Permissions (RFC 8656 §9, §10) and channel bindings (§12): asked for on use or on demand,
//! refreshed while used, confirmed or failed by the server's answer.

use core::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::peers::{Channel, Lease, Permission};
use super::transaction::{Request, Retries};
use super::{
    Error, State, TurnClient, TurnEvent, CHANNEL_LIFETIME, CHANNEL_REFRESH, PERMISSION_LIFETIME,
    PERMISSION_REFRESH,
};

/// After a failed CreatePermission or ChannelBind, no new request for that peer for this long.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

impl TurnClient {
    /// Asks for a permission for `peer` (RFC 8656 §9, §10) and keeps refreshing it every
    /// 4 minutes, used or not, until the allocation ends. Before the allocation exists the
    /// request waits for it. Reports [`TurnEvent::PermissionCreated`] or
    /// [`TurnEvent::PermissionFailed`]; calling it again after a failure retries at once.
    pub fn create_permission(&mut self, peer: IpAddr, now: Instant) {
        if !matches!(self.state, State::Allocating | State::Allocated(_)) {
            return;
        }
        let ip = peer.to_canonical();
        let p = self.permissions.entry(ip).or_insert_with(|| Permission {
            lease: Lease::new(now),
            pinned: true,
            port: 0,
        });
        p.pinned = true;
        p.lease.last_used = now;
        p.lease.failed = None;
        if p.lease.needs_request(now) && matches!(self.state, State::Allocated(_)) {
            self.request_permission(ip, now);
        }
    }

    /// Binds a channel to `peer` now (RFC 8656 §12), with its permission, instead of waiting
    /// for the first [`TurnClient::send_to`]: useful with `auto_channel` off, or so that data
    /// from the peer arrives as ChannelData from the start.
    pub fn bind_channel(&mut self, peer: SocketAddr, now: Instant) -> Result<(), Error> {
        let peer = self.check_peer(peer)?;
        self.use_permission(peer, now)?;
        self.use_channel(peer, now);
        Ok(())
    }

    /// Marks the permission for `peer` used, asking for it when needed; the error that failed it
    /// within the last 30 s otherwise.
    pub(super) fn use_permission(&mut self, peer: SocketAddr, now: Instant) -> Result<(), Error> {
        let ip = peer.ip();
        let p = self.permissions.entry(ip).or_insert_with(|| Permission {
            lease: Lease::new(now),
            pinned: false,
            port: peer.port(),
        });
        p.lease.last_used = now;
        p.port = peer.port();
        if let Some((error, until)) = &p.lease.failed {
            if *until > now && !p.lease.is_active(now) {
                return Err(error.clone());
            }
        }
        if p.lease.needs_request(now) {
            self.request_permission(ip, now);
        }
        Ok(())
    }

    /// Marks the channel for `peer` used, binding or rebinding it when needed.
    pub(super) fn use_channel(&mut self, peer: SocketAddr, now: Instant) {
        let c = self.channels.entry(peer).or_insert_with(|| Channel {
            lease: Lease::new(now),
            number: None,
        });
        c.lease.last_used = now;
        if c.lease.needs_request(now) {
            self.request_channel(peer, now);
        }
    }

    /// Data came from `peer`: it counts as use, and revives a lease left to lapse while idle.
    pub(super) fn note_activity(&mut self, peer: SocketAddr, now: Instant) {
        let mut permission = false;
        if let Some(p) = self.permissions.get_mut(&peer.ip()) {
            p.lease.last_used = now;
            permission = p.lease.is_active(now) && p.lease.needs_request(now);
        }
        if permission {
            self.request_permission(peer.ip(), now);
        }
        let mut channel = false;
        if let Some(c) = self.channels.get_mut(&peer) {
            c.lease.last_used = now;
            channel = c.lease.is_active(now) && c.lease.needs_request(now);
        }
        if channel {
            self.request_channel(peer, now);
        }
    }

    /// Sends a CreatePermission for `ip` (RFC 8656 §10.1).
    pub(super) fn request_permission(&mut self, ip: IpAddr, now: Instant) {
        let Some(p) = self.permissions.get_mut(&ip) else {
            return;
        };
        p.lease.in_flight = true;
        p.lease.refresh_at = None;
        p.lease.failed = None;
        let peer = SocketAddr::new(ip, p.port);
        self.start(Request::CreatePermission { peer }, Retries::default(), now);
    }

    /// Sends a ChannelBind for `peer` (RFC 8656 §12.1), with its current number or a new one.
    pub(super) fn request_channel(&mut self, peer: SocketAddr, now: Instant) {
        let Some(c) = self.channels.get_mut(&peer) else {
            return;
        };
        let channel = match c.number {
            Some(n) => n,
            None => match self.numbers.take(now) {
                Some(n) => {
                    c.number = Some(n);
                    self.by_number.insert(n, peer);
                    n
                }
                None => {
                    c.lease.fail(Error::NoChannel, now, RETRY_AFTER_FAILURE);
                    return;
                }
            },
        };
        c.lease.in_flight = true;
        c.lease.refresh_at = None;
        c.lease.failed = None;
        self.start(
            Request::ChannelBind { peer, channel },
            Retries::default(),
            now,
        );
    }

    pub(super) fn permission_confirmed(&mut self, ip: IpAddr, started: Instant, now: Instant) {
        let Some(p) = self.permissions.get_mut(&ip) else {
            return;
        };
        p.lease
            .confirm(started, PERMISSION_LIFETIME, PERMISSION_REFRESH);
        if !p.lease.announced {
            p.lease.announced = true;
            self.events.push_back(TurnEvent::PermissionCreated(ip));
        }
        self.flush_queue(now);
    }

    pub(super) fn permission_failed(&mut self, ip: IpAddr, error: Error, now: Instant) {
        let Some(p) = self.permissions.get_mut(&ip) else {
            return;
        };
        p.lease.fail(error.clone(), now, RETRY_AFTER_FAILURE);
        self.events
            .push_back(TurnEvent::PermissionFailed { peer: ip, error });
        self.flush_queue(now);
    }

    pub(super) fn channel_confirmed(
        &mut self,
        peer: SocketAddr,
        channel: u16,
        started: Instant,
        now: Instant,
    ) {
        let Some(c) = self.channels.get_mut(&peer) else {
            return;
        };
        if c.number != Some(channel) {
            return;
        }
        c.lease.confirm(started, CHANNEL_LIFETIME, CHANNEL_REFRESH);
        if !c.lease.announced {
            c.lease.announced = true;
            self.events
                .push_back(TurnEvent::ChannelBound { peer, channel });
        }
        // RFC 8656 §12.2: a ChannelBind installs or refreshes the permission for the peer's IP.
        if let Some(p) = self.permissions.get_mut(&peer.ip()) {
            if p.lease.failed.is_none() {
                let until = started + PERMISSION_LIFETIME;
                p.lease.active_until = Some(p.lease.active_until.map_or(until, |t| t.max(until)));
            }
        }
        self.flush_queue(now);
    }

    pub(super) fn channel_failed(
        &mut self,
        peer: SocketAddr,
        channel: u16,
        error: Error,
        now: Instant,
    ) {
        let Some(c) = self.channels.get_mut(&peer) else {
            return;
        };
        c.lease.fail(error.clone(), now, RETRY_AFTER_FAILURE);
        // A binding that is still active on the server stays usable until it expires.
        if !c.lease.is_active(now) && c.number == Some(channel) {
            c.number = None;
            self.by_number.remove(&channel);
            self.numbers.release(channel, now);
        }
        self.events
            .push_back(TurnEvent::ChannelBindFailed { peer, error });
    }
}
