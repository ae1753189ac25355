//! A request from a client, from the wire to its answer: Binding (RFC 8489 §6.3), then for TURN
//! the retransmission cache, authentication (RFC 8489 §9.2.4), 420 Unknown Attribute, the
//! allocation checks, dispatch to the method handlers, and the error responses.

use std::time::Instant;

use floe_stun::attr::{ErrorCode, Nonce as NonceAttr, PasswordAlgorithms, Realm};
use floe_stun::{BuildError, Class, Message, MessageBuilder, Method, TransactionId};

use crate::binding::Outcome;

use super::allocation::Signer;
use super::auth::{self, AuthFailure, Authed, OFFERED_ALGORITHMS};
use super::reply::{seal, IntegrityKind, Reject};
use super::{
    ClientTuple, DeleteReason, DropReason, Handled, RelayBinder, Transmit, Transport, TurnServer,
};

impl TurnServer {
    pub(super) fn binding_request(
        &mut self,
        msg: &Message<'_>,
        client: ClientTuple,
        out: &mut [u8],
    ) -> Option<Transmit> {
        let outcome = self.binding.handle(
            msg,
            client.local,
            client.remote,
            client.transport.binding(),
            out,
        );
        match outcome {
            Outcome::Reply(r) => {
                self.stats.count_response(&out[..r.len.min(out.len())]);
                Some(Transmit::ToClient {
                    client: ClientTuple {
                        transport: client.transport,
                        local: r.from,
                        remote: r.to,
                    },
                    len: r.len,
                })
            }
            Outcome::Drop(_) => {
                self.stats.dropped.add(DropReason::UnexpectedMessage);
                None
            }
        }
    }

    /// A TURN request: retransmission cache, authentication, 420, allocation checks, dispatch.
    pub(super) fn request(
        &mut self,
        now: Instant,
        unix_secs: u64,
        client: ClientTuple,
        msg: &Message<'_>,
        out: &mut [u8],
        binder: &mut dyn RelayBinder,
    ) -> Option<Transmit> {
        let tid = msg.transaction_id();
        if client.transport == Transport::Udp {
            self.cache.expire(now);
            if let Some(cached) = self.cache.get(client, tid) {
                let len = cached.len();
                let Some(dst) = out.get_mut(..len) else {
                    self.stats.dropped.add(DropReason::BufferTooSmall);
                    return None;
                };
                dst.copy_from_slice(cached);
                self.stats.retransmissions += 1;
                return Some(Transmit::ToClient { client, len });
            }
        }
        let method = msg.method();
        if !is_turn_method(method) {
            // RFC 8489 §6.3.1: a request with an unknown method gets 400.
            return self.unauthenticated_error(now, unix_secs, client, msg, Reject::new(400), out);
        }
        let authed = match self.authenticate(msg, client, unix_secs) {
            Ok(a) => a,
            Err(failure) => {
                return self.auth_failed(now, unix_secs, client, msg, failure, out, binder)
            }
        };
        let signer = Signer {
            key: authed.key.clone(),
            kind: authed.kind,
        };
        let result = self.authenticated(now, unix_secs, client, msg, &authed, out, binder);
        let len = match result {
            Ok(Some(len)) => len,
            Ok(None) => return None,
            Err(reject) => self.write_error(out, method, tid, &reject, Some(&signer))?,
        };
        self.stats.count_response(&out[..len]);
        if client.transport == Transport::Udp {
            self.cache.insert(client, tid, &out[..len], now);
        }
        Some(Transmit::ToClient { client, len })
    }

    /// Processes an authenticated request; `Ok(Some(len))` is a signed success response,
    /// `Ok(None)` a deferred one (Connect) or a build failure.
    #[allow(clippy::too_many_arguments)]
    fn authenticated(
        &mut self,
        now: Instant,
        unix_secs: u64,
        client: ClientTuple,
        msg: &Message<'_>,
        authed: &Authed,
        out: &mut [u8],
        binder: &mut dyn RelayBinder,
    ) -> Result<Option<usize>, Reject> {
        if let Some(reject) =
            Reject::unknown_attributes(msg.unknown_comprehension_required(auth::is_understood))
        {
            return Err(reject);
        }
        let method = msg.method();
        let existing = self.by_client.get(&client).copied();
        if method != Method::ALLOCATE && method != Method::CONNECTION_BIND {
            // RFC 8656 §8.2, §10.2, §12.2 (and RFC 6062 §5.2): these need an allocation on this
            // 5-tuple, made with the same username (441 otherwise, RFC 8656 §5).
            let id = existing.ok_or(Reject::new(ErrorCode::ALLOCATION_MISMATCH))?;
            let same_user = self
                .allocations
                .get(&id)
                .is_some_and(|a| a.user == authed.user);
            if !same_user {
                return Err(Reject::new(ErrorCode::WRONG_CREDENTIALS));
            }
        }
        let handled = {
            let mut b =
                MessageBuilder::new(out, Class::SuccessResponse, method, msg.transaction_id())
                    .map_err(|_| Reject::new(500))?;
            let handled = match method {
                Method::ALLOCATE => {
                    self.allocate(now, unix_secs, client, msg, authed, &mut b, binder)
                }
                Method::REFRESH => self.refresh(now, client, msg, &mut b, binder),
                Method::CREATE_PERMISSION => self.create_permission(now, client, msg, &mut b),
                Method::CHANNEL_BIND => self.channel_bind(now, client, msg, &mut b),
                Method::CONNECT => self.connect(now, client, msg, authed, &mut b),
                Method::CONNECTION_BIND => self.connection_bind(client, msg, authed, &mut b),
                _ => Err(Reject::new(400)),
            }?;
            match handled {
                Handled::Deferred => None,
                Handled::Respond => Some(seal(
                    b,
                    self.config.software.as_deref(),
                    Some((authed.key.as_bytes(), authed.kind)),
                )),
            }
        };
        match handled {
            None => Ok(None),
            Some(Ok(len)) => Ok(Some(len)),
            Some(Err(_)) => {
                self.stats.dropped.add(DropReason::BufferTooSmall);
                Ok(None)
            }
        }
    }

