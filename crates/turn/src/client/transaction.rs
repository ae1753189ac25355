//! Client transactions (RFC 8489 §6.2): what was asked, the bytes to retransmit, the schedule.

use core::net::SocketAddr;
use std::time::{Duration, Instant};

use floe_stun::Method;

use super::auth::Signer;

/// RFC 8489 §6.2.1: the initial retransmission timeout over UDP (doubled after every send).
pub(crate) const RTO: Duration = Duration::from_millis(500);
/// RFC 8489 §6.2.1: Rc, the number of sends of a request over UDP.
pub(crate) const RC: u32 = 7;
/// RFC 8489 §6.2.1: after the last of Rc sends the client waits Rm × RTO (16 × 500 ms), which
/// ends the transaction 39.5 s after the first send; §6.2.2: over TCP/TLS, Ti is 39.5 s too.
pub(crate) const TRANSACTION_TIMEOUT: Duration = Duration::from_millis(39_500);
/// Retries after a 401 to a request that already carried credentials: one (the nonce may have
/// become invalid, e.g. after a server restart); a second 401 means the credentials are wrong.
pub(crate) const MAX_AUTH_RETRIES: u8 = 1;
/// Retries after 438 Stale Nonce for one request (RFC 8489 §9.2.5 asks for a retry; a bound
/// keeps a misbehaving server from looping the client).
pub(crate) const MAX_STALE_RETRIES: u8 = 3;

/// What a transaction asks the server for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Request {
    /// RFC 8656 §7.1.
    Allocate,
    /// RFC 8656 §8.1 (LIFETIME 0 deletes the allocation).
    Refresh {
        /// The LIFETIME asked for, in seconds.
        lifetime: u32,
    },
    /// RFC 8656 §10.1, for one peer (its port is ignored by the server).
    CreatePermission {
        /// The peer.
        peer: SocketAddr,
    },
    /// RFC 8656 §12.1.
    ChannelBind {
        /// The peer.
        peer: SocketAddr,
        /// The channel number.
        channel: u16,
    },
}

impl Request {
    pub(crate) fn method(&self) -> Method {
        match self {
            Request::Allocate => Method::ALLOCATE,
            Request::Refresh { .. } => Method::REFRESH,
            Request::CreatePermission { .. } => Method::CREATE_PERMISSION,
            Request::ChannelBind { .. } => Method::CHANNEL_BIND,
        }
    }
}

/// How many authentication retries led to a request (carried over to its retries).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Retries {
    pub(crate) auth: u8,
    pub(crate) stale: u8,
}

/// One outstanding request.
#[derive(Debug)]
pub(crate) struct Transaction {
    pub(crate) request: Request,
    /// The request as sent (retransmitted unchanged, RFC 8489 §6.2.1).
    pub(crate) bytes: Vec<u8>,
    /// The credentials that signed it; `None` for the first, unauthenticated Allocate.
    pub(crate) signer: Option<Signer>,
    pub(crate) retries: Retries,
    /// First send: lifetimes granted in the response are counted from here, a safe lower bound
    /// of when the server acted on the request.
    pub(crate) started: Instant,
    next_send: Option<Instant>,
    rto: Duration,
    sends: u32,
}

impl Transaction {
    /// A transaction whose first send happens at `now`; over a stream (`reliable`) it is never
    /// retransmitted (RFC 8489 §6.2.2).
    pub(crate) fn new(
        request: Request,
        bytes: Vec<u8>,
        signer: Option<Signer>,
        retries: Retries,
        now: Instant,
        reliable: bool,
    ) -> Self {
        Transaction {
            request,
            bytes,
            signer,
            retries,
            started: now,
            next_send: (!reliable).then_some(now + RTO),
            rto: RTO,
            sends: 1,
        }
    }

    /// When the transaction fails with a timeout.
    pub(crate) fn deadline(&self) -> Instant {
        self.started + TRANSACTION_TIMEOUT
    }

    /// The next instant something must happen: a retransmission or the timeout.
    pub(crate) fn next_timeout(&self) -> Instant {
        match self.next_send {
            Some(t) => t.min(self.deadline()),
            None => self.deadline(),
        }
    }

    /// Whether a retransmission is due at `now`; if so, schedules the next one (RTO doubles,
    /// at most Rc sends in all).
    pub(crate) fn retransmit_due(&mut self, now: Instant) -> bool {
        match self.next_send {
            Some(t) if t <= now => {
                self.sends += 1;
                self.rto *= 2;
                self.next_send = (self.sends < RC).then_some(t + self.rto);
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_schedule_is_rfc8489_rc7_rm16() {
        let t0 = Instant::now();
        let mut tx = Transaction::new(
            Request::Allocate,
            Vec::new(),
            None,
            Retries::default(),
            t0,
            false,
        );
        let mut sends = vec![0];
        let mut now = t0;
        while now < tx.deadline() {
            now = tx.next_timeout();
            if tx.retransmit_due(now) {
                sends.push((now - t0).as_millis());
            }
        }
        assert_eq!(sends, [0, 500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(tx.deadline() - t0, Duration::from_millis(39_500));
    }

    #[test]
    fn stream_transactions_are_never_retransmitted() {
        let t0 = Instant::now();
        let mut tx = Transaction::new(
            Request::Allocate,
            Vec::new(),
            None,
            Retries::default(),
            t0,
            true,
        );
        assert_eq!(tx.next_timeout(), t0 + TRANSACTION_TIMEOUT);
        assert!(!tx.retransmit_due(t0 + TRANSACTION_TIMEOUT));
    }
}
