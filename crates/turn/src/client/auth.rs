//! The long-term credential mechanism on the client side (RFC 8489 §9.2.3, §9.2.5): learning
//! REALM and NONCE from a 401 or 438, choosing the password algorithm, signing requests and
//! verifying responses.

use core::fmt;

use floe_stun::attr::{Nonce, PasswordAlgorithm, PasswordAlgorithms, Realm, Username};
use floe_stun::integrity::{self, ALGORITHM_MD5, ALGORITHM_SHA256};
use floe_stun::{AttrType, BuildError, Message, MessageBuilder};

use super::types::Error;

/// Which integrity attribute protects a request, and therefore its response (RFC 8489 §14.5,
/// §14.6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IntegrityKind {
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256.
    Sha256,
}

/// The key and integrity kind a request was signed with: RFC 8489 §9.2.5 has the client verify
/// the response with "the same password it utilized for the request".
#[derive(Clone)]
pub(crate) struct Signer {
    key: Vec<u8>,
    kind: IntegrityKind,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// RFC 8489 §9.2.5: whether the response carries valid integrity under this key.
    pub(crate) fn verify(&self, msg: &Message<'_>) -> bool {
        match self.kind {
            IntegrityKind::Sha1 => msg.verify_integrity(&self.key),
            IntegrityKind::Sha256 => msg.verify_integrity_sha256(&self.key),
        }
    }
}

/// What a 401 or 438 error response teaches (RFC 8489 §9.2.5).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Challenge<'a> {
    realm: Option<&'a str>,
    nonce: &'a str,
    /// PASSWORD-ALGORITHMS as received, when the nonce cookie announces the feature.
    algorithms: Option<&'a [u8]>,
}

impl<'a> Challenge<'a> {
    /// Reads NONCE, REALM and PASSWORD-ALGORITHMS. `None` means "discard the response":
    /// no usable NONCE, or (RFC 8489 §9.2.5, bid-down protection) a nonce cookie announcing
    /// password algorithms without a valid PASSWORD-ALGORITHMS attribute.
    pub(crate) fn parse(msg: &Message<'a>) -> Option<Challenge<'a>> {
        let nonce = msg.get::<Nonce<'a>>()?.ok()?;
        let realm = msg.get::<Realm<'a>>().and_then(Result::ok).map(|r| r.0);
        let announced = nonce
            .security_features()
            .is_some_and(|f| f.password_algorithms());
        let algorithms = if announced {
            msg.get::<PasswordAlgorithms<'a>>()?.ok()?;
            Some(msg.raw(AttrType::PASSWORD_ALGORITHMS)?.value)
        } else {
            // Without the cookie, PASSWORD-ALGORITHMS is ignored: RFC 5389 behaviour, MD5.
            None
        };
        Some(Challenge {
            realm,
            nonce: nonce.0,
            algorithms,
        })
    }
}

/// The credentials in use: realm, nonce, password algorithm and key (RFC 8489 §9.2.3).
#[derive(Clone)]
pub(crate) struct Credentials {
    realm: String,
    nonce: String,
    /// PASSWORD-ALGORITHM chosen and PASSWORD-ALGORITHMS echoed as received (RFC 8489
    /// §9.2.3.2), when the server announced the feature.
    algorithms: Option<(u16, Vec<u8>)>,
    signer: Signer,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("realm", &self.realm)
            .field("algorithm", &self.algorithms.as_ref().map(|a| a.0))
            .finish_non_exhaustive()
    }
}

/// The account the client authenticates as.
#[derive(Clone, Copy)]
pub(crate) struct Account<'c> {
    pub(crate) username: &'c str,
    pub(crate) password: &'c str,
    pub(crate) prefer_sha256: bool,
}

