//! Server-reflexive candidates: STUN Binding transactions to the STUN servers (RFC 8489), and
//! the addresses the remote peer's ICE Binding responses saw us as.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use floe_stun::attr::XorMappedAddress;
use floe_stun::{Class, Message, MessageBuilder, Method, TransactionId};
use rand::RngCore;

use super::{Output, PeerCore};
use crate::pair::{CandidateType, LocalCandidate};

/// RFC 8489 §6.2.1 retransmissions, shortened: 500 ms, then doubling, 5 sends (≈ 7.5 s).
const STUN_RTO: Duration = Duration::from_millis(500);
const STUN_SENDS: u32 = 5;

pub(super) struct StunTxn {
    host: SocketAddr,
    server: SocketAddr,
    request: Vec<u8>,
    pub(super) next_send: Instant,
    attempts: u32,
}

impl PeerCore {
    pub(super) fn start_stun(&mut self, server: SocketAddr, now: Instant) {
        for host in self.hosts.clone() {
            if host.is_ipv4() != server.is_ipv4() {
                continue;
            }
            let tid = self.new_tid();
            let mut buf = vec![0u8; 64];
            let Ok(mut b) = MessageBuilder::new(&mut buf, Class::Request, Method::BINDING, tid)
            else {
                continue;
            };
            if b.add_fingerprint().is_err() {
                continue;
            }
            let n = b.finish();
            buf.truncate(n);
            self.stun.insert(
                tid.0,
                StunTxn {
                    host,
                    server,
                    request: buf,
                    next_send: now,
                    attempts: 0,
                },
            );
        }
    }

    /// RFC 8489 §5: a transaction id from the CSPRNG.
    fn new_tid(&mut self) -> TransactionId {
        let mut id = [0u8; 12];
        self.rng.fill_bytes(&mut id);
        TransactionId(id)
    }

    pub(super) fn send_stun(&mut self, now: Instant) {
        let mut expired = Vec::new();
        for (tid, t) in &mut self.stun {
            if t.next_send > now {
                continue;
            }
            if t.attempts >= STUN_SENDS {
                expired.push(*tid);
                continue;
            }
            self.out.push_back(Output::Udp {
                from: t.host,
                to: t.server,
                data: t.request.clone(),
            });
            t.next_send = now + STUN_RTO * 2u32.pow(t.attempts);
            t.attempts += 1;
        }
        for tid in expired {
            if let Some(t) = self.stun.remove(&tid) {
                tracing::info!("no STUN answer from {}", t.server);
            }
        }
    }

    /// Remembers the address the remote peer saw us as, from its ICE Binding success responses.
    pub(super) fn note_reflexive(&mut self, local: SocketAddr, from: SocketAddr, data: &[u8]) {
        if data.len() < 20 || data[0] >> 6 != 0 {
            return;
        }
        let Ok(m) = Message::parse(data) else {
            return;
        };
        if m.class() != Class::SuccessResponse || m.method() != Method::BINDING {
            return;
        }
        if let Some(Ok(mapped)) = m.get::<XorMappedAddress>() {
            if self.seen_as.len() < 256 || self.seen_as.contains_key(&(local, from)) {
                self.seen_as.insert((local, from), mapped.0);
            }
        }
    }

    /// A Binding response to one of our srflx transactions?
    pub(super) fn on_stun_response(
        &mut self,
        local: SocketAddr,
        from: SocketAddr,
        data: &[u8],
    ) -> bool {
        if data.len() < 20 || data[0] >> 6 != 0 {
            return false;
        }
        let Ok(m) = Message::parse(data) else {
            return false;
        };
        let tid = m.transaction_id().0;
        let Some(t) = self.stun.get(&tid) else {
            return false;
        };
        if t.server != from || t.host != local {
            return false;
        }
        self.stun.remove(&tid);
        if m.class() != Class::SuccessResponse {
            return true;
        }
        let Some(Ok(mapped)) = m.get::<XorMappedAddress>() else {
            return true;
        };
        let mapped = mapped.0;
        if mapped != local && !self.cfg.relay_only && !self.locals.iter().any(|l| l.addr == mapped)
        {
            self.add_local(
                LocalCandidate {
                    kind: CandidateType::Srflx,
                    addr: mapped,
                    base: local,
                    turn: None,
                },
                true,
            );
        }
        true
    }
}
