//! Transactions (RFC 8489 §6, §9.2): building and starting requests, matching and
//! authenticating responses, the 401/438 retry, and dispatching each outcome to its concern.

use std::time::Instant;

use floe_stun::attr::{
    ChannelNumber, ErrorCode, Lifetime, RequestedTransport, Software, XorPeerAddress,
};
use floe_stun::{BuildError, Class, Message, MessageBuilder, TransactionId};

use super::allocation::ends_allocation;
use super::auth::{Challenge, Credentials, Signer};
use super::transaction::{Request, Retries, Transaction, MAX_AUTH_RETRIES, MAX_STALE_RETRIES};
use super::{Error, State, TurnClient, TurnEvent};

/// Room for a request: header, attributes, USERNAME (512), REALM and NONCE (763 each).
const REQUEST_BUFFER: usize = 4096;

impl TurnClient {
    /// Starts a transaction for `request`: builds it (signed when credentials are known) and
    /// queues its first send.
    pub(super) fn start(&mut self, request: Request, retries: Retries, now: Instant) {
        let tid = self.new_tid();
        match self.build_request(&request, tid) {
            Ok((bytes, signer)) => {
                self.transmits.push_back(bytes.clone());
                let tx = Transaction::new(request, bytes, signer, retries, now, self.cfg.stream);
                self.transactions.insert(tid, tx);
            }
            Err(e) => self.failed(request, Error::Encode(e), now),
        }
    }

    fn build_request(
        &self,
        request: &Request,
        tid: TransactionId,
    ) -> Result<(Vec<u8>, Option<Signer>), BuildError> {
        let mut buf = vec![0u8; REQUEST_BUFFER];
        let mut b = MessageBuilder::new(&mut buf, Class::Request, request.method(), tid)?;
        match *request {
            Request::Allocate => {
                b.add(&RequestedTransport(RequestedTransport::UDP))?;
                b.add(&Lifetime(self.cfg.requested_lifetime()))?;
            }
            Request::Refresh { lifetime } => b.add(&Lifetime(lifetime))?,
            Request::CreatePermission { peer } => b.add(&XorPeerAddress(peer))?,
            Request::ChannelBind { peer, channel } => {
                b.add(&ChannelNumber(channel))?;
                b.add(&XorPeerAddress(peer))?;
            }
        }
        if let Some(software) = &self.cfg.software {
            b.add(&Software(software))?;
        }
        let signer = match &self.credentials {
            Some(c) => {
                c.sign(&mut b, &self.cfg.username)?;
                Some(c.signer().clone())
            }
            None => None,
        };
        b.add_fingerprint()?;
        let n = b.finish();
        buf.truncate(n);
        Ok((buf, signer))
    }

    /// A response: matched by transaction id and method, authenticated, then processed.
    pub(super) fn response(&mut self, msg: &Message<'_>, now: Instant) {
        let tid = msg.transaction_id();
        let Some(tx) = self.transactions.get(&tid) else {
            return;
        };
        if tx.request.method() != msg.method() {
            return;
        }
        let error = match msg.class() {
            Class::SuccessResponse => None,
            _ => {
                // RFC 8489 §9.2.5: without a valid ERROR-CODE the response is discarded.
                let Some(Ok(ec)) = msg.get::<ErrorCode<'_>>() else {
                    return;
                };
                if matches!(ec.code, ErrorCode::UNAUTHENTICATED | ErrorCode::STALE_NONCE) {
                    // Never signed (RFC 8489 §9.2.4): not checked for integrity.
                    self.challenged(tid, msg, ec.code, ec.reason, now);
                    return;
                }
                Some(Error::Server {
                    code: ec.code,
                    reason: ec.reason.to_owned(),
                })
            }
        };
        // RFC 8489 §9.2.5: any other answer to a signed request must carry valid integrity
        // under the same key, or it is discarded as if never received (retransmissions go on).
        if !tx.signer.as_ref().is_none_or(|s: &Signer| s.verify(msg)) {
            return;
        }
        let Some(tx) = self.transactions.remove(&tid) else {
            return;
        };
        match error {
            None => self.succeeded(tx.request, tx.started, msg, now),
            Some(error) => self.failed(tx.request, error, now),
        }
    }

    /// RFC 8489 §9.2.5: a 401 or 438. Learns the new nonce (and realm, algorithm) and retries
    /// as a new transaction, within bounds; otherwise the request fails with the code.
    fn challenged(
        &mut self,
        tid: TransactionId,
        msg: &Message<'_>,
        code: u16,
        reason: &str,
        now: Instant,
    ) {
        let Some(challenge) = Challenge::parse(msg) else {
            return;
        };
        let Some(tx) = self.transactions.remove(&tid) else {
            return;
        };
        let mut retries = tx.retries;
        let give_up = if code == ErrorCode::UNAUTHENTICATED {
            retries.auth += 1;
            tx.signer.is_some() && tx.retries.auth >= MAX_AUTH_RETRIES
        } else {
            retries.stale += 1;
            tx.retries.stale >= MAX_STALE_RETRIES
        };
        if give_up {
            let error = Error::Server {
                code,
                reason: reason.to_owned(),
            };
            self.failed(tx.request, error, now);
            return;
        }
        match Credentials::learn(self.credentials.as_ref(), &challenge, self.cfg.account()) {
            Ok(c) => self.credentials = Some(c),
            Err(e) => {
                self.failed(tx.request, e, now);
                return;
            }
        }
        self.start(tx.request, retries, now);
    }

    fn succeeded(&mut self, request: Request, started: Instant, msg: &Message<'_>, now: Instant) {
        match request {
            Request::Allocate => self.allocated(started, msg, now),
            Request::Refresh { lifetime: 0 } => self.close(TurnEvent::Released),
            Request::Refresh { .. } => self.refreshed(started, msg),
            Request::CreatePermission { peer } => {
                self.permission_confirmed(peer.ip(), started, now)
            }
            Request::ChannelBind { peer, channel } => {
                self.channel_confirmed(peer, channel, started, now)
            }
        }
    }

    pub(super) fn failed(&mut self, request: Request, error: Error, now: Instant) {
        if matches!(self.state, State::Allocated(_)) && ends_allocation(request, &error) {
            self.close(TurnEvent::AllocationLost(error));
            return;
        }
        match request {
            Request::Allocate => self.close(TurnEvent::AllocationFailed(error)),
            Request::Refresh { lifetime: 0 } => self.close(TurnEvent::Released),
            Request::Refresh { .. } => self.refresh_failed(error, now),
            Request::CreatePermission { peer } => self.permission_failed(peer.ip(), error, now),
            Request::ChannelBind { peer, channel } => {
                self.channel_failed(peer, channel, error, now)
            }
        }
    }
}