impl Credentials {
    /// Credentials after a 401 or 438: the new nonce, the realm (kept from `previous` when the
    /// answer has none) and the password algorithm.
    ///
    /// RFC 8489 §9.2.3: without the password-algorithms feature the key is MD5 and no algorithm
    /// attribute is sent; with it, the client picks an algorithm from PASSWORD-ALGORITHMS (SHA-256
    /// when preferred and offered, else MD5, else SHA-256) and echoes the list.
    pub(crate) fn learn(
        previous: Option<&Credentials>,
        challenge: &Challenge<'_>,
        account: Account<'_>,
    ) -> Result<Credentials, Error> {
        let realm = match (challenge.realm, previous) {
            (Some(r), _) => r.to_owned(),
            (None, Some(p)) => p.realm.clone(),
            (None, None) => return Err(Error::InvalidResponse("challenge without REALM")),
        };
        let algorithm = match challenge.algorithms {
            None => None,
            Some(wire) => Some((choose(wire, account.prefer_sha256)?, wire.to_vec())),
        };
        let signer = match algorithm {
            Some((ALGORITHM_SHA256, _)) => Signer {
                key: integrity::long_term_key_sha256(account.username, &realm, account.password)
                    .to_vec(),
                kind: IntegrityKind::Sha256,
            },
            _ => Signer {
                key: integrity::long_term_key_md5(account.username, &realm, account.password)
                    .to_vec(),
                kind: IntegrityKind::Sha1,
            },
        };
        Ok(Credentials {
            realm,
            nonce: challenge.nonce.to_owned(),
            algorithms: algorithm,
            signer,
        })
    }

    /// The signer of requests made with these credentials.
    pub(crate) fn signer(&self) -> &Signer {
        &self.signer
    }

    /// RFC 8489 §9.2.3: adds USERNAME, REALM, NONCE, the algorithm attributes and the integrity
    /// attribute. Only FINGERPRINT may follow.
    pub(crate) fn sign(
        &self,
        b: &mut MessageBuilder<'_>,
        username: &str,
    ) -> Result<(), BuildError> {
        b.add(&Username(username))?;
        b.add(&Realm(&self.realm))?;
        b.add(&Nonce(&self.nonce))?;
        if let Some((algorithm, list)) = &self.algorithms {
            b.add(&PasswordAlgorithm {
                algorithm: *algorithm,
                params: &[],
            })?;
            b.add_raw(AttrType::PASSWORD_ALGORITHMS, list)?;
        }
        match self.signer.kind {
            IntegrityKind::Sha1 => b.add_message_integrity(&self.signer.key),
            IntegrityKind::Sha256 => b.add_message_integrity_sha256(&self.signer.key),
        }
    }
}

/// Picks a password algorithm from a PASSWORD-ALGORITHMS value (validated by
/// [`Challenge::parse`]); only parameter-less MD5 and SHA-256 are known (RFC 8489 §18.5).
fn choose(wire: &[u8], prefer_sha256: bool) -> Result<u16, Error> {
    let offered = |code: u16| {
        PasswordAlgorithms::Wire(wire)
            .iter()
            .any(|a| a.algorithm == code && a.params.is_empty())
    };
    let order = if prefer_sha256 {
        [ALGORITHM_SHA256, ALGORITHM_MD5]
    } else {
        [ALGORITHM_MD5, ALGORITHM_SHA256]
    };
    order
        .into_iter()
        .find(|&code| offered(code))
        .ok_or(Error::UnsupportedPasswordAlgorithm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(codes: &[u16]) -> Vec<u8> {
        codes
            .iter()
            .flat_map(|c| [c.to_be_bytes(), [0, 0]].concat())
            .collect()
    }

    #[test]
    fn chooses_md5_unless_sha256_is_preferred_and_offered() {
        let both = wire(&[ALGORITHM_SHA256, ALGORITHM_MD5]);
        assert_eq!(choose(&both, false), Ok(ALGORITHM_MD5));
        assert_eq!(choose(&both, true), Ok(ALGORITHM_SHA256));
        assert_eq!(choose(&wire(&[ALGORITHM_MD5]), true), Ok(ALGORITHM_MD5));
        assert_eq!(
            choose(&wire(&[ALGORITHM_SHA256]), false),
            Ok(ALGORITHM_SHA256)
        );
        assert_eq!(
            choose(&wire(&[7]), false),
            Err(Error::UnsupportedPasswordAlgorithm)
        );
    }
}
