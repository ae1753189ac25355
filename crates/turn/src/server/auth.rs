//! The long-term credential mechanism on the server side (RFC 8489 §9.2.4), with stateless
//! nonces, PASSWORD-ALGORITHM negotiation and its bid-down protection (§9.2.4, §9.2.5), USERHASH
//! (§14.4) and both integrity attributes (§14.5, §14.6).

use std::sync::Arc;

use floe_stun::attr::{
    Nonce as NonceAttr, PasswordAlgorithm as PaAttr, PasswordAlgorithms, Realm, Userhash, Username,
};
use floe_stun::{AttrType, Message};

use crate::credentials::{CredentialError, CredentialKind, LongTermKey, PasswordAlgorithm};
use crate::nonce::{parse_cookie, NonceError, SecurityFeatures};

use super::reply::IntegrityKind;
use super::types::ClientTuple;
use super::TurnServer;

/// RFC 8489 §14.11: the algorithms offered in a challenge, in order of preference.
pub(crate) const OFFERED_ALGORITHMS: [PaAttr<'static>; 2] = [
    PaAttr {
        algorithm: floe_stun::integrity::ALGORITHM_SHA256,
        params: &[],
    },
    PaAttr {
        algorithm: floe_stun::integrity::ALGORITHM_MD5,
        params: &[],
    },
];

/// An authenticated request.
#[derive(Debug, Clone)]
pub(crate) struct Authed {
    /// The username as received (or resolved from USERHASH): who may use the allocation.
    pub(crate) user: Arc<str>,
    /// Who the quotas count: the static user, or the user part of a TURN REST username
    /// ([`crate::rest::user_of`]), so that several credentials of one user share its quotas.
    pub(crate) quota_user: Arc<str>,
    pub(crate) key: LongTermKey,
    pub(crate) kind: IntegrityKind,
    /// REST credentials: unix time at which they stop being accepted.
    pub(crate) expires_at: Option<u64>,
}

/// Why a request is not authenticated, as the answer to send (none of them signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    /// 401 to a request without integrity: the normal first round trip (not a failure).
    NoCredentials,
    /// 401 with REALM and NONCE (and PASSWORD-ALGORITHMS): no integrity, unknown user, wrong
    /// integrity, or a nonce not issued to this client (RFC 8489 §9.2.4).
    Unauthenticated,
    /// 438 Stale Nonce with a fresh NONCE (RFC 8489 §9.2.4).
    StaleNonce,
    /// 400: integrity present but USERNAME/USERHASH, REALM or NONCE missing or malformed, or
    /// the PASSWORD-ALGORITHM(S) bid-down check failed (RFC 8489 §9.2.4).
    BadRequest,
    /// The username is a TURN REST credential that has expired: 401, and a Refresh from the
    /// allocation's owner ends the allocation.
    Expired {
        /// The username as received.
        user: String,
    },
}

impl AuthFailure {
    pub(crate) fn code(&self) -> u16 {
        match self {
            AuthFailure::NoCredentials
            | AuthFailure::Unauthenticated
            | AuthFailure::Expired { .. } => 401,
            AuthFailure::StaleNonce => 438,
            AuthFailure::BadRequest => 400,
        }
    }
}

impl TurnServer {
    /// The security features announced in the nonce cookie (RFC 8489 §9.2, §18.1).
    pub(crate) fn security_features(offer_sha256: bool, offer_userhash: bool) -> SecurityFeatures {
        let mut f = SecurityFeatures::NONE;
        if offer_sha256 {
            f = f | SecurityFeatures::PASSWORD_ALGORITHMS;
        }
        if offer_userhash {
            f = f | SecurityFeatures::USERNAME_ANONYMITY;
        }
        f
    }

