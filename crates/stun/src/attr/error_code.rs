//! Error responses (RFC 8489 §14.8, §14.13, RFC 8656 §18.12): ERROR-CODE, ADDRESS-ERROR-CODE,
//! UNKNOWN-ATTRIBUTES.

use crate::error::AttrError;
use crate::message::TransactionId;

use super::{be_u16, decode_text, invalid_len, Attr, AttrType, Family};

/// RFC 8489 §14.8: ERROR-CODE, a 3-digit code (300–699) and a reason phrase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode<'a> {
    /// The code, 300..=699.
    pub code: u16,
    /// The UTF-8 reason phrase (at most 763 bytes).
    pub reason: &'a str,
}

impl<'a> ErrorCode<'a> {
    /// 300 Try Alternate.
    pub const TRY_ALTERNATE: u16 = 300;
    /// 400 Bad Request.
    pub const BAD_REQUEST: u16 = 400;
    /// 401 Unauthenticated.
    pub const UNAUTHENTICATED: u16 = 401;
    /// 403 Forbidden.
    pub const FORBIDDEN: u16 = 403;
    /// 420 Unknown Attribute.
    pub const UNKNOWN_ATTRIBUTE: u16 = 420;
    /// 437 Allocation Mismatch.
    pub const ALLOCATION_MISMATCH: u16 = 437;
    /// 438 Stale Nonce.
    pub const STALE_NONCE: u16 = 438;
    /// 440 Address Family not Supported.
    pub const ADDRESS_FAMILY_NOT_SUPPORTED: u16 = 440;
    /// 441 Wrong Credentials.
    pub const WRONG_CREDENTIALS: u16 = 441;
    /// 442 Unsupported Transport Protocol.
    pub const UNSUPPORTED_TRANSPORT: u16 = 442;
    /// 443 Peer Address Family Mismatch.
    pub const PEER_ADDRESS_FAMILY_MISMATCH: u16 = 443;
    /// 446 Connection Already Exists (RFC 6062).
    pub const CONNECTION_ALREADY_EXISTS: u16 = 446;
    /// 447 Connection Timeout or Failure (RFC 6062).
    pub const CONNECTION_TIMEOUT_OR_FAILURE: u16 = 447;
    /// 486 Allocation Quota Reached.
    pub const ALLOCATION_QUOTA_REACHED: u16 = 486;
    /// 487 Role Conflict (RFC 8445).
    pub const ROLE_CONFLICT: u16 = 487;
    /// 500 Server Error.
    pub const SERVER_ERROR: u16 = 500;
    /// 508 Insufficient Capacity.
    pub const INSUFFICIENT_CAPACITY: u16 = 508;

    /// The RFC's recommended reason phrase for a code.
    pub fn default_reason(code: u16) -> &'static str {
        match code {
            300 => "Try Alternate",
            400 => "Bad Request",
            401 => "Unauthenticated",
            403 => "Forbidden",
            405 => "Mobility Forbidden",
            420 => "Unknown Attribute",
            437 => "Allocation Mismatch",
            438 => "Stale Nonce",
            440 => "Address Family not Supported",
            441 => "Wrong Credentials",
            442 => "Unsupported Transport Protocol",
            443 => "Peer Address Family Mismatch",
            446 => "Connection Already Exists",
            447 => "Connection Timeout or Failure",
            486 => "Allocation Quota Reached",
            487 => "Role Conflict",
            500 => "Server Error",
            508 => "Insufficient Capacity",
            _ => "Error",
        }
    }

    /// An error with the default reason phrase.
    pub fn new(code: u16) -> ErrorCode<'static> {
        ErrorCode {
            code,
            reason: ErrorCode::default_reason(code),
        }
    }
}

fn decode_code(t: AttrType, class_number: &[u8]) -> Result<u16, AttrError> {
    let class = u16::from(class_number[0] & 0x07);
    let number = u16::from(class_number[1]);
    if !(3..=6).contains(&class) || number > 99 {
        return Err(AttrError::OutOfRange { attr_type: t.0 });
    }
    Ok(class * 100 + number)
}

impl<'a> Attr<'a> for ErrorCode<'a> {
    const TYPE: AttrType = AttrType::ERROR_CODE;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        if value.len() < 4 {
            return Err(invalid_len(Self::TYPE, value.len()));
        }
        let code = decode_code(Self::TYPE, &value[2..4])?;
        let reason = decode_text(Self::TYPE, &value[4..], 763, 763)?;
        Ok(ErrorCode { code, reason })
    }
    fn encoded_len(&self) -> usize {
        4 + self.reason.len()
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[0] = 0;
        out[1] = 0;
        out[2] = ((self.code / 100) & 0x07) as u8;
        out[3] = (self.code % 100) as u8;
        out[4..].copy_from_slice(self.reason.as_bytes());
    }
}

/// RFC 8656 §18.12: ADDRESS-ERROR-CODE, why one family of a dual allocation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressErrorCode<'a> {
    /// The family that failed.
    pub family: Family,
    /// The error code (e.g. 440, 508).
    pub code: u16,
    /// The reason phrase.
    pub reason: &'a str,
}

impl<'a> Attr<'a> for AddressErrorCode<'a> {
    const TYPE: AttrType = AttrType::ADDRESS_ERROR_CODE;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        if value.len() < 4 {
            return Err(invalid_len(Self::TYPE, value.len()));
        }
        let family = Family::from_byte(Self::TYPE, value[0])?;
        let code = decode_code(Self::TYPE, &value[2..4])?;
        let reason = decode_text(Self::TYPE, &value[4..], 763, 763)?;
        Ok(AddressErrorCode {
            family,
            code,
            reason,
        })
    }
    fn encoded_len(&self) -> usize {
        4 + self.reason.len()
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[0] = self.family.byte();
        out[1] = 0;
        out[2] = ((self.code / 100) & 0x07) as u8;
        out[3] = (self.code % 100) as u8;
        out[4..].copy_from_slice(self.reason.as_bytes());
    }
}

/// RFC 8489 §14.13: UNKNOWN-ATTRIBUTES, the comprehension-required types a server did not
/// understand. Decoded as the wire bytes; built from a slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownAttributes<'a> {
    /// As received: a list of 16-bit types.
    Wire(&'a [u8]),
    /// To send.
    List(&'a [AttrType]),
}

impl<'a> UnknownAttributes<'a> {
    /// The listed types.
    pub fn iter(&self) -> impl Iterator<Item = AttrType> + 'a {
        let (wire, list): (&'a [u8], &'a [AttrType]) = match *self {
            UnknownAttributes::Wire(w) => (w, &[]),
            UnknownAttributes::List(l) => (&[], l),
        };
        wire.chunks_exact(2)
            .map(|c| AttrType(be_u16(c)))
            .chain(list.iter().copied())
    }
}

impl<'a> Attr<'a> for UnknownAttributes<'a> {
    const TYPE: AttrType = AttrType::UNKNOWN_ATTRIBUTES;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        if value.len() % 2 != 0 {
            return Err(invalid_len(Self::TYPE, value.len()));
        }
        Ok(UnknownAttributes::Wire(value))
    }
    fn encoded_len(&self) -> usize {
        match self {
            UnknownAttributes::Wire(w) => w.len(),
            UnknownAttributes::List(l) => 2 * l.len(),
        }
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        for (chunk, t) in out.chunks_exact_mut(2).zip(self.iter()) {
            chunk.copy_from_slice(&t.0.to_be_bytes());
        }
    }
}