    /// RFC 8489 §9.2.4: the unsigned answer to a request that did not authenticate. A REST
    /// credential that expired ends the allocation at its Refresh (issue §3), when the Refresh
    /// proves it comes from the allocation's owner.
    #[allow(clippy::too_many_arguments)]
    fn auth_failed(
        &mut self,
        now: Instant,
        unix_secs: u64,
        client: ClientTuple,
        msg: &Message<'_>,
        failure: AuthFailure,
        out: &mut [u8],
        binder: &mut dyn RelayBinder,
    ) -> Option<Transmit> {
        if failure != AuthFailure::NoCredentials {
            self.stats.auth_failures += 1;
        }
        if let AuthFailure::Expired { user } = &failure {
            if msg.method() == Method::REFRESH {
                self.end_expired(client, msg, user, binder);
            }
        }
        let reject = Reject::new(failure.code());
        self.unauthenticated_error(now, unix_secs, client, msg, reject, out)
    }

    fn end_expired(
        &mut self,
        client: ClientTuple,
        msg: &Message<'_>,
        user: &str,
        binder: &mut dyn RelayBinder,
    ) {
        let Some(&id) = self.by_client.get(&client) else {
            return;
        };
        let owner = self.allocations.get(&id).is_some_and(|a| {
            let kind = if msg.has_integrity_sha256() {
                IntegrityKind::Sha256
            } else {
                IntegrityKind::Sha1
            };
            &*a.user == user && auth::verify(msg, &a.key, kind)
        });
        if owner {
            self.delete_allocation(id, DeleteReason::CredentialExpired, binder);
        }
    }

    /// An error to an unauthenticated request: never signed; 401 and 438 carry REALM, a fresh
    /// NONCE and PASSWORD-ALGORITHMS (RFC 8489 §9.2.4).
    ///
    /// Over UDP it is rate limited per source (RFC 8656 §21.1): a spoofed source must not turn
    /// the server into a reflector. Over TCP and TLS the handshake proved the source, the answer
    /// goes back on the attacker's own connection (no reflection, no amplification beyond what
    /// it sends), and dropping it would leave an honest client waiting for its 39.5 s
    /// transaction timeout; connection counts and idle timeouts bound that path instead.
    fn unauthenticated_error(
        &mut self,
        now: Instant,
        unix_secs: u64,
        client: ClientTuple,
        msg: &Message<'_>,
        reject: Reject,
        out: &mut [u8],
    ) -> Option<Transmit> {
        if client.transport == Transport::Udp
            && !self
                .shared
                .check_unauthenticated(client.remote.ip(), now)
                .is_allowed()
        {
            self.stats.dropped.add(DropReason::RateLimited);
            return None;
        }
        let challenge = matches!(reject.code, 401 | 438);
        let nonce = challenge.then(|| self.nonces.issue(client.remote, unix_secs));
        let written = (|| -> Result<usize, BuildError> {
            let mut b = MessageBuilder::new(
                out,
                Class::ErrorResponse,
                msg.method(),
                msg.transaction_id(),
            )?;
            reject.write(&mut b)?;
            if let Some(nonce) = &nonce {
                b.add(&Realm(self.config.realm()))?;
                b.add(&NonceAttr(nonce.as_str()))?;
                if self.config.offer_sha256 {
                    b.add(&PasswordAlgorithms::List(&OFFERED_ALGORITHMS))?;
                }
            }
            seal(b, self.config.software.as_deref(), None)
        })();
        let Ok(len) = written else {
            self.stats.dropped.add(DropReason::BufferTooSmall);
            return None;
        };
        self.stats.count_response(&out[..len]);
        self.stats.errors.add(reject.code);
        Some(Transmit::ToClient { client, len })
    }

    /// Writes a (signed) error response.
    fn write_error(
        &mut self,
        out: &mut [u8],
        method: Method,
        tid: TransactionId,
        reject: &Reject,
        signer: Option<&Signer>,
    ) -> Option<usize> {
        let written = (|| -> Result<usize, BuildError> {
            let mut b = MessageBuilder::new(out, Class::ErrorResponse, method, tid)?;
            reject.write(&mut b)?;
            seal(
                b,
                self.config.software.as_deref(),
                signer.map(|s| (s.key.as_bytes(), s.kind)),
            )
        })();
        match written {
            Ok(len) => {
                self.stats.errors.add(reject.code);
                Some(len)
            }
            Err(_) => {
                self.stats.dropped.add(DropReason::BufferTooSmall);
                None
            }
        }
    }
}

/// The TURN (and RFC 6062) request methods.
fn is_turn_method(m: Method) -> bool {
    matches!(
        m,
        Method::ALLOCATE
            | Method::REFRESH
            | Method::CREATE_PERMISSION
            | Method::CHANNEL_BIND
            | Method::CONNECT
            | Method::CONNECTION_BIND
    )
}