    /// RFC 8489 §9.2.4: authenticates a request, in the order the RFC gives.
    pub(crate) fn authenticate(
        &self,
        msg: &Message<'_>,
        client: ClientTuple,
        unix_secs: u64,
    ) -> Result<Authed, AuthFailure> {
        let kind = if msg.has_integrity_sha256() {
            IntegrityKind::Sha256
        } else if msg.has_integrity() {
            IntegrityKind::Sha1
        } else {
            return Err(AuthFailure::NoCredentials);
        };
        let user = self.username(msg)?;
        match msg.get::<Realm<'_>>() {
            Some(Ok(_)) => {}
            _ => return Err(AuthFailure::BadRequest),
        }
        let nonce = match msg.get::<NonceAttr<'_>>() {
            Some(Ok(n)) => n.0,
            _ => return Err(AuthFailure::BadRequest),
        };
        let algorithm = negotiate_algorithm(msg, nonce)?;
        if self.revoked.is_revoked(&user, unix_secs) {
            return Err(AuthFailure::Unauthenticated);
        }
        let credential = match self.config.credentials.lookup(&user, algorithm, unix_secs) {
            Ok(c) => c,
            Err(CredentialError::Expired { .. }) => return Err(AuthFailure::Expired { user }),
            Err(_) => return Err(AuthFailure::Unauthenticated),
        };
        let key = credential
            .keys()
            .iter()
            .find(|k| verify(msg, k, kind))
            .cloned()
            .ok_or(AuthFailure::Unauthenticated)?;
        match self
            .nonces
            .verify(nonce.as_bytes(), client.remote, unix_secs)
        {
            Ok(_) => {}
            Err(NonceError::Stale { .. }) => return Err(AuthFailure::StaleNonce),
            Err(_) => return Err(AuthFailure::Unauthenticated),
        }
        let quota_user = match credential.kind() {
            CredentialKind::Rest { .. } => Arc::from(crate::rest::user_of(&user)),
            CredentialKind::Static => Arc::from(user.as_str()),
        };
        Ok(Authed {
            user: Arc::from(user),
            quota_user,
            key,
            kind,
            expires_at: credential.expires_at(),
        })
    }

    /// USERNAME, or USERHASH resolved to a static user (RFC 8489 §14.3, §14.4).
    fn username(&self, msg: &Message<'_>) -> Result<String, AuthFailure> {
        match msg.get::<Username<'_>>() {
            Some(Ok(u)) => return Ok(u.0.to_owned()),
            Some(Err(_)) => return Err(AuthFailure::BadRequest),
            None => {}
        }
        match msg.get::<Userhash<'_>>() {
            Some(Ok(h)) if self.config.offer_userhash => self
                .config
                .credentials
                .resolve_userhash(h.0)
                .map(str::to_owned)
                .map_err(|_| AuthFailure::Unauthenticated),
            Some(Ok(_)) => Err(AuthFailure::Unauthenticated),
            _ => Err(AuthFailure::BadRequest),
        }
    }
}

/// RFC 8489 §14.5/§14.6: checks the request's integrity attribute with `key`.
pub(crate) fn verify(msg: &Message<'_>, key: &LongTermKey, kind: IntegrityKind) -> bool {
    match kind {
        IntegrityKind::Sha256 => msg.verify_integrity_sha256(key.as_bytes()),
        IntegrityKind::Sha1 => msg.verify_integrity(key.as_bytes()),
    }
}

/// RFC 8489 §9.2.4, the bid-down protection: when the NONCE carries the cookie with the
/// "password algorithms" feature, either neither PASSWORD-ALGORITHM nor PASSWORD-ALGORITHMS is
/// present (MD5), or both are, PASSWORD-ALGORITHMS is exactly the list this server sends, and
/// PASSWORD-ALGORITHM is one of its entries; anything else is 400. Without that cookie the
/// algorithm is MD5 (RFC 5389 behaviour).
fn negotiate_algorithm(msg: &Message<'_>, nonce: &str) -> Result<PasswordAlgorithm, AuthFailure> {
    let offered =
        parse_cookie(nonce).is_some_and(|f| f.contains(SecurityFeatures::PASSWORD_ALGORITHMS));
    if !offered {
        return Ok(PasswordAlgorithm::Md5);
    }
    let chosen = msg.get::<PaAttr<'_>>();
    let list = msg.get::<PasswordAlgorithms<'_>>();
    match (chosen, list) {
        (None, None) => Ok(PasswordAlgorithm::Md5),
        (Some(Ok(chosen)), Some(Ok(list))) => {
            let matches_offer = list.iter().eq(OFFERED_ALGORITHMS.iter().copied());
            let in_list = list.iter().any(|a| a == chosen);
            if !matches_offer || !in_list || !chosen.params.is_empty() {
                return Err(AuthFailure::BadRequest);
            }
            PasswordAlgorithm::from_code(chosen.algorithm).ok_or(AuthFailure::BadRequest)
        }
        _ => Err(AuthFailure::BadRequest),
    }
}

/// Attribute types whose presence is understood by the TURN request handlers (RFC 8489 §6.3.1:
/// other comprehension-required types get 420).
pub(crate) fn is_understood(t: AttrType) -> bool {
    matches!(
        t,
        AttrType::USERNAME
            | AttrType::USERHASH
            | AttrType::MESSAGE_INTEGRITY
            | AttrType::MESSAGE_INTEGRITY_SHA256
            | AttrType::REALM
            | AttrType::NONCE
            | AttrType::PASSWORD_ALGORITHM
            | AttrType::PASSWORD_ALGORITHMS
            | AttrType::FINGERPRINT
            | AttrType::SOFTWARE
            | AttrType::LIFETIME
            | AttrType::REQUESTED_TRANSPORT
            | AttrType::DONT_FRAGMENT
            | AttrType::RESERVATION_TOKEN
            | AttrType::EVEN_PORT
            | AttrType::REQUESTED_ADDRESS_FAMILY
            | AttrType::ADDITIONAL_ADDRESS_FAMILY
            | AttrType::XOR_PEER_ADDRESS
            | AttrType::CHANNEL_NUMBER
            | AttrType::DATA
            | AttrType::CONNECTION_ID
            | AttrType::ICMP
    )
}
