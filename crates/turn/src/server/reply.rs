//! Writing responses: SOFTWARE, MESSAGE-INTEGRITY(-SHA256) and FINGERPRINT (RFC 8489 §14.5–§14.7,
//! §14.14), error responses (RFC 8489 §14.8) and the 401/438 challenge (RFC 8489 §9.2.4).

use core::net::SocketAddr;

use floe_stun::attr::{AlternateServer, ErrorCode, UnknownAttributes};
use floe_stun::{AttrType, BuildError, MessageBuilder};

/// Which integrity attribute protects a message (RFC 8489 §14.5, §14.6). A response carries the
/// same kind as the request it answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntegrityKind {
    /// MESSAGE-INTEGRITY (HMAC-SHA1).
    Sha1,
    /// MESSAGE-INTEGRITY-SHA256.
    Sha256,
}

/// Up to this many unknown attribute types are listed in a 420 (RFC 8489 §14.13).
pub(crate) const MAX_UNKNOWN: usize = 8;

/// An error answer decided by a request handler: a STUN error reply is a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reject {
    pub(crate) code: u16,
    pub(crate) unknown: [AttrType; MAX_UNKNOWN],
    pub(crate) unknown_len: usize,
    /// RFC 8489 §14.15: ALTERNATE-SERVER, with 300 Try Alternate.
    pub(crate) alternate: Option<SocketAddr>,
}

impl Reject {
    pub(crate) const fn new(code: u16) -> Self {
        Reject {
            code,
            unknown: [AttrType(0); MAX_UNKNOWN],
            unknown_len: 0,
            alternate: None,
        }
    }

    /// RFC 8489 §10: 300 (Try Alternate) naming `server` in ALTERNATE-SERVER.
    pub(crate) const fn try_alternate(server: SocketAddr) -> Self {
        let mut r = Reject::new(ErrorCode::TRY_ALTERNATE);
        r.alternate = Some(server);
        r
    }

    /// RFC 8489 §6.3.1: 420 with UNKNOWN-ATTRIBUTES.
    pub(crate) fn unknown_attributes(types: impl Iterator<Item = AttrType>) -> Option<Self> {
        let mut r = Reject::new(ErrorCode::UNKNOWN_ATTRIBUTE);
        for t in types.take(MAX_UNKNOWN) {
            r.unknown[r.unknown_len] = t;
            r.unknown_len += 1;
        }
        (r.unknown_len > 0).then_some(r)
    }

    /// Adds ERROR-CODE (and UNKNOWN-ATTRIBUTES for 420).
    pub(crate) fn write(&self, b: &mut MessageBuilder<'_>) -> Result<(), BuildError> {
        b.add(&ErrorCode::new(self.code))?;
        if self.unknown_len > 0 {
            b.add(&UnknownAttributes::List(&self.unknown[..self.unknown_len]))?;
        }
        if let Some(server) = self.alternate {
            b.add(&AlternateServer(server))?;
        }
        Ok(())
    }
}

impl From<u16> for Reject {
    fn from(code: u16) -> Self {
        Reject::new(code)
    }
}

/// Ends a message: SOFTWARE, then the integrity attribute keyed with `key`, then FINGERPRINT.
pub(crate) fn seal(
    mut b: MessageBuilder<'_>,
    software: Option<&str>,
    integrity: Option<(&[u8], IntegrityKind)>,
) -> Result<usize, BuildError> {
    if let Some(s) = software {
        b.add(&floe_stun::attr::Software(s))?;
    }
    match integrity {
        Some((key, IntegrityKind::Sha1)) => b.add_message_integrity(key)?,
        Some((key, IntegrityKind::Sha256)) => b.add_message_integrity_sha256(key)?,
        None => {}
    }
    b.add_fingerprint()?;
    Ok(b.finish())
}
