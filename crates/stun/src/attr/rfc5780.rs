//! NAT behaviour discovery (RFC 5780 §7.2, §7.5, §7.6): CHANGE-REQUEST, RESPONSE-PORT, PADDING.
//! RESPONSE-ORIGIN and OTHER-ADDRESS live in `address`.

use crate::error::AttrError;
use crate::message::TransactionId;

use super::{be_u16, be_u32, fixed, Attr, AttrType};

/// RFC 5780 §7.2: CHANGE-REQUEST flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ChangeRequest {
    /// Flag A: send the response from the alternate IP address.
    pub change_ip: bool,
    /// Flag B: send the response from the alternate port.
    pub change_port: bool,
}

impl<'a> Attr<'a> for ChangeRequest {
    const TYPE: AttrType = AttrType::CHANGE_REQUEST;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let b: &[u8; 4] = fixed(Self::TYPE, value)?;
        let flags = be_u32(b);
        Ok(ChangeRequest {
            change_ip: flags & 0x4 != 0,
            change_port: flags & 0x2 != 0,
        })
    }
    fn encoded_len(&self) -> usize {
        4
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        let flags = (u32::from(self.change_ip) << 2) | (u32::from(self.change_port) << 1);
        out.copy_from_slice(&flags.to_be_bytes());
    }
}

/// RFC 5780 §7.5: RESPONSE-PORT (16 bits, then 16 bits of padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponsePort(pub u16);

impl<'a> Attr<'a> for ResponsePort {
    const TYPE: AttrType = AttrType::RESPONSE_PORT;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        let b: &[u8; 4] = fixed(Self::TYPE, value)?;
        Ok(ResponsePort(be_u16(b)))
    }
    fn encoded_len(&self) -> usize {
        4
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out[..2].copy_from_slice(&self.0.to_be_bytes());
        out[2..].fill(0);
    }
}

/// RFC 5780 §7.6: PADDING; only its length matters. Encoded as zero bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Padding(pub usize);

impl<'a> Attr<'a> for Padding {
    const TYPE: AttrType = AttrType::PADDING;
    fn decode(value: &'a [u8], _tid: &TransactionId) -> Result<Self, AttrError> {
        Ok(Padding(value.len()))
    }
    fn encoded_len(&self) -> usize {
        self.0
    }
    fn encode(&self, out: &mut [u8], _tid: &TransactionId) {
        out.fill(0)
    }
}
