//! Per-peer state of the client: permissions (RFC 8656 §9), channels (§12), channel numbers
//! and the bounded queue of data waiting for a permission.

use core::net::SocketAddr;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use floe_stun::channel_data::{MAX_CHANNEL_RFC8656, MIN_CHANNEL};

use super::types::Error;

/// RFC 8656 §12: a client should not rebind a channel number to another peer for 5 minutes
/// after its binding ended.
const CHANNEL_COOLDOWN: Duration = Duration::from_secs(300);
/// Data waiting for a permission: at most this many packets...
pub(crate) const MAX_QUEUED_PACKETS: usize = 64;
/// ...and this many payload bytes, over all peers.
pub(crate) const MAX_QUEUED_BYTES: usize = 64 * 1024;

/// The life of a permission or channel binding on the server, as the client knows it.
#[derive(Debug, Clone)]
pub(crate) struct Lease {
    /// Until when the server holds it (a lower bound), once confirmed.
    pub(crate) active_until: Option<Instant>,
    /// When to refresh it; `None` while a request is in flight, after a failure, or when it
    /// was left to lapse because it was idle.
    pub(crate) refresh_at: Option<Instant>,
    /// A CreatePermission or ChannelBind for it is outstanding.
    pub(crate) in_flight: bool,
    /// The last failure, and until when no new request is made for it.
    pub(crate) failed: Option<(Error, Instant)>,
    /// Last time data went to or came from the peer.
    pub(crate) last_used: Instant,
    /// Whether its first success was reported.
    pub(crate) announced: bool,
}

impl Lease {
    pub(crate) fn new(now: Instant) -> Self {
        Lease {
            active_until: None,
            refresh_at: None,
            in_flight: false,
            failed: None,
            last_used: now,
            announced: false,
        }
    }

    /// Whether the server holds it at `now`.
    pub(crate) fn is_active(&self, now: Instant) -> bool {
        self.active_until.is_some_and(|t| t > now)
    }

    /// Whether a (re)request is needed for a use at `now`: neither active with a refresh
    /// scheduled, nor in flight, nor refused recently.
    pub(crate) fn needs_request(&self, now: Instant) -> bool {
        let backing_off = self.failed.as_ref().is_some_and(|(_, until)| *until > now);
        let scheduled = self.is_active(now) && self.refresh_at.is_some();
        !self.in_flight && !backing_off && !scheduled
    }

    /// The server confirmed a request sent at `started`.
    pub(crate) fn confirm(&mut self, started: Instant, lifetime: Duration, refresh: Duration) {
        self.in_flight = false;
        self.failed = None;
        self.active_until = Some(started + lifetime);
        self.refresh_at = Some(started + refresh);
    }

    /// The request failed at `now`; no new request before `now + backoff`.
    pub(crate) fn fail(&mut self, error: Error, now: Instant, backoff: Duration) {
        self.in_flight = false;
        self.refresh_at = None;
        self.failed = Some((error, now + backoff));
    }

