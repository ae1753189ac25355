//! The server's own relayed addresses as peers, and refused peers.
//!
//! **Relay to relay.** When both WebRTC peers are relay-only through one server, each names the
//! other's *relayed* address as its peer, so a client asks for a permission on one of this
//! server's own addresses. The peer policy refuses the server's addresses (RFC 8656 §21.1.7:
//! relaying to the server itself reaches services bound there and builds loops), but a relayed
//! address of this server is safe *if* data for it never touches the host's network stack: it
//! is handed to the allocation that owns that relay port inside the process
//! ([`Transmit::ToRelay`]), where that allocation's permissions apply as if the data came from
//! the sender's relayed address. A port of the relay IP without a live allocation (a listening
//! port, another service on the host, a freed relay port) receives nothing: the data is dropped
//! and counted ([`DropReason::NoSuchRelay`]). coturn grants such permissions too, but sends
//! the datagram through the kernel.
//!
//! **Refusals.** Every refused CreatePermission, ChannelBind, Send and RFC 6062 Connect is
//! counted by reason ([`TurnStats::peer_refused`](super::TurnStats)) and reported as an
//! [`Event::PeerRefused`] for the operator's log, at most [`REFUSAL_LOG_BURST`] per
//! [`REFUSAL_LOG_WINDOW`] per worker.

use core::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use floe_stun::attr::Family;

use super::stats::DropReason;
use super::types::{
    ClientTuple, Event, PeerAddr, PeerRequest, RelayAddr, RelayTransport, Transmit,
};
use super::TurnServer;
use crate::policy::PeerDenied;

/// Where data for one of the server's own relayed addresses goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OwnTarget {
    /// To the live relay socket `relay` of worker `worker`, inside the process.
    Relay { relay: SocketAddr, worker: u32 },
    /// Nowhere: dropped and counted ([`DropReason::NoSuchRelay`]).
    Nothing,
}

/// Refusal events per worker per [`REFUSAL_LOG_WINDOW`]; further refusals are only counted.
pub const REFUSAL_LOG_BURST: u32 = 20;
/// The window of [`REFUSAL_LOG_BURST`].
pub const REFUSAL_LOG_WINDOW: Duration = Duration::from_secs(10);

/// A fixed-window budget for [`Event::PeerRefused`].
#[derive(Debug, Default)]
pub(crate) struct RefusalLog {
    window_start: Option<Instant>,
    sent: u32,
}

impl RefusalLog {
    /// Whether one more event may be reported at `now`.
    fn take(&mut self, now: Instant) -> bool {
        let fresh = self
            .window_start
            .is_none_or(|start| now.saturating_duration_since(start) >= REFUSAL_LOG_WINDOW);
        if fresh {
            self.window_start = Some(now);
            self.sent = 0;
        }
        if self.sent >= REFUSAL_LOG_BURST {
            return false;
        }
        self.sent += 1;
        true
    }
}

/// The metrics label of a policy refusal.
pub(crate) fn denied_label(denied: &PeerDenied) -> &'static str {
    match denied {
        PeerDenied::PortZero { .. } => "port_zero",
        PeerDenied::ExplicitDeny { .. } => "denied_range",
        PeerDenied::OwnAddress { .. } => "own_address",
        PeerDenied::DefaultDeny { category, .. } => category.label(),
    }
}

impl TurnServer {
    /// The local relay socket address that `peer` names when it is one of this server's own
    /// relayed addresses: its external (advertised) IP or a relay IP, with any port. `None` for
    /// every other address.
    pub(crate) fn own_relay_socket(&self, peer: SocketAddr) -> Option<SocketAddr> {
        let ip = peer.ip().to_canonical();
        if self.config.relay_ips.contains(&ip) {
            return Some(SocketAddr::new(ip, peer.port()));
        }
        if self.config.external_ips.contains(&ip) {
            let family = Family::of(&SocketAddr::new(ip, 0));
            return self
                .relay_ip(family)
                .map(|local| SocketAddr::new(local, peer.port()));
        }
        None
    }

    /// Forgets a relay socket that is being released.
    pub(crate) fn forget_relay(&mut self, local: SocketAddr, transport: RelayTransport) {
        self.by_relay.remove(&local);
        if transport == RelayTransport::Udp {
            self.shared.remove_udp_relay(local);
        }
    }

    /// Where data that a client sends to `peer` goes (RFC 8656 §11.2, §12.6) when `peer` may
    /// be one of this server's relayed addresses: `None` for any other address (the network);
    /// else the live relay socket to hand it to inside the process and its worker, or
    /// [`OwnTarget::Nothing`] for a port of the relay IP without a live UDP allocation, unless
    /// the operator's `--allow-peer` opened that address (then it goes through the network
    /// like any peer, as before relay-to-relay existed).
    pub(crate) fn own_target(&self, peer: SocketAddr) -> Option<OwnTarget> {
        let local = self.own_relay_socket(peer)?;
        if let Some(owner) = self.shared.udp_relay_owner(local) {
            return Some(OwnTarget::Relay {
                relay: local,
                worker: owner.0,
            });
        }
        if self.config.policy.check(peer).is_ok() {
            return None;
        }
        Some(OwnTarget::Nothing)
    }

    /// Whether `ip` is one of this server's relayed IPs (external or local).
    pub(crate) fn is_own_relay_ip(&self, ip: IpAddr) -> bool {
        self.own_relay_socket(SocketAddr::new(ip, 1)).is_some()
    }

    /// Data from another allocation of this server (a [`Transmit::ToRelay`] produced by any
    /// worker): relayed to the client of the allocation bound at `relay` exactly as a datagram
    /// from the peer `from` arriving on that relay socket would be (RFC 8656 §11.3: permission
    /// check, ChannelData or Data indication, bandwidth quota). When no allocation of this
    /// worker is bound at `relay`, the data is dropped and counted
    /// ([`DropReason::NoSuchRelay`]).
    pub fn handle_relay_datagram(
        &mut self,
        now: Instant,
        relay: RelayAddr,
        from: PeerAddr,
        data: &[u8],
        out: &mut [u8],
    ) -> Option<Transmit> {
        if !self.by_relay.contains_key(&relay.0) {
            self.stats.dropped.add(DropReason::NoSuchRelay);
            return None;
        }
        self.peer_datagram(now, relay.0, from.0, data, out)
    }

    /// Counts a refused peer address and, within the log budget, reports it.
    pub(crate) fn refuse_peer(
        &mut self,
        now: Instant,
        client: ClientTuple,
        request: PeerRequest,
        peer: SocketAddr,
        reason: &'static str,
    ) {
        self.stats.peer_refused.add(request, reason);
        if !self.refusal_log.take(now) {
            return;
        }
        let username = self
            .by_client
            .get(&client)
            .and_then(|id| self.allocations.get(id))
            .map(|a| a.user.clone())
            .unwrap_or_else(|| "".into());
        self.events.push_back(Event::PeerRefused {
            client,
            username,
            request,
            peer,
            reason,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_log_allows_a_burst_per_window() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        let sent = (0..100).filter(|_| log.take(t0)).count();
        assert_eq!(sent, REFUSAL_LOG_BURST as usize);
        assert!(!log.take(t0 + REFUSAL_LOG_WINDOW / 2));
        assert!(log.take(t0 + REFUSAL_LOG_WINDOW));
    }
}
