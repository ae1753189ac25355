//! The allocation's life (RFC 8656 §7, §8): the Allocate success, refreshes (automatic and
//! asked for), release, and the end of the client.

use core::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use floe_stun::attr::{ErrorCode, Family, Lifetime, XorMappedAddress, XorRelayedAddress};
use floe_stun::Message;

use super::transaction::{Request, Retries};
use super::{Allocation, Error, State, TurnClient, TurnEvent};

/// The allocation is refreshed this long before it expires (for lifetimes over 2 minutes).
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

impl TurnClient {
    /// Refreshes the allocation now (RFC 8656 §8), e.g. after a network change, unless a
    /// Refresh is already in flight. The automatic schedule continues from its answer.
    pub fn refresh(&mut self, now: Instant) {
        let State::Allocated(a) = &mut self.state else {
            return;
        };
        let in_flight = self
            .transactions
            .values()
            .any(|t| matches!(t.request, Request::Refresh { .. }));
        if !in_flight {
            a.refresh_at = None;
            let lifetime = self.cfg.requested_lifetime();
            self.start(Request::Refresh { lifetime }, Retries::default(), now);
        }
    }

    /// Deletes the allocation: RFC 8656 §8 Refresh with LIFETIME 0, then
    /// [`TurnEvent::Released`] (also after an error or a timeout: the server deletes the
    /// allocation at its expiry anyway). Data can no longer be sent. Before the server answered
    /// the Allocate, the Refresh is sent only if credentials are known.
    pub fn release(&mut self, now: Instant) {
        let server_may_have_one = match self.state {
            State::Allocated(_) => true,
            State::Allocating => self.credentials.is_some(),
            State::Releasing | State::Closed => return,
        };
        self.transactions.clear();
        self.forget_peers();
        if server_may_have_one {
            self.state = State::Releasing;
            self.start(Request::Refresh { lifetime: 0 }, Retries::default(), now);
        } else {
            self.close(TurnEvent::Released);
        }
    }

    /// RFC 8656 §7.3: the Allocate success response.
    pub(super) fn allocated(&mut self, started: Instant, msg: &Message<'_>, now: Instant) {
        if !matches!(self.state, State::Allocating) {
            return;
        }
        let relayed = msg.get::<XorRelayedAddress>().and_then(Result::ok);
        let mapped = msg.get::<XorMappedAddress>().and_then(Result::ok);
        let (Some(XorRelayedAddress(relayed)), Some(XorMappedAddress(mapped))) = (relayed, mapped)
        else {
            let e = Error::InvalidResponse(
                "Allocate success without XOR-RELAYED-ADDRESS or XOR-MAPPED-ADDRESS",
            );
            self.close(TurnEvent::AllocationFailed(e));
            return;
        };
        let lifetime = self.granted(msg);
        if lifetime.is_zero() {
            let e = Error::InvalidResponse("Allocate success with LIFETIME 0");
            self.close(TurnEvent::AllocationFailed(e));
            return;
        }
        self.state = State::Allocated(Allocation {
            relayed,
            mapped,
            expires: started + lifetime,
            refresh_at: Some(started + refresh_delay(lifetime)),
        });
        self.events.push_back(TurnEvent::Allocated {
            relayed,
            mapped,
            lifetime,
        });
        // Permissions asked for while allocating.
        let waiting: Vec<IpAddr> = self.permissions.keys().copied().collect();
        for ip in waiting {
            if Family::of(&SocketAddr::new(ip, 0)) == Family::of(&relayed) {
                self.request_permission(ip, now);
            } else {
                self.permissions.remove(&ip);
                let error = Error::PeerFamilyMismatch(SocketAddr::new(ip, 0));
                self.events
                    .push_back(TurnEvent::PermissionFailed { peer: ip, error });
            }
        }
    }

    /// RFC 8656 §8.3: a Refresh success; LIFETIME absent means the lifetime asked for.
    pub(super) fn refreshed(&mut self, started: Instant, msg: &Message<'_>) {
        let lifetime = self.granted(msg);
        let State::Allocated(a) = &mut self.state else {
            return;
        };
        a.expires = started + lifetime;
        a.refresh_at = Some(started + refresh_delay(lifetime));
        self.events.push_back(TurnEvent::Refreshed { lifetime });
    }

    /// A failed Refresh is retried halfway to the expiry, while more than 10 s are left.
    pub(super) fn refresh_failed(&mut self, error: Error, now: Instant) {
        if let State::Allocated(a) = &mut self.state {
            let left = a.expires.saturating_duration_since(now);
            a.refresh_at = (left > Duration::from_secs(10)).then(|| now + left / 2);
        }
        self.events.push_back(TurnEvent::RefreshFailed(error));
    }

    /// Ends the client with a terminal event.
    pub(super) fn close(&mut self, event: TurnEvent) {
        self.state = State::Closed;
        self.transactions.clear();
        self.forget_peers();
        self.events.push_back(event);
    }

    fn forget_peers(&mut self) {
        self.permissions.clear();
        self.channels.clear();
        self.by_number.clear();
        self.queue.clear();
    }

    /// LIFETIME of a success response; the lifetime asked for when absent or malformed.
    fn granted(&self, msg: &Message<'_>) -> Duration {
        match msg.get::<Lifetime>() {
            Some(Ok(Lifetime(secs))) => Duration::from_secs(u64::from(secs)),
            _ => self.cfg.lifetime,
        }
    }
}

/// Whether a failed request means the allocation is gone: RFC 8656 §8.3, 437 Allocation
/// Mismatch; or credentials that no longer verify on a request about the allocation (401 after
/// the retry with a fresh nonce, 441; e.g. an expired TURN REST credential): it cannot be
/// refreshed any more.
pub(super) fn ends_allocation(request: Request, error: &Error) -> bool {
    match error.code() {
        Some(ErrorCode::ALLOCATION_MISMATCH) => true,
        Some(ErrorCode::UNAUTHENTICATED | ErrorCode::WRONG_CREDENTIALS) => {
            request != Request::Allocate
        }
        _ => false,
    }
}

/// RFC 8656 §8: refresh a minute before expiry, or at half the lifetime when it is short.
fn refresh_delay(lifetime: Duration) -> Duration {
    if lifetime > 2 * REFRESH_MARGIN {
        lifetime - REFRESH_MARGIN
    } else {
        lifetime / 2
    }
}