    /// The next deadline of this lease.
    pub(crate) fn next_timeout(&self) -> Option<Instant> {
        match (self.refresh_at, self.active_until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Timer work at `now`: forgets a lapsed server lease, and returns whether the refresh that
    /// was due should be sent (it is, when the peer was used within `idle`, or `keep` is set).
    pub(crate) fn on_timeout(&mut self, now: Instant, idle: Duration, keep: bool) -> bool {
        if self.active_until.is_some_and(|t| t <= now) {
            self.active_until = None;
        }
        match self.refresh_at {
            Some(t) if t <= now => {
                self.refresh_at = None;
                keep || now.saturating_duration_since(self.last_used) < idle
            }
            _ => false,
        }
    }

    /// Whether nothing is left of it: not held by the server, nothing in flight, and no recent
    /// failure to remember.
    pub(crate) fn is_dead(&self, now: Instant) -> bool {
        let remembering = self.failed.as_ref().is_some_and(|(_, until)| *until > now);
        !self.is_active(now) && !self.in_flight && !remembering
    }
}

/// RFC 8656 §9: a permission for one peer IP.
#[derive(Debug, Clone)]
pub(crate) struct Permission {
    pub(crate) lease: Lease,
    /// Asked for with `create_permission`: refreshed until the allocation ends, used or not.
    pub(crate) pinned: bool,
    /// The port put in XOR-PEER-ADDRESS (the server ignores it; the last one used, or 0).
    pub(crate) port: u16,
}

/// RFC 8656 §12: a channel binding for one peer transport address.
#[derive(Debug, Clone)]
pub(crate) struct Channel {
    pub(crate) lease: Lease,
    /// The number, while one is bound or being bound.
    pub(crate) number: Option<u16>,
}

/// Hands out channel numbers from 0x4000–0x4FFF (RFC 8656 §12), reusing a released number only
/// after its cool-down.
#[derive(Debug, Clone)]
pub(crate) struct ChannelNumbers {
    next: u16,
    cooling: BTreeMap<u16, Instant>,
}

impl Default for ChannelNumbers {
    fn default() -> Self {
        ChannelNumbers {
            next: MIN_CHANNEL,
            cooling: BTreeMap::new(),
        }
    }
}

impl ChannelNumbers {
    /// A number never used, or one whose cool-down is over; `None` when all are taken.
    pub(crate) fn take(&mut self, now: Instant) -> Option<u16> {
        if self.next <= MAX_CHANNEL_RFC8656 {
            let n = self.next;
            self.next += 1;
            return Some(n);
        }
        let n = self
            .cooling
            .iter()
            .find(|(_, &free_at)| free_at <= now)
            .map(|(&n, _)| n)?;
        self.cooling.remove(&n);
        Some(n)
    }

    /// Gives a number back; it can be reused after the cool-down.
    pub(crate) fn release(&mut self, n: u16, now: Instant) {
        self.cooling.insert(n, now + CHANNEL_COOLDOWN);
    }
}

/// Data sent before the peer's permission was confirmed, in order, bounded.
#[derive(Debug, Default)]
pub(crate) struct SendQueue {
    items: VecDeque<(SocketAddr, Vec<u8>)>,
    bytes: usize,
}

impl SendQueue {
    pub(crate) fn push(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), Error> {
        if self.items.len() >= MAX_QUEUED_PACKETS || self.bytes + data.len() > MAX_QUEUED_BYTES {
            return Err(Error::QueueFull);
        }
        self.bytes += data.len();
        self.items.push_back((peer, data.to_vec()));
        Ok(())
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes everything out (to route again what can be sent and push back the rest).
    pub(crate) fn take(&mut self) -> VecDeque<(SocketAddr, Vec<u8>)> {
        self.bytes = 0;
        std::mem::take(&mut self.items)
    }

    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_numbers_are_reused_only_after_the_cooldown() {
        let t0 = Instant::now();
        let mut n = ChannelNumbers::default();
        let all: Vec<u16> = (0..4096).map_while(|_| n.take(t0)).collect();
        assert_eq!(all.len(), 4096);
        assert_eq!((all[0], all[4095]), (0x4000, 0x4FFF));
        assert_eq!(n.take(t0), None);
        n.release(0x4123, t0);
        assert_eq!(n.take(t0 + Duration::from_secs(299)), None);
        assert_eq!(n.take(t0 + CHANNEL_COOLDOWN), Some(0x4123));
    }

    #[test]
    fn the_queue_is_bounded_in_packets_and_bytes() {
        let peer: SocketAddr = "8.8.8.8:1".parse().unwrap();
        let mut q = SendQueue::default();
        assert_eq!(
            q.push(peer, &vec![0; MAX_QUEUED_BYTES + 1]),
            Err(Error::QueueFull)
        );
        for _ in 0..MAX_QUEUED_PACKETS {
            q.push(peer, b"x").unwrap();
        }
        assert_eq!(q.push(peer, b"x"), Err(Error::QueueFull));
        assert_eq!(q.take().len(), MAX_QUEUED_PACKETS);
        assert!(q.is_empty());
    }

    #[test]
    fn an_idle_lease_is_not_refreshed_but_a_used_one_is() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut lease = Lease::new(t0);
        lease.confirm(t0, s(300), s(240));
        assert!(!lease.needs_request(t0 + s(10)));
        // Used at 100 s: the refresh at 240 s goes out.
        lease.last_used = t0 + s(100);
        assert!(lease.on_timeout(t0 + s(240), s(240), false));
        lease.confirm(t0 + s(240), s(300), s(240));
        // Not used since: the next refresh (at 480 s) is skipped, the lease lapses at 540 s.
        assert!(!lease.on_timeout(t0 + s(480), s(240), false));
        assert!(lease.needs_request(t0 + s(500)), "a new use re-requests it");
        assert!(!lease.on_timeout(t0 + s(540), s(240), false));
        assert!(lease.is_dead(t0 + s(540)));
    }
}
