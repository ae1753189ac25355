//! Authentication (RFC 8489 §9, §14.3–§14.7, §14.9–§14.12): USERNAME, USERHASH, REALM, NONCE
//! and its security features, PASSWORD-ALGORITHM(S), MESSAGE-INTEGRITY(-SHA256), FINGERPRINT.

use crate::error::AttrError;
use crate::message::TransactionId;

use super::{be_u16, decode_text, fixed, invalid_len, Attr, AttrType};

text_attr!(
    /// RFC 8489 §14.3: USERNAME, UTF-8, fewer than 509 bytes (the RFC says < 509 after
    /// OpaqueString processing; 513 in RFC 5389). floe accepts up to 512.
    Username, USERNAME, 512, 512
);
text_attr!(
    /// RFC 8489 §14.9: REALM, fewer than 128 characters, at most 763 bytes.
    Realm, REALM, 763, 127
);
text_attr!(
    /// RFC 8489 §14.10: NONCE, fewer than 128 characters, at most 763 bytes.
    Nonce, NONCE, 763, 127
);

/// RFC 8489 §9.2: the prefix of a NONCE that carries the server's security feature set.
pub const NONCE_COOKIE: &str = "obMatJos2";

impl<'a> Nonce<'a> {
    /// RFC 8489 §9.2: the 24-bit security feature set when the nonce starts with the nonce
    /// cookie followed by four base64 characters; `None` otherwise.
    pub fn security_features(&self) -> Option<SecurityFeatures> {
        let rest = self.0.strip_prefix(NONCE_COOKIE)?;
        let enc = rest.as_bytes().get(..4)?;
        let mut bits: u32 = 0;
        for &c in enc {
            bits = (bits << 6) | u32::from(base64_value(c)?);
        }
        Some(SecurityFeatures(bits))
    }
}

/// RFC 8489 §9.2 / §18.1: the 24-bit security feature set advertised in a NONCE.
///
/// Bit numbering follows RFC 8489 erratum 6268: bit 0 is the *least* significant bit of the 24
/// (the RFC text had it the other way round). This matches the RFC's own Appendix B.1 vector,
/// whose nonce `obMatJos2AAAC…` (0x000002: bit 1, username anonymity) comes with a USERHASH,
/// libjuice, and floe's TURN server (`floe-turn`'s nonce cookie).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SecurityFeatures(pub u32);

impl SecurityFeatures {
    /// Bit 0 (the least significant, erratum 6268): Password algorithms.
    pub const PASSWORD_ALGORITHMS: u32 = 1 << 0;
    /// Bit 1: Username anonymity.
    pub const USERNAME_ANONYMITY: u32 = 1 << 1;

    /// Whether the server supports PASSWORD-ALGORITHMS.
    pub fn password_algorithms(self) -> bool {
        self.0 & Self::PASSWORD_ALGORITHMS != 0
    }

    /// Whether the server supports USERHASH.
    pub fn username_anonymity(self) -> bool {
        self.0 & Self::USERNAME_ANONYMITY != 0
    }

    /// The four base64 characters that encode the set after [`NONCE_COOKIE`].
    pub fn encode(self) -> [u8; 4] {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let b = self.0 & 0x00FF_FFFF;
        [18, 12, 6, 0].map(|shift| ALPHABET[((b >> shift) & 0x3F) as usize])
    }
}

fn base64_value(c: u8) -> Option<u8> {
    Some(match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => return None,
    })
}

/// RFC 8489 §14.12: PASSWORD-ALGORITHM, the algorithm the client chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordAlgorithm<'a> {
    /// 0x0001 MD5 or 0x0002 SHA-256 ([`crate::integrity::ALGORITHM_MD5`], ...).
    pub algorithm: u16,
    /// Algorithm parameters (empty for MD5 and SHA-256).
    pub params: &'a [u8],
}

impl<'a> PasswordAlgorithm<'a> {
    fn wire_len(&self) -> usize {
        4 + ((self.params.len() + 3) & !3)
    }

    fn write(&self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.algorithm.to_be_bytes());
        // Lengths are bounded by the attribute length (u16); see `Attr::encoded_len`.
        out[2..4].copy_from_slice(&(self.params.len() as u16).to_be_bytes());
        out[4..4 + self.params.len()].copy_from_slice(self.params);
        out[4 + self.params.len()..self.wire_len()].fill(0);
    }

    fn read(t: AttrType, value: &'a [u8]) -> Result<(Self, usize), AttrError> {
        if value.len() < 4 {
            return Err(invalid_len(t, value.len()));
        }
        let algorithm = be_u16(value);
        let plen = usize::from(be_u16(&value[2..]));
        let params = value
            .get(4..4 + plen)
            .ok_or_else(|| invalid_len(t, value.len()))?;
        let used = (4 + ((plen + 3) & !3)).min(value.len());
        Ok((PasswordAlgorithm { algorithm, params }, used))
    }
}

