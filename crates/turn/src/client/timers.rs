//! Time: the next deadline, and the timers due at `now` (retransmissions and transaction
//! timeouts, the allocation's refresh and expiry, permission and channel refreshes).

use std::time::Instant;

use super::transaction::{Request, Retries, Transaction};
use super::{Error, State, TurnClient, TurnEvent, CHANNEL_REFRESH, PERMISSION_REFRESH};

impl TurnClient {
    /// The next instant at which [`TurnClient::handle_timeout`] must be called; `None` when no
    /// timer is armed. Ask again after every call that changes the client.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let transactions = self.transactions.values().map(Transaction::next_timeout);
        let allocation = match &self.state {
            State::Allocated(a) => [a.refresh_at, Some(a.expires)],
            _ => [None, None],
        };
        let permissions = self
            .permissions
            .values()
            .filter_map(|p| p.lease.next_timeout());
        let channels = self
            .channels
            .values()
            .filter_map(|c| c.lease.next_timeout());
        transactions
            .chain(allocation.into_iter().flatten())
            .chain(permissions)
            .chain(channels)
            .min()
    }

    /// Runs the timers due at `now`: retransmissions and transaction timeouts, the allocation's
    /// refresh and expiry, permission and channel refreshes. Calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.transaction_timers(now);
        if let State::Allocated(a) = &mut self.state {
            if a.expires <= now {
                self.close(TurnEvent::Expired);
                return;
            }
            if a.refresh_at.is_some_and(|t| t <= now) {
                a.refresh_at = None;
                let lifetime = self.cfg.requested_lifetime();
                self.start(Request::Refresh { lifetime }, Retries::default(), now);
            }
        }
        self.permission_timers(now);
        self.channel_timers(now);
    }

    fn transaction_timers(&mut self, now: Instant) {
        let mut timed_out = Vec::new();
        for (tid, tx) in &mut self.transactions {
            if tx.deadline() <= now {
                timed_out.push(*tid);
            } else if tx.retransmit_due(now) {
                self.transmits.push_back(tx.bytes.clone());
            }
        }
        for tid in timed_out {
            // An earlier failure may have closed the client and cleared the rest.
            if let Some(tx) = self.transactions.remove(&tid) {
                self.failed(tx.request, Error::Timeout, now);
            }
        }
    }

    fn permission_timers(&mut self, now: Instant) {
        let mut refresh = Vec::new();
        self.permissions.retain(|ip, p| {
            if p.lease.on_timeout(now, PERMISSION_REFRESH, p.pinned) {
                refresh.push(*ip);
                return true;
            }
            p.pinned || !p.lease.is_dead(now)
        });
        for ip in refresh {
            self.request_permission(ip, now);
        }
    }

    fn channel_timers(&mut self, now: Instant) {
        let mut refresh = Vec::new();
        let mut released = Vec::new();
        self.channels.retain(|peer, c| {
            if c.lease.on_timeout(now, CHANNEL_REFRESH, false) {
                refresh.push(*peer);
                return true;
            }
            if !c.lease.is_active(now) && !c.lease.in_flight {
                released.extend(c.number.take());
            }
            !c.lease.is_dead(now)
        });
        for n in released {
            self.by_number.remove(&n);
            self.numbers.release(n, now);
        }
        for peer in refresh {
            self.request_channel(peer, now);
        }
    }
}