impl<'a> Attr<'a> for PasswordAlgorithm<'a> {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHM;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let (alg, _) = PasswordAlgorithm::read(Self::TYPE, value)?;
        Ok(alg)
    }
    fn encoded_len(&self) -> usize {
        4 + self.params.len()
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[0..2].copy_from_slice(&self.algorithm.to_be_bytes());
        out[2..4].copy_from_slice(&(self.params.len() as u16).to_be_bytes());
        out[4..].copy_from_slice(self.params);
    }
}

/// RFC 8489 §14.11: PASSWORD-ALGORITHMS, the algorithms a server supports, in preference order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordAlgorithms<'a> {
    /// As received.
    Wire(&'a [u8]),
    /// To send.
    List(&'a [PasswordAlgorithm<'a>]),
}

impl<'a> PasswordAlgorithms<'a> {
    /// The listed algorithms. A malformed trailing entry ends the iteration.
    pub fn iter(&self) -> impl Iterator<Item = PasswordAlgorithm<'a>> + 'a {
        let (mut wire, list): (&'a [u8], &'a [PasswordAlgorithm<'a>]) = match *self {
            PasswordAlgorithms::Wire(w) => (w, &[]),
            PasswordAlgorithms::List(l) => (&[], l),
        };
        core::iter::from_fn(move || {
            let (alg, used) = PasswordAlgorithm::read(AttrType::PASSWORD_ALGORITHMS, wire).ok()?;
            wire = &wire[used..];
            Some(alg)
        })
        .chain(list.iter().copied())
    }
}

impl<'a> Attr<'a> for PasswordAlgorithms<'a> {
    const TYPE: AttrType = AttrType::PASSWORD_ALGORITHMS;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let mut rest = value;
        while !rest.is_empty() {
            let (_, used) = PasswordAlgorithm::read(Self::TYPE, rest)?;
            rest = &rest[used..];
        }
        Ok(PasswordAlgorithms::Wire(value))
    }
    fn encoded_len(&self) -> usize {
        match self {
            PasswordAlgorithms::Wire(w) => w.len(),
            PasswordAlgorithms::List(l) => l.iter().map(PasswordAlgorithm::wire_len).sum(),
        }
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        match self {
            PasswordAlgorithms::Wire(w) => out.copy_from_slice(w),
            PasswordAlgorithms::List(l) => {
                let mut at = 0;
                for alg in l.iter() {
                    let n = alg.wire_len();
                    alg.write(&mut out[at..at + n]);
                    at += n;
                }
            }
        }
    }
}

fixed_bytes_attr!(
    /// RFC 8489 §14.5: MESSAGE-INTEGRITY, an HMAC-SHA1. Build it with
    /// [`crate::MessageBuilder::add_message_integrity`], check it with
    /// [`crate::Message::verify_integrity`].
    MessageIntegrity, MESSAGE_INTEGRITY, 20
);
fixed_bytes_attr!(
    /// RFC 8489 §14.4: USERHASH, SHA-256(username ":" realm).
    Userhash, USERHASH, 32
);

/// RFC 8489 §14.6: MESSAGE-INTEGRITY-SHA256, an HMAC-SHA256 truncated to 16..=32 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageIntegritySha256<'a>(pub &'a [u8]);

impl<'a> Attr<'a> for MessageIntegritySha256<'a> {
    const TYPE: AttrType = AttrType::MESSAGE_INTEGRITY_SHA256;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        if !(16..=32).contains(&value.len()) || value.len() % 4 != 0 {
            return Err(invalid_len(Self::TYPE, value.len()));
        }
        Ok(MessageIntegritySha256(value))
    }
    fn encoded_len(&self) -> usize {
        self.0.len()
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out.copy_from_slice(self.0)
    }
}

uint_attr!(
    /// RFC 8489 §14.7: FINGERPRINT, CRC-32 of the message XOR 0x5354554E. Build it with
    /// [`crate::MessageBuilder::add_fingerprint`].
    Fingerprint, FINGERPRINT, u32, 4
);
